"""The real daemon: real processes, the real tiny.en model, real HTTP on loopback, real shared memory."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
import soxr
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import audio_server, free_port, running_daemon
from synth import silence, speak

SENTENCE = "please send the weekly report to the finance team before friday"


def _speech(text: str) -> np.ndarray:
    samples, rate = speak(text)
    return soxr.resample(samples, rate, 16000).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory, installed_model) -> Path:
    root = tmp_path_factory.mktemp("audio")
    speech = _speech(SENTENCE)
    sf.write(root / "speech.wav", np.concatenate([silence(0.5, 16000), speech, silence(0.5, 16000)]), 16000)
    parts = []
    for text in ["the weather today is sunny and warm", "our meeting moved to the afternoon",
                 "the train leaves from platform nine", "thank you for your patience"] * 3:
        parts += [_speech(text), silence(2.0, 16000)]
    sf.write(root / "long.flac", np.concatenate(parts), 16000)
    (root / "page.html").write_text("<html><body>not audio</body></html>")
    sf.write(root / "silence.wav", silence(5.0, 16000), 16000)
    return root


@pytest.fixture(scope="module")
def origin(audio_dir):
    with audio_server(audio_dir) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("daemon"), ASYNC_ENGINE_DEVICES="cpu,cpu", ASYNC_ENGINE_DECODERS="2",
                        MAX_TRANSCRIPTS_PARALLEL="2", REJECT_OVER_PARALLEL="True") as running:
        running.statuses = running.wait_healthy()
        yield running


def test_health_is_501_while_loading_then_200_with_every_worker(daemon):
    assert 501 in daemon.statuses and daemon.statuses[-1] == 200
    body = daemon.health().json()
    assert body["status"] == "ok"
    names = {w["name"]: w for w in body["workers"]}
    assert {"inference-0", "inference-1", "decoder-0", "decoder-1"} <= set(names)
    assert all(w["state"] == "ready" and w["pid"] > 0 for w in names.values())


def test_transcribes_speech_with_every_response_field(daemon, origin, audio_dir):
    response = daemon.transcribe({"audio_url": f"{origin}/speech.wav"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"blob", "duration", "stereo_decode", "uid", "utterances", "words"}
    assert re.fullmatch(r"t_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", body["uid"])
    assert body["stereo_decode"] is False and body["utterances"] is None
    text = body["blob"].lower()
    assert sum(word in text for word in ("weekly", "report", "finance", "friday")) >= 3
    assert body["duration"] == pytest.approx(sf.info(str(audio_dir / "speech.wav")).duration, abs=0.01)
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts)
    for word in body["words"]:
        assert isinstance(word["start"], int) and isinstance(word["end"], int) and word["start"] < word["end"]
        assert 0.0 <= word["confidence"] <= 1.0
        assert word["end"] <= body["duration"] * 1000 + 50


def test_silence_is_an_empty_transcript(daemon, origin):
    body = daemon.transcribe({"audio_url": f"{origin}/silence.wav"}).json()
    assert body["blob"] == "" and body["words"] == []


def test_parallel_requests_within_the_limit_all_succeed_on_both_devices(daemon, origin):
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: daemon.transcribe({"audio_url": f"{origin}/long.flac"}), range(2)))
    assert [r.status_code for r in responses] == [200, 200]
    assert all("platform" in r.json()["blob"].lower() for r in responses)
    time.sleep(1.5)  # the supervisor refreshes /health every second
    windows = {w["name"]: w["windows"] for w in daemon.health().json()["workers"] if w["kind"] == "inference"}
    assert windows["inference-0"] > 0 and windows["inference-1"] > 0


def test_over_the_limit_is_423_with_retry_after(daemon, origin):
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.flac"}) for _ in range(5)]
        responses = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and 423 in statuses
    refused = next(r for r in responses if r.status_code == 423)
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["code"] == 7 and refused.json()["uid"].startswith("t_")
    assert daemon.health().status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"audio_url": "http://127.0.0.1:{dead}/x.wav"}, 502, 1),
        ({"audio_url": "{origin}/missing.wav"}, 502, 1),
        ({"audio_url": "{origin}/page.html"}, 422, 3),
        ({"audio_url": "{origin}/speech.wav", "punctuate": "yes"}, 400, 4),
        ({"audio_url": "{origin}/speech.wav", "audio_start_from": 2000, "audio_end_at": 1000}, 400, 4),
    ],
    ids=["refused", "404", "not-audio", "bad-type", "inverted-times"],
)
def test_errors_are_json_with_stable_codes(daemon, origin, body, status, code):
    filled = {k: v.format(origin=origin, dead=free_port()) if isinstance(v, str) else v for k, v in body.items()}
    response = daemon.transcribe(filled)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code and error["uid"].startswith("t_") and error["description"]


def test_sigterm_finishes_the_request_in_flight_and_leaves_no_shared_memory(tmp_path, origin):
    with running_daemon(tmp_path, MAX_TRANSCRIPTS_PARALLEL="1", REJECT_OVER_PARALLEL="False") as daemon:
        daemon.wait_healthy()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.flac"})
            second = pool.submit(daemon.transcribe, {"audio_url": f"{origin}/speech.wav"})
            assert second.result().status_code == 200, "REJECT_OVER_PARALLEL=False waits for a slot"
            assert first.result().status_code == 200
            busy = pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.flac"})
            time.sleep(1.0)
            blocks = daemon.shm_blocks()
            assert any("_pcm_" in b for b in blocks) and any("_steps" in b for b in blocks), blocks
            assert daemon.shm_names() == [], "blocks have no names in /dev/shm, queues none once opened"
            assert daemon.stop() == 0
            assert busy.result().status_code == 200
        assert daemon.shm_names() == []


def test_http_wer_equals_in_process_wer_on_real_speech(daemon, transcriber, eval_dir):
    """Same model, same beam: the process tree must not change what is recognised."""
    from bench.wer import count_errors
    from engine.audio.files import decode_audio

    rows = [line.rstrip("\n").split("\t") for line in (eval_dir / "dev.tsv").read_text().splitlines()]
    picked = [r for r in rows if r[0].startswith(("jfk/", "librispeech_1089/", "hifitts_6097_whispercpp/"))][:12]
    local = transcriber.transcribe_many([decode_audio(eval_dir / path) for path, _ in picked])
    with audio_server(eval_dir) as url:
        remote = [daemon.transcribe({"audio_url": f"{url}/{path}"}).json()["blob"] for path, _ in picked]
    local_errors = sum(count_errors(ref, t.text).errors for (_, ref), t in zip(picked, local))
    remote_errors = sum(count_errors(ref, text).errors for (_, ref), text in zip(picked, remote))
    words = sum(count_errors(ref, "").words for _, ref in picked)
    assert words > 100
    # Two inference processes of one thread each sum in another order than one of two threads;
    # a near-tie may flip one word, never more.
    assert abs(remote_errors - local_errors) <= 1, (local_errors, remote_errors)


@pytest.mark.parametrize("kind", ["inference", "decoder"])
def test_a_killed_worker_is_replaced_and_its_jobs_retried(tmp_path, origin, kind):
    import os
    import signal

    with running_daemon(tmp_path) as daemon:
        daemon.wait_healthy()
        with ThreadPoolExecutor(3) as pool:
            jobs = [pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.flac"}) for _ in range(3)]
            time.sleep(1.5)
            victim = next(w for w in daemon.health().json()["workers"] if w["kind"] == kind)
            os.kill(victim["pid"], signal.SIGKILL)
            responses = [job.result() for job in jobs]
        for response in responses:
            assert response.status_code == 200, response.text
            assert "platform" in response.json()["blob"].lower()
        _wait_replaced(daemon, victim["pid"])
        # the supervisor (another process) counted the restart; the front's scrape sums the tree's processes
        metrics = {f.name: f.samples for f in text_string_to_metric_families(
            requests.get(daemon.url + "/metrics", timeout=10).text)}
        assert sum(s.value for s in metrics["async_engine_worker_restarts"]) == 1
        assert sum(s.value for s in metrics["async_engine_jobs"] if s.labels["status"] == "completed") == 3
        assert [s.value for s in metrics["async_engine_worker_nodes_alive"]] == [1]
        assert daemon.stop() == 0
    assert daemon.shm_names() == []


def test_a_stuck_worker_is_killed_and_replaced(tmp_path, origin):
    """SIGSTOP keeps the process alive but silent: only its missing heartbeat gives it away."""
    import os
    import signal

    with running_daemon(tmp_path, WORKER_STALL_SECONDS="8") as daemon:
        daemon.wait_healthy()
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.flac"})
            time.sleep(1.5)
            victim = next(w for w in daemon.health().json()["workers"] if w["kind"] == "decoder")
            os.kill(victim["pid"], signal.SIGSTOP)
            response = job.result()
        assert response.status_code == 200, response.text
        assert "platform" in response.json()["blob"].lower()
        _wait_replaced(daemon, victim["pid"])
        assert "made no progress" in daemon.log()
        assert daemon.stop() == 0
    assert daemon.shm_names() == []


def _wait_replaced(daemon, pid: int) -> None:
    deadline = time.monotonic() + 60
    while pid in {w["pid"] for w in daemon.health().json()["workers"]}:
        assert time.monotonic() < deadline, "the worker was never replaced"
        time.sleep(0.2)
    assert daemon.wait_healthy()[-1] == 200


def test_workers_let_go_of_each_requests_audio(daemon, origin):
    """A block the front unlinked still costs memory while any process maps it (the first soak
    found every request's audio piling up in a decoder)."""
    for _ in range(3):
        assert daemon.transcribe({"audio_url": f"{origin}/speech.wav"}).status_code == 200
    for worker in daemon.health().json()["workers"]:
        maps = Path(f"/proc/{worker['pid']}/maps").read_text()
        assert "_pcm_" not in maps, f"{worker['name']} still maps a request's audio"
