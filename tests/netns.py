"""A second host for tests whose requests could otherwise leave the machine: a network namespace.

The namespace is joined to the test's own by a veth pair, and that is all it has: the test side
is 10.213.N.1, the namespace side 10.213.N.2, with no other address and no route anywhere else. A
daemon started inside it (`command` prefixes the namespace's `ip netns exec`) can reach the
test's origins on 10.213.N.1 and nothing more, so a policy that failed to refuse an address
would get "network unreachable" (a 502) instead of a connection to the outside world.

Needs root and iproute2 (CI runs as root); elsewhere the tests that use it skip, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator

import pytest


@dataclass(frozen=True)
class IsolatedHost:
    name: str
    address: str  # the namespace's side of the pair
    gateway: str  # this side: where the test's origins listen

    @property
    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _skip_reason() -> str | None:
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2's `ip` (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add); CI runs them as root"
    return None


@contextlib.contextmanager
def isolated_host() -> Iterator[IsolatedHost]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    tag = os.getpid() % 200 + 20
    name, here, there = f"aetest{os.getpid()}", f"aeh{os.getpid()}"[:15], f"aen{os.getpid()}"[:15]
    host = IsolatedHost(name, f"10.213.{tag}.2", f"10.213.{tag}.1")
    _ip("netns", "del", name, check=False)
    _ip("link", "del", here, check=False)
    try:
        _ip("netns", "add", name)
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", name)
        _ip("addr", "add", f"{host.gateway}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", name, "addr", "add", f"{host.address}/30", "dev", there)
        _ip("-n", name, "link", "set", there, "up")
        _ip("-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        _ip("netns", "del", name, check=False)
        _ip("link", "del", here, check=False)
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.strip()}")
    try:
        yield host
    finally:
        _ip("netns", "del", name, check=False)  # takes the veth pair with it
        _ip("link", "del", here, check=False)
