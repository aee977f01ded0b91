"""Shared mode on one machine, as tests and `python -m bench scale` run it: a redis-server of its own,
an API node, and worker nodes that can only reach each other through Redis.

Each worker node runs in a mount namespace of its own with a private /dev/shm (`unshare --mount`
and a tmpfs), so no shared-memory block or local file can pass between nodes; `cpus` pins a node to
cores (taskset) for benchmarks. Everything listens on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import requests

from bench.daemon_proc import free_port
from bench.dataset import REPO_ROOT

WORKER_NODE_TIMEOUT = "3"  # seconds: a killed node's jobs move within a few seconds in tests
_PRIVATE_SHM = 'mount -t tmpfs -o size=2g,mode=1777 tmpfs /dev/shm && exec "$0" "$@"'


def missing_tools() -> str | None:
    """Why shared-mode runs cannot happen here, or None when they can."""
    if shutil.which("redis-server") is None:
        return ("redis-server is not installed (Debian: apt-get install redis-server; ./run-tests.sh installs it "
                "when it runs as root)")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "worker nodes get a private /dev/shm through `unshare --mount`, which needs root"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_SHM, "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"this machine refuses a private mount namespace: {probe.stderr.strip()[:200]}"
    return None


class RedisServer:
    """A redis-server on a free loopback port, appendonly (fsync always) in its own directory, so a restart
    keeps what it had accepted, as docs/DAEMON.md tells operators to run it."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=open(self.directory / "redis.log", "a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True,
                                  env={**os.environ, "REDISCLI_AUTH": self.password or ""})
            if done.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start: {(self.directory / 'redis.log').read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut does; appendfsync always has every write on disk."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@dataclass
class Node:
    """An `async-engine serve` (API node) or `async-engine worker` process."""

    process: subprocess.Popen
    log_path: Path
    url: str  # the API (API node) or /metrics (worker node) base URL
    kind: str
    cpus: str | None = None  # the cores it is pinned to (taskset), if any
    stream_url: str = ""  # ws://host:port of its streaming API

    def log(self) -> str:
        """The whole log, as Daemon.log(): a test looking for a line must not lose it to a tail."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log()[-6000:]

    def stop(self, timeout: float = 90.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the node and every process of its tree (its process group), as a host failure would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@dataclass
class Cluster:
    directory: Path
    redis: RedisServer
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    def api_node(self, **env: str) -> Node:
        port, stream_port = free_port(), free_port()
        node = self._spawn("serve", [], {"SKIP_DECODER": "1", "ASYNC_ENGINE_PORT": str(port),
                                         "ASYNC_ENGINE_STREAM_PORT": str(stream_port), **env},
                           f"http://127.0.0.1:{port}", "api")
        node.stream_url = f"ws://127.0.0.1:{stream_port}"
        wait_until(lambda: _answers(node.url + "/health"), 60, node)
        return node

    def worker_node(self, cpus: str | None = None, **env: str) -> Node:
        """A worker node in its own mount namespace (private /dev/shm); returns once it has started (not
        necessarily ready: an API node's /health says when it is)."""
        port, stream_port = free_port(), free_port()
        wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_SHM]
        if cpus is not None:
            wrapper += ["taskset", "-c", cpus]
        node = self._spawn("worker", wrapper, {"METRICS_PORT": str(port), "ASYNC_ENGINE_STREAM_PORT": str(stream_port),
                                               **env}, f"http://127.0.0.1:{port}", "worker")
        node.stream_url = f"ws://127.0.0.1:{stream_port}"
        node.cpus = cpus
        wait_until(lambda: _answers(node.url + "/metrics"), 120, node)
        return node

    def _spawn(self, command: str, wrapper: list[str], env: dict[str, str], url: str, kind: str) -> Node:
        log_path = self.directory / f"{kind}-{len(self.nodes)}.log"
        full_env = {**os.environ, "REDIS_URL": self.redis.url, "ASYNC_ENGINE_HOST": "127.0.0.1",
                    "WORKER_NODE_TIMEOUT_SECONDS": WORKER_NODE_TIMEOUT,
                    "ASYNC_ENGINE_DATA_DIR": str(self.directory / f"data-{len(self.nodes)}"), **self.env, **env}
        with open(log_path, "w") as log_file:
            process = subprocess.Popen([*wrapper, sys.executable, "-m", "daemon.cli", command], cwd=REPO_ROOT,
                                       env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(process, log_path, url, kind)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.redis.stop()


@contextlib.contextmanager
def cluster(directory: Path, **env: str) -> Iterator[Cluster]:
    """A redis-server of its own, and the nodes a caller starts on it; all stopped on exit."""
    redis = RedisServer(directory / "redis")
    redis.start()
    made = Cluster(directory, redis, env)
    try:
        yield made
    finally:
        made.close()


def free_core(nodes: list[Node]) -> str | None:
    """A core no live node is pinned to (as if each worker node had a host of its own), or None when
    every core is taken."""
    taken = {node.cpus for node in nodes if node.process.poll() is None}
    return next((str(core) for core in sorted(os.sched_getaffinity(0)) if str(core) not in taken), None)


def health(api: Node) -> tuple[int, dict]:
    answer = requests.get(api.url + "/health", timeout=10)
    return answer.status_code, answer.json()


def wait_until(condition, timeout: float, node: Node | None = None, step: float = 0.1) -> None:
    """Bounded wait for `condition()`; a node that exits meanwhile fails it with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node is not None and node.process.poll() is not None:
            raise RuntimeError(f"{node.kind} node exited with {node.process.returncode}:\n{node.log_tail()}")
        if condition():
            return
        time.sleep(step)
    raise TimeoutError(f"not within {timeout} s" + (f":\n{node.log_tail()}" if node else ""))


def ready_nodes(api: Node) -> int:
    try:
        status, body = health(api)
    except requests.RequestException:
        return 0
    return sum(1 for node in body.get("nodes", []) if node["ready"])


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
        return True
    except requests.RequestException:
        return False
