"""Runs jobs: admission, the queue, and the one path from a job's audio to its transcript.

MAX_TRANSCRIPTS_PARALLEL slots are shared by every entry point. A synchronous request (
/transcribe/url, /v1/audio/transcriptions) takes a slot in its own thread or is refused at once
(REJECT_OVER_PARALLEL) or waits for one; an asynchronous job (/v2/transcript) is queued in the
store, first in first out, and runner threads take queued jobs as slots come free. Both run the
same JobRunner (daemon/jobs/runner.py), which a worker node of shared mode runs too.

At start, the jobs a dead process tree left processing are queued again (or ended in error, see
the store's recover), owed webhooks are sent again, and a janitor removes jobs past
JOB_RETENTION_HOURS, with their audio.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from daemon.config import DaemonConfig
from daemon.errors import over_capacity, queue_full, request_timed_out
from daemon.jobs.client import WorkerPool
from daemon.jobs.janitor import remove_expired_jobs
from daemon.jobs.record import Job, Status
from daemon.jobs.runner import JobRunner
from daemon.jobs.store import EmbeddedStore
from daemon.metrics import Load

log = logging.getLogger("async_engine.jobs")

RETRY_AFTER_SECONDS = 5  # a hint for 423/429: about the time a short file takes


class Scheduler:
    def __init__(self, config: DaemonConfig, store: EmbeddedStore, workers: WorkerPool,
                 on_finished: Callable[[Job], None] = lambda job: None) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.slots = threading.BoundedSemaphore(config.max_transcripts_parallel)
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._running = 0  # queued jobs being run by the runners now
        self._in_flight = 0  # slots taken, by either kind of job
        self._threads: list[threading.Thread] = []
        self.runner = JobRunner(config, store, workers, on_finished,  # the server stops under a resumable job:
                                cut_short=lambda job, error: self._stopping.is_set() and job.origin.resumable)
        self.on_finished = on_finished

    # --- life -----------------------------------------------------------------------------------------

    def start(self) -> None:
        requeued, failed = self.store.recover()
        for job in failed:
            log.warning("job=%s origin=%s status=error code=%d after a restart: %s", job.id, job.origin.value,
                        job.error.code, job.error.description)
            self.on_finished(job)
        if requeued:
            log.warning("%d job(s) a stopped server left unfinished are queued again: %s", len(requeued),
                        ", ".join(job.id for job in requeued[:10]) + (" ..." if len(requeued) > 10 else ""))
        self._threads = [threading.Thread(target=self._runner, name=f"runner-{n}", daemon=True)
                         for n in range(self.config.max_transcripts_parallel)]
        self._threads.append(threading.Thread(target=remove_expired_jobs, name="janitor", daemon=True,
                                              args=(self.store, self.config.job_retention_hours, self._stopping)))
        for thread in self._threads:
            thread.start()

    def drain(self, timeout: float) -> None:
        """Take no more queued jobs (they stay queued for the next start) and let the running ones finish."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._running == 0, timeout=timeout)

    # --- entry points -------------------------------------------------------------------------------------

    def enqueue(self, job: Job, audio: bytes | bytearray | None = None) -> Job:
        """Accept an asynchronous job: durable when this returns, run when a slot comes free."""
        if self.store.queued() >= self.config.max_queued_jobs:
            raise queue_full(self.config.max_queued_jobs, RETRY_AFTER_SECONDS)
        job = self.store.add(job, audio)
        with self._wake:
            self._wake.notify()
        return job

    def run_now(self, job: Job, deadline: float, audio: bytes | bytearray | None = None,
                busy_status: int = 423) -> Job:
        """Run a job in the caller's thread within a slot; returns it completed, or raises its ApiError.

        Over capacity: `busy_status` at once (423 for /transcribe/url, 429 for OpenAI's clients, which
        retry it) or, with REJECT_OVER_PARALLEL=False, a wait for a slot until the deadline.
        """
        release = self.take_slot(deadline, busy_status)
        try:
            started = self.store.add(job.with_(status=Status.PROCESSING, started=time.time(), attempts=1))
            return self.runner.run(started, deadline, audio)  # never queued: no runner can take it too
        finally:
            release()

    def take_slot(self, deadline: float, busy_status: int = 423) -> Callable[[], None]:
        """A slot for work run outside the job path (a file read as turns for OpenAI's stream=true); returns its
        release. Over capacity as run_now."""
        if self.config.reject_over_parallel:
            if not self.slots.acquire(blocking=False):
                raise over_capacity(self.config.max_transcripts_parallel, RETRY_AFTER_SECONDS, status=busy_status)
        elif not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise request_timed_out(self.config.request_timeout_seconds)
        self._count_slot(+1)
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._count_slot(-1)
                self.slots.release()

        return release

    def load(self) -> Load:
        with self._wake:
            in_flight = self._in_flight
        return Load(queued=self.store.queued(), in_flight=in_flight,
                    capacity=self.config.max_transcripts_parallel, nodes_alive=1)

    def _count_slot(self, change: int) -> None:
        with self._wake:
            self._in_flight += change

    # --- the work ---------------------------------------------------------------------------------------

    def _runner(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                self._wake.wait(timeout=1.0)
            while not self._stopping.is_set() and self.store.queued():
                if not self.slots.acquire(timeout=1.0):
                    continue
                try:
                    with self._wake:
                        if self._stopping.is_set():
                            break
                        self._running += 1
                        self._in_flight += 1
                    job = self.store.claim()
                    if job is not None:
                        self.runner.run_logged(job, time.monotonic() + self.config.request_timeout_seconds)
                finally:
                    self.slots.release()
                    with self._wake:
                        self._running -= 1
                        self._in_flight -= 1
                        self._wake.notify_all()
