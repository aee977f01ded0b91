"""The shared job store: records, results, stored audio and uploads in Redis (daemon/shared/keys.py).

Same interface as the embedded store (daemon/jobs/store.py), so the HTTP surfaces, the runner and
the webhooks do not know which one they have. Differences that matter to an operator:
- Durability is Redis's: with `appendonly yes` (and `appendfsync always` for a promise kept even
  through a power loss; `everysec` may lose the last second) an accepted job survives a Redis restart.
- Audio crosses hosts as bytes in Redis (an upload, a /v1 file, or what a worker downloaded),
  bounded by DOWNLOAD_MAX_BYTES; never as a path or a shared-memory name.
- Finishing a job also pushes to ae:done:<id>, in the same transaction, so the API node whose
  client waits for it wakes at once from a blocking read (store.wait).
Every method raises the API's 503 (code 22) when Redis cannot be reached.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from typing import BinaryIO

import redis

from daemon.errors import AUDIO_TOO_LARGE, NO_SUCH_TRANSCRIPT, WORKER_FAILURE_CODE, ApiError
from daemon.jobs.record import Job, JobError, Options, Origin, Status
from daemon.shared import keys
from daemon.shared.connection import answering_503

MAX_ATTEMPTS = 2  # a job whose worker node died this often while transcribing it ends in error
_DONE_KEEP_SECONDS = 3600  # a done signal nobody read (its client went away) expires
_PAGE_BATCH = 256
_CHUNK = 1 << 20

# queued -> processing, attempts + 1, out of the queued set; nil when the job is gone or not queued
# (finished, deleted, or already taken by another node after a duplicate delivery).
_BEGIN = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return nil end
redis.call('HSET', KEYS[1], 'status', 'processing', 'started', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('SREM', KEYS[2], ARGV[2])
return redis.call('HGET', KEYS[1], 'attempts')
"""

# DELETE: anything but a job being transcribed; a queued one leaves the queue, in error.
_DELETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nil end
if status == 'processing' then return 'processing' end
redis.call('HDEL', KEYS[1], 'result', 'audio')
redis.call('HSET', KEYS[1], 'deleted', '1', 'webhook_pending', '0')
redis.call('SREM', KEYS[3], ARGV[1])
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'error', 'completed', ARGV[2], 'error_code', ARGV[3],
             'error_description', 'deleted before it was transcribed')
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
end
return status
"""


class RedisJobStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._begin = client.register_script(_BEGIN)
        self._delete = client.register_script(_DELETE)

    # --- records -------------------------------------------------------------------------------------

    @answering_503
    def add(self, job: Job, audio: bytes | bytearray | None = None) -> Job:
        if audio is not None:
            job = job.with_(audio=f"audio/{job.id}")
        seq = self.redis.incr(keys.SEQ)
        with self.redis.pipeline(transaction=True) as tx:
            if audio is not None:
                tx.set(keys.audio(job.id), bytes(audio))
            tx.hset(keys.job(job.id), mapping={**_fields(job), "seq": seq})
            tx.zadd(keys.JOBS, {job.id: seq})
            if job.status is Status.QUEUED:
                tx.sadd(keys.QUEUED, job.id)
            tx.execute()
        return job

    @answering_503
    def get(self, job_id: str) -> Job | None:
        return _job(self.redis.hgetall(keys.job(job_id)))

    @answering_503
    def page(self, limit: int, *, before_id: str | None = None, after_id: str | None = None,
             status: Status | None = None, created_on: str | None = None) -> list[Job]:
        low, high = "-inf", "+inf"
        for anchor, is_before in ((before_id, True), (after_id, False)):
            if anchor is None:
                continue
            seq = self.redis.zscore(keys.JOBS, anchor)
            if seq is None:
                return []
            if is_before:
                high = f"({int(seq)}"
            else:
                low = f"({int(seq)}"
        day = None
        if created_on is not None:
            day = dt.datetime.strptime(created_on, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()
        forward = after_id is not None and before_id is None  # pages forward from after_id, shown newest first
        found: list[Job] = []
        offset = 0
        while len(found) < limit:
            if forward:
                ids = self.redis.zrangebyscore(keys.JOBS, low, high, start=offset, num=_PAGE_BATCH)
            else:
                ids = self.redis.zrevrangebyscore(keys.JOBS, high, low, start=offset, num=_PAGE_BATCH)
            if not ids:
                break
            offset += len(ids)
            with self.redis.pipeline(transaction=False) as batch:
                for job_id in ids:
                    batch.hgetall(keys.job(job_id.decode()))
                records = batch.execute()
            for record in records:
                job = _job(record)
                if job is None or (status is not None and job.status is not status):
                    continue
                if day is not None and not day <= job.created < day + 86400:
                    continue
                found.append(job)
                if len(found) == limit:
                    break
        return found[::-1] if forward else found

    @answering_503
    def begin(self, job_id: str) -> Job | None:
        """A worker node starts a job it was handed: queued -> processing (attempts + 1). None when the job
        must not run (finished, deleted, expired, or already running after a duplicate delivery)."""
        if self._begin(keys=[keys.job(job_id), keys.QUEUED], args=[time.time(), job_id]) is None:
            return None
        return self.get(job_id)

    @answering_503
    def requeue(self, job_id: str, refund: bool = False) -> Job | None:
        """A dead worker node's job goes back to queued, or ends in error after MAX_ATTEMPTS starts.
        refund: the start does not count (the store, not a worker, failed it). Returns the job as it is
        now; None when it is gone or already finished."""
        job = self.get(job_id)
        if job is None or job.finished:
            return None
        if refund:
            job = job.with_(attempts=max(0, job.attempts - 1))
        elif job.attempts >= MAX_ATTEMPTS:
            return self.finish(job_id, error=JobError(
                WORKER_FAILURE_CODE, f"the worker node transcribing this file stopped {job.attempts} times "
                                     "(killed, crashed or lost); it is not tried again"))
        with self.redis.pipeline(transaction=True) as tx:
            tx.hset(keys.job(job_id), mapping={"status": Status.QUEUED.value, "attempts": job.attempts})
            tx.sadd(keys.QUEUED, job_id)
            tx.execute()
        return job.with_(status=Status.QUEUED)

    @answering_503
    def discard(self, job_id: str) -> None:
        """Remove a record no client will ever see (a synchronous request refused with 423)."""
        with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.job(job_id), keys.audio(job_id))
            tx.zrem(keys.JOBS, job_id)
            tx.srem(keys.QUEUED, job_id)
            tx.execute()

    @answering_503
    def keep_audio(self, job_id: str, audio: bytes | bytearray) -> None:
        with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.audio(job_id), bytes(audio))
            tx.hset(keys.job(job_id), "audio", f"audio/{job_id}")
            tx.execute()

    @answering_503
    def read_audio(self, job: Job) -> bytearray:
        data = self.redis.get(_audio_key(job.audio))
        if data is None:
            raise ApiError(NO_SUCH_TRANSCRIPT, "this job's stored audio has expired or was deleted "
                                               "(JOB_RETENTION_HOURS); upload the file again")
        return bytearray(data)

    @answering_503
    def finish(self, job_id: str, *, result: dict | None = None, error: JobError | None = None) -> Job:
        job = self.get(job_id)
        if job is None:
            raise ApiError(NO_SUCH_TRANSCRIPT, f"job {job_id} expired while it was transcribed")
        now = time.time()
        status = Status.ERROR if error is not None else Status.COMPLETED
        ended = job.with_(status=status, completed=now, error=error, webhook_pending=bool(job.options.webhook_url),
                          result=None if job.deleted else result)
        with self.redis.pipeline(transaction=True) as tx:
            tx.hset(keys.job(job_id), mapping=_fields(ended))
            if ended.result is None:
                tx.hdel(keys.job(job_id), "result")
            tx.srem(keys.QUEUED, job_id)
            tx.zadd(keys.FINISHED, {job_id: now})
            if ended.webhook_pending:
                tx.sadd(keys.WEBHOOKS, job_id)
            tx.rpush(keys.done(job_id), status.value)
            tx.expire(keys.done(job_id), _DONE_KEEP_SECONDS)
            tx.execute()
        return ended

    @answering_503
    def wait(self, job_id: str, timeout: float) -> bool:
        """Block until the job has finished or `timeout` passes (a blocking read, not a poll); True: finished."""
        if timeout > 0 and self.redis.blpop([keys.done(job_id)], timeout=max(0.01, timeout)) is not None:
            return True
        job = self.get(job_id)
        return job is None or job.finished

    @answering_503
    def webhook_answered(self, job_id: str, status_code: int | None, *, done: bool) -> None:
        with self.redis.pipeline(transaction=True) as tx:
            tx.hset(keys.job(job_id), mapping={"webhook_pending": "0" if done else "1",
                                               **({"webhook_status_code": status_code} if status_code else {})})
            if done:
                tx.srem(keys.WEBHOOKS, job_id)
            tx.execute()

    @answering_503
    def owed_webhooks(self) -> list[Job]:
        jobs = [self.get(job_id.decode()) for job_id in self.redis.smembers(keys.WEBHOOKS)]
        return sorted((job for job in jobs if job is not None and job.webhook_pending), key=lambda job: job.created)

    @answering_503
    def delete(self, job_id: str) -> Job | None:
        was = self._delete(keys=[keys.job(job_id), keys.QUEUED, keys.WEBHOOKS, keys.FINISHED],
                           args=[job_id, time.time(), NO_SUCH_TRANSCRIPT])
        if was is None or was == b"processing":
            return None
        job = self.get(job_id)
        self.redis.delete(keys.audio(job_id))  # an upload stays for other jobs; it expires with the others
        return job

    @answering_503
    def purge(self, finished_before: float) -> int:
        ids = [job_id.decode() for job_id in self.redis.zrangebyscore(keys.FINISHED, "-inf", finished_before)]
        for start in range(0, len(ids), _PAGE_BATCH):
            batch = ids[start:start + _PAGE_BATCH]
            with self.redis.pipeline(transaction=True) as tx:
                for job_id in batch:
                    tx.delete(keys.job(job_id), keys.audio(job_id), keys.done(job_id))
                tx.zrem(keys.JOBS, *batch)
                tx.zrem(keys.FINISHED, *batch)
                tx.srem(keys.WEBHOOKS, *batch)
                tx.execute()
        old = [token.decode() for token in self.redis.zrangebyscore(keys.UPLOADS, "-inf", finished_before)]
        if old:
            waiting = {self.redis.hget(keys.job(job_id.decode()), "audio") for job_id in self.redis.smembers(keys.QUEUED)}
            for token in old:
                if f"uploads/{token}".encode() not in waiting:
                    with self.redis.pipeline(transaction=True) as tx:
                        tx.delete(keys.upload(token))
                        tx.zrem(keys.UPLOADS, token)
                        tx.execute()
        return len(ids)

    @answering_503
    def queued(self) -> int:
        return self.redis.scard(keys.QUEUED)

    # --- uploads ---------------------------------------------------------------------------------------

    @answering_503
    def save_upload(self, stream: BinaryIO, max_bytes: int) -> str:
        data = bytearray()
        while chunk := stream.read(_CHUNK):
            data += chunk
            if len(data) > max_bytes:
                raise ApiError(AUDIO_TOO_LARGE, f"the upload is larger than the {max_bytes} bytes allowed "
                                                "(DOWNLOAD_MAX_BYTES)")
        token = secrets.token_hex(16)
        with self.redis.pipeline(transaction=True) as tx:
            tx.set(keys.upload(token), bytes(data))
            tx.zadd(keys.UPLOADS, {token: time.time()})
            tx.execute()
        return token

    @answering_503
    def has_upload(self, token: str) -> bool:
        return bool(self.redis.exists(keys.upload(token)))

    def close(self) -> None:
        self.redis.close()


def _audio_key(name: str) -> str:
    kind, _, ident = name.partition("/")
    return keys.upload(ident) if kind == "uploads" else keys.audio(ident)


def _fields(job: Job) -> dict:
    """A record as hash fields; a None field is left out (and read back as None)."""
    fields = {
        "id": job.id, "origin": job.origin.value, "status": job.status.value,
        "options": json.dumps(job.options.as_dict()), "created": repr(job.created), "attempts": job.attempts,
        "webhook_pending": int(job.webhook_pending), "deleted": int(job.deleted),
        "started": None if job.started is None else repr(job.started),
        "completed": None if job.completed is None else repr(job.completed),
        "audio": job.audio, "result": None if job.result is None else json.dumps(job.result),
        "error_code": job.error.code if job.error else None,
        "error_description": job.error.description if job.error else None,
        "webhook_status_code": job.webhook_status_code,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _job(raw: dict) -> Job | None:
    if not raw or b"id" not in raw:
        return None
    f = {name.decode(): value.decode() for name, value in raw.items()}

    def number(name: str, kind=float):
        return None if name not in f else kind(f[name])

    return Job(
        id=f["id"], origin=Origin(f["origin"]), options=Options.from_dict(json.loads(f["options"])),
        status=Status(f["status"]), created=float(f["created"]), started=number("started"),
        completed=number("completed"), attempts=int(f.get("attempts", 0)), audio=f.get("audio"),
        result=json.loads(f["result"]) if "result" in f else None,
        error=JobError(int(f["error_code"]), f.get("error_description", "")) if "error_code" in f else None,
        webhook_status_code=number("webhook_status_code", int), webhook_pending=f.get("webhook_pending") == "1",
        deleted=f.get("deleted") == "1",
    )
