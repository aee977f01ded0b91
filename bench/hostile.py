"""Peers that attack the daemon, for the soak and the tests: an origin that fights back, tiny files
that decode to hours, and clients that open connections and never finish a request."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.daemon_proc import OriginHandler, loopback_server

TRICKLE_DECLARED_BYTES = 100_000


def gzip_bomb(inflated: int) -> bytes:
    """gzip data that inflates to `inflated` zero bytes (about 1.5 MB for 1.5 GB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(inflated >> 20)) + packer.flush()


def write_tiny_huge_files(root: Path) -> dict[str, float]:
    """WAVs of a few KB at 1 Hz that last hours; returns their durations in seconds by name."""
    files = {"1hz_mono.wav": (14_000, 1),  # 28 KB, 3.9 h
             "1hz_8ch.wav": (1_187, 8),  # 19 KB, 20 min of 8 channels
             "1hz_64ch.wav": (14_062, 64),  # 1.8 MB, 3.9 h of 64 channels
             "1hz_5h.wav": (20_000, 2)}  # 80 KB, 5.6 h: past the default MAX_AUDIO_SECONDS
    for name, (frames, channels) in files.items():
        sf.write(root / name, np.zeros((frames, channels), np.int16), 1, subtype="PCM_16")
    return {name: float(frames) for name, (frames, _) in files.items()}


def write_junk(path: Path, nbytes: int, seed: int = 9) -> None:
    """`nbytes` that no decoder recognises (random, in 1 MiB blocks)."""
    block = np.random.default_rng(seed).bytes(1 << 20)
    with open(path, "wb") as out:
        for _ in range(nbytes >> 20):
            out.write(block)


class HostileOrigin(OriginHandler):
    """An origin server that attacks the daemon back; see the paths in route."""

    bomb: bytes = b""
    release: threading.Event
    target: str = ""  # where /to-credentials redirects

    def route(self) -> None:
        if self.path == "/trickle.wav":  # announces 100 kB, then sends one byte a second
            self.send_response(200)
            self.send_header("Content-Length", str(TRICKLE_DECLARED_BYTES))
            self.end_headers()
            for _ in range(TRICKLE_DECLARED_BYTES):
                self.wfile.write(b"R")
                self.wfile.flush()
                if self.release.wait(1.0):
                    return
        elif self.path == "/bomb.wav":
            self.send_body(200, self.bomb, ("Content-Encoding", "gzip"))
        elif self.path == "/brotli.wav":
            self.send_body(200, b"abcd", ("Content-Encoding", "br"))
        elif self.path == "/bad-gzip.wav":
            self.send_body(200, b"\x1f\x8b" + bytes(3998), ("Content-Encoding", "gzip"))
        elif self.path == "/to-broken-ipv6":
            self.redirect("http://[::1")
        elif self.path == "/to-credentials":
            self.redirect(self.target)
        else:
            self.send_error(404)


@contextlib.contextmanager
def hostile_origin(bomb_bytes: int, target: str = "") -> Iterator[str]:
    """Serve HostileOrigin on loopback (a gzip bomb of `bomb_bytes`); yields its base URL."""
    release = threading.Event()
    attrs = {"bomb": gzip_bomb(bomb_bytes), "release": release, "target": target}
    with loopback_server(type("Hostile", (HostileOrigin,), attrs)) as url:
        try:
            yield url
        finally:
            release.set()


UNFINISHED_STARTS = (  # the ways a slow client leaves a request unfinished
    b"",  # connects, sends nothing
    b"POST /transcribe/url HT",  # half a request line
    b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: 1",  # headers without their end
    b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    b"Content-Length: 60000\r\n\r\n{\"audio_url\": \"",  # a body short of its Content-Length
)


def open_unfinished(host: str, port: int, start: bytes) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    if start:
        sock.sendall(start)
    return sock


class SlowClients:
    """Keeps `count` unfinished requests open against a server from a thread, replacing each one the
    server closes, until stop(); `closed` counts the connections the server ended."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.address = (host, port)
        self.count = count
        self.closed = 0
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def __enter__(self) -> "SlowClients":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        socks: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                while len(socks) < self.count:
                    try:
                        socks.append(open_unfinished(*self.address, UNFINISHED_STARTS[self.opened % 4]))
                        self.opened += 1
                    except OSError:
                        break
                alive = []
                for sock in socks:
                    if _ended(sock):
                        self.closed += 1
                        sock.close()
                    else:
                        alive.append(sock)
                socks = alive
                self._stop.wait(0.5)
        finally:
            for sock in socks:
                sock.close()


def _ended(sock: socket.socket) -> bool:
    """The server is done with `sock`: it closed or reset it, or answered (a 503, an error) before a request."""
    sock.setblocking(False)
    try:
        sock.recv(1 << 16)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_closed(sock: socket.socket, within: float) -> bool:
    """True once the server has closed `sock` (EOF or reset), False if it is still open after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _ended(sock):
            return True
        time.sleep(0.05)
    return False
