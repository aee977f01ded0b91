"""The embedded job store: SQLite (WAL) for the records, files in the data directory for the audio.

One host, nothing to install. Durability: records are written with synchronous=FULL (a commit
reaches the disk before it returns), audio files are written to a temporary name, synced and
renamed (then the directory synced) before the record that points at them. One server owns a data
directory at a time (an exclusive lock), since each recovers the jobs it finds left processing.

Layout of ASYNC_ENGINE_DATA_DIR: jobs.sqlite3 (+ -wal, -shm), audio/<job id>, uploads/<token>,
and the lock file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import BinaryIO

from daemon.errors import AUDIO_TOO_LARGE, NO_SUCH_TRANSCRIPT, ApiError
from daemon.jobs.record import Job, JobError, Options, Origin, Status

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order: the queue's and the pages' order
    id TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    completed REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    audio TEXT,
    result TEXT,
    error_code INTEGER,
    error_description TEXT,
    webhook_status_code INTEGER,
    webhook_pending INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS uploads (token TEXT PRIMARY KEY, created REAL NOT NULL, bytes INTEGER NOT NULL);
"""
_COLUMNS = ("id, origin, status, options, created, started, completed, attempts, audio, result, error_code, "
            "error_description, webhook_status_code, webhook_pending, deleted")
_CHUNK = 1 << 20
MAX_ATTEMPTS = 2  # a job whose processing was cut short this often (the whole tree killed) ends in error


class DataDirInUse(RuntimeError):
    """Another server owns this data directory."""


class SqliteJobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in (root, root / "audio", root / "uploads"):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(root / "lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirInUse(f"another async-engine server uses {root} (ASYNC_ENGINE_DATA_DIR); give each "
                               "server a data directory of its own") from None
        self._db = sqlite3.connect(root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._mutex = threading.Lock()
        for stale in (root / "audio").glob(".tmp-*"):  # a write the last tree did not finish
            stale.unlink(missing_ok=True)
        for stale in (root / "uploads").glob(".tmp-*"):
            stale.unlink(missing_ok=True)

    # --- records -------------------------------------------------------------------------------------

    def add(self, job: Job, audio: bytes | bytearray | None = None) -> Job:
        if audio is not None:
            job = job.with_(audio=self._write(Path("audio") / job.id, audio))
        with self._mutex:
            self._db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(job))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._mutex:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def page(self, limit: int, *, before_id: str | None = None, after_id: str | None = None,
             status: Status | None = None, created_on: str | None = None) -> list[Job]:
        where, args = [], []
        if before_id is not None:
            where.append("seq < (SELECT seq FROM jobs WHERE id = ?)")
            args.append(before_id)
        if after_id is not None:
            where.append("seq > (SELECT seq FROM jobs WHERE id = ?)")
            args.append(after_id)
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if created_on is not None:
            day = dt.datetime.strptime(created_on, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()
            where.append("created >= ? AND created < ?")
            args += [day, day + 86400]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        # after_id pages forward (older to newer) from that id, then shows them newest first like every page
        order = "ASC" if after_id is not None and before_id is None else "DESC"
        with self._mutex:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq {order} LIMIT ?",
                                    (*args, limit)).fetchall()
        jobs = [_job(row) for row in rows]
        return jobs[::-1] if order == "ASC" else jobs

    def claim(self) -> Job | None:
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq LIMIT 1",
                                       (Status.QUEUED.value,)).fetchone()
                if row is not None:
                    self._db.execute("UPDATE jobs SET status = ?, started = ?, attempts = attempts + 1 WHERE id = ?",
                                     (Status.PROCESSING.value, time.time(), row[0]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return None if row is None else self.get(row[0])

    def keep_audio(self, job_id: str, audio: bytes | bytearray) -> None:
        name = self._write(Path("audio") / job_id, audio)
        self._update(job_id, "audio = ?", name)

    def read_audio(self, job: Job) -> bytearray:
        with open(self.root / job.audio, "rb") as source:
            data = bytearray(os.fstat(source.fileno()).st_size)
            source.readinto(data)
        return data

    def finish(self, job_id: str, *, result: dict | None = None, error: JobError | None = None) -> Job:
        status = Status.ERROR if error is not None else Status.COMPLETED
        self._update(job_id, "status = ?, completed = ?, result = CASE WHEN deleted THEN NULL ELSE ? END, "
                             "error_code = ?, error_description = ?, "
                             "webhook_pending = json_extract(options, '$.webhook_url') IS NOT NULL",
                     status.value, time.time(), None if result is None else json.dumps(result),
                     error.code if error else None, error.description if error else None)
        return self.get(job_id)

    def webhook_answered(self, job_id: str, status_code: int | None, *, done: bool) -> None:
        self._update(job_id, "webhook_status_code = ?, webhook_pending = ?", status_code, 0 if done else 1)

    def owed_webhooks(self) -> list[Job]:
        with self._mutex:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE webhook_pending = 1 ORDER BY seq").fetchall()
        return [_job(row) for row in rows]

    def recover(self) -> tuple[list[Job], list[Job]]:
        requeued, failed = [], []
        with self._mutex:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE status = ?",
                                    (Status.PROCESSING.value,)).fetchall()
        for job in map(_job, rows):
            if job.origin.resumable and job.attempts < MAX_ATTEMPTS:
                self._update(job.id, "status = ?", Status.QUEUED.value)
                requeued.append(job)
                continue
            why = (f"the server stopped {job.attempts} times while transcribing this file (killed, crashed or "
                   "lost power); it is not tried again" if job.origin.resumable else
                   "the server stopped while the request waited for this transcript; send it again")
            failed.append(self.finish(job.id, error=JobError(13, why)))
        return requeued, failed

    def delete(self, job_id: str) -> Job | None:
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
                job = _job(row) if row else None
                if job is not None and job.status is not Status.PROCESSING:
                    cancelled = job.status is Status.QUEUED
                    self._db.execute(
                        "UPDATE jobs SET result = NULL, audio = NULL, deleted = 1, webhook_pending = 0, "
                        "status = ?, completed = COALESCE(completed, ?), error_code = ?, error_description = ? "
                        "WHERE id = ?",
                        (Status.ERROR.value if cancelled else job.status.value, time.time(),
                         NO_SUCH_TRANSCRIPT if cancelled else job.error.code if job.error else None,
                         "deleted before it was transcribed" if cancelled else
                         job.error.description if job.error else None, job_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if job is None or job.status is Status.PROCESSING:
            return None
        self._remove_audio(job)
        return self.get(job_id)

    def purge(self, finished_before: float) -> int:
        with self._mutex:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE completed < ?", (finished_before,)).fetchall()
            uploads = self._db.execute("SELECT token FROM uploads WHERE created < ?", (finished_before,)).fetchall()
        jobs = [_job(row) for row in rows]
        for job in jobs:
            self._remove_audio(job)
        busy = {job.audio for job in self._unfinished()}
        with self._mutex:
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(job.id,) for job in jobs])
        for (token,) in uploads:
            if f"uploads/{token}" not in busy:
                self._remove_upload(token)
        return len(jobs)

    def queued(self) -> int:
        with self._mutex:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (Status.QUEUED.value,)).fetchone()[0]

    # --- uploads ---------------------------------------------------------------------------------------

    def save_upload(self, stream: BinaryIO, max_bytes: int) -> str:
        token = secrets.token_hex(16)
        temporary = self.root / "uploads" / f".tmp-{token}"
        size = 0
        try:
            with open(temporary, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ApiError(AUDIO_TOO_LARGE, f"the upload is larger than the {max_bytes} bytes allowed "
                                                        "(DOWNLOAD_MAX_BYTES)")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.root / "uploads" / token)
        finally:
            temporary.unlink(missing_ok=True)
        _sync_dir(self.root / "uploads")
        with self._mutex:
            self._db.execute("INSERT INTO uploads (token, created, bytes) VALUES (?, ?, ?)", (token, time.time(), size))
        return token

    def has_upload(self, token: str) -> bool:
        with self._mutex:
            return self._db.execute("SELECT 1 FROM uploads WHERE token = ?", (token,)).fetchone() is not None

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()

    # --- internals ------------------------------------------------------------------------------------

    def _update(self, job_id: str, assignments: str, *values) -> None:
        with self._mutex:
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))

    def _unfinished(self) -> list[Job]:
        with self._mutex:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE status IN (?, ?)",
                                    (Status.QUEUED.value, Status.PROCESSING.value)).fetchall()
        return [_job(row) for row in rows]

    def _write(self, name: Path, data: bytes | bytearray) -> str:
        """Write a file durably (temporary name, sync, rename, sync the directory); returns its name."""
        final = self.root / name
        temporary = final.with_name(f".tmp-{final.name}")
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
        _sync_dir(final.parent)
        return str(name)

    def _remove_audio(self, job: Job) -> None:
        """Remove a job's audio, unless another job still reads it (an upload transcribed twice)."""
        if job.audio is None:
            return
        with self._mutex:
            shared = self._db.execute("SELECT 1 FROM jobs WHERE audio = ? AND id != ? AND deleted = 0",
                                      (job.audio, job.id)).fetchone()
        if shared:
            return
        if job.audio.startswith("uploads/"):
            self._remove_upload(job.audio.removeprefix("uploads/"))
        else:
            (self.root / job.audio).unlink(missing_ok=True)

    def _remove_upload(self, token: str) -> None:
        (self.root / "uploads" / token).unlink(missing_ok=True)
        with self._mutex:
            self._db.execute("DELETE FROM uploads WHERE token = ?", (token,))


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _row(job: Job) -> tuple:
    return (job.id, job.origin.value, job.status.value, json.dumps(job.options.as_dict()), job.created, job.started,
            job.completed, job.attempts, job.audio, None if job.result is None else json.dumps(job.result),
            job.error.code if job.error else None, job.error.description if job.error else None,
            job.webhook_status_code, int(job.webhook_pending), int(job.deleted))


def _job(row: tuple) -> Job:
    (job_id, origin, status, options, created, started, completed, attempts, audio, result, error_code,
     error_description, webhook_status_code, webhook_pending, deleted) = row
    return Job(
        id=job_id, origin=Origin(origin), options=Options.from_dict(json.loads(options)), status=Status(status),
        created=created, started=started, completed=completed, attempts=attempts, audio=audio,
        result=None if result is None else json.loads(result),
        error=None if error_code is None else JobError(error_code, error_description),
        webhook_status_code=webhook_status_code, webhook_pending=bool(webhook_pending), deleted=bool(deleted),
    )
