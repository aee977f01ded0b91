"""Where job records and their audio live: the one interface the scheduler and the APIs use.

The embedded implementation is SQLite plus files (daemon/jobs/sqlite_store.py); the shared one
(daemon/shared/redis_store.py: Redis, for API and worker nodes on many hosts) implements the same
methods. Every write that
makes a promise to a client (a job accepted, an upload stored) is durable when it returns: after a
SIGKILL of the whole tree or a power loss, the record and its audio are there.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from daemon.jobs.record import Job, JobError, Status


class JobStore(Protocol):
    def add(self, job: Job, audio: bytes | bytearray | None = None) -> Job:
        """Store a new job (and its encoded audio, if given) durably; returns it as stored."""

    def get(self, job_id: str) -> Job | None:
        ...

    def page(self, limit: int, *, before_id: str | None = None, after_id: str | None = None,
             status: Status | None = None, created_on: str | None = None) -> list[Job]:
        """Jobs newest first: those created before `before_id` or after `after_id` (the id excluded),
        with this status, created on this UTC date (YYYY-MM-DD)."""

    def keep_audio(self, job_id: str, audio: bytes | bytearray) -> None:
        """Store a job's downloaded file, so a restart transcribes it without fetching it again."""

    def read_audio(self, job: Job) -> bytearray:
        ...

    def finish(self, job_id: str, *, result: dict | None = None, error: JobError | None = None) -> Job:
        """Completed with its transcript, or ended in error; a webhook becomes owed if it has one."""

    def webhook_answered(self, job_id: str, status_code: int | None, *, done: bool) -> None:
        """Record a delivery attempt's answer (None: no answer); `done` ends the delivery."""

    def owed_webhooks(self) -> list[Job]:
        ...

    def delete(self, job_id: str) -> Job | None:
        """Remove a job's transcript and audio (a queued job leaves the queue, in error); the record stays,
        marked deleted. None when there is no such job or it is being transcribed (it cannot be deleted)."""

    def purge(self, finished_before: float) -> int:
        """Remove jobs finished before this time, with their audio, and uploads as old that no job
        uses; returns how many jobs went."""

    def queued(self) -> int:
        """Jobs waiting to run (MAX_QUEUED_JOBS bounds them)."""

    def save_upload(self, stream: BinaryIO, max_bytes: int) -> str:
        """Store an uploaded file durably; returns its token. Raises ApiError (413) past max_bytes."""

    def has_upload(self, token: str) -> bool:
        ...

    def close(self) -> None:
        ...


class EmbeddedStore(JobStore, Protocol):
    """A store that is its own queue, on one host (SQLite): the embedded Scheduler takes jobs from it.
    In shared mode the queue is a Redis stream instead (daemon/shared/queue.py)."""

    def claim(self) -> Job | None:
        """The oldest queued job, now processing (attempts + 1); None when none is queued."""

    def recover(self) -> tuple[list[Job], list[Job]]:
        """At start: the jobs a dead process tree left processing go back to the queue, or end in
        error when they cannot run again; returns (requeued, failed)."""
