"""An API node's streams: each relayed to a worker node's stream server, frame for frame.

An API node (SKIP_DECODER=1) has no workers. Of the two ways to reach one, a relay through Redis
(frames in a stream, messages back in another) and a WebSocket the worker node accepts, the second is
taken: the API node opens the worker node's /v3/ws with the client's own query and key and copies
frames both ways, so the worker node runs the stream exactly as if the client had come straight to
it, close codes included, and Redis carries no audio. Worker nodes advertise their stream address and
live count in their heartbeats (daemon/shared/nodes.py); the least loaded ready one is tried first.

A worker node that dies mid-stream drops its connection without a close frame: the client gets an
Error message and close code 3005 at once, never a silent hang.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection

from daemon.shared.nodes import Nodes
from daemon.stream import protocol

log = logging.getLogger("async_engine.stream")

CONNECT_SECONDS = 5.0


def open_upstream(nodes: Nodes, request_path: str, authorization: str | None, max_size: int
                  ) -> ClientConnection | None:
    """A connection to the least loaded worker node that takes it; None when none does."""
    query = urlsplit(request_path).query
    for endpoint in nodes.stream_endpoints():
        url = f"ws://{endpoint.address}/v3/ws" + (f"?{query}" if query else "")
        try:
            return connect(url, additional_headers={"Authorization": authorization} if authorization else {},
                           open_timeout=CONNECT_SECONDS, compression=None, max_size=max_size,
                           user_agent_header="async-engine-api-node")
        except (OSError, TimeoutError, InvalidHandshake, InvalidStatus) as exc:
            log.warning("worker node stream server %s refused a stream (%s); trying the next", endpoint.address, exc)
    return None


def relay(client: ServerConnection, upstream: ClientConnection) -> tuple[int, str]:
    """Copy frames both ways until either side ends; returns the close code and reason given to the client."""
    outcome: list[tuple[int, str]] = []

    def down() -> None:  # worker node -> client
        try:
            for message in upstream:
                client.send(message)
            closed = upstream.protocol.close_rcvd
            outcome.append((closed.code, closed.reason) if closed else (protocol.NORMAL, ""))
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                outcome.append((exc.rcvd.code, exc.rcvd.reason))
            elif client.protocol.close_rcvd is None:  # the worker node vanished, not the client
                reason = "the worker node serving this stream stopped; reconnect"
                outcome.append((protocol.SERVER_ERROR, reason))
                try:
                    client.send(protocol.error(protocol.SERVER_ERROR, reason))
                except ConnectionClosed:
                    pass
        finally:
            try:
                client.close(*(outcome[0] if outcome else (protocol.NORMAL, "")))
            except Exception:
                pass

    pump = threading.Thread(target=down, name="stream-relay-down", daemon=True)
    pump.start()
    try:
        for message in client:  # client -> worker node
            upstream.send(message)
    except ConnectionClosed:
        pass
    finally:
        upstream.close()
        pump.join(15.0)
    return outcome[0] if outcome else (protocol.NORMAL, "")
