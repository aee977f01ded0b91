"""Every Redis key shared mode uses, in one place (docs/DAEMON.md shows the same list).

Jobs: ae:job:<id> (a hash of the record's fields), ae:audio:<id> (its encoded file),
ae:upload:<token> (an uploaded file), ae:seq (creation counter), ae:jobs (zset id -> creation
order, for listing), ae:finished (zset id -> end time, for expiry), ae:queued (set of queued ids),
ae:webhooks (set of ids whose webhook is owed), ae:uploads (zset token -> upload time),
ae:done:<id> (a list the finishing worker pushes to; a waiting request blocks on it).

Queue and nodes: ae:queue (stream of job ids any worker node may take), ae:node:<node>:sync (stream
of the synchronous jobs an API node reserved on that node), ae:node:<node>:running (set of the job
ids holding its slots), ae:node:<node> (hash: capacity, host, pid, ready), ae:nodes (zset node ->
last heartbeat, Redis's own clock), ae:takeover:<node> (lock while a dead node's jobs are moved).
"""

from __future__ import annotations

GROUP = "workers"  # the consumer group on every stream; a node's id is its consumer name

SEQ = "ae:seq"
JOBS = "ae:jobs"
FINISHED = "ae:finished"
QUEUED = "ae:queued"
WEBHOOKS = "ae:webhooks"
UPLOADS = "ae:uploads"
QUEUE = "ae:queue"
NODES = "ae:nodes"


def job(job_id: str) -> str:
    return f"ae:job:{job_id}"


def audio(job_id: str) -> str:
    return f"ae:audio:{job_id}"


def upload(token: str) -> str:
    return f"ae:upload:{token}"


def done(job_id: str) -> str:
    return f"ae:done:{job_id}"


def node(node_id: str) -> str:
    return f"ae:node:{node_id}"


def node_sync(node_id: str) -> str:
    return f"ae:node:{node_id}:sync"


def node_running(node_id: str) -> str:
    return f"ae:node:{node_id}:running"


def takeover(node_id: str) -> str:
    return f"ae:takeover:{node_id}"
