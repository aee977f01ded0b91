"""Runs jobs: admission, the queue, and the one path from a job's audio to its transcript.

MAX_TRANSCRIPTS_PARALLEL slots are shared by every entry point. A synchronous request (
/transcribe/url, /v1/audio/transcriptions) takes a slot in its own thread or is refused at once
(REJECT_OVER_PARALLEL) or waits for one; an asynchronous job (/v2/transcript) is queued in the
store, first in first out, and runner threads take queued jobs as slots come free. Both run the
same `_transcribe`: the audio (stored, uploaded or downloaded now), read_span, the workers, the
response body; every outcome lands in the job's record before anyone is told.

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
from daemon.errors import (INTERNAL_FAILURE, ApiError, from_engine_error, over_capacity, queue_full,
                           request_timed_out)
from daemon.jobs.client import WorkerPool
from daemon.jobs.download import fetch
from daemon.jobs.record import Job, JobError, Status
from daemon.jobs.store import JobStore
from engine.audio import SAMPLE_RATE, read_span
from engine.decode_options import DecodeOptions
from engine.errors import EngineError
from engine.response import response_body
from engine.text_format import TextOptions

log = logging.getLogger("async_engine.jobs")

RETRY_AFTER_SECONDS = 5  # a hint for 423/429: about the time a short file takes
JANITOR_EVERY_SECONDS = 600.0


class Scheduler:
    def __init__(self, config: DaemonConfig, store: JobStore, workers: WorkerPool,
                 on_finished: Callable[[Job], None] = lambda job: None) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.on_finished = on_finished  # the webhooks' hook: called with every job that ends
        self.slots = threading.BoundedSemaphore(config.max_transcripts_parallel)
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._running = 0  # queued jobs being run by the runners now
        self._threads: list[threading.Thread] = []

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
        self._threads.append(threading.Thread(target=self._janitor, name="janitor", daemon=True))
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
        if self.store.count(Status.QUEUED) >= self.config.max_queued_jobs:
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
        if self.config.reject_over_parallel:
            if not self.slots.acquire(blocking=False):
                raise over_capacity(self.config.max_transcripts_parallel, RETRY_AFTER_SECONDS, status=busy_status)
        elif not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise request_timed_out(self.config.request_timeout_seconds)
        try:
            started = self.store.add(job.with_(status=Status.PROCESSING, started=time.time(), attempts=1))
            return self._transcribe(started, deadline, audio)  # never queued: no runner can take it too
        finally:
            self.slots.release()

    # --- the work ---------------------------------------------------------------------------------------

    def _runner(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                self._wake.wait(timeout=1.0)
            while not self._stopping.is_set() and self.store.count(Status.QUEUED):
                if not self.slots.acquire(timeout=1.0):
                    continue
                try:
                    with self._wake:
                        if self._stopping.is_set():
                            break
                        self._running += 1
                    job = self.store.claim()
                    if job is not None:
                        self._run_queued(job)
                finally:
                    self.slots.release()
                    with self._wake:
                        self._running -= 1
                        self._wake.notify_all()

    def _run_queued(self, job: Job) -> None:
        started = time.monotonic()
        try:
            job = self._transcribe(job, started + self.config.request_timeout_seconds)
        except ApiError:
            job = self.store.get(job.id)
        except Exception:  # a bug must cost one job, never a runner thread
            log.exception("job=%s failed unexpectedly", job.id)
            job = self.store.finish(job.id, error=JobError(INTERNAL_FAILURE, "an unexpected server error occurred; "
                                                           f"report job {job.id} to the server's operator"))
            self.on_finished(job)
        audio = job.result.get("duration") if job.result else None
        log.info("job=%s origin=%s status=%s code=%s audio_s=%s wall_s=%.3f attempt=%d%s", job.id, job.origin.value,
                 job.status.value, job.error.code if job.error else "-", f"{audio:.3f}" if audio is not None else "-",
                 time.monotonic() - started, job.attempts, f" error={job.error.description!r}" if job.error else "")

    def _transcribe(self, job: Job, deadline: float, audio: bytes | bytearray | None = None) -> Job:
        """Audio to transcript for one job, its record updated with the outcome; raises its ApiError."""
        options = job.options
        try:
            pcm, offset_ms = self._decode(job, deadline, audio)
            del audio
            duration = pcm.shape[1] / SAMPLE_RATE
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise request_timed_out(self.config.request_timeout_seconds)
            channels = self.workers.submit(job.id, pcm, remaining, self._decode_options(job))
            del pcm
            enabled = self.config.enable_auto_punctuation
            text = TextOptions(written=options.format_text, punctuation=options.punctuate and enabled, casing=enabled)
            result = response_body(channels, duration, offset_ms, text, options.dual_channel, job.id)
        except ApiError as error:
            if self._stopping.is_set() and job.origin.resumable:
                raise  # the server stops under it: it stays processing, and the next start runs it again
            self.on_finished(self.store.finish(job.id, error=JobError(error.code, error.description)))
            raise
        job = self.store.finish(job.id, result=result)
        self.on_finished(job)
        return job

    def _decode(self, job: Job, deadline: float, audio: bytes | bytearray | None) -> tuple:
        """(pcm, offset_ms) of the span to transcribe; the encoded file is let go of on return."""
        data = audio if audio is not None else self._audio(job, deadline)
        options = job.options
        try:
            return read_span(data, dual_channel=options.dual_channel, start_ms=options.audio_start_from,
                             end_ms=options.audio_end_at, max_seconds=self.config.max_audio_seconds)
        except EngineError as exc:
            raise from_engine_error(exc) from None

    def _audio(self, job: Job, deadline: float) -> bytearray:
        """The job's encoded file: stored (uploaded, or fetched by an earlier attempt) or downloaded now,
        and then stored when the job would run again after a restart."""
        if job.audio is not None:
            return self.store.read_audio(job)
        data = fetch(job.options.audio_url, self.config.download, deadline)
        if job.origin.resumable:
            self.store.keep_audio(job.id, data)
        return data

    @staticmethod
    def _decode_options(job: Job) -> DecodeOptions:
        return DecodeOptions.for_request(job.options.prompt, job.options.temperature)

    def _janitor(self) -> None:
        hours = self.config.job_retention_hours
        every = min(JANITOR_EVERY_SECONDS, hours * 3600 / 4)  # a job outlives its retention by a quarter at most
        while True:
            try:
                removed = self.store.purge(time.time() - hours * 3600)
                if removed:
                    log.info("removed %d job(s) finished more than %g h ago (JOB_RETENTION_HOURS), with their audio",
                             removed, hours)
            except Exception:
                log.exception("removing expired jobs failed; trying again later")
            if self._stopping.wait(every):
                return

