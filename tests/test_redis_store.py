"""The shared job store, queue and node registry on a real redis-server of the test's own.

The promises shared mode leans on: records and audio round-trip across clients (hosts), pages in
creation order, a job starts once however often it is delivered, a dead node's job runs again
once and then ends in error, a waiting request wakes when the job ends, a slot is reserved only on
a live node with room, DELETE and retention take the audio, and an outage is the API's 503.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Iterator

import pytest

from bench.cluster import RedisServer
from daemon.errors import ApiError
from daemon.jobs.record import Job, JobError, Options, Origin, Status
from daemon.shared import keys
from daemon.shared.connection import connect
from daemon.shared.nodes import Nodes
from daemon.shared.queue import Queue
from daemon.shared.redis_store import RedisJobStore

pytestmark = pytest.mark.skipif(__import__("shutil").which("redis-server") is None,
                                reason="redis-server is not installed (Debian: apt-get install redis-server; "
                                       "./run-tests.sh installs it when it runs as root)")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path_factory.mktemp("redis"))
    started.start()
    yield started
    started.stop()


@pytest.fixture()
def store(server) -> Iterator[RedisJobStore]:
    client = connect(server.url)
    client.flushdb()
    opened = RedisJobStore(client)
    yield opened
    opened.close()


def _job(origin: Origin = Origin.V2, **options) -> Job:
    return Job.new(origin, Options(audio_url="http://127.0.0.1/a.wav", **options))


def test_records_and_audio_round_trip_and_page_in_creation_order(store, server):
    jobs = [store.add(_job(webhook_url="http://127.0.0.1/hook")) for _ in range(4)]
    with_audio = store.add(_job(dual_channel=True), b"RIFF" + bytes(2000))
    other_host = RedisJobStore(connect(server.url))  # another node reads what this one wrote
    assert other_host.get(jobs[0].id) == jobs[0] and other_host.get(with_audio.id) == with_audio
    assert bytes(other_host.read_audio(with_audio)) == b"RIFF" + bytes(2000)
    assert store.queued() == 5
    page = store.page(2)
    assert [j.id for j in page] == [with_audio.id, jobs[3].id]
    assert [j.id for j in store.page(2, before_id=page[-1].id)] == [jobs[2].id, jobs[1].id]
    assert [j.id for j in store.page(2, after_id=jobs[0].id)] == [jobs[2].id, jobs[1].id]
    assert store.page(10, before_id="t_nope") == []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(store.page(10, created_on=today)) == 5 and store.page(10, created_on="2001-01-01") == []


def test_a_job_starts_once_however_often_it_is_delivered(store):
    job = store.add(_job())
    started = store.begin(job.id)
    assert started.status is Status.PROCESSING and started.attempts == 1 and store.queued() == 0
    assert store.begin(job.id) is None  # a second delivery while it runs
    store.finish(job.id, result={"blob": "hello"})
    assert store.begin(job.id) is None  # and after it ended
    assert store.begin("t_gone") is None


def test_a_dead_nodes_job_runs_again_once_then_ends_in_error(store):
    job = store.add(_job(webhook_url="http://127.0.0.1/hook"))
    store.begin(job.id)
    again = store.requeue(job.id)
    assert again.status is Status.QUEUED and store.queued() == 1
    assert store.begin(job.id).attempts == 2
    ended = store.requeue(job.id)
    assert ended.status is Status.ERROR and ended.error.code == 13 and "2 times" in ended.error.description
    assert [j.id for j in store.owed_webhooks()] == [job.id]
    assert store.requeue(job.id) is None  # finished: nothing to move


def test_a_store_outage_does_not_count_as_an_attempt(store):
    job = store.add(_job())
    store.begin(job.id)
    store.begin(store.requeue(job.id).id)
    assert store.requeue(job.id, refund=True).attempts == 1 and store.get(job.id).status is Status.QUEUED


def test_a_waiting_request_wakes_when_the_job_ends(store):
    job = store.add(_job(Origin.TRANSCRIBE_URL))
    assert store.wait(job.id, 0.2) is False
    ender = threading.Timer(0.3, lambda: store.finish(job.id, error=JobError(3, "not audio")))
    started = time.monotonic()
    ender.start()
    assert store.wait(job.id, 10) is True
    assert time.monotonic() - started < 5  # woken by the push, not by the timeout
    assert store.get(job.id).error == JobError(3, "not audio")


def test_slots_are_reserved_only_on_live_nodes_with_room(store, server):
    client = connect(server.url)
    nodes, queue = Nodes(client, timeout=2.0), Queue(client)
    assert nodes.reserve("t_a") is None  # no node at all
    nodes.beat("n1", capacity=1, ready=True)
    nodes.beat("n2", capacity=2, ready=True)
    queue.prepare("n1")
    queue.prepare("n2")
    assert nodes.reserve("t_a") == "n2"  # the most free slots
    placed = {job: nodes.reserve(job) for job in ("t_b", "t_c")}
    assert sorted(placed.values()) == ["n1", "n2"]
    assert nodes.reserve("t_d") is None  # every slot of every live node taken
    assert nodes.take("n1", 1, "t_e") is False
    nodes.release("n2", "t_a")
    assert nodes.take("n2", 2, "t_e") is True and nodes.take("n2", 2, "t_e") is True  # idempotent
    handed = queue.read("n2", keys.node_sync("n2"), 10)
    assert {job for _, _, job in handed} <= {"t_a", "t_b", "t_c"} and handed
    nodes.beat("n3", capacity=5, ready=False)
    assert nodes.reserve("t_f") is None  # not ready: loading, or draining
    time.sleep(2.2)  # n1 and n2 stop beating
    assert set(nodes.dead()) == {"n1", "n2", "n3"} and nodes.alive() == []
    held = {job for job, _, _ in nodes.jobs_of("n2")}  # handed (taken or not) and holding a slot
    assert held == {"t_a", "t_e", *(job for job, node in placed.items() if node == "n2")}
    nodes.forget("n2")
    assert client.exists(keys.node_sync("n2"), keys.node_running("n2"), keys.node("n2")) == 0


def test_delete_and_retention_take_the_audio_with_them(store):
    done = store.add(_job(), b"audio-bytes")
    store.begin(done.id)
    assert store.delete(done.id) is None  # being transcribed: it cannot be deleted
    store.finish(done.id, result={"blob": "x"})
    deleted = store.delete(done.id)
    assert deleted.deleted and deleted.result is None and not store.redis.exists(keys.audio(done.id))
    queued = store.add(_job())
    cancelled = store.delete(queued.id)
    assert cancelled.status is Status.ERROR and cancelled.error.code == 20 and store.queued() == 0
    token = store.save_upload(io.BytesIO(b"upload"), 100)
    assert store.has_upload(token)
    kept = store.add(_job().with_(audio=f"uploads/{token}"))  # still queued: its upload stays
    assert store.purge(time.time() + 1) == 2 and store.get(done.id) is None and store.get(queued.id) is None
    assert store.has_upload(token) and store.get(kept.id) is not None
    store.delete(kept.id)
    assert store.purge(time.time() + 1) == 1 and not store.has_upload(token)


def test_an_upload_over_the_limit_leaves_nothing(store):
    with pytest.raises(ApiError) as refused:
        store.save_upload(io.BytesIO(bytes(101)), 100)
    assert refused.value.code == 6 and store.redis.zcard(keys.UPLOADS) == 0


def test_an_unreachable_redis_is_the_apis_503_with_its_own_code(tmp_path):
    gone = RedisServer(tmp_path)  # never started: nothing listens on its port
    with pytest.raises(ApiError) as refused:
        RedisJobStore(connect(gone.url)).get("t_x")
    assert refused.value.code == 22 and refused.value.status == 503 and refused.value.retry_after
    assert "redis://" not in refused.value.description


def test_a_password_in_redis_url_is_used_and_a_wrong_one_is_a_503_that_does_not_show_it(tmp_path):
    guarded = RedisServer(tmp_path, password="pw-0123456789")
    guarded.start()
    try:
        job = RedisJobStore(connect(guarded.url)).add(_job())
        assert RedisJobStore(connect(guarded.url)).get(job.id) == job
        with pytest.raises(ApiError) as refused:
            RedisJobStore(connect(guarded.url.replace("pw-0123456789", "wrong-password"))).get(job.id)
        assert refused.value.code == 22 and "wrong-password" not in refused.value.description
    finally:
        guarded.stop()


def test_webhooks_start_even_when_the_store_cannot_be_read(tmp_path):
    """A worker node started while Redis is away still delivers the webhooks of the jobs it runs later."""
    from daemon.config import DaemonConfig
    from daemon.jobs.webhooks import Webhooks

    gone = RedisServer(tmp_path)  # nothing listens on its port
    webhooks = Webhooks(RedisJobStore(connect(gone.url)),
                        DaemonConfig.from_env({"ASYNC_ENGINE_DEVICES": "cpu",
                                               "ASYNC_ENGINE_DATA_DIR": str(tmp_path / "data")}).download)
    webhooks.start()
    assert webhooks._thread.is_alive()
    webhooks.stop()
    assert not webhooks._thread.is_alive()
