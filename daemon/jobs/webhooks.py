"""Tell a job's webhook_url that it ended, as AssemblyAI does: POST {"transcript_id", "status"}.

A delivery is owed from the moment the job's outcome is recorded (the store keeps the debt, so a
restart delivers what a dead tree still owed), and paid by any 2xx answer. Other answers and no
answer at all are retried on WEBHOOK_RETRY_SECONDS, about twenty minutes in all, then given up.
The request goes out under the same rules as audio downloads: no link-local or cloud-metadata
address, DOWNLOAD_DENY / DOWNLOAD_ALLOW, timeouts, no proxy, and redirects are not followed.
Every attempt is logged with the job's id (the URL's credentials masked, as everywhere).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time

from daemon.config import DownloadLimits
from daemon.errors import ApiError
from daemon.jobs.download import post_json
from daemon.jobs.record import Job
from daemon.jobs.store import JobStore

log = logging.getLogger("async_engine.webhooks")

WEBHOOK_RETRY_SECONDS = (10, 30, 60, 120, 300, 600)  # after each failed attempt; then it is given up
REQUEST_SECONDS = 20.0  # one attempt, connection and answer


class Webhooks:
    def __init__(self, store: JobStore, limits: DownloadLimits) -> None:
        self.store = store
        self.limits = limits
        self._due: list[tuple[float, int, str, int]] = []  # (when, tiebreak, job id, attempt)
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    def start(self) -> None:
        """First schedule what the store says is still owed (from before this start). A store that cannot
        be read now (shared mode: Redis away at start) is no reason not to deliver the new ones."""
        try:
            owed = self.store.owed_webhooks()
        except ApiError as error:
            owed = []
            log.error("webhooks owed from before this start were not read (%s); they are sent at the next start",
                      error.description)
        for job in owed:
            self._schedule(job.id, 0, time.monotonic())
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(REQUEST_SECONDS + 1)

    def job_finished(self, job: Job) -> None:
        """The scheduler's hook: a job with a webhook_url has ended."""
        if job.options.webhook_url:
            self._schedule(job.id, 0, time.monotonic())

    def _schedule(self, job_id: str, attempt: int, when: float) -> None:
        with self._wake:
            heapq.heappush(self._due, (when, next(self._order), job_id, attempt))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(timeout=None if not self._due else self._due[0][0] - time.monotonic())
                if self._stopping:
                    return
                _, _, job_id, attempt = heapq.heappop(self._due)
            self._attempt(job_id, attempt)

    def _attempt(self, job_id: str, attempt: int) -> None:
        job = self.store.get(job_id)
        if job is None or not job.webhook_pending:
            return  # deleted or expired meanwhile, or already paid
        options = job.options
        headers = {options.webhook_auth_header_name: options.webhook_auth_header_value} \
            if options.webhook_auth_header_name and options.webhook_auth_header_value is not None else {}
        status, reason = None, ""
        try:
            status = post_json(options.webhook_url, {"transcript_id": job.id, "status": job.status.value}, headers,
                               self.limits, REQUEST_SECONDS)
            reason = f"HTTP {status}"
        except ApiError as error:
            reason = error.description
        except Exception as error:  # a bug here must not end deliveries for every other job
            log.exception("job=%s webhook attempt %d failed unexpectedly", job.id, attempt + 1)
            reason = type(error).__name__
        paid = status is not None and 200 <= status < 300
        last = attempt >= len(WEBHOOK_RETRY_SECONDS)
        self.store.webhook_answered(job.id, status, done=paid or last)
        total = len(WEBHOOK_RETRY_SECONDS) + 1
        if paid:
            log.info("job=%s webhook attempt %d/%d to %s: %s", job.id, attempt + 1, total, options.webhook_url, reason)
        elif last:
            log.warning("job=%s webhook attempt %d/%d to %s: %s; giving up", job.id, attempt + 1, total,
                        options.webhook_url, reason)
        else:
            delay = WEBHOOK_RETRY_SECONDS[attempt]
            log.warning("job=%s webhook attempt %d/%d to %s: %s; next in %d s", job.id, attempt + 1, total,
                        options.webhook_url, reason, delay)
            self._schedule(job.id, attempt + 1, time.monotonic() + delay)
