"""daemon.download.fetch against a real HTTP origin on loopback that misbehaves in every way we bound."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Iterator

import pytest

from daemon.config import DownloadLimits
from daemon.download import fetch
from daemon.errors import (AUDIO_TOO_LARGE, DOWNLOAD_FAILED, DOWNLOAD_TIMED_OUT, INVALID_PARAMETER,
                           ApiError)
from daemon_support import free_port

LIMITS = DownloadLimits(connect_timeout=2.0, read_timeout=0.5, max_bytes=100_000, max_redirects=3)
FILE = bytes(range(256)) * 100  # 25,600 bytes


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release: threading.Event

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        if path == "/file":
            self._send(200, FILE)
        elif path in ("/404", "/500"):
            self._send(int(path[1:]), b"error page")
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect("/file" if left == 0 else f"/hop/{left - 1}")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.release.wait(10)
        elif path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * LIMITS.max_bytes))
            self.end_headers()
        elif path == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"y" * 65536)
            except OSError:
                pass
            self.close_connection = True

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    release = threading.Event()
    handler = type("Origin", (_Origin,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def _error(url: str, limits: DownloadLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fetch(url, limits)
    assert url in caught.value.description, "every download error names the URL"
    return caught.value


def test_fetches_a_file(origin):
    assert fetch(f"{origin}/file", LIMITS) == FILE


def test_follows_redirects_up_to_the_limit(origin):
    assert fetch(f"{origin}/hop/{LIMITS.max_redirects - 1}", LIMITS) == FILE


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_from_the_origin(origin, status):
    error = _error(f"{origin}/{status}")
    assert (error.code, error.status) == (DOWNLOAD_FAILED, 502)
    assert f"HTTP {status}" in error.description


def test_redirect_chain_longer_than_the_limit(origin):
    error = _error(f"{origin}/hop/{LIMITS.max_redirects + 2}")
    assert error.code == DOWNLOAD_FAILED and "redirects" in error.description


def test_redirect_loop(origin):
    error = _error(f"{origin}/loop")
    assert error.code == DOWNLOAD_FAILED and "redirects" in error.description


def test_origin_that_stalls_after_the_headers(origin):
    started = time.monotonic()
    error = _error(f"{origin}/stall")
    assert (error.code, error.status) == (DOWNLOAD_TIMED_OUT, 504)
    assert "DOWNLOAD_READ_TIMEOUT" in error.description
    assert time.monotonic() - started < 5


def test_declared_length_over_the_limit(origin):
    error = _error(f"{origin}/declared-huge")
    assert (error.code, error.status) == (AUDIO_TOO_LARGE, 413)
    assert "DOWNLOAD_MAX_BYTES" in error.description


def test_body_over_the_limit_without_a_length(origin):
    error = _error(f"{origin}/endless")
    assert (error.code, error.status) == (AUDIO_TOO_LARGE, 413)


def test_refused_port():
    error = _error(f"http://127.0.0.1:{free_port()}/a.wav")
    assert error.code == DOWNLOAD_FAILED and "refused" in error.description


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/a.wav", "file:///etc/passwd", "127.0.0.1/a.wav"])
def test_only_http_and_https(url):
    error = _error(url)
    assert (error.code, error.status) == (INVALID_PARAMETER, 400)
    assert "http or https" in error.description


def test_whole_transfer_deadline(origin):
    with pytest.raises(ApiError) as caught:
        fetch(f"{origin}/file", LIMITS, deadline=time.monotonic() - 1)
    assert caught.value.code == DOWNLOAD_TIMED_OUT
