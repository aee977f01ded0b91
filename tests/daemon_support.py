"""A real daemon in a subprocess and a loopback HTTP server for its audio, for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

from bench.daemon_proc import audio_server, free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]


class Daemon:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    @property
    def shm_prefix(self) -> str:
        return f"ae{self.process.pid}_"

    def shm_blocks(self) -> list[str]:
        return sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(self.shm_prefix))

    def health(self) -> requests.Response:
        return requests.get(self.url + "/health", timeout=5)

    def wait_healthy(self, timeout: float = 90.0) -> list[int]:
        """Poll /health until 200; returns every status seen on the way."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            try:
                status = self.health().status_code
            except requests.ConnectionError:
                time.sleep(0.1)
                continue
            seen.append(status)
            if status == 200:
                return seen
            time.sleep(0.1)
        raise TimeoutError(f"daemon not healthy after {timeout} s:\n{self.log()}")

    def transcribe(self, body: dict, timeout: float = 300) -> requests.Response:
        return requests.post(self.url + "/transcribe/url", json=body, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


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
