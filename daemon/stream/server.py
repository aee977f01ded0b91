"""The streaming API's listener: AssemblyAI's v3 WebSocket at /v3/ws, on ASYNC_ENGINE_STREAM_PORT.

waitress speaks no WebSocket, so streams have a port of their own, served by the `websockets`
library's threaded server (one thread per connection; a stream is a long conversation, not a
request). Everything a stream is refused for (key, capacity, parameters) is answered after the
handshake, as an Error message and a close code the SDK maps to its message, before any audio flows.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from daemon import metrics
from daemon.config import DaemonConfig
from daemon.stream import protocol
from daemon.stream.params import BadParameter, read_query
from engine.decoding.options import DecodeOptions
from engine.result import Word
from engine.text.format import TextOptions

if TYPE_CHECKING:
    from daemon.shared.nodes import Nodes, StreamEndpoint
    from daemon.stream.session import StreamSession
    from daemon.workers.dispatcher import Dispatcher

log = logging.getLogger("async_engine.stream")
logging.getLogger("websockets.server").setLevel(logging.WARNING)  # our own line per stream says more

PATH = "/v3/ws"
MAX_MESSAGE_BYTES = 256 * 1024  # a larger frame is closed by the library with 1009 (message too big)


class StreamServer:
    def __init__(self, config: DaemonConfig, dispatcher: "Dispatcher | None", nodes: "Nodes | None" = None) -> None:
        """`dispatcher`: this host's workers, which run its streams; else `nodes`: an API node's view of the worker
        nodes, to which its streams are relayed (daemon/stream/relay.py)."""
        self.config = config
        self.dispatcher = dispatcher
        self.nodes = nodes
        enabled = config.enable_auto_punctuation
        self.formatted = TextOptions(written=True, punctuation=enabled, casing=enabled)
        self.vad_session = None
        if dispatcher is not None:  # streams run here: the VAD's ONNX session, shared by every stream
            from engine.audio.live_vad import LiveVad

            self.vad_session = LiveVad.shared_session()
        self.lock = threading.Lock()
        self.sessions: dict[str, "StreamSession"] = {}
        self.admitted = 0
        self.stopped = False
        self.server: Server = serve(self._handle, config.host, config.stream_port, process_request=self._path,
                                    compression=None, max_size=MAX_MESSAGE_BYTES, open_timeout=10,
                                    server_header="async-engine")
        self.thread = threading.Thread(target=self.server.serve_forever, name="stream-server", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.socket.getsockname()[:2]
        return host, port

    @property
    def live(self) -> int:
        with self.lock:
            return self.admitted

    def endpoint(self) -> "StreamEndpoint":
        """What a worker node's heartbeat says of its streams: where API nodes reach them, how many are live."""
        from daemon.shared.nodes import StreamEndpoint

        host, port = self.address
        if host in ("0.0.0.0", "::", ""):
            host = _route_to(self.config.redis_url)
        return StreamEndpoint(f"{host}:{port}", self.live, self.config.max_streams)

    def start(self) -> None:
        metrics.stream_levels(lambda: self.live, self.config.max_streams)
        self.thread.start()

    def stop(self) -> None:
        """Close every live stream (1013: reconnect elsewhere) and stop listening; once (drain, then the exit path)."""
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            sessions = list(self.sessions.values())
        for session in sessions:
            session.stopping.set()
        deadline = time.monotonic() + 5.0
        while self.live and time.monotonic() < deadline:
            time.sleep(0.05)
        self.server.shutdown()
        self.thread.join(5.0)

    @staticmethod
    def _path(connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PATH:
            return connection.respond(404, f"the streaming API is at {PATH}\n")
        return None

    def _handle(self, connection: ServerConnection) -> None:
        started = time.monotonic()
        session_id = str(uuid.uuid4())
        query = parse_qs(urlsplit(connection.request.path).query, keep_blank_values=True)
        refusal = self._refusal(connection, query)
        if refusal is not None:
            code, reason = refusal
            metrics.stream_ended(str(code))
            log.info("stream=%s refused code=%d reason=%r", session_id, code, reason)
            connection.send(protocol.error(code, reason))
            connection.close(code, protocol.close_reason(reason))
            return
        params = read_query(query)
        if self.dispatcher is None:
            self._relay(connection, session_id, started)
            return
        from daemon.stream.session import SessionLimits, StreamSession  # the engine's audio code: not on an API node
        from engine.audio.live_vad import LiveVad

        code, audio = protocol.SERVER_ERROR, 0.0
        try:
            session = StreamSession(session_id, connection, params, self._decode,
                                    SessionLimits(self.config.max_audio_seconds, self.formatted),
                                    LiveVad(self.vad_session))
            with self.lock:
                self.sessions[session_id] = session
            code = session.run()
            audio = session.audio.received_samples / session.audio.sample_rate
        finally:
            with self.lock:
                self.sessions.pop(session_id, None)
                self.admitted -= 1
        metrics.stream_ended(str(code))
        log.info("stream=%s ended code=%d audio_s=%.3f wall_s=%.3f rate=%d encoding=%s", session_id, code, audio,
                 time.monotonic() - started, params.sample_rate, params.encoding)

    def _refusal(self, connection: ServerConnection, query: dict) -> tuple[int, str] | None:
        """Why this stream cannot start, as (close code, reason); None admits it (and takes its slot)."""
        if not self._authorized(connection.request.headers.get("Authorization"), query.get("token")):
            return protocol.NOT_AUTHORIZED, ("this server needs an API key: send `Authorization: <key>` or the "
                                             "`token` query parameter")
        try:
            read_query(query)
        except BadParameter as bad:
            return protocol.INVALID_INPUT, str(bad)
        if self.dispatcher is not None and not self.dispatcher.health()[0]:
            return protocol.UNAVAILABLE, "the server is starting or restarting its workers; retry shortly"
        with self.lock:
            if self.admitted >= self.config.max_streams:
                return protocol.TOO_MANY_STREAMS, (f"this server takes {self.config.max_streams} streams at once "
                                                   "(ASYNC_ENGINE_MAX_STREAMS); retry later")
            self.admitted += 1
        return None

    def _relay(self, connection: ServerConnection, session_id: str, started: float) -> None:
        """An API node's stream: run by a worker node, frames copied both ways."""
        from daemon.stream.relay import open_upstream, relay

        assert self.nodes is not None
        try:
            upstream = open_upstream(self.nodes, connection.request.path,
                                     connection.request.headers.get("Authorization"), MAX_MESSAGE_BYTES)
            if upstream is None:
                code, reason = protocol.UNAVAILABLE, "no worker node takes a stream now; retry shortly"
                connection.send(protocol.error(code, reason))
                connection.close(code, protocol.close_reason(reason))
            else:
                log.info("stream=%s relayed to %s", session_id, upstream.remote_address)
                code, reason = relay(connection, upstream)
        finally:
            with self.lock:
                self.admitted -= 1
        metrics.stream_ended(str(code))
        log.info("stream=%s ended code=%d wall_s=%.3f relayed=1", session_id, code, time.monotonic() - started)

    def _authorized(self, header: str | None, token: list[str] | None) -> bool:
        key = self.config.api_key
        if key is None:
            return True
        header = (header or "").strip()
        scheme, _, rest = header.partition(" ")
        given = [rest.strip() if scheme.lower() == "bearer" else header, *(token or [])]
        return any(g and hmac.compare_digest(g.encode(), key.encode()) for g in given)

    def _decode(self, uid: str, audio: np.ndarray, options: DecodeOptions, timeout: float, urgent: bool) -> list[Word]:
        from daemon.workers.messages import TURN, TURN_END

        assert self.dispatcher is not None
        transcribed = self.dispatcher.submit(uid, audio[None, :], timeout, options, TURN_END if urgent else TURN)
        return transcribed.channels[0]


def _route_to(redis_url: str | None) -> str:
    """This host's address on the way to Redis: the one other nodes of the cluster reach it by."""
    import socket

    target = urlsplit(redis_url or "redis://127.0.0.1:6379")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target.hostname or "127.0.0.1", target.port or 6379))  # UDP: no packet is sent
        return probe.getsockname()[0]
