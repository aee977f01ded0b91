"""Worker nodes as Redis sees them: heartbeats, capacity and load, slots, and taking over the dead.

A worker node beats every WORKER_NODE_TIMEOUT_SECONDS / 5: its hash (capacity, host, pid, ready)
and its score in ae:nodes, set to Redis's own clock so hosts' clocks never matter. A node whose
last beat is older than WORKER_NODE_TIMEOUT_SECONDS is dead; the next live node to notice takes a
lock and moves its jobs back to the shared queue (or ends them in error after their second start).

Slots: a node's running set (ae:node:<node>:running) holds the ids of the jobs it transcribes, at
most its capacity. An API node reserves a slot for a synchronous job and hands it to that node in
one script (RESERVE), so REJECT_OVER_PARALLEL answers 423 only when every live node is full; a node
takes a slot for a queued job the same way (TAKE). Sets, not counters: releasing twice is harmless.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import redis

from daemon.shared import keys

log = logging.getLogger("async_engine.nodes")

# ARGV: oldest live beat offset (s), job id. Picks the ready live node with the most free slots,
# adds the job to its running set and its sync stream; returns the node, or nil when all are full.
_RESERVE = """
local now = redis.call('TIME')
local oldest = tonumber(now[1]) + tonumber(now[2]) / 1e6 - tonumber(ARGV[1])
local best, best_free = nil, 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], oldest, '+inf')) do
  local info = redis.call('HMGET', 'ae:node:' .. node, 'capacity', 'ready')
  if info[2] == '1' then
    local free = tonumber(info[1]) - redis.call('SCARD', 'ae:node:' .. node .. ':running')
    if free > best_free then best, best_free = node, free end
  end
end
if not best then return nil end
redis.call('SADD', 'ae:node:' .. best .. ':running', ARGV[2])
redis.call('XADD', 'ae:node:' .. best .. ':sync', '*', 'job', ARGV[2])
return best
"""

# KEYS: running set. ARGV: capacity, job id. 1 when the job holds a slot (already, or now).
_TAKE = """
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
return 1
"""

# KEYS: nodes zset, node hash. ARGV: node id, then field/value pairs. Returns Redis's clock.
_BEAT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('ZADD', KEYS[1], t, ARGV[1])
return tostring(t)
"""


@dataclass(frozen=True)
class NodeView:
    """A worker node as /health lists it."""

    node: str
    host: str
    pid: int
    capacity: int
    running: int
    ready: bool
    heartbeat_age_s: float

    def as_dict(self) -> dict:
        return {"node": self.node, "host": self.host, "pid": self.pid, "capacity": self.capacity,
                "running": self.running, "ready": self.ready, "heartbeat_age_s": round(self.heartbeat_age_s, 3)}


@dataclass(frozen=True)
class StreamEndpoint:
    """A worker node's streaming API as its heartbeat tells it."""

    address: str  # host:port that other hosts reach
    live: int
    limit: int  # its ASYNC_ENGINE_MAX_STREAMS


def new_node_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{os.urandom(3).hex()}"


class Nodes:
    def __init__(self, client: redis.Redis, timeout: float) -> None:
        self.redis = client
        self.timeout = timeout  # seconds without a beat before a node is dead
        self._reserve = client.register_script(_RESERVE)
        self._take = client.register_script(_TAKE)
        self._beat = client.register_script(_BEAT)

    # --- a worker node's own --------------------------------------------------------------------------

    def beat(self, node_id: str, capacity: int, ready: bool, stream: StreamEndpoint | None = None) -> None:
        """`stream`: where this node takes live streams, and how many it has (API nodes relay streams there)."""
        fields = ["capacity", capacity, "ready", int(ready), "host", socket.gethostname()[:100], "pid", os.getpid()]
        if stream is not None:
            fields += ["stream", stream.address, "streams", stream.live, "max_streams", stream.limit]
        self._beat(keys=[keys.NODES, keys.node(node_id)], args=[node_id, *fields])

    def take(self, node_id: str, capacity: int, job_id: str) -> bool:
        return bool(self._take(keys=[keys.node_running(node_id)], args=[capacity, job_id]))

    def release(self, node_id: str, job_id: str) -> None:
        self.redis.srem(keys.node_running(node_id), job_id)

    def running(self, node_id: str) -> int:
        return self.redis.scard(keys.node_running(node_id))

    def leave(self, node_id: str) -> None:
        """Stop being offered synchronous jobs at once (a draining node): not ready, though still alive."""
        self.redis.hset(keys.node(node_id), "ready", 0)

    # --- everyone's view ------------------------------------------------------------------------------

    def now(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6

    def alive(self) -> list[NodeView]:
        now = self.now()
        beats = self.redis.zrangebyscore(keys.NODES, now - self.timeout, "+inf", withscores=True)
        with self.redis.pipeline(transaction=False) as batch:
            for node, _ in beats:
                batch.hmget(keys.node(node.decode()), "host", "pid", "capacity", "ready")
                batch.scard(keys.node_running(node.decode()))
            answers = batch.execute()
        views = []
        for (node, beat), info, running in zip(beats, answers[0::2], answers[1::2]):
            host, pid, capacity, ready = info
            if capacity is None:
                continue  # taken over between the two reads
            views.append(NodeView(node.decode(), (host or b"").decode(), int(pid or 0), int(capacity), running,
                                  ready == b"1", max(0.0, now - beat)))
        return views

    def stream_endpoints(self) -> list[StreamEndpoint]:
        """The ready live nodes that take streams, the least loaded first."""
        now = self.now()
        found = []
        for node in self.redis.zrangebyscore(keys.NODES, now - self.timeout, "+inf"):
            ready, address, live, limit = self.redis.hmget(keys.node(node.decode()), "ready", "stream", "streams",
                                                           "max_streams")
            if ready == b"1" and address:
                found.append(StreamEndpoint(address.decode(), int(live or 0), int(limit or 0)))
        return sorted(found, key=lambda e: (e.live / max(1, e.limit), e.live))

    def reserve(self, job_id: str) -> str | None:
        """A slot for a synchronous job on the ready live node with the most free slots, and the job handed
        to it; None when every live node is full (or none is alive)."""
        node = self._reserve(keys=[keys.NODES], args=[self.timeout, job_id])
        return node.decode() if node is not None else None

    def dead(self) -> list[str]:
        now = self.now()
        return [node.decode() for node in self.redis.zrangebyscore(keys.NODES, "-inf", f"({now - self.timeout}")]

    def lock_takeover(self, node_id: str, by: str) -> bool:
        return bool(self.redis.set(keys.takeover(node_id), by, nx=True, ex=60))

    def jobs_of(self, node_id: str) -> list[tuple[str, str, bytes]]:
        """(job id, stream, entry id) of every job handed to this node and not acknowledged: its synchronous
        stream (taken or not) and its pending entries of the shared queue."""
        found = []
        for entry_id, fields in self.redis.xrange(keys.node_sync(node_id)):
            found.append((fields[b"job"].decode(), keys.node_sync(node_id), entry_id))
        try:
            pending = self.redis.xpending_range(keys.QUEUE, keys.GROUP, "-", "+", 10_000, consumername=node_id)
        except redis.ResponseError:  # no group yet: nothing pending
            pending = []
        if pending:
            ids = [p["message_id"] for p in pending]
            for entry_id, fields in self.redis.xclaim(keys.QUEUE, keys.GROUP, node_id, 0, ids):
                if fields:
                    found.append((fields[b"job"].decode(), keys.QUEUE, entry_id))
        for job_id in self.redis.smembers(keys.node_running(node_id)):  # reserved, never handed over
            if all(job_id.decode() != job for job, _, _ in found):
                found.append((job_id.decode(), "", b""))
        return found

    def forget(self, node_id: str) -> None:
        """A dead (or departed) node's keys, once its jobs are moved."""
        with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.node_sync(node_id), keys.node_running(node_id), keys.node(node_id))
            tx.zrem(keys.NODES, node_id)
            tx.execute()
        try:
            self.redis.xgroup_delconsumer(keys.QUEUE, keys.GROUP, node_id)
        except redis.ResponseError:
            pass
