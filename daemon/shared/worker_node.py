"""A worker node (shared mode): takes jobs from Redis and runs them on this host's process tree.

Three loops, each blocking on Redis rather than polling:
- sync: the synchronous jobs API nodes reserved on this node (their slot is already held);
- queue: while a slot is free, the shared queue; a slot is taken (TAKE) before the job starts;
- beat: the heartbeat (capacity, readiness), and taking over the jobs of nodes found dead.
Each job runs JobRunner.run_logged, the same code as on one host, in its own thread; at most
MAX_TRANSCRIPTS_PARALLEL at once (the node's running set). Its entry is acknowledged only once the
outcome is stored, so a node killed midway leaves it pending for another node to run again.

drain (SIGTERM): take nothing more, say so (ready=0, so no new synchronous job is reserved here),
finish the jobs in hand, then leave: whatever is still handed to this node goes back to the queue.
If Redis is down when a job ends, its outcome is held and stored when Redis is back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from daemon.config import DaemonConfig
from daemon.errors import STORE_UNREACHABLE, ApiError
from daemon.jobs.client import WorkerPool
from daemon.jobs.record import Job, Status
from daemon.jobs.runner import JobRunner
from daemon.jobs.webhooks import Webhooks
from daemon.metrics import Load
from daemon.shared import keys
from daemon.shared.connection import BLOCK_SECONDS, Unreachable, describe
from daemon.shared.nodes import Nodes, StreamEndpoint, new_node_id
from daemon.shared.queue import Entry, Queue
from daemon.shared.redis_store import RedisJobStore

log = logging.getLogger("async_engine.worker_node")

_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # between tries while Redis cannot be reached
_LEAVE_SECONDS = 10.0  # how long a leaving node tries to hand its jobs back while Redis is away
_HOLD_TRIES = 2 * 24 * 720  # a finished job's outcome is held about two days (5 s apart) for Redis to return


class WorkerNode:
    def __init__(self, config: DaemonConfig, store: RedisJobStore, nodes: Nodes, queue: Queue, workers: WorkerPool,
                 on_finished: Callable[[Job], None] = lambda job: None) -> None:
        self.config = config
        self.id = new_node_id()
        self.capacity = config.max_transcripts_parallel
        self.store = store
        self.nodes = nodes
        self.queue = queue
        self.workers = workers
        self.on_finished = on_finished
        self._taking = threading.Event()  # set: reading and starting jobs
        self._beating = threading.Event()  # set: heartbeats go on (until the node has left)
        self._freed = threading.Condition()  # notified when a local job ends
        self._running: set[str] = set()  # ids of the jobs this node runs now
        self._outage: str | None = None
        self._forced = threading.Event()  # set: drain ran out of time; the jobs in hand go back to the queue
        self.runner = JobRunner(config, _HoldingStore(store, self._beating), workers, on_finished,
                                cut_short=lambda job, error: error.code == STORE_UNREACHABLE or self._forced.is_set())
        self._threads: list[threading.Thread] = []
        self.stream_endpoint: Callable[[], StreamEndpoint] | None = None  # this node's stream server, where it has one

    # --- life -----------------------------------------------------------------------------------------

    def start(self) -> None:
        # its consumer groups now, so a reservation made before its first read is not missed (if Redis is
        # away, the first read makes them)
        self._retrying(lambda: self.queue.prepare(self.id), until=time.monotonic() + 5)
        self._taking.set()
        self._beating.set()
        self._threads = [threading.Thread(target=self._beat_loop, name="node-beat", daemon=True),
                         threading.Thread(target=self._sync_loop, name="node-sync", daemon=True),
                         threading.Thread(target=self._queue_loop, name="node-queue", daemon=True)]
        for thread in self._threads:
            thread.start()
        log.info("worker node %s: capacity %d, heartbeat timeout %g s (WORKER_NODE_TIMEOUT_SECONDS)", self.id,
                 self.capacity, self.config.worker_node_timeout)

    def drain(self, timeout: float) -> None:
        """Take no more jobs, finish the ones in hand (up to timeout), then leave the cluster."""
        self._taking.clear()
        self._retrying(lambda: self.nodes.leave(self.id), until=time.monotonic() + 5)
        with self._freed:
            self._freed.wait_for(lambda: not self._running, timeout=timeout)
            left = list(self._running)
        if left:
            self._forced.set()
            log.warning("worker node %s: %d job(s) did not finish in time; they go back to the queue: %s", self.id,
                        len(left), ", ".join(left))
        for reader in self._threads[1:]:
            reader.join(BLOCK_SECONDS + 1)
        self._beating.clear()
        # Redis away: give up soon; the other nodes move these jobs once this node's heartbeat is stale
        self._retrying(lambda: self._move_jobs_of(self.id), until=time.monotonic() + _LEAVE_SECONDS)
        log.info("worker node %s left", self.id)

    def load(self) -> Load:
        with self._freed:
            in_flight = len(self._running)
        try:
            return Load(queued=self.store.queued(), in_flight=in_flight, capacity=self.capacity,
                        nodes_alive=len(self.nodes.alive()))
        except (ApiError, *Unreachable):  # Redis is away: what this node knows by itself
            return Load(queued=0, in_flight=in_flight, capacity=self.capacity, nodes_alive=0)

    # --- loops ----------------------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        interval = self.config.worker_node_timeout / 5
        while self._beating.is_set():
            try:
                ready = self.workers.health()[0] and self._taking.is_set()
                stream = self.stream_endpoint() if self.stream_endpoint is not None else None
                self.nodes.beat(self.id, self.capacity, ready, stream)
                for dead in self.nodes.dead():
                    if dead != self.id and self.nodes.lock_takeover(dead, self.id):
                        self._move_jobs_of(dead)
                self._reachable()
            except Unreachable as exc:
                self._unreachable(exc)
            except Exception:
                log.exception("worker node %s: heartbeat failed; trying again", self.id)
            time.sleep(interval)

    def _sync_loop(self) -> None:
        stream = keys.node_sync(self.id)
        while self._taking.is_set():
            for entry in self._read(stream, self.capacity):
                if not self._taking.is_set():
                    break  # left pending: leaving puts it back on the queue
                self._start(entry)

    def _queue_loop(self) -> None:
        while self._taking.is_set():
            with self._freed:
                if not self._freed.wait_for(lambda: len(self._running) < self.capacity, timeout=BLOCK_SECONDS):
                    continue
            for entry in self._read(keys.QUEUE, 1):
                # a synchronous reservation may have taken the last slot since the read
                while not (self._taking.is_set() and self._take_slot(entry[2])):
                    if not self._taking.is_set():
                        return  # the entry stays pending: leaving puts it back on the queue
                    with self._freed:
                        self._freed.wait(BLOCK_SECONDS)
                self._start(entry)

    # --- one job ----------------------------------------------------------------------------------------

    def _read(self, stream: str, count: int) -> list[Entry]:
        try:
            entries = self.queue.read(self.id, stream, count)
            self._reachable()
            return entries
        except Unreachable as exc:
            self._unreachable(exc)
            time.sleep(BLOCK_SECONDS)
            return []

    def _take_slot(self, job_id: str) -> bool:
        try:
            return self.nodes.take(self.id, self.capacity, job_id)
        except Unreachable as exc:
            self._unreachable(exc)
            return False

    def _start(self, entry: Entry) -> None:
        stream, entry_id, job_id = entry
        job = self._retrying(lambda: self.store.begin(job_id), until=time.monotonic() + 60)
        if job is None:  # finished, deleted or running elsewhere (a second delivery): nothing to do
            self._retrying(lambda: self._finish_entry(entry), until=time.monotonic() + 60)
            return
        thread = threading.Thread(target=self._run, args=(job, entry), name=f"job-{job_id}", daemon=True)
        with self._freed:
            self._running.add(job_id)
        thread.start()

    def _run(self, job: Job, entry: Entry) -> None:
        try:
            ended = self.runner.run_logged(job, time.monotonic() + self.config.request_timeout_seconds)
            if ended is not None:
                self._retrying(lambda: self._finish_entry(entry), until=time.monotonic() + 3600)
            elif not self._forced.is_set():  # Redis went away under it: once it is back, the job queues again
                self._retrying(lambda: self._run_again(job.id, entry), until=time.monotonic() + 3600)
        finally:
            with self._freed:
                self._running.discard(job.id)
                self._freed.notify_all()

    def _run_again(self, job_id: str, entry: Entry) -> None:
        if self.store.requeue(job_id, refund=True) is not None:
            self.queue.push(job_id)
        self._finish_entry(entry)

    def _finish_entry(self, entry: Entry) -> None:
        stream, entry_id, job_id = entry
        self.queue.ack(stream, entry_id)
        self.nodes.release(self.id, job_id)

    def _move_jobs_of(self, node_id: str) -> None:
        """A dead node's jobs (or this node's own, as it leaves) back to the queue; a job that has now
        been cut short twice ends in error instead. Each entry is acknowledged only after its job moved."""
        moved, failed = [], []
        for job_id, stream, entry_id in self.nodes.jobs_of(node_id):
            job = self.store.requeue(job_id)
            if job is not None and job.status is Status.QUEUED:
                self.queue.push(job_id)
                moved.append(job_id)
            elif job is not None:
                failed.append(job_id)
                self.on_finished(job)
            self.queue.ack(stream, entry_id)
        self.nodes.forget(node_id)
        if node_id != self.id:
            log.warning("worker node %s is dead (no heartbeat for %g s); its %d job(s) are queued again%s%s", node_id,
                        self.config.worker_node_timeout, len(moved), f": {', '.join(moved)}" if moved else "",
                        f"; {len(failed)} ended in error after their second try: {', '.join(failed)}" if failed else "")

    # --- Redis outages ---------------------------------------------------------------------------------

    def _retrying(self, action: Callable, until: float):
        """Run an action that must reach Redis, trying again while it is away (up to `until`)."""
        for attempt in range(_HOLD_TRIES):
            try:
                result = action()
                self._reachable()
                return result
            except Unreachable as exc:
                self._unreachable(exc)
            except ApiError as error:
                if error.code != STORE_UNREACHABLE:
                    raise
                self._unreachable(error)
            if time.monotonic() >= until:
                log.error("worker node %s: Redis stayed unreachable; giving up on this step", self.id)
                return None
            time.sleep(_BACKOFF_SECONDS[min(attempt, len(_BACKOFF_SECONDS) - 1)])
        return None

    def _unreachable(self, exc: BaseException) -> None:
        reason = describe(exc) if not isinstance(exc, ApiError) else exc.description
        if self._outage is None:
            log.error("worker node %s: Redis (REDIS_URL) is unreachable (%s); retrying until it is back", self.id,
                      reason)
        self._outage = reason

    def _reachable(self) -> None:
        if self._outage is not None:
            log.warning("worker node %s: Redis is reachable again", self.id)
            self._outage = None


def build_worker_node(config: DaemonConfig, store: RedisJobStore, nodes: Nodes, queue: Queue
                      ) -> tuple[WorkerPool, Webhooks, WorkerNode]:
    """This host's process tree, its webhooks and the node that feeds it from Redis, wired together:
    what `async-engine worker` runs, and `serve` too when the host is both kinds of node."""
    from daemon.workers.dispatcher import Dispatcher  # here: an API node never imports the workers (torch)

    dispatcher = Dispatcher(config)
    webhooks = Webhooks(store, config.download)
    return dispatcher, webhooks, WorkerNode(config, store, nodes, queue, dispatcher, on_finished=webhooks.job_finished)


class _HoldingStore:
    """The store as the runner sees it on a worker node: an outcome that cannot be stored because Redis is
    away is held and stored when Redis is back (while the node lives), instead of being lost."""

    def __init__(self, store: RedisJobStore, alive: threading.Event) -> None:
        self._store = store
        self._alive = alive

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def finish(self, job_id: str, **outcome) -> Job:
        for attempt in range(_HOLD_TRIES):
            try:
                return self._store.finish(job_id, **outcome)
            except ApiError as error:
                if error.code != STORE_UNREACHABLE or not self._alive.is_set():
                    raise
            time.sleep(_BACKOFF_SECONDS[min(attempt, len(_BACKOFF_SECONDS) - 1)])
        return self._store.finish(job_id, **outcome)
