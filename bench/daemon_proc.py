"""The real daemon as a subprocess and a loopback file server for its audio_url downloads.

The tests use the same file server (tests/daemon_support.py); their daemon wrapper adds
what tests check (shared-memory blocks, health history), while this one leaves every setting
at the daemon's default, as a customer would run it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import requests

from bench.dataset import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """The daemon hanging up on a file it refused (a reset) is expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class OriginHandler(http.server.BaseHTTPRequestHandler):
    """Base of the origin servers that tests and benchmarks point the daemon at: quiet, HTTP/1.1, one
    `route` for every GET; a daemon that hangs up mid-answer (it refused the file) is expected."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self) -> None:
        """Answer the GET for self.path; each origin defines its own paths, and knows no other."""
        self.send_error(404)

    def send_body(self, status: int, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def audio_server(directory: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `directory` on `host` (loopback) from a thread; yields the base URL."""
    with loopback_server(functools.partial(_QuietHandler, directory=str(directory)), host) as url:
        yield url


@contextlib.contextmanager
def loopback_server(handler: Callable[..., http.server.BaseHTTPRequestHandler],
                    host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a request handler on `host` (loopback, or a test's veth address) from daemon threads;
    yields the base URL."""
    server = _QuietServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def file_url(base: str, root: Path, path: Path) -> str:
    """URL of `path` under the audio server rooted at `root`."""
    return f"{base}/{quote(str(path.relative_to(root)))}"


class Daemon:
    """A started `python -m daemon.cli serve`; `startup_s` is spawn-to-first-200 on /health."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, host: str = "127.0.0.1") -> None:
        self.process = process
        self.url = f"http://{host}:{port}"
        self.stream_url = ""  # ws://host:port of its streaming API, where the starter chose the port
        self.log_path = log_path
        self.startup_s = 0.0

    def wait_healthy(self, started: float | None = None, timeout: float = 180.0) -> list[int]:
        """Poll /health until 200; returns every status seen on the way (501 while loading)."""
        seen: list[int] = []
        started = time.monotonic() if started is None else started
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                seen.append(requests.get(self.url + "/health", timeout=5).status_code)
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or listening before it serves (a start on a loaded machine)
            if seen and seen[-1] == 200:
                self.startup_s = time.monotonic() - started
                return seen
            time.sleep(0.1)
        raise TimeoutError(f"daemon not healthy after {timeout} s:\n{self.log_tail()}")

    def transcribe(self, body: dict, timeout: float = 600) -> requests.Response:
        return requests.post(self.url + "/transcribe/url", json=body, timeout=timeout)

    def log(self) -> str:
        """The whole log: a test looking for a line must not miss it because later lines (health polls
        on a slow machine) pushed it out of a tail. Error messages quote log_tail()."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log()[-6000:]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain), then SIGKILL if it hangs; returns the exit status."""
        return terminate(self.process, timeout)


def terminate(process: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM, then SIGKILL if it is not gone within `timeout`; the exit status (a server we started
    drains on SIGTERM, so the grace is what a drain may take)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


@contextlib.contextmanager
def running_daemon(source: Path = REPO_ROOT, **env: str) -> Iterator[Daemon]:
    """Start the daemon on a free loopback port with `env` on top of ours; wait for /health 200.

    `source`: the checkout whose code it runs (another commit's worktree, for a baseline in the same run).

    The log goes to a temp file kept after exit (its path is printed) for post-mortems.
    """
    port, stream_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix=f"bench-daemon-{port}-data-")  # its jobs, not a user's or another run's
    full_env = {**os.environ, "ASYNC_ENGINE_HOST": "127.0.0.1", "ASYNC_ENGINE_PORT": str(port),
                "ASYNC_ENGINE_STREAM_PORT": str(stream_port), "ASYNC_ENGINE_DATA_DIR": data, **env}
    log_path = Path(tempfile.gettempdir()) / f"bench-daemon-{port}.log"
    started = time.monotonic()
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "serve"], cwd=source,
                                   env=full_env, stdout=log_file, stderr=subprocess.STDOUT)
    daemon = Daemon(process, port, log_path)
    daemon.stream_url = f"ws://127.0.0.1:{stream_port}"
    print(f"daemon pid {process.pid}, log {log_path}", flush=True)
    try:
        daemon.wait_healthy(started)
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(data, ignore_errors=True)
