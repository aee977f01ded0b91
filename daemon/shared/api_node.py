"""An API node's jobs (shared mode): accept them into Redis and wait for the worker nodes' results.

Same entry points as the embedded Scheduler, so every HTTP surface works unchanged:
- enqueue (/v2/transcript): the record and its audio in Redis, the id on the shared queue.
- run_now (/transcribe/url, /v1): with REJECT_OVER_PARALLEL, a slot is reserved on the ready live
  worker node with the most free slots and the job handed to it in one script (423 only when every
  live node is full); otherwise the job joins the shared queue. Then the request blocks on Redis
  until the job's outcome is stored (ae:done:<id>), so any API node can serve any client, and a job
  whose node dies midway is run again elsewhere while the client keeps waiting.
/health is 200 while at least one worker node is alive and ready, and lists them.
"""

from __future__ import annotations

import contextlib
import threading
import time

from daemon.config import DaemonConfig
from daemon.errors import (INVALID_PARAMETER, SERVICE_NOT_READY, WORKER_FAILURE_CODE, ApiError, over_capacity, queue_full, request_timed_out,
                           service_not_ready)
from daemon.jobs.client import WorkerPool
from daemon.jobs.janitor import remove_expired_jobs
from daemon.jobs.record import Job, JobError, Status
from daemon.jobs.scheduler import RETRY_AFTER_SECONDS
from daemon.metrics import Load
from daemon.shared.connection import Unreachable, answering_503, describe
from daemon.shared.nodes import Nodes
from daemon.shared.queue import Queue
from daemon.shared.redis_store import RedisJobStore

WAIT_SLICE_SECONDS = 10.0  # one blocking read of a waiting request; below the socket timeout


class SharedScheduler:
    def __init__(self, config: DaemonConfig, store: RedisJobStore, nodes: Nodes, queue: Queue,
                 local: WorkerPool | None = None) -> None:
        self.config = config
        self.store = store
        self.nodes = nodes
        self.queue = queue
        self.local = local  # this host's own process tree when it is a worker node too
        self._stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=remove_expired_jobs, name="janitor", daemon=True,
                         args=(self.store, self.config.job_retention_hours, self._stopping)).start()

    def drain(self, timeout: float) -> None:
        """Nothing runs here: requests in flight keep waiting for their worker nodes until the server closes."""
        self._stopping.set()

    @answering_503
    def enqueue(self, job: Job, audio: bytes | bytearray | None = None) -> Job:
        if self.store.queued() >= self.config.max_queued_jobs:
            raise queue_full(self.config.max_queued_jobs, RETRY_AFTER_SECONDS)
        job = self.store.add(job, audio)
        self.queue.push(job.id)
        return job

    @answering_503
    def run_now(self, job: Job, deadline: float, audio: bytes | bytearray | None = None,
                busy_status: int = 423) -> Job:
        job = self.store.add(job, audio)
        try:
            handed = self._hand_over(job)
        except Unreachable:
            with contextlib.suppress(ApiError):
                self.store.discard(job.id)  # never handed to anyone: no record stays queued forever
            raise
        if not handed:
            self.store.discard(job.id)
            views = [view for view in self.nodes.alive() if view.ready]
            if not views:
                raise service_not_ready("no worker node is alive and ready to transcribe; retry shortly")
            raise over_capacity(sum(view.capacity for view in views), RETRY_AFTER_SECONDS, status=busy_status)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise request_timed_out(self.config.request_timeout_seconds)
            if self.store.wait(job.id, min(remaining, WAIT_SLICE_SECONDS)):
                break
        ended = self.store.get(job.id)
        if ended is None or ended.status is not Status.COMPLETED:
            raise _api_error(ended.error if ended and ended.error else None)
        return ended

    def _hand_over(self, job: Job) -> bool:
        """A synchronous job to a node now (a reserved slot), or to the shared queue when the server waits
        for slots instead of refusing; False: every live node is full."""
        if not self.config.reject_over_parallel:
            self.queue.push(job.id)  # waits for a slot on any node, as a queued job does
            return True
        return self.nodes.reserve(job.id) is not None

    @answering_503
    def load(self) -> Load:
        views = self.nodes.alive()
        return Load(queued=self.store.queued(), in_flight=sum(view.running for view in views),
                    capacity=sum(view.capacity for view in views), nodes_alive=len(views))

    def health(self) -> tuple[bool, dict]:
        workers = self.local.health()[1].get("workers", []) if self.local else []
        try:
            views = self.nodes.alive()
        except Unreachable as exc:
            return False, {"status": "store_unreachable", "detail": f"Redis (REDIS_URL): {describe(exc)}",
                           "workers": workers, "nodes": []}
        ready = any(view.ready for view in views)
        return ready, {"status": "ok" if ready else "no_worker_nodes", "workers": workers,
                       "nodes": [view.as_dict() for view in views]}


def _api_error(error: JobError | None) -> ApiError:
    """A job's stored error as the answer the embedded server would have given. Request fields are checked
    here, before a job exists, so a worker's invalid_parameter is about the audio (422)."""
    if error is None:
        return ApiError(WORKER_FAILURE_CODE, "the job's record expired or was removed while the request waited; send it again")
    return ApiError(error.code, error.description, status=422 if error.code == INVALID_PARAMETER else None,
                    retry_after=RETRY_AFTER_SECONDS if error.code in (WORKER_FAILURE_CODE, SERVICE_NOT_READY) else None)
