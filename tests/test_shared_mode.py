"""Shared mode for real: a redis-server, an API node (SKIP_DECODER=1) and worker nodes.

Each worker node runs in its own mount namespace with a private /dev/shm, so the only way a job,
its audio or its result can reach another process is through Redis. The module walks one cluster
through its life: health with 0, 1 and 2 worker nodes; sync, async and OpenAI jobs; 423 only when
every node is full; a worker node SIGKILLed mid-job (its request still answered 200); a worker node
drained by SIGTERM; Redis SIGKILLed and restarted (accepted jobs kept, nodes recover by
themselves); metrics scraped from every node; and WER through the API node equal to one host's.
"""

from __future__ import annotations

import concurrent.futures as futures
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.cluster import Cluster, Node, cluster, free_core, health, missing_tools, ready_nodes, wait_until
from daemon_support import audio_server, running_daemon
from synth import write_short_and_long

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=f"shared mode cannot run: {missing_tools()}")


@pytest.fixture(scope="module")
def files(tmp_path_factory, installed_model) -> Path:
    return write_short_and_long(tmp_path_factory.mktemp("shared-audio"))


@pytest.fixture(scope="module")
def origin(files) -> Iterator[str]:
    with audio_server(files) as url:
        yield url


@pytest.fixture(scope="module")
def shared(tmp_path_factory, installed_model) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster"), MAX_TRANSCRIPTS_PARALLEL="1", ASYNC_ENGINE_DECODERS="1") as made:
        made.api = made.api_node()
        made.workers = []
        yield made


def _workers(shared: Cluster, count: int) -> list[Node]:
    """Exactly `count` live worker nodes, started as needed, all ready on the API node's /health."""
    shared.workers = [w for w in shared.workers if w.process.poll() is None]
    while len(shared.workers) < count:  # each on a core of its own, as if on a host of its own
        shared.workers.append(shared.worker_node(cpus=free_core(shared.workers)))
    wait_until(lambda: ready_nodes(shared.api) == count, 120, shared.workers[-1])
    return shared.workers


def _sync(shared: Cluster, url: str, timeout: float = 300) -> requests.Response:
    return requests.post(shared.api.url + "/transcribe/url", json={"audio_url": url}, timeout=timeout)


def _wait_done(shared: Cluster, job_id: str, timeout: float = 300) -> dict:
    found = {}

    def done() -> bool:
        nonlocal found
        try:
            found = requests.get(f"{shared.api.url}/v2/transcript/{job_id}", timeout=10).json()
        except requests.RequestException:
            return False
        return found.get("status") in ("completed", "error")

    wait_until(done, timeout, shared.api, step=0.25)
    return found


def _running_on(shared: Cluster) -> dict[int, int]:
    """pid -> jobs running, per live worker node, as the API node sees them."""
    return {node["pid"]: node["running"] for node in health(shared.api)[1]["nodes"]}


def test_health_follows_the_worker_nodes_and_the_api_node_loads_no_model(shared):
    status, body = health(shared.api)
    assert status == 501 and body["status"] == "no_worker_nodes" and body["nodes"] == []
    maps = Path(f"/proc/{shared.api.process.pid}/maps").read_text()
    assert "libtorch" not in maps and "onnxruntime" not in maps
    _workers(shared, 1)
    status, body = health(shared.api)
    assert status == 200 and body["status"] == "ok" and len(body["nodes"]) == 1
    _workers(shared, 2)
    status, body = health(shared.api)
    assert status == 200 and len(body["nodes"]) == 2
    assert {node["pid"] for node in body["nodes"]} == {w.process.pid for w in shared.workers}
    assert all(node["capacity"] == 1 and node["running"] == 0 and node["ready"] for node in body["nodes"])


def test_sync_async_and_openai_jobs_run_on_the_worker_nodes(shared, origin, files):
    _workers(shared, 2)
    answer = _sync(shared, f"{origin}/short.wav")
    assert answer.status_code == 200, answer.text
    assert "weekly report" in answer.json()["blob"].lower() and answer.json()["words"]
    stored = requests.get(f"{shared.api.url}/v2/transcript/{answer.json()['uid']}", timeout=10).json()
    assert stored["status"] == "completed" and stored["text"] == answer.json()["blob"]

    upload = requests.post(shared.api.url + "/v2/upload", data=(files / "short.wav").read_bytes(), timeout=30).json()
    job = requests.post(shared.api.url + "/v2/transcript", json={"audio_url": upload["upload_url"]}, timeout=30).json()
    assert job["status"] == "queued"
    done = _wait_done(shared, job["id"])
    assert done["status"] == "completed" and done["text"] == answer.json()["blob"]

    with open(files / "short.wav", "rb") as audio:
        openai_answer = requests.post(shared.api.url + "/v1/audio/transcriptions", files={"file": audio},
                                      data={"model": "whisper-1"}, timeout=300)
    assert openai_answer.status_code == 200 and openai_answer.json()["text"] == answer.json()["blob"]


def test_openai_stream_through_the_api_node_runs_as_a_job(shared, files):
    """stream=true on an API node (OpenAI's SDK): the file runs as a job on a worker node, and its segments
    come back as deltas once it is done, then the whole text."""
    _workers(shared, 2)
    client = openai.OpenAI(base_url=f"{shared.api.url}/v1", api_key="unused", max_retries=0)
    with open(files / "long.wav", "rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert deltas and [e.type for e in events] == ["transcript.text.delta"] * len(deltas) + ["transcript.text.done"]
    assert events[-1].text == "".join(e.delta for e in deltas)
    assert "projector" in events[-1].text.lower() and "remote control" in events[-1].text.lower()
    assert "libtorch" not in Path(f"/proc/{shared.api.process.pid}/maps").read_text()


def test_speaker_labels_on_a_worker_node(shared, origin):
    """The worker node that runs the job labels its speakers (one generated voice: one speaker, A); the API node
    still loads no model."""
    _workers(shared, 2)
    answer = requests.post(shared.api.url + "/transcribe/url", json={"audio_url": f"{origin}/short.wav",
                                                                     "speaker_labels": True}, timeout=300)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["words"] and {w["speaker"] for w in body["words"]} == {"A"}
    assert [u["speaker"] for u in body["utterances"]] == ["A"]
    assert "libtorch" not in Path(f"/proc/{shared.api.process.pid}/maps").read_text()


def test_423_only_when_every_worker_node_is_full_and_async_jobs_queue(shared, origin):
    _workers(shared, 2)
    with futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _sync(shared, f"{origin}/long.wav"), range(3)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 423], [a.text[:200] for a in answers]
    refused = next(a for a in answers if a.status_code == 423)
    assert refused.json()["code"] == 7 and int(refused.headers["Retry-After"]) > 0
    assert "2 files" in refused.json()["description"]  # the capacity of every live node together

    jobs = [requests.post(shared.api.url + "/v2/transcript", json={"audio_url": f"{origin}/short.wav"},
                          timeout=30).json() for _ in range(5)]
    assert all(job["status"] == "queued" for job in jobs)
    assert all(_wait_done(shared, job["id"])["status"] == "completed" for job in jobs)


def test_any_api_node_serves_any_client_and_can_wait_for_slots_instead(shared, origin):
    """A second API node (REJECT_OVER_PARALLEL=False) sees the first one's jobs, and queues synchronous
    requests past every node's capacity instead of refusing them."""
    _workers(shared, 2)
    job = requests.post(shared.api.url + "/v2/transcript", json={"audio_url": f"{origin}/short.wav"}, timeout=30).json()
    patient = shared.api_node(REJECT_OVER_PARALLEL="False")
    assert _wait_done(shared, job["id"])["status"] == "completed"
    seen = requests.get(f"{patient.url}/v2/transcript/{job['id']}", timeout=10).json()
    assert seen["status"] == "completed" and seen["id"] == job["id"]
    with futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: requests.post(patient.url + "/transcribe/url",
                                                        json={"audio_url": f"{origin}/long.wav"}, timeout=300),
                                range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text[:200] for a in answers]
    patient.stop()
    shared.nodes.remove(patient)


def test_a_worker_node_killed_mid_job_costs_no_request(shared, origin):
    first, second = _workers(shared, 2)
    with futures.ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(_sync, shared, f"{origin}/long.wav") for _ in range(2)]
        wait_until(lambda: sum(_running_on(shared).values()) == 2, 60)
        first.kill()  # the node and its whole process tree, mid-job
        answers = [p.result(timeout=300) for p in pending]
    assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
    assert answers[0].json()["blob"] == answers[1].json()["blob"]
    wait_until(lambda: list(_running_on(shared)) == [second.process.pid], 30)
    assert "is dead (no heartbeat" in second.log()


def test_sigterm_drains_a_worker_node(shared, origin):
    workers = _workers(shared, 2)
    with futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_sync, shared, f"{origin}/long.wav")
        wait_until(lambda: sum(_running_on(shared).values()) == 1, 60)
        busy = next(w for w in workers if _running_on(shared).get(w.process.pid) == 1)
        busy.process.terminate()
        answer = pending.result(timeout=300)
    assert answer.status_code == 200, answer.text
    assert busy.process.wait(60) == 0
    assert busy.process.pid not in _running_on(shared)


def test_redis_restart_keeps_accepted_jobs_and_every_node_recovers(shared, origin):
    _workers(shared, 2)
    jobs = [requests.post(shared.api.url + "/v2/transcript", json={"audio_url": f"{origin}/long.wav"},
                          timeout=30).json()["id"] for _ in range(4)]
    shared.redis.kill()  # appendfsync always: every accepted job is on disk
    status, body = health(shared.api)
    assert status == 501 and body["status"] == "store_unreachable"
    refused = requests.post(shared.api.url + "/v2/transcript", json={"audio_url": f"{origin}/short.wav"}, timeout=30)
    assert refused.status_code == 503 and refused.json()["code"] == 22, refused.text
    assert _sync(shared, f"{origin}/short.wav").json()["code"] == 22
    time.sleep(2)
    shared.redis.start()
    wait_until(lambda: ready_nodes(shared.api) == 2, 60)
    assert all(_wait_done(shared, job_id)["status"] == "completed" for job_id in jobs)
    assert _sync(shared, f"{origin}/short.wav").status_code == 200


def _scrape(url: str) -> dict[str, list]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list, **labels: str) -> float:
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_on_every_node(shared, origin):
    workers = _workers(shared, 2)
    before = _scrape(shared.api.url)
    assert _sync(shared, f"{origin}/short.wav").status_code == 200
    assert requests.get(shared.api.url + "/v2/transcript/nope", timeout=10).status_code == 404
    api = _scrape(shared.api.url)
    for labels, more in (({"endpoint": "/transcribe/url", "status": "200"}, 1),
                         ({"endpoint": "/v2/transcript/{job_id}", "status": "404", "code": "20"}, 1)):
        assert _value(api["async_engine_http_requests"], **labels) == \
            _value(before["async_engine_http_requests"], **labels) + more, labels
    assert _value(api["async_engine_http_request_seconds"], endpoint="/transcribe/url", le="+Inf") >= 1
    assert _value(api["async_engine_worker_nodes_alive"]) == 2 and _value(api["async_engine_capacity_jobs"]) == 2
    assert _value(api["async_engine_queue_depth"]) == 0 and _value(api["async_engine_jobs_in_flight"]) == 0
    # a worker that has run no job yet exposes no series of its per-job families
    on_workers = [_scrape(w.url) for w in workers]
    completed = sum(_value(m.get("async_engine_jobs", []), status="completed") for m in on_workers)
    assert completed >= 1
    assert sum(_value(m.get("async_engine_audio_seconds", [])) for m in on_workers) > 2
    assert sum(_value(m.get("async_engine_real_time_factor", []), le="+Inf") for m in on_workers) == completed
    assert all("async_engine_worker_restarts" in m for m in on_workers)


def test_wer_through_the_api_node_equals_one_host(shared, eval_dir, tmp_path):
    from bench.wer import count_errors

    _workers(shared, 2)
    rows = [line.split("\t") for line in (eval_dir / "dev.tsv").read_text().splitlines()]
    picked = [r for r in rows if r[0].startswith(("jfk/", "librispeech_1089/", "hifitts_6097_whispercpp/"))][:12]
    with audio_server(eval_dir) as url, running_daemon(tmp_path) as one_host:
        one_host.wait_healthy()
        with futures.ThreadPoolExecutor(2) as pool:
            shared_texts = list(pool.map(lambda r: _sync(shared, f"{url}/{r[0]}").json()["blob"], picked))
        single_texts = [one_host.transcribe({"audio_url": f"{url}/{path}"}).json()["blob"] for path, _ in picked]
    errors = [sum(count_errors(ref, text).errors for (_, ref), text in zip(picked, texts))
              for texts in (shared_texts, single_texts)]
    assert sum(count_errors(ref, "").words for _, ref in picked) > 100
    assert errors[0] == errors[1] and shared_texts == single_texts, (errors, shared_texts, single_texts)
