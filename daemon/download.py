"""Fetch a customer's audio_url, bounded in time, size and redirects.

The origin is outside our control: it may not resolve, refuse, answer an error page, stall
after the headers, redirect forever or send gigabytes. Each of these ends as an ApiError that
names the URL and the cause in plain words, and none of them may hold a transcription slot longer
than the limits allow. There are no retries: the customer's server decides what its errors mean.
"""

from __future__ import annotations

import socket
import time
from http import HTTPStatus
from typing import Iterator
from urllib.parse import urlsplit

import requests
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


def fetch(url: str, limits: DownloadLimits, deadline: float | None = None) -> bytes:
    """The body at `url` (http or https only); `deadline` (time.monotonic()) bounds the whole transfer."""
    _check_url(url)
    with requests.Session() as session:
        session.max_redirects = limits.max_redirects
        session.trust_env = False  # a proxy from the environment would hide the address we must check
        adapter = _GuardedAdapter(limits.addresses)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            response = session.get(url, stream=True, timeout=(limits.connect_timeout, limits.read_timeout),
                                   headers={"User-Agent": _USER_AGENT})
        except AddressRefused as exc:
            raise ApiError(ADDRESS_NOT_ALLOWED, f"Download error to {url}, the server may not download from "
                                                f"{exc}; ask the operator if this address should be allowed") from None
        except requests.RequestException as exc:
            raise _request_error(url, exc, limits) from exc
        with response:
            if response.status_code >= 400:
                raise _failed(url, f"the server answered HTTP {response.status_code} {_reason(response)}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise _too_large(url, limits, f"it declares {int(declared)} bytes")
            try:
                return _read_bounded(url, response, limits, deadline)
            except requests.RequestException as exc:
                raise _request_error(url, exc, limits) from exc


class AddressRefused(Exception):
    """A connection reached an address the AddressPolicy refuses (deliberately not an OSError,
    so neither urllib3 nor requests retries or rewraps it)."""


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connections check the address they reached before sending a byte.

    Every connection (so every redirect hop) is checked twice: each address its host resolves to
    before connecting, so a refused address never sees a packet, and the socket's peer after, so
    a DNS answer that changes between the two cannot slip through.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": self._checked(HTTPConnection)}),
            "https": type("GuardedPool", (HTTPSConnectionPool,), {"ConnectionCls": self._checked(HTTPSConnection)}),
        }

    def _checked(self, base: type) -> type:
        policy = self.policy

        def _new_conn(connection):
            host = connection.host.strip("[]")
            for address in _resolved(host, connection.port):  # refuse before a packet leaves
                if (refusal := policy.refusal(host, address)) is not None:
                    raise AddressRefused(refusal)
            sock = base._new_conn(connection)
            refusal = policy.refusal(host, sock.getpeername()[0])  # and where it really went
            if refusal is not None:
                sock.close()
                raise AddressRefused(refusal)
            return sock

        return type(f"Guarded{base.__name__}", (base,), {"_new_conn": _new_conn})


def _resolved(host: str, port: int) -> list[str]:
    """Every address the host name resolves to; none when it does not (the connect then says why)."""
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError):
        return []


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ApiError(INVALID_PARAMETER, f"audio_url must be an http or https URL; {url!r} has {scheme}")
    if not parts.hostname:
        raise ApiError(INVALID_PARAMETER, f"audio_url {url!r} has no host name")


def _read_bounded(url: str, response: requests.Response, limits: DownloadLimits, deadline: float | None) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
        body += chunk
        if len(body) > limits.max_bytes:
            raise _too_large(url, limits, "it sent more than that")
        if deadline is not None and time.monotonic() > deadline:
            raise ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, the transfer did not finish within "
                                               "REQUEST_TIMEOUT_SECONDS; serve the file faster or send a shorter one")
    return bytes(body)


def _request_error(url: str, exc: requests.RequestException, limits: DownloadLimits) -> ApiError:
    """Translate requests' exception zoo into one plain reason; walks the cause chain for DNS/refusals."""
    if isinstance(exc, requests.TooManyRedirects):
        return _failed(url, f"more than {limits.max_redirects} redirects (DOWNLOAD_MAX_REDIRECTS)")
    if isinstance(exc, requests.ConnectTimeout):
        return ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, could not connect within "
                                            f"{limits.connect_timeout:g} s (DOWNLOAD_CONNECT_TIMEOUT)")
    causes = list(_cause_chain(exc))
    if isinstance(exc, requests.ReadTimeout) or any(isinstance(c, (ReadTimeoutError, socket.timeout)) for c in causes):
        return ApiError(DOWNLOAD_TIMED_OUT, f"Download error to {url}, the server sent nothing for "
                                            f"{limits.read_timeout:g} s (DOWNLOAD_READ_TIMEOUT)")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return _failed(url, f"the URL (or a redirect) is not a valid http(s) URL: {exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        return _failed(url, "the TLS/SSL handshake failed (certificate or protocol problem)")
    if any(isinstance(c, (NameResolutionError, socket.gaierror)) for c in causes):
        return _failed(url, "the host name could not be resolved (DNS lookup failed)")
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return _failed(url, "the connection was refused (nothing listens on that host and port)")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return _failed(url, "the connection broke off or the body was malformed mid-transfer")
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


def _failed(url: str, reason: str) -> ApiError:
    return ApiError(DOWNLOAD_FAILED, f"Download error to {url}, {reason}")


def _too_large(url: str, limits: DownloadLimits, detail: str) -> ApiError:
    return ApiError(AUDIO_TOO_LARGE, f"Download error to {url}, the file is larger than the "
                                     f"{limits.max_bytes} bytes allowed (DOWNLOAD_MAX_BYTES): {detail}")
