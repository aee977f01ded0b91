"""waitress, hardened for clients that misbehave on purpose.

waitress's defaults suit a trusted network: 100 connections, after which it stops accepting; a
partial request kept until it has been silent for 120 s (a byte now and then keeps it forever);
and its own errors (malformed HTTP, oversized headers or bodies) answered in text/plain. Behind a
customer's firewall the clients are other programs, some broken, some hostile. Here:

- every connection is bounded in time: a request (head and body) must arrive complete within
  HTTP_REQUEST_READ_TIMEOUT of its first byte (of the accept, for a connection's first request); a
  response the client does not read is dropped after as long; an idle keep-alive connection is
  closed after HTTP_IDLE_TIMEOUT. Requests in service are bounded by the app (REQUEST_TIMEOUT_SECONDS).
- at HTTP_MAX_CONNECTIONS, a new connection evicts an unproductive one (no request in service):
  the oldest of the peer address that holds the most, so one client cannot lock out the others,
  passing over one whose request already waits unread in its socket;
  only when every connection is serving a request is the newcomer refused, with a JSON 503.
- requests are bounded in bytes: the head to MAX_HEADER_BYTES, the body to what its path accepts (a
  JSON body 64 KiB, an upload DOWNLOAD_MAX_BYTES); an upload's time allowance grows with the bytes it
  has sent (MIN_UPLOAD_BYTES_PER_SECOND), so a slow link can upload a large file but a trickle cannot.
- every error waitress answers itself is API.md's JSON error with a uid, and logged like any request.
  A client may still be sending when it comes (a 300 KB header, a body over the limit): closing at
  once would reset the connection and lose the answer, so the server half-closes, reads and drops
  what still arrives for LINGER_SECONDS, then closes (what web servers call a lingering close).
- /health (and the other cheap answers) run on threads of their own, so a full pool of
  transcriptions waiting for a slot cannot make a load balancer think the server is dead.
- closed and evicted connections are counted and logged, at most one line every 10 s.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import Counter
from typing import Callable, Mapping

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error, RequestEntityTooLarge, RequestHeaderFieldsTooLarge

from daemon import logs
from daemon.config import HttpLimits
from daemon.errors import AUDIO_TOO_LARGE, INTERNAL_FAILURE, MALFORMED_REQUEST, ApiError, service_not_ready
from engine.result import new_uid

log = logging.getLogger("async_engine.http")
ErrorBody = Callable[[str, ApiError, str], dict]  # (path, error, uid) -> the JSON body

MAX_HEADER_BYTES = 32 * 1024  # request line and headers; browsers and SDKs send under 8 KiB
FAST_PATHS = frozenset({"/health", "/openapi.json"})  # answered from memory, never wait for a slot
FAST_THREADS = 2
REPORT_EVERY_SECONDS = 10.0
ARRIVED_KEY = "async_engine.arrived"  # WSGI environ: time.time() of the request's first byte
MIN_UPLOAD_BYTES_PER_SECOND = 64 * 1024  # each 64 KiB of body received buys a second more to send the rest
LINGER_SECONDS = 2.0  # after an error answer, input is read and dropped this long so the client sees the answer


class HttpServer:
    """waitress's listeners and task threads with the limits above; run() until a KeyboardInterrupt."""

    def __init__(self, app, host: str, port: int, threads: int, limits: HttpLimits, max_body_bytes: int,
                 uploads: Mapping[str, int], error_body: ErrorBody) -> None:
        """`uploads`: the paths that take a body larger than max_body_bytes, and how large; `error_body`:
        the app's JSON for an error on a path, for the errors answered here."""
        self.limits = limits
        settings = dict(
            host=host, port=port, threads=threads, ident="async-engine",
            connection_limit=limits.max_connections + 16,  # never reached: _Listener evicts or refuses first
            cleanup_interval=1, channel_timeout=max(limits.read_timeout, limits.idle_timeout),
            max_request_header_size=MAX_HEADER_BYTES, max_request_body_size=max_body_bytes + 1,
            asyncore_use_poll=True,  # select() cannot watch descriptors past 1023
        )
        self.adj = Adjustments(**settings)
        upload_adj = {path: Adjustments(**{**settings, "max_request_body_size": size + 1})
                      for path, size in uploads.items()}
        parser = type("Parser", (_Parser,), {"upload_adj": upload_adj})
        self.map: dict = {}
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(threads)
        self.fast = ThreadedTaskDispatcher()
        self.fast.set_thread_count(FAST_THREADS)
        self.guard = _ConnectionGuard(limits)
        channel = type("Channel", (_Channel,), {"parser_class": parser})
        self.listeners = [
            _Listener(app, self.map, dispatcher=self.dispatcher, adj=self.adj, sockinfo=sockinfo,
                      guard=self.guard, fast=self.fast, channel=channel, error_body=error_body)
            for sockinfo in self.adj.listen
        ]
        self.guard.listeners = self.listeners

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(listener.effective_host, int(listener.effective_port)) for listener in self.listeners]

    def run(self) -> None:
        try:
            wasyncore.loop(timeout=self.adj.asyncore_loop_timeout, map=self.map, use_poll=True)
        except (SystemExit, KeyboardInterrupt):
            pass

    def close(self) -> None:
        self.dispatcher.shutdown()
        self.fast.shutdown()
        wasyncore.close_all(self.map)


class _ConnectionGuard:
    """The connection policy shared by every listener: deadlines, eviction, and its log line."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.listeners: list[_Listener] = []
        self.closed: Counter[str] = Counter()  # reason -> connections, since the last report
        self.peers: Counter[str] = Counter()  # peer address -> connections closed or refused
        self.reported_at = 0.0

    def channels(self) -> list[_Channel]:
        return [channel for listener in self.listeners for channel in listener.active_channels.values()]

    def expire(self, now: float) -> None:
        """Close connections past their deadline (called about once a second by the main loop)."""
        for channel in self.channels():
            reason = channel.overdue(now, self.limits)
            if reason == "lingered":
                channel.lingering_until = 0.0
                channel.handle_close()
            elif reason is not None and not channel.will_close:
                channel.will_close = True
                if reason != "idle":
                    self._count(reason, channel)
        self._report(now)

    def admit(self, addr: object) -> bool:
        """Make room for a new connection; False when every connection is serving a request."""
        channels = self.channels()
        if len(channels) < self.limits.max_connections:
            return True
        unproductive = [c for c in channels if not c.busy and not c.will_close]
        if not unproductive:
            self._count("refused", None, addr)
            return False
        heaviest = Counter(c.peer for c in unproductive).most_common(1)[0][0]
        candidates = sorted((c for c in unproductive if c.peer == heaviest), key=lambda c: c.waiting_since)
        # A connection whose request is already in its socket buffer, not read yet because this loop was
        # busy accepting (a burst), is about to be served: evict the oldest that is not.
        victim = next((c for c in candidates if not c.input_pending()), candidates[0])
        self._count("evicted", victim)
        victim.handle_close()
        return True

    def _count(self, reason: str, channel: _Channel | None, addr: object = None) -> None:
        self.closed[reason] += 1
        self.peers[channel.peer if channel is not None else _peer(addr)] += 1

    def _report(self, now: float) -> None:
        if not self.closed or now - self.reported_at < REPORT_EVERY_SECONDS:
            return
        limits, parts = self.limits, []
        if self.closed["incomplete"]:
            parts.append(f"closed {self.closed['incomplete']} that sent no complete request within "
                         f"{limits.read_timeout:g} s (HTTP_REQUEST_READ_TIMEOUT)")
        if self.closed["unread"]:
            parts.append(f"closed {self.closed['unread']} that did not read their response within "
                         f"{limits.read_timeout:g} s")
        if self.closed["evicted"]:
            parts.append(f"evicted {self.closed['evicted']} idle or incomplete ones to admit new clients at the "
                         f"HTTP_MAX_CONNECTIONS limit ({limits.max_connections})")
        if self.closed["refused"]:
            parts.append(f"refused {self.closed['refused']} new ones with 503: all {limits.max_connections} "
                         "were serving requests")
        peers = ", ".join(f"{peer} ({count})" for peer, count in self.peers.most_common(3))
        log.warning("slow or excess connections: %s; most from %s", "; ".join(parts), peers)
        self.closed.clear()
        self.peers.clear()
        self.reported_at = now


def _peer(addr: object) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else "-"


class _JsonErrorTask(ErrorTask):
    """waitress's answer to a request it could not parse (or to an app that crashed) as API.md's JSON."""

    def execute(self) -> None:
        path = getattr(self.request, "path", None) or ""
        error = _api_error(self.request.error, self.request.adj, upload=path in self.request.upload_adj)
        uid = new_uid()
        body = json.dumps(self.channel.server.error_body(path, error, uid)).encode()
        self.status = f"{error.status} {self.request.error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.channel.linger_on_close = True
        self.content_length = len(body)
        self.write(body)
        parsed = not isinstance(self.request.error, RequestHeaderFieldsTooLarge)  # else waitress made up "GET /"
        method, path = (getattr(self.request, "command", None), getattr(self.request, "path", None)) if parsed else (
            None, None)  # a start line that did not parse leaves neither
        logs.request_line(uid, method, path, error.status, error.code, None, time.time() - self.channel.waiting_since,
                          error.description)


def _api_error(error: Error, adj: Adjustments, upload: bool) -> ApiError:
    if isinstance(error, RequestHeaderFieldsTooLarge):
        return ApiError(MALFORMED_REQUEST, f"the request line and headers are larger than "
                                           f"{adj.max_request_header_size} bytes", status=431)
    if isinstance(error, RequestEntityTooLarge) and upload:
        return ApiError(AUDIO_TOO_LARGE, f"the upload is larger than the {adj.max_request_body_size - 1} bytes this "
                                         "path takes (DOWNLOAD_MAX_BYTES, and room for a form's other fields)")
    if isinstance(error, RequestEntityTooLarge):
        return ApiError(MALFORMED_REQUEST, f"the request body is larger than {adj.max_request_body_size - 1} bytes",
                        status=413)
    if error.code == 500:
        return ApiError(INTERNAL_FAILURE, "an unexpected server error occurred while answering this request")
    if error.code == 501:
        return ApiError(MALFORMED_REQUEST, f"the request uses an HTTP feature this server does not support: "
                                           f"{error.body}", status=501)
    return ApiError(MALFORMED_REQUEST, f"the HTTP request is malformed: {error.body}", status=error.code)


class _Parser(HTTPRequestParser):
    """waitress's request parser with the body limit of the request's path, known once its head is read."""

    upload_adj: dict[str, Adjustments] = {}

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        self.adj = self.upload_adj.get(self.path, self.adj)


class _Task(WSGITask):
    """Tells the app when its request arrived: REQUEST_TIMEOUT_SECONDS counts the wait for a thread too."""

    def get_environment(self) -> dict:
        environ = super().get_environment()
        environ[ARRIVED_KEY] = getattr(self.request, "arrived", None)
        return environ


class _Channel(HTTPChannel):
    """A connection that knows since when it has been waiting for its client."""

    task_class = _Task
    error_task_class = _JsonErrorTask

    def __init__(self, server, sock, addr, adj, map=None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.peer = _peer(addr)
        self.request_started: float | None = self.creation_time  # the first request's clock starts at accept
        self.linger_on_close = False  # set by an error answer: the client may still be sending
        self.lingering_until: float | None = None

    def handle_close(self) -> None:
        """Close, or after an error answer half-close and drop input for LINGER_SECONDS first."""
        if self.linger_on_close and self.lingering_until is None and self.connected and not self.total_outbufs_len:
            try:
                self.socket.shutdown(socket.SHUT_WR)  # the answer is complete: the client reads it, then EOF
            except OSError:
                super().handle_close()
                return
            self.lingering_until = time.time() + LINGER_SECONDS
            self.will_close = False
            return
        super().handle_close()

    def readable(self) -> bool:
        return True if self.lingering_until is not None else super().readable()

    def writable(self) -> bool:
        return False if self.lingering_until is not None else super().writable()

    def handle_read(self) -> None:
        if self.lingering_until is None:
            super().handle_read()
            return
        try:
            self.recv(self.adj.recv_bytes)  # dropped; on EOF or a reset wasyncore calls handle_close itself
        except OSError:
            super().handle_close()

    @property
    def busy(self) -> bool:
        """A request is being served or queued for a thread: its time is the app's to bound."""
        return bool(self.requests)

    def input_pending(self) -> bool:
        """Bytes from the client wait in the socket, unread."""
        try:
            return bool(self.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # nothing waiting (EAGAIN), or the connection is broken: a fine victim either way
            return False

    @property
    def waiting_since(self) -> float:
        return self.request_started if self.request_started is not None else self.last_activity

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.time()
        started = self.request_started
        accepted = super().received(data)
        for request in self.requests:
            if not hasattr(request, "arrived"):
                request.arrived = started
        if self.request is None:
            self.request_started = None
        return accepted

    def overdue(self, now: float, limits: HttpLimits) -> str | None:
        """Why this connection must close now ("incomplete", "unread", "idle", "lingered"), or None."""
        if self.lingering_until is not None:
            return "lingered" if now > self.lingering_until else None
        if self.busy:
            return None
        if self.total_outbufs_len:
            return "unread" if now - self.last_activity > limits.read_timeout else None
        if self.request_started is not None:
            received = getattr(self.request, "body_bytes_received", 0)
            allowed = limits.read_timeout + received / MIN_UPLOAD_BYTES_PER_SECOND
            return "incomplete" if now - self.request_started > allowed else None
        return "idle" if now - self.last_activity > limits.idle_timeout else None


class _Listener(TcpWSGIServer):
    """One listening socket: admits connections through the guard and routes cheap requests to the fast lane."""

    def __init__(self, app, map, *, dispatcher, adj, sockinfo, guard: _ConnectionGuard,
                 fast: ThreadedTaskDispatcher, channel: type[_Channel], error_body: ErrorBody) -> None:
        self.guard = guard
        self.fast = fast
        self.channel_class = channel
        self.error_body = error_body
        super().__init__(app, map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)

    def maintenance(self, now: float) -> None:
        if self is self.guard.listeners[0]:  # one sweep for all listeners
            self.guard.expire(now)

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:
            return  # the client gave up between connect and accept
        if not self.guard.admit(addr):
            _refuse(conn, self.error_body)
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def add_task(self, channel: _Channel) -> None:
        request = channel.requests[0]
        lane = self.fast if request.error is not None or request.path in FAST_PATHS else self.task_dispatcher
        lane.add_task(channel)


def _refuse(conn: socket.socket, error_body: ErrorBody) -> None:
    """Answer a connection we cannot admit without reading its request, then close it."""
    error = service_not_ready("the server has as many connections as it accepts (HTTP_MAX_CONNECTIONS), all "
                              "serving requests; retry shortly")
    body = json.dumps(error_body("", error, new_uid())).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {error.retry_after}\r\nConnection: close\r\n\r\n").encode()
    try:
        conn.setblocking(False)
        conn.send(head + body)
    except OSError:
        pass
    finally:
        conn.close()

