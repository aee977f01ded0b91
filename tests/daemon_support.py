"""A real daemon in a subprocess and a loopback HTTP server for its audio, for integration tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import requests

from bench import daemon_proc as bench_daemon
from bench.daemon_proc import audio_server, free_port, loopback_server  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]


class Daemon(bench_daemon.Daemon):
    """The benchmark's daemon handle, plus what tests inspect."""

    @property
    def shm_prefix(self) -> str:
        return f"ae{self.process.pid}_"

    def shm_blocks(self) -> list[str]:
        return sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(self.shm_prefix))

    def health(self) -> requests.Response:
        return requests.get(self.url + "/health", timeout=5)

    def transcribe(self, body: dict, timeout: float = 300) -> requests.Response:
        return super().transcribe(body, timeout)


@contextlib.contextmanager
def running_daemon(tmp_path: Path, **env: str) -> Iterator[Daemon]:
    """Start `async-engine serve` with the given environment on a free loopback port."""
    port = free_port()
    full_env = {**os.environ, "ASYNC_ENGINE_HOST": "127.0.0.1", "ASYNC_ENGINE_PORT": str(port),
                "ASYNC_ENGINE_DECODERS": "1", **env}
    log_path = tmp_path / f"daemon-{port}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "serve"], cwd=ROOT, env=full_env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    daemon = Daemon(process, port, log_path)
    try:
        yield daemon
    finally:
        daemon.stop()
