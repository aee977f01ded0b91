"""The embedded job store on a real SQLite database and real files: order, recovery, deletion, retention.

These are the promises the APIs lean on: a job added is there with its audio after any crash, the
queue is first in first out, a job the dead tree left processing runs again once and then ends in
error, DELETE and retention take the audio with them, and one server owns a data directory.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.errors import ApiError
from daemon.jobs.record import Job, JobError, Options, Origin, Status
from daemon.jobs.sqlite_store import DataDirInUse, SqliteJobStore


@pytest.fixture()
def store(tmp_path) -> SqliteJobStore:
    opened = SqliteJobStore(tmp_path / "data")
    yield opened
    opened.close()


def _job(origin: Origin = Origin.V2, **options) -> Job:
    return Job.new(origin, Options(audio_url="http://127.0.0.1/a.wav", **options))


def test_jobs_queue_first_in_first_out_and_page_newest_first(store):
    jobs = [store.add(_job()) for _ in range(5)]
    assert store.claim().id == jobs[0].id and store.claim().id == jobs[1].id
    assert store.queued() == 3 and len(store.page(10, status=Status.PROCESSING)) == 2
    page = store.page(2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id]
    assert [j.id for j in store.page(2, before_id=page[-1].id)] == [jobs[2].id, jobs[1].id]
    assert [j.id for j in store.page(2, after_id=jobs[0].id)] == [jobs[2].id, jobs[1].id]
    assert [j.id for j in store.page(10, status=Status.PROCESSING)] == [jobs[1].id, jobs[0].id]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(store.page(10, created_on=today)) == 5 and store.page(10, created_on="2001-01-01") == []


def test_a_job_and_its_audio_are_durable_when_add_returns(tmp_path):
    """Written by a process that is then SIGKILLed: the next process finds both."""
    root = tmp_path / "data"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
            "from pathlib import Path\n"
            "from daemon.jobs.record import Job, Options, Origin\n"
            "from daemon.jobs.sqlite_store import SqliteJobStore\n"
            f"store = SqliteJobStore(Path({str(root)!r}))\n"
            "job = store.add(Job.new(Origin.V2, Options(audio_url='http://x/a.wav')), b'RIFF' + bytes(1000))\n"
            "print(job.id, flush=True)\n"
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    job_id = done.stdout.strip()
    store = SqliteJobStore(root)
    try:
        job = store.get(job_id)
        assert job is not None and job.status is Status.QUEUED
        assert bytes(store.read_audio(job)) == b"RIFF" + bytes(1000)
    finally:
        store.close()


def test_recovery_runs_an_interrupted_job_again_once(store):
    first = store.add(_job())
    sync = store.add(_job(Origin.TRANSCRIBE_URL).with_(status=Status.PROCESSING, attempts=1))
    assert store.claim().id == first.id  # a synchronous job is never in the queue
    requeued, failed = store.recover()
    assert [j.id for j in requeued] == [first.id]
    assert [j.id for j in failed] == [sync.id] and "send it again" in failed[0].error.description
    again = store.claim()
    assert (again.id, again.attempts) == (first.id, 2)
    requeued, failed = store.recover()
    assert requeued == [] and [j.id for j in failed] == [first.id]
    assert store.get(first.id).status is Status.ERROR
    assert "stopped 2 times" in store.get(first.id).error.description


def test_finishing_owes_a_webhook_only_when_there_is_one(store):
    plain, hooked = store.add(_job()), store.add(_job(webhook_url="http://127.0.0.1:1/hook"))
    store.finish(plain.id, result={"blob": "", "duration": 1.0, "words": []})
    store.finish(hooked.id, error=JobError(3, "not audio"))
    assert [j.id for j in store.owed_webhooks()] == [hooked.id]
    store.webhook_answered(hooked.id, 500, done=False)
    assert store.get(hooked.id).webhook_status_code == 500 and store.owed_webhooks()
    store.webhook_answered(hooked.id, 200, done=True)
    assert store.owed_webhooks() == []


def test_delete_and_retention_take_the_audio_with_them(store, tmp_path):
    uploaded = store.save_upload(io.BytesIO(b"RIFF" + bytes(5000)), max_bytes=10_000)
    assert store.has_upload(uploaded) and (tmp_path / "data" / "uploads" / uploaded).exists()
    from_upload = store.add(_job().with_(audio=f"uploads/{uploaded}"))
    kept = store.add(_job(), b"RIFF" + bytes(100))
    store.finish(from_upload.id, result={"blob": "hi", "duration": 1.0, "words": []})
    deleted = store.delete(from_upload.id)
    assert deleted.deleted and deleted.result is None and deleted.audio is None
    assert not store.has_upload(uploaded) and not (tmp_path / "data" / "uploads" / uploaded).exists()
    assert store.purge(time.time() - 60) == 0  # nothing finished an hour ago
    store.finish(kept.id, result={"blob": "", "duration": 1.0, "words": []})
    assert store.purge(time.time() + 1) == 2  # both finished before "now + 1 s"
    assert store.get(kept.id) is None and not (tmp_path / "data" / "audio" / kept.id).exists()


def test_an_upload_over_the_limit_leaves_nothing(store, tmp_path):
    with pytest.raises(ApiError) as refused:
        store.save_upload(io.BytesIO(bytes(3 << 20)), max_bytes=1 << 20)
    assert (refused.value.code, refused.value.status) == (6, 413)
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


def test_one_server_owns_a_data_directory(store, tmp_path):
    with pytest.raises(DataDirInUse, match="ASYNC_ENGINE_DATA_DIR"):
        SqliteJobStore(tmp_path / "data")
