"""Fetch a customer's audio_url, bounded in time, size and redirects.

The origin is outside our control: it may not resolve, refuse, answer an error page, stall
after the headers, trickle a byte a second, redirect forever or to a malformed URL, or send
gigabytes, compressed or not. Each of these ends as an ApiError that names the URL (with its
credentials masked, see daemon/redact.py) and the cause in plain words, and none of them may hold
a transcription slot past the request's deadline: a watchdog shuts the download's sockets down
when it comes, so no read, however slow its bytes arrive, can outlast it. There are no retries:
the customer's server decides what its errors mean.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from typing import Iterator
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, ReadTimeoutError

from daemon.address_policy import AddressPolicy
from daemon.config import DownloadLimits
from daemon.errors import (ADDRESS_NOT_ALLOWED, AUDIO_TOO_LARGE, DOWNLOAD_FAILED, DOWNLOAD_TIMED_OUT,
                           INVALID_PARAMETER, ApiError)

_CHUNK_BYTES = 1 << 16
_USER_AGENT = "async-engine/0.1"
_DECODERS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib wbits per Content-Encoding
# getaddrinfo has no timeout of its own; it runs here so a slow resolver costs a thread, not the deadline.
_RESOLVER = ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")


def fetch(url: str, limits: DownloadLimits, deadline: float | None = None) -> bytearray:
    """The body at `url` (http or https only); `deadline` (time.monotonic()) bounds the whole transfer."""
    check_url(url)
    if deadline is None:
        deadline = time.monotonic() + 24 * 3600
    if time.monotonic() >= deadline:
        raise _past_deadline(url)
    with _guarded_session(limits, deadline) as (session, watchdog):
        return _get(session, url, limits, watchdog)


def post_json(url: str, body: dict, headers: dict[str, str], limits: DownloadLimits, seconds: float) -> int:
    """POST `body` to `url` under the download rules (addresses, timeouts, no proxy), not following
    redirects; returns the answer's status. Raises ApiError like fetch when there is no answer."""
    check_url(url, "webhook_url")
    with _guarded_session(limits, time.monotonic() + seconds) as (session, watchdog):
        try:
            with session.post(url, json=body, headers={"User-Agent": _USER_AGENT, **headers}, allow_redirects=False,
                              timeout=(limits.connect_timeout, limits.read_timeout), stream=True) as response:
                return response.status_code
        except AddressRefused as exc:
            raise ApiError(ADDRESS_NOT_ALLOWED, f"Webhook error to {url}, the server may not connect to {exc}") from None
        except _TRANSFER_ERRORS as exc:
            raise _request_error(url, exc, limits, watchdog) from None


@contextlib.contextmanager
def _guarded_session(limits: DownloadLimits, deadline: float) -> Iterator[tuple[requests.Session, _Watchdog]]:
    """A session whose every connection the address policy checks and the deadline's watchdog ends."""
    watchdog = _Watchdog(deadline)
    try:
        with requests.Session() as session:
            session.max_redirects = limits.max_redirects
            session.trust_env = False  # a proxy from the environment would hide the address we must check
            adapter = _GuardedAdapter(limits, watchdog)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            yield session, watchdog
    finally:
        watchdog.cancel()


def _get(session: requests.Session, url: str, limits: DownloadLimits, watchdog: _Watchdog) -> bytearray:
    try:
        response = session.get(url, stream=True, timeout=(limits.connect_timeout, limits.read_timeout),
                               headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    except ApiError:
        raise
    except AddressRefused as exc:
        raise ApiError(ADDRESS_NOT_ALLOWED, f"Download error to {url}, the server may not download from "
                                            f"{exc}; ask the operator if this address should be allowed") from None
    except _TRANSFER_ERRORS as exc:
        raise _request_error(url, exc, limits, watchdog) from None
    with response:
        if response.status_code >= 400:
            raise _failed(url, f"the server answered HTTP {response.status_code} {_reason(response)}")
        try:
            body = _read_bounded(url, response, limits)
        except ApiError:
            raise
        except _TRANSFER_ERRORS as exc:
            raise _request_error(url, exc, limits, watchdog) from None
    if watchdog.expired:  # a body that ends when its connection does looks complete when the watchdog cut it
        raise _past_deadline(url)
    return body


class AddressRefused(Exception):
    """A connection reached an address the AddressPolicy refuses (deliberately not an OSError,
    so neither urllib3 nor requests retries or rewraps it)."""


class _Watchdog:
    """Shuts down every socket of one download when its deadline passes.

    A read timeout restarts with every byte, so an origin sending one byte a second is never
    "silent"; shutting the socket down wakes any read blocked on it at once, whatever it waits for.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connections go only to addresses the policy allows, within the deadline.

    Every connection (so every redirect hop) resolves its host once, within the connect timeout and
    the deadline, checks every address before connecting to it (a refused address never sees a
    packet), connects to the checked address itself (no second lookup), and checks the socket's
    peer after, so a DNS answer that changes cannot slip through. Its socket joins the watchdog.
    """

    def __init__(self, limits: DownloadLimits, watchdog: _Watchdog) -> None:
        self.limits = limits
        self.watchdog = watchdog
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": self._checked(HTTPConnection)}),
            "https": type("GuardedPool", (HTTPSConnectionPool,), {"ConnectionCls": self._checked(HTTPSConnection)}),
        }

    def _checked(self, base: type) -> type:
        policy: AddressPolicy = self.limits.addresses
        limits, watchdog = self.limits, self.watchdog

        def _new_conn(connection):
            host = connection.host.strip("[]")
            addresses = _resolve(host, connection.port, min(limits.connect_timeout, watchdog.remaining()))
            for address in addresses:  # refuse before a packet leaves
                if (refusal := policy.refusal(host, address)) is not None:
                    raise AddressRefused(refusal)
            connection.timeout = max(0.001, min(limits.connect_timeout, watchdog.remaining()))
            last_error: Exception | None = None
            for address in addresses:
                connection._dns_host = address  # urllib3 connects to this; TLS still checks `host`
                try:
                    sock = base._new_conn(connection)
                    break
                except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
                    last_error = exc
            else:
                raise last_error or urllib3.exceptions.NewConnectionError(connection, "no address to connect to")
            refusal = policy.refusal(host, sock.getpeername()[0])  # and where it really went
            if refusal is not None:
                sock.close()
                raise AddressRefused(refusal)
            sock.settimeout(limits.read_timeout)
            watchdog.watch(sock)
            return sock

        return type(f"Guarded{base.__name__}", (base,), {"_new_conn": _new_conn})


class _ResolveTimeout(Exception):
    """The host name did not resolve within the connect timeout or the deadline."""


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, within `timeout` seconds."""
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(0.0, timeout))
    except FutureTimeout:
        future.cancel()
        raise _ResolveTimeout(host) from None
    except (socket.gaierror, UnicodeError) as exc:
        raise NameResolutionError(host, None, exc) from None  # type: ignore[arg-type]
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_url(url: str, field: str = "audio_url") -> None:
    """An http(s) URL with a host, or ApiError (400, code 4) naming `field` and what is wrong with it."""
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # .port raises on a port that is not a number in range
    except ValueError as exc:
        raise ApiError(INVALID_PARAMETER, f"{field} {_quoted(url)} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ApiError(INVALID_PARAMETER, f"{field} must be an http or https URL; {_quoted(url)} has {scheme}")
    if not hostname:
        raise ApiError(INVALID_PARAMETER, f"{field} {_quoted(url)} has no host name")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ApiError(INVALID_PARAMETER, f"{field} {_quoted(url)} holds spaces or control characters; encode them "
                                          "(%20, ...)")
    try:
        hostname.encode("idna")
    except UnicodeError:
        raise ApiError(INVALID_PARAMETER, f"{field} {_quoted(url)} has a host name that is not a valid DNS name") \
            from None


def _quoted(url: str, limit: int = 300) -> str:
    """The URL as an error quotes it: bounded, so a 60 kB URL does not come back in full."""
    return repr(url if len(url) <= limit else url[:limit] + "...")


def _read_bounded(url: str, response: requests.Response, limits: DownloadLimits) -> bytearray:
    """The body, never holding more than DOWNLOAD_MAX_BYTES (+ one chunk) whatever its encoding.

    Compressed bodies (gzip, deflate) are inflated here, at most one chunk's worth of output per
    step, so a small bomb cannot expand past the limit in memory; other encodings are refused.
    """
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity") and encoding not in _DECODERS:
        raise _failed(url, f"the server sent the file with Content-Encoding {encoding!r}, which this server "
                           "does not decode; serve it uncompressed")
    declared = response.headers.get("Content-Length", "")
    if encoding in ("", "identity") and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(url, limits, f"it declares {int(declared)} bytes")
    body = bytearray()
    inflate = zlib.decompressobj(_DECODERS[encoding]) if encoding in _DECODERS else None
    for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):
        if inflate is None:
            _append(url, body, chunk, limits, "it sent more than that")
            continue
        try:
            while chunk:
                _append(url, body, inflate.decompress(chunk, _CHUNK_BYTES), limits, "it inflates to more than that")
                chunk = inflate.unconsumed_tail
        except zlib.error:
            raise _failed(url, f"the body is not valid {encoding} data (Content-Encoding {encoding})") from None
    return body


def _append(url: str, body: bytearray, data: bytes, limits: DownloadLimits, too_large: str) -> None:
    if len(body) + len(data) > limits.max_bytes:
        body.clear()  # the refusal must not keep hundreds of MB alive in this frame
        raise _too_large(url, limits, too_large)
    body += data


# What talking to an origin can raise: everything here is the origin's doing (or the network's),
# never a fault of ours, so it answers 502/504 rather than 500.
_TRANSFER_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
                    ValueError, _ResolveTimeout)


def _request_error(url: str, exc: BaseException, limits: DownloadLimits, watchdog: _Watchdog) -> ApiError:
    """Translate the HTTP stack's exception zoo into one plain reason; walks the cause chain for DNS/refusals."""
    causes = list(_cause_chain(exc))
    if watchdog.expired:
        return _past_deadline(url)
    if isinstance(exc, requests.TooManyRedirects):
        return _failed(url, f"more than {limits.max_redirects} redirects (DOWNLOAD_MAX_REDIRECTS)")
    if any(isinstance(c, _ResolveTimeout) for c in causes):
        return ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, the host name did not resolve within "
                                            f"{limits.connect_timeout:g} s (DOWNLOAD_CONNECT_TIMEOUT)")
    if isinstance(exc, requests.ConnectTimeout) or any(
            isinstance(c, urllib3.exceptions.ConnectTimeoutError)
            and not isinstance(c, urllib3.exceptions.NewConnectionError) for c in causes):
        return ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, could not connect within "
                                            f"{limits.connect_timeout:g} s (DOWNLOAD_CONNECT_TIMEOUT)")
    if isinstance(exc, requests.ReadTimeout) or any(isinstance(c, (ReadTimeoutError, socket.timeout)) for c in causes):
        return ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, the server sent nothing for "
                                            f"{limits.read_timeout:g} s (DOWNLOAD_READ_TIMEOUT)")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema, urllib3.exceptions.LocationValueError, ValueError)):
        return _failed(url, "the URL, or one the server redirected to, is not a valid http(s) URL")
    if isinstance(exc, requests.exceptions.SSLError):
        return _failed(url, "the TLS/SSL handshake failed (certificate or protocol problem)")
    if any(isinstance(c, (NameResolutionError, socket.gaierror)) for c in causes):
        return _failed(url, "the host name could not be resolved (DNS lookup failed)")
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return _failed(url, "the connection was refused (nothing listens on that host and port)")
    if any(isinstance(c, OSError) and c.errno in (101, 113) for c in causes):  # ENETUNREACH, EHOSTUNREACH
        return _failed(url, "the host is unreachable from this server (no route)")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
                        urllib3.exceptions.ProtocolError, http.client.HTTPException)):
        return _failed(url, "the connection broke off or the response was malformed mid-transfer")
    return _failed(url, f"the connection failed ({type(exc).__name__})")


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        stack.extend(e for e in nested if isinstance(e, BaseException))


def _reason(response: requests.Response) -> str:
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return response.reason or ""


def _past_deadline(url: str) -> ApiError:
    return ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, the transfer did not finish within "
                                        "REQUEST_TIMEOUT_SECONDS; serve the file faster or send a shorter one")


def _failed(url: str, reason: str) -> ApiError:
    return ApiError(DOWNLOAD_FAILED, f"Download error to {url}, {reason}")


def _too_large(url: str, limits: DownloadLimits, detail: str) -> ApiError:
    return ApiError(AUDIO_TOO_LARGE, f"Download error to {url}, the file is larger than the "
                                     f"{limits.max_bytes} bytes allowed (DOWNLOAD_MAX_BYTES): {detail}")
