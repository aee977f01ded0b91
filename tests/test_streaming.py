"""Live streaming: AssemblyAI's v3 WebSocket protocol, from the audio frames to the turns, on the real daemon.

The engine's parts (frame decoding, the live VAD, the turn tracker driven by the real model) are
checked in process; the protocol through AssemblyAI's official SDK and, for the frames an SDK never
sends, through the `websockets` client it is built on, against one real daemon (real processes,
tiny.en, real WebSocket on loopback, an API key). Speech is generated with eSpeak NG.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
import soxr
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from daemon.stream.params import BadParameter, read_query, update
from daemon_support import running_daemon
from engine.audio.files import SAMPLE_RATE
from engine.audio.live_input import LiveAudio
from engine.audio.live_vad import LiveVad
from engine.audio.vad import VoiceActivityDetector
from engine.streaming.turns import Decode, LiveTurns, TurnUpdate
from synth import silence, speak

KEY = "stream-test-key-0123456789"
FIRST = "please send the weekly report to the finance team before friday"
SECOND = "the meeting with the new client has moved to tuesday afternoon"


def _say(text: str) -> np.ndarray:
    samples, rate = speak(text)
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


@pytest.fixture(scope="module")
def two_turns() -> np.ndarray:
    """Two sentences with a 2 s pause between them, and silence after: two turns."""
    return np.concatenate([silence(0.5, SAMPLE_RATE), _say(FIRST), silence(2.0, SAMPLE_RATE), _say(SECOND),
                           silence(2.0, SAMPLE_RATE)]).astype(np.float32)


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def _close_enough(heard: str, said: str) -> bool:
    heard_words, said_words = set(_plain(heard).split()), _plain(said).split()
    return sum(w in heard_words for w in said_words) >= 0.8 * len(said_words)


# --- the engine's parts ----------------------------------------------------------------------------------

def test_frames_decode_across_frame_boundaries_and_mulaw_is_g711():
    pcm = (np.sin(np.arange(1600) / 7) * 20000).astype("<i2")
    audio = LiveAudio(16000, "pcm_s16le")
    data = pcm.tobytes()
    pieces = [audio.push(data[:3]), audio.push(data[3:1001]), audio.push(data[1001:])]  # odd splits
    assert np.array_equal(np.concatenate(pieces), pcm.astype(np.float32) / 32768)
    mulaw = LiveAudio(8000, "pcm_mulaw")
    out = np.concatenate([mulaw.push(bytes([0xFF, 0x7F, 0x00, 0x80] * 2000)), mulaw.flush()])
    assert abs(out.size - 16000) <= 2  # 8000 samples at 8 kHz are a second at 16 kHz
    table = LiveAudio(8000, "pcm_mulaw")
    assert table.push(bytes([0xFF, 0x7F, 0x00, 0x80])).size >= 0
    from engine.audio.live_input import _MULAW
    assert _MULAW[0xFF] == 0.0 and _MULAW[0x7F] == 0.0  # the two zeros
    assert _MULAW[0x00] == pytest.approx(-32124 / 32768) and _MULAW[0x80] == pytest.approx(32124 / 32768)


@pytest.mark.parametrize("rate, encoding", [(4000, "pcm_s16le"), (96000, "pcm_s16le"), (16000, "opus")])
def test_live_audio_refuses_what_it_cannot_read(rate, encoding):
    with pytest.raises(ValueError):
        LiveAudio(rate, encoding)


def test_the_live_vad_scores_a_stream_as_the_file_vad_scores_the_whole(two_turns):
    whole = VoiceActivityDetector()._model.audio_forward(two_turns)
    live = LiveVad()
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(0, two_turns.size, 40))
    scored = np.concatenate([live.push(part) for part in np.split(two_turns, cuts)])
    assert scored.size == two_turns.size // 512
    np.testing.assert_allclose(scored, whole[: scored.size], atol=1e-5)


def _answer(transcriber, turns: LiveTurns, asked: list) -> list[TurnUpdate]:
    """Decode what the turn tracker asks for with the real model, as it asks; the updates it gives back."""
    updates = []
    while asked:
        item = asked.pop(0)
        if isinstance(item, Decode):
            asked += turns.decoded(item.ticket, transcriber.transcribe(item.audio).words)
        else:
            updates.append(item)
    return updates


def _run_turns(transcriber, audio: np.ndarray, frame: int = 800) -> list[TurnUpdate]:
    turns = LiveTurns()
    return [u for start in range(0, audio.size, frame)
            for u in _answer(transcriber, turns, turns.push(audio[start:start + frame]))]


def test_turns_end_at_the_pause_with_the_words_of_a_file_and_partials_before(transcriber, two_turns):
    updates = _run_turns(transcriber, two_turns)
    finals = [u for u in updates if u.end_of_turn]
    assert [u.turn for u in finals] == [0, 1]
    assert _close_enough(" ".join(w.text for w in finals[0].words), FIRST)
    assert _close_enough(" ".join(w.text for w in finals[1].words), SECOND)
    first_len = (0.5 + _say(FIRST).size / SAMPLE_RATE) * 1000
    assert finals[0].words[-1].end_ms <= first_len + 300 < finals[1].words[0].start_ms  # stream time
    for final in finals:
        assert final.final_words == len(final.words)
        partials = [u for u in updates if u.turn == final.turn and not u.end_of_turn]
        assert partials, "a turn shows partial transcripts before its end"
        assert all(p.final_words <= len(p.words) for p in partials)
        counts = [p.final_words for p in partials]
        assert counts == sorted(counts)  # a final word stays final


def test_force_endpoint_ends_the_turn_mid_speech(transcriber):
    """The turn ends where the audio ends; a decode of all of it already on its way is the final one."""
    speech = _say(FIRST)
    turns = LiveTurns()
    asked = turns.push(np.concatenate([silence(0.3, SAMPLE_RATE), speech[: speech.size // 2]]))
    asked += turns.force_endpoint()
    updates = _answer(transcriber, turns, asked)
    finals = [u for u in updates if u.end_of_turn]
    assert len(finals) == 1 and finals[0].words and finals[0].final_words == len(finals[0].words)
    assert turns.force_endpoint() == []  # no turn is left open


def test_silence_and_noise_start_no_turn():
    turns = LiveTurns()
    rng = np.random.default_rng(1)
    out = turns.push(silence(3.0, SAMPLE_RATE)) + turns.push((rng.normal(0, 0.01, 3 * SAMPLE_RATE)).astype(np.float32))
    assert out == [] and turns.force_endpoint() == []


@pytest.mark.parametrize("query, fault", [
    ({"sample_rate": ["4000"]}, "sample_rate must be between 8000 and 48000"),
    ({"sample_rate": ["16k"]}, "sample_rate must be a whole number"),
    ({"encoding": ["opus"]}, "encoding must be one of pcm_s16le, pcm_mulaw"),
    ({"speaker_labels": ["true"]}, "unknown or unsupported parameter 'speaker_labels'"),
    ({"format_turns": ["yes"]}, "format_turns must be true or false"),
    ({"keyterms_prompt": ["metoprolol"]}, "keyterms_prompt must be a JSON list"),
    ({"keyterms_prompt": ['["' + "x" * 200 + '"]']}, "keyterms_prompt: each word_boost entry is at most"),
    ({"min_turn_silence": ["2000"], "max_turn_silence": ["1000"]}, "must not exceed max_turn_silence"),
    ({"inactivity_timeout": ["1"]}, "inactivity_timeout must be between 5 and 3600"),
    ({"sample_rate": ["8000", "16000"]}, "sample_rate is given 2 times"),
])
def test_bad_parameters_are_refused_by_name(query, fault):
    with pytest.raises(BadParameter, match=re.escape(fault)):
        read_query(query)


def test_parameters_as_the_sdk_writes_them():
    params = read_query({"sample_rate": ["8000"], "encoding": ["pcm_mulaw"], "format_turns": ["True"],
                         "min_end_of_turn_silence_when_confident": ["300"], "max_turn_silence": ["900"],
                         "keyterms_prompt": ['["metoprolol", "Dr. Okafor"]'], "end_of_turn_confidence_threshold":
                         ["0.6"], "speech_model": ["universal-streaming-english"]})
    assert (params.sample_rate, params.encoding, params.format_turns) == (8000, "pcm_mulaw", True)
    assert (params.turns.min_turn_silence_ms, params.turns.max_turn_silence_ms) == (300, 900)
    assert params.keyterms == ("metoprolol", "Dr. Okafor") and params.turns.end_of_turn_confidence_threshold == 0.6
    changed = update(params, {"type": "UpdateConfiguration", "max_turn_silence": 2000, "format_turns": False})
    assert changed.turns.max_turn_silence_ms == 2000 and not changed.format_turns
    with pytest.raises(BadParameter, match="cannot change 'sample_rate'"):
        update(params, {"type": "UpdateConfiguration", "sample_rate": 16000})


# --- the real daemon --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("stream-daemon"), ASYNC_ENGINE_API_KEY=KEY,
                        ASYNC_ENGINE_MAX_STREAMS="2") as running:
        running.wait_healthy()
        yield running


@dataclass
class Heard:
    begin: list = field(default_factory=list)
    turns: list = field(default_factory=list)
    ended: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _sdk_stream(url: str, frames: list[bytes], pace: float, key: str = KEY, **params) -> Heard:
    from assemblyai.streaming.v3 import StreamingClient, StreamingClientOptions, StreamingEvents, StreamingParameters

    heard = Heard()
    client = StreamingClient(StreamingClientOptions(api_key=key, api_host=url, connect_timeout=10))
    client.on(StreamingEvents.Begin, lambda _c, e: heard.begin.append(e))
    client.on(StreamingEvents.Turn, lambda _c, e: heard.turns.append(e))
    client.on(StreamingEvents.Termination, lambda _c, e: (heard.ended.append(e), heard.done.set()))
    client.on(StreamingEvents.Error, lambda _c, e: (heard.errors.append(e), heard.done.set()))
    client.connect(StreamingParameters(**params))
    for frame in frames:
        client.stream(frame)
        time.sleep(pace)
    client.disconnect(terminate=True)
    heard.done.wait(60)
    return heard


def _frames(audio: np.ndarray, rate: int = 16000, encoding: str = "pcm_s16le", seconds: float = 0.1) -> list[bytes]:
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, SAMPLE_RATE, rate)
    if encoding == "pcm_mulaw":
        from bench.streaming import _mulaw_encode

        data = _mulaw_encode(audio)
        step = int(rate * seconds)
    else:
        data = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        step = int(rate * seconds) * 2
    return [data[i:i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("rate, encoding", [(16000, "pcm_s16le"), (8000, "pcm_mulaw")])
def test_the_sdk_streams_two_turns_and_gets_partials_finals_and_formatted_turns(daemon, transcriber, two_turns, rate,
                                                                                 encoding):
    heard = _sdk_stream(daemon.stream_url, _frames(two_turns, rate, encoding), pace=0.05, sample_rate=rate,
                        encoding=encoding, format_turns=True)
    assert not heard.errors, heard.errors
    assert len(heard.begin) == 1 and heard.begin[0].id
    finals = [t for t in heard.turns if t.end_of_turn and not t.turn_is_formatted]
    formatted = [t for t in heard.turns if t.end_of_turn and t.turn_is_formatted]
    assert [t.turn_order for t in finals] == [0, 1] == [t.turn_order for t in formatted]
    # the words of the same audio transcribed as a file (8 kHz mu-law costs tiny.en words: the same ones)
    heard_as = LiveAudio(rate, encoding)
    as_file = transcriber.transcribe(np.concatenate([heard_as.push(b"".join(_frames(two_turns, rate, encoding))),
                                                     heard_as.flush()])).text
    streamed = " ".join(t.transcript for t in finals)
    assert _close_enough(streamed, as_file) and _close_enough(as_file, streamed), (streamed, as_file)
    if rate == SAMPLE_RATE:  # wide band: the words said
        assert _close_enough(finals[0].transcript, FIRST) and _close_enough(finals[1].transcript, SECOND)
    assert finals[0].transcript == finals[0].transcript.lower() and "." not in finals[0].transcript
    assert formatted[0].transcript[0].isupper() and formatted[0].transcript.endswith((".", "!", "?"))
    for turn in finals + formatted:
        assert all(w.word_is_final for w in turn.words)
        assert [w.start for w in turn.words] == sorted(w.start for w in turn.words)
        assert all(0 <= w.start < w.end <= two_turns.size / 16 + 100 and 0 <= w.confidence <= 1 for w in turn.words)
    assert any(not t.end_of_turn for t in heard.turns), "partials come before a turn's end"
    assert heard.ended and heard.ended[0].audio_duration_seconds == int(two_turns.size / SAMPLE_RATE)


def test_keyterms_prompt_is_word_boost_for_the_stream(daemon):
    audio = np.concatenate([silence(0.3, SAMPLE_RATE), _say("the patient takes metoprolol twice a day"),
                            silence(1.5, SAMPLE_RATE)])
    heard = _sdk_stream(daemon.stream_url, _frames(audio), pace=0.02, sample_rate=16000,
                        keyterms_prompt=["metoprolol"])
    finals = [t for t in heard.turns if t.end_of_turn]
    assert not heard.errors and finals
    assert "metoprolol" in " ".join(t.transcript for t in finals)


def _raw(daemon, query: dict | None = None, key: str | None = KEY):
    url = f"{daemon.stream_url}/v3/ws" + (f"?{urlencode(query)}" if query else "")
    return connect(url, additional_headers={"Authorization": key} if key else {}, open_timeout=10)


def _closed_with(connection, timeout: float = 30.0) -> tuple[int, list[dict]]:
    """Read until the server closes; (close code, the JSON messages before it)."""
    messages, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            messages.append(json.loads(connection.recv(timeout=deadline - time.monotonic())))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1, messages
    raise AssertionError("the server did not close the stream")


@pytest.mark.parametrize("query, key, code, words", [
    ({"sample_rate": "4000"}, KEY, 3006, "sample_rate must be between 8000 and 48000"),
    ({"speaker_labels": "true"}, KEY, 3006, "unknown or unsupported parameter 'speaker_labels'"),
    (None, "wrong-key", 4001, "needs an API key"),
    (None, None, 4001, "needs an API key"),
])
def test_a_refused_stream_gets_an_error_message_and_its_close_code_before_audio(daemon, query, key, code, words):
    with _raw(daemon, query, key) as connection:
        closed, messages = _closed_with(connection)
    assert closed == code
    assert messages and messages[-1]["type"] == "Error" and words in messages[-1]["error"]
    assert all(m["type"] != "Begin" for m in messages)


def test_the_token_query_parameter_authenticates(daemon):
    with _raw(daemon, {"token": KEY}, key=None) as connection:
        assert json.loads(connection.recv(timeout=10))["type"] == "Begin"
        connection.send(json.dumps({"type": "Terminate"}))
        closed, messages = _closed_with(connection)
    assert closed == 1000 and messages[-1]["type"] == "Termination"


@pytest.mark.parametrize("send, code, words", [
    ("not json", 4100, "must be a JSON message"),
    (json.dumps({"type": "Dance"}), 4101, "type must be one of"),
    (json.dumps({"type": "UpdateConfiguration", "sample_rate": 8000}), 3006, "cannot change 'sample_rate'"),
    (json.dumps({"type": "UpdateConfiguration", "max_turn_silence": "long"}), 3006, "wrong type"),
    (b"\0" * 64_000, 3007, "an audio frame holds 2000 ms"),
])
def test_bad_frames_close_the_stream_with_their_code(daemon, send, code, words):
    with _raw(daemon) as connection:
        assert json.loads(connection.recv(timeout=10))["type"] == "Begin"
        connection.send(send)
        closed, messages = _closed_with(connection)
    assert closed == code and messages[-1]["type"] == "Error" and words in messages[-1]["error"]


def test_audio_far_faster_than_real_time_is_closed(daemon):
    with _raw(daemon) as connection:
        assert json.loads(connection.recv(timeout=10))["type"] == "Begin"
        try:
            for _ in range(400):  # 40 s of silence in 100 ms frames, as fast as the socket takes them
                connection.send(b"\0" * 3200)
        except ConnectionClosed:
            pass
        closed, messages = _closed_with(connection)
    assert closed == 4029 and "ahead of real time" in messages[-1]["error"]


def test_an_idle_stream_is_closed_after_its_inactivity_timeout(daemon):
    started = time.monotonic()
    with _raw(daemon, {"inactivity_timeout": "5"}) as connection:
        closed, messages = _closed_with(connection, timeout=20)
    assert closed == 4031 and "no audio for 5 s" in messages[-1]["error"]
    assert 5 <= time.monotonic() - started < 15


def _live_streams(daemon) -> float:
    text = requests.get(daemon.url + "/metrics", timeout=10).text
    return float(re.search(r"^async_engine_streams_live (\S+)$", text, re.M).group(1))


def test_streams_over_the_limit_are_refused_and_slots_come_back_when_clients_vanish(daemon):
    with _raw(daemon) as first, _raw(daemon) as second:
        for connection in (first, second):
            assert json.loads(connection.recv(timeout=10))["type"] == "Begin"
        with _raw(daemon) as third:
            closed, messages = _closed_with(third)
        assert closed == 3009 and "ASYNC_ENGINE_MAX_STREAMS" in messages[-1]["error"]
        first.socket.close()  # gone without a close frame
        second.close()
    deadline = time.monotonic() + 10
    while _live_streams(daemon) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _live_streams(daemon) == 0
    with _raw(daemon) as again:
        assert json.loads(again.recv(timeout=10))["type"] == "Begin"


def test_force_endpoint_ends_a_turn_and_nothing_stays_in_shared_memory(daemon):
    speech = np.concatenate([silence(0.3, SAMPLE_RATE), _say(FIRST)])
    with _raw(daemon, {"format_turns": "true"}) as connection:
        assert json.loads(connection.recv(timeout=10))["type"] == "Begin"
        for frame in _frames(speech):
            connection.send(frame)
        connection.send(json.dumps({"type": "ForceEndpoint"}))
        turns = []
        while not any(t.get("turn_is_formatted") for t in turns):
            turns.append(json.loads(connection.recv(timeout=30)))
        connection.send(json.dumps({"type": "Terminate"}))
        closed, messages = _closed_with(connection)
    final = [t for t in turns if t["end_of_turn"] and not t["turn_is_formatted"]]
    assert final and _close_enough(final[0]["transcript"], FIRST)
    assert closed == 1000 and messages[-1]["type"] == "Termination"
    deadline = time.monotonic() + 10
    while any("pcm_" in b for b in daemon.shm_blocks()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [b for b in daemon.shm_blocks() if "pcm_" in b], "a turn's audio block outlived its decode"
    assert not daemon.shm_names()
    text = requests.get(daemon.url + "/metrics", timeout=10).text
    assert re.search(r'^async_engine_streams_total\{code="1000"\} [1-9]', text, re.M)
    assert re.search(r'^async_engine_stream_turn_seconds_count\{kind="final"\} [1-9]', text, re.M)


# --- shared mode: an API node relays streams to worker nodes ----------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory, installed_model):
    from bench.cluster import cluster, missing_tools, ready_nodes, wait_until

    if missing_tools() is not None:
        pytest.skip(f"shared mode cannot run: {missing_tools()}")
    with cluster(tmp_path_factory.mktemp("stream-cluster"), ASYNC_ENGINE_DECODERS="1") as made:
        made.api = made.api_node()
        made.workers = [made.worker_node()]
        wait_until(lambda: ready_nodes(made.api) == 1, 120, made.workers[0])
        import redis

        client = redis.Redis.from_url(made.redis.url)
        wait_until(lambda: any(client.hget(k, "stream") for k in client.scan_iter("ae:node:*") if k.count(b":") == 2),
                   30)  # its heartbeat tells where its streams go
        client.close()
        yield made


def test_an_api_node_relays_a_stream_to_a_worker_node(shared, two_turns):
    heard = _sdk_stream(shared.api.stream_url, _frames(two_turns), pace=0.05, key="any", sample_rate=16000,
                        format_turns=True)
    assert not heard.errors, heard.errors
    finals = [t for t in heard.turns if t.end_of_turn and not t.turn_is_formatted]
    assert [t.turn_order for t in finals] == [0, 1]
    assert _close_enough(finals[0].transcript, FIRST) and _close_enough(finals[1].transcript, SECOND)
    assert heard.ended and "relayed to" in shared.api.log()
    with connect(f"{shared.api.stream_url}/v3/ws?sample_rate=4000", open_timeout=10) as refused:
        closed, messages = _closed_with(refused)  # refused on the API node, before any worker node is asked
    assert closed == 3006 and "sample_rate" in messages[-1]["error"]


def test_a_worker_node_that_dies_mid_stream_ends_the_stream_with_an_error_not_a_hang(shared, two_turns):
    from assemblyai.streaming.v3 import StreamingClient, StreamingClientOptions, StreamingEvents, StreamingParameters

    heard = Heard()
    client = StreamingClient(StreamingClientOptions(api_key="any", api_host=shared.api.stream_url, connect_timeout=10))
    client.on(StreamingEvents.Turn, lambda _c, e: heard.turns.append(e))
    client.on(StreamingEvents.Error, lambda _c, e: (heard.errors.append(e), heard.done.set()))
    client.connect(StreamingParameters(sample_rate=16000))
    frames = _frames(two_turns)
    for i, frame in enumerate(frames):
        client.stream(frame)
        time.sleep(0.05)
        if i == 40:  # about 4 s in: the first turn is under way
            shared.workers[0].kill()
            killed = time.monotonic()
        if heard.done.is_set():
            break
    assert heard.done.wait(15), "the client was left hanging"
    assert time.monotonic() - killed < 15
    assert heard.errors and heard.errors[0].code == 3005 and "worker node" in str(heard.errors[0])
    client.disconnect()


def test_streams_connecting_and_dropping_leave_memory_flat_and_nothing_behind(daemon):
    """A short soak (bench stream-soak runs the long one): streams ending every way, round after round."""
    from bench.stream_soak import ENDINGS, run_soak
    from daemon.workers.leftovers import tree_prefix

    speech = [(np.clip(np.concatenate([silence(0.3, SAMPLE_RATE), _say(text), silence(1.0, SAMPLE_RATE)]), -1, 1)
               * 32767).astype("<i2").tobytes() for text in (FIRST, SECOND)]
    result = run_soak(daemon.stream_url, daemon.url, daemon.process.pid, tree_prefix(daemon.process.pid), speech,
                      rounds=15, per_round=2, warmup=5, key=KEY)
    assert not result.errors, result.errors
    assert sum(result.outcomes.values()) == 30 and set(result.outcomes) == set(ENDINGS)
    assert result.live_after == 0 and result.pcm_blocks_after == 0
    assert max(result.front_mb) - result.front_mb[0] < 20, result.front_mb  # MB, over 20 streams after warm-up
