"""The shared queue: Redis streams read by a consumer group, at least once.

ae:queue holds the jobs any worker node may take (asynchronous jobs, synchronous ones when
REJECT_OVER_PARALLEL=False, and the jobs of a dead node); ae:node:<node>:sync the synchronous jobs
an API node reserved on that node. Each worker node reads with XREADGROUP under its own consumer
name, blocking (no polling); an entry stays pending until the job's outcome is stored, then it is
acknowledged and deleted (ack). A node that dies leaves its entries pending: another node moves
them back (daemon/shared/worker_node.py). A job delivered twice runs once: the store's `begin`
refuses a job that is not queued.
"""

from __future__ import annotations

import redis

from daemon.shared import keys
from daemon.shared.connection import BLOCK_SECONDS

Entry = tuple[str, bytes, str]  # (stream, entry id, job id)


class Queue:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def prepare(self, node_id: str) -> None:
        """The consumer groups this node reads (made with their streams if new; kept if they exist)."""
        for stream in (keys.QUEUE, keys.node_sync(node_id)):
            try:
                self.redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def push(self, job_id: str) -> None:
        self.redis.xadd(keys.QUEUE, {"job": job_id})

    def read(self, node_id: str, stream: str, count: int) -> list[Entry]:
        """Up to `count` new entries of one stream for this node, blocking up to BLOCK_SECONDS."""
        try:
            answer = self.redis.xreadgroup(keys.GROUP, node_id, {stream: ">"}, count=count,
                                           block=int(BLOCK_SECONDS * 1000))
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.prepare(node_id)  # Redis came back without its data (no appendonly): make them again
            return []
        return [(stream, entry_id, fields[b"job"].decode())
                for _, entries in answer or [] for entry_id, fields in entries if fields]

    def ack(self, stream: str, entry_id: bytes) -> None:
        if not stream:
            return
        with self.redis.pipeline(transaction=True) as tx:
            tx.xack(stream, keys.GROUP, entry_id)
            tx.xdel(stream, entry_id)
            tx.execute()
