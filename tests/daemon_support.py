"""A real daemon in a subprocess and a loopback HTTP server for its audio, for integration tests."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import requests

from bench import daemon_proc as bench_daemon
from bench.daemon_proc import audio_server, free_port, loopback_server  # noqa: F401  (re-exported for the tests)
from bench.proctree import tree_pids
from daemon.workers.leftovers import tree_names, tree_prefix

ROOT = Path(__file__).resolve().parents[1]


class Daemon(bench_daemon.Daemon):
    """The benchmark's daemon handle, plus what tests inspect."""

    @functools.cached_property
    def prefix(self) -> str:
        """The prefix of every name the daemon's tree makes (read while the front runs)."""
        return tree_prefix(self.process.pid)

    def shm_names(self) -> list[str]:
        """The tree's names in /dev/shm: none once every process has opened its queues, none after a stop."""
        return tree_names(self.prefix)

    def shm_blocks(self) -> set[str]:
        """The shared-memory blocks (memfds) that the tree's live processes hold open or mapped."""
        blocks = set()
        for pid in tree_pids(self.process.pid):
            try:
                fds = [os.readlink(link) for link in Path(f"/proc/{pid}/fd").iterdir()]
                maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            except OSError:
                continue
            blocks.update(t for t in fds if t.startswith("/memfd:ae"))
            blocks.update(line.split(None, 5)[-1] for line in maps if "/memfd:ae" in line)
        return blocks

    def health(self) -> requests.Response:
        return requests.get(self.url + "/health", timeout=5)

    def transcribe(self, body: dict, timeout: float = 300) -> requests.Response:
        return super().transcribe(body, timeout)


@contextlib.contextmanager
def running_daemon(tmp_path: Path, *, host: str = "127.0.0.1", wrapper: tuple[str, ...] = (),
                   **env: str) -> Iterator[Daemon]:
    """Start `async-engine serve` with the given environment on a free port of `host` (loopback).

    `wrapper` prefixes the command (e.g. `ip netns exec NAME` to run it on another network host).
    Each daemon keeps its jobs in a data directory of its own under tmp_path unless
    ASYNC_ENGINE_DATA_DIR says otherwise (a restart test passes the same one twice).
    """
    port, stream_port = free_port(), free_port()
    full_env = {**os.environ, "ASYNC_ENGINE_HOST": host, "ASYNC_ENGINE_PORT": str(port),
                "ASYNC_ENGINE_STREAM_PORT": str(stream_port),
                "ASYNC_ENGINE_DECODERS": "1", "ASYNC_ENGINE_DATA_DIR": str(tmp_path / f"data-{port}"), **env}
    log_path = tmp_path / f"daemon-{port}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([*wrapper, sys.executable, "-m", "daemon.cli", "serve"], cwd=ROOT, env=full_env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    daemon = Daemon(process, port, log_path, host)
    daemon.stream_url = f"ws://{host}:{stream_port}"
    daemon.prefix  # noqa: B018  (read now, while the front runs)
    try:
        yield daemon
    finally:
        daemon.stop()
