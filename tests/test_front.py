"""The HTTP layer alone: the Falcon app with stand-in workers, audio served on loopback.

The real daemon (processes, model) is covered by test_daemon.py; here every answer shape, error
code, admission path and time shift is checked quickly and deterministically.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
from falcon import testing

from daemon.config import DaemonConfig
from daemon.http.app import create_app
from daemon.jobs.client import Transcribed
from daemon.jobs.scheduler import Scheduler
from daemon.jobs.sqlite_store import SqliteJobStore
from daemon_support import audio_server
from engine.result import Word

RATE = 16000


class StandIn:
    """Workers returning fixed words per channel; optionally holds every job until `gate` is set."""

    def __init__(self, channels: list[list[Word]] | None = None, gate: threading.Event | None = None,
                 ready: bool = True) -> None:
        self.channels = channels or [[Word("Hello,", 0, 440, 0.9), Word("world.", 500, 900, 0.8)]]
        self.gate = gate
        self.ready = ready
        self.entered = threading.Semaphore(0)
        self.shapes: list[tuple[int, ...]] = []

    def submit(self, uid: str, pcm: np.ndarray, timeout: float, options=None) -> Transcribed:
        assert pcm.dtype == np.float32 and uid.startswith("t_")
        self.shapes.append(pcm.shape)
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(10)
        return Transcribed([list(words) for words in self.channels[: pcm.shape[0]]])

    def health(self) -> tuple[bool, dict]:
        state = "ready" if self.ready else "starting"
        return self.ready, {"status": "ok" if self.ready else "loading",
                            "workers": [{"name": "inference-0", "kind": "inference", "state": state, "pid": 1}]}


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("front-audio")
    tone = (0.1 * np.sin(np.arange(3 * RATE) * 2 * np.pi * 440 / RATE)).astype(np.float32)
    sf.write(root / "mono.wav", tone, RATE)
    sf.write(root / "stereo.wav", np.stack([tone, tone * 0.5], axis=1), RATE)
    (root / "page.html").write_text("<html>not audio</html>")
    with audio_server(root) as url:
        yield url


def _client(workers: StandIn, **env: str) -> testing.TestClient:
    """The app over a job store of its own (a fresh data directory) and the stand-in workers."""
    data = tempfile.mkdtemp(prefix="front-jobs-")
    config = DaemonConfig.from_env({"ASYNC_ENGINE_DEVICES": "cpu", "ASYNC_ENGINE_DATA_DIR": data, **env})
    store = SqliteJobStore(Path(data))
    return testing.TestClient(create_app(config, Scheduler(config, store, workers), store, workers))


def _assert_error(result: testing.Result, status: int, code: int) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) == {"code", "description", "uid"}
    assert body["code"] == code and body["uid"].startswith("t_") and body["description"]
    return body


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "mentions"),
    [
        ({"body": "{not json"}, 400, 9, "JSON"),
        ({"body": "[1, 2]"}, 400, 9, "object"),
        ({"body": '{"audio_url": "http://x/a.wav"}', "content_type": "text/plain"}, 415, 10, "Content-Type"),
        ({"json": {}}, 400, 4, "audio_url"),
        ({"json": {"audio_url": 123}}, 400, 4, "audio_url"),
        ({"json": {"audio_url": ""}}, 400, 4, "audio_url"),
        ({"json": {"audio_url": "http://x/a.wav", "speakers": 2}}, 400, 4, "speakers"),
        ({"json": {"audio_url": "http://x/a.wav", "punctuate": "yes"}}, 400, 4, "punctuate"),
        ({"json": {"audio_url": "http://x/a.wav", "dual_channel": 1}}, 400, 4, "dual_channel"),
        ({"json": {"audio_url": "http://x/a.wav", "format_text": None}}, 400, 4, "format_text"),
        ({"json": {"audio_url": "http://x/a.wav", "audio_start_from": "5"}}, 400, 4, "audio_start_from"),
        ({"json": {"audio_url": "http://x/a.wav", "audio_start_from": 1.5}}, 400, 4, "audio_start_from"),
        ({"json": {"audio_url": "http://x/a.wav", "audio_end_at": True}}, 400, 4, "audio_end_at"),
        ({"json": {"audio_url": "http://x/a.wav", "audio_start_from": -1}}, 400, 4, "audio_start_from"),
        ({"json": {"audio_url": "http://x/a.wav", "audio_start_from": 2000, "audio_end_at": 1000}}, 400, 4,
         "less than"),
        ({"json": {"audio_url": "ftp://x/a.wav"}}, 400, 4, "http or https"),
    ],
    ids=["bad-json", "not-object", "content-type", "missing-url", "url-number", "url-empty", "unknown-field",
         "bool-string", "bool-number", "bool-null", "time-string", "time-float", "time-bool", "negative",
         "inverted", "scheme"],
)
def test_validation_errors(kwargs, status, code, mentions):
    jobs = StandIn()
    body = _assert_error(_client(jobs).simulate_post("/transcribe/url", **kwargs), status, code)
    assert mentions in body["description"]
    assert jobs.shapes == [], "nothing reaches the workers"


def test_mono_response_and_time_shift(origin):
    jobs = StandIn()
    result = _client(jobs).simulate_post("/transcribe/url", json={
        "audio_url": f"{origin}/stereo.wav", "audio_start_from": 1000, "audio_end_at": 2500})
    assert result.status_code == 200, result.text
    body = result.json
    assert jobs.shapes == [(1, 24000)], "stereo without dual_channel is mixed down; trimmed to 1.5 s"
    assert body["duration"] == 1.5 and body["stereo_decode"] is False and body["utterances"] is None
    assert body["uid"].startswith("t_") and body["blob"] == "Hello, world."
    assert body["words"] == [
        {"confidence": 0.9, "end": 1440, "start": 1000, "text": "Hello,"},
        {"confidence": 0.8, "end": 1900, "start": 1500, "text": "world."},
    ]


def test_uids_are_unique_per_request(origin):
    client = _client(StandIn())
    uids = {client.simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav"}).json["uid"]
            for _ in range(3)}
    assert len(uids) == 3


def test_punctuate_false_and_auto_punctuation_off(origin):
    request = {"audio_url": f"{origin}/mono.wav", "punctuate": False}
    assert _client(StandIn()).simulate_post("/transcribe/url", json=request).json["blob"] == "Hello world"
    off = _client(StandIn(), ENABLE_AUTO_PUNCTUATION="False")
    assert off.simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav"}).json["blob"] == "hello world"


def test_dual_channel_utterances(origin):
    jobs = StandIn([
        [Word("Hi", 0, 400, 1.0), Word("there", 500, 900, 0.8), Word("Bye", 3000, 3400, 0.6)],
        [Word("Hello", 1000, 1300, 0.5)],
    ])
    result = _client(jobs).simulate_post("/transcribe/url", json={"audio_url": f"{origin}/stereo.wav",
                                                                  "dual_channel": True})
    assert result.status_code == 200, result.text
    body = result.json
    assert jobs.shapes == [(2, 3 * RATE)]
    assert body["stereo_decode"] is True and body["duration"] == 3.0
    assert [(w["text"], w["channel"]) for w in body["words"]] == [
        ("Hi", "1"), ("there", "1"), ("Hello", "2"), ("Bye", "1")]
    assert [(u["channel"], u["start"], u["end"], u["text"]) for u in body["utterances"]] == [
        ("1", 0, 900, "Hi there"), ("2", 1000, 1300, "Hello"), ("1", 3000, 3400, "Bye")]
    assert body["utterances"][0]["confidence"] == pytest.approx(0.9)
    assert body["utterances"][0]["words"][1] == {"confidence": 0.8, "end": 900, "start": 500, "text": "there",
                                                 "channel": "1"}
    assert body["blob"] == "Hi there Hello Bye"


def test_a_pause_splits_one_channels_utterance(origin):
    jobs = StandIn([[Word("hello", 0, 300, 1.0), Word("again", 2000, 2300, 1.0)], []])
    body = _client(jobs).simulate_post("/transcribe/url", json={"audio_url": f"{origin}/stereo.wav",
                                                                "dual_channel": True}).json
    assert [u["text"] for u in body["utterances"]] == ["hello", "again"]


def test_mono_file_with_dual_channel(origin):
    jobs = StandIn()
    result = _client(jobs).simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav",
                                                                  "dual_channel": True})
    _assert_error(result, 422, 11)
    assert jobs.shapes == []


@pytest.mark.parametrize(
    ("span", "mentions"),
    [({"audio_start_from": 3000}, "audio_start_from"), ({"audio_end_at": 5000}, "audio_end_at")],
)
def test_times_past_the_end_of_the_audio(origin, span, mentions):
    result = _client(StandIn()).simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav", **span})
    assert mentions in _assert_error(result, 422, 4)["description"]


def test_download_and_decode_errors(origin):
    client = _client(StandIn())
    missing = client.simulate_post("/transcribe/url", json={"audio_url": f"{origin}/missing.wav"})
    assert f"{origin}/missing.wav" in _assert_error(missing, 502, 1)["description"]
    _assert_error(client.simulate_post("/transcribe/url", json={"audio_url": f"{origin}/page.html"}), 422, 3)


def test_audio_too_long(origin):
    result = _client(StandIn(), MAX_AUDIO_SECONDS="2").simulate_post(
        "/transcribe/url", json={"audio_url": f"{origin}/mono.wav"})
    assert "MAX_AUDIO_SECONDS" in _assert_error(result, 422, 5)["description"]


def _post_in_thread(client: testing.TestClient, url: str) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(
        client.simulate_post("/transcribe/url", json={"audio_url": url})))
    thread.start()
    return thread, results


def test_over_capacity_answers_423_with_retry_after(origin):
    gate = threading.Event()
    jobs = StandIn(gate=gate)
    client = _client(jobs, MAX_TRANSCRIPTS_PARALLEL="1")
    thread, results = _post_in_thread(client, f"{origin}/mono.wav")
    try:
        assert jobs.entered.acquire(timeout=10)
        refused = client.simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav"})
        _assert_error(refused, 423, 7)
        assert int(refused.headers["retry-after"]) > 0
    finally:
        gate.set()
        thread.join(10)
    assert results[0].status_code == 200
    again = client.simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav"})
    assert again.status_code == 200, "the slot is released after the request"


def test_waits_for_a_slot_when_not_rejecting(origin):
    gate = threading.Event()
    jobs = StandIn(gate=gate)
    client = _client(jobs, MAX_TRANSCRIPTS_PARALLEL="1", REJECT_OVER_PARALLEL="False")
    first, first_results = _post_in_thread(client, f"{origin}/mono.wav")
    assert jobs.entered.acquire(timeout=10)
    second, second_results = _post_in_thread(client, f"{origin}/mono.wav")
    time.sleep(0.5)
    assert len(jobs.shapes) == 1 and second.is_alive(), "the second request waits for the slot"
    gate.set()
    first.join(10)
    second.join(10)
    assert [r.status_code for r in first_results + second_results] == [200, 200]
    assert len(jobs.shapes) == 2


def test_unexpected_failure_is_json_code_8(origin, caplog):
    class Broken(StandIn):
        def submit(self, uid, pcm, timeout):
            raise RuntimeError("boom")

    result = _client(Broken()).simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav"})
    uid = _assert_error(result, 500, 8)["uid"]
    assert "boom" not in result.text
    assert any(uid in r.getMessage() and r.exc_info for r in caplog.records), "logged with traceback and uid"


def test_one_log_line_per_request(origin, caplog):
    caplog.set_level("INFO", logger="async_engine.front")
    uid = _client(StandIn()).simulate_post("/transcribe/url", json={"audio_url": f"{origin}/mono.wav"}).json["uid"]
    lines = [r.getMessage() for r in caplog.records if r.name == "async_engine.front"]
    assert len(lines) == 1 and uid in lines[0] and "status=200" in lines[0] and "audio_s=3.000" in lines[0]


@pytest.mark.parametrize(("ready", "status"), [(False, 501), (True, 200)])
def test_health_passthrough(ready, status):
    jobs = StandIn(ready=ready)
    result = _client(jobs).simulate_get("/health")
    assert result.status_code == status and result.json == jobs.health()[1]


def test_unknown_route_and_method_are_json():
    client = _client(StandIn())
    assert "/nope" in _assert_error(client.simulate_get("/nope"), 404, 17)["description"]
    wrong = client.simulate_get("/transcribe/url")
    _assert_error(wrong, 405, 17)
    assert "POST" in wrong.headers["allow"]


def test_openapi_document():
    result = _client(StandIn()).simulate_get("/openapi.json")
    assert result.status_code == 200
    document = result.json
    assert document["openapi"].startswith("3.1")
    assert {"/health", "/transcribe/url"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert {"TranscribeRequest", "Transcript", "Word", "Utterance", "Error"} <= set(schemas)
    assert set(schemas["TranscribeRequest"]["properties"]) == {
        "audio_url", "dual_channel", "format_text", "punctuate", "audio_start_from", "audio_end_at", "word_boost",
        "boost_param", "speaker_labels", "speakers_expected", "speaker_options"}


KEY = "k3y-0123456789abcdef"


@pytest.mark.parametrize(("headers", "mentions"), [
    ({}, "no Authorization header"),
    ({"Authorization": "Bearer wrong-key-0123456789"}, "wrong API key"),
    ({"Authorization": "wrong-key-0123456789"}, "wrong API key"),
    ({"Authorization": f"Basic {KEY}"}, "wrong API key"),
])
def test_api_key_is_required_when_configured(origin, headers, mentions):
    jobs = StandIn()
    client = _client(jobs, ASYNC_ENGINE_API_KEY=KEY)
    for method, path in (("POST", "/transcribe/url"), ("GET", "/openapi.json"), ("GET", "/no-such-path")):
        result = client.simulate_request(method, path, headers=headers, json={"audio_url": f"{origin}/mono.wav"})
        body = _assert_error(result, 401, 16)
        assert mentions in body["description"] and "Bearer" in result.headers["WWW-Authenticate"]
    assert jobs.shapes == []


def test_the_right_key_passes_and_health_needs_none(origin):
    client = _client(StandIn(), ASYNC_ENGINE_API_KEY=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    answer = client.simulate_post("/transcribe/url", headers=auth, json={"audio_url": f"{origin}/mono.wav"})
    assert answer.status_code == 200
    plain = {"Authorization": KEY}  # AssemblyAI's SDKs send the key alone
    assert client.simulate_post("/transcribe/url", headers=plain, json={"audio_url": f"{origin}/mono.wav"}).status_code \
        == 200
    assert client.simulate_get("/health").status_code == 200
    document = client.simulate_get("/openapi.json", headers=auth).json
    assert document["security"] == [{"apiKey": []}, {"bearer": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "securitySchemes" not in _client(StandIn()).simulate_get("/openapi.json").json["components"]


def test_docs_list_every_error_code():
    from daemon.errors import ERROR_TABLE

    docs = (Path(__file__).resolve().parents[1] / "docs" / "API.md").read_text()
    for kind in ERROR_TABLE:
        assert f"| {kind.code} | {kind.status}" in docs and f"| {kind.name} |" in docs, kind
