"""A short clip is transcribed once: the repeat check, and the decode loop's re-decode of a window that
said its sentence twice from a shortened encoding, in-process and over the daemon."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
import requests
import soundfile as sf
import soxr
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import audio_server, running_daemon
from synth import speak_at, write_wav
from engine.audio.files import SAMPLE_RATE, decode_audio
from engine.decoding.repeats import adds_repeat, repeated_phrase
from engine.decoding.search import SearchResult
from engine.settings import EngineSettings
from engine.audio.speech_window import SpeechWindow
from engine.decoding.window import WindowJob

# A dev recording, cut by nothing: one 2.9 s sentence. At 8 kHz and 20 dB quieter (a quiet telephone line),
# tiny.en in int8 with the shortened encoder window said it twice ("... diligently. So that he had to seek his
# way diligently."), the second copy aligned into 1 ms at 2.32 s; encoded whole, once.
DOUBLED = "hifitts_6097_whispercpp/roots_04_morris_0400.wav"
SENTENCE = "so that he had to seek his way diligently"
TWICE = "Press four for the previous message"  # said twice back to back, as a phone menu does


def test_a_sentence_said_twice_is_a_repeat():
    text = "Press 4 for the previous message. Press 4 for the previous message."
    assert repeated_phrase(text) == "press 4 for the previous message"
    assert repeated_phrase("and fell and fell and fell and fell towards") == "and fell and fell"
    assert repeated_phrase("Word. Word. Word. Word. Word. Word.") == "word word word"


def test_what_people_say_twice_is_not_a_repeat():
    assert repeated_phrase("No, no, I said the twenty third, not the twenty second.") is None
    assert repeated_phrase("thank you thank you") is None  # two words: speech, not a loop
    assert repeated_phrase("the cat sat on the mat and the cat sat down") is None  # not back to back
    assert repeated_phrase("") is None


def test_a_repeat_the_reference_has_is_not_added():
    assert not adds_repeat("I said go away go away go away", "I said go away, go away, go away.")
    assert adds_repeat("press 4 for the previous message", "Press 4 for the previous message. Press 4 for the "
                                                          "previous message.")
    assert not adds_repeat("press 4 for the previous message", "Press 4 for the previous message.")


def _doubled_result(transcriber) -> SearchResult:
    tokenizer = transcriber.tokenizer
    text = tokenizer.encode(" Press 4 for the previous message. Press 4 for the previous message.")
    tokens = [tokenizer.timestamp_begin, *text]
    return SearchResult(tokens, [-0.1] * len(tokens), -0.1, 0.01, len(tokens), None)


def _concluded(transcriber, span: SpeechWindow, config) -> tuple[WindowJob, list[int] | None]:
    """A window whose search found the doubled text: the job, and the tokens it sends to alignment."""
    job = WindowJob(config, transcriber.tokenizer, span)
    job.decode.result = lambda: _doubled_result(transcriber)
    return job, job.conclude()


def test_a_shortened_window_that_repeats_is_decoded_again_whole(transcriber):
    span = SpeechWindow(((16_000, 16_000 + 3 * SAMPLE_RATE),), ((16_000, 16_000 + 3 * SAMPLE_RATE),))
    job, aligned = _concluded(transcriber, span, transcriber.search_config)
    assert aligned is None and job.words(None) == [], "the repeated text is neither aligned nor kept"
    assert job.redo == span.whole() and job.redo.encode_whole and job.redo.encoded_samples() is None
    again, aligned = _concluded(transcriber, job.redo, transcriber.search_config)
    assert aligned is not None and again.redo is None, "the whole decode's text stands, repeat or not"


def test_windows_encoded_whole_are_not_decoded_again(transcriber):
    card = dataclasses.replace(transcriber.search_config, redo_repeats_whole=False)  # a card's: it encodes whole
    short = SpeechWindow(((0, 3 * SAMPLE_RATE),), ((0, 3 * SAMPLE_RATE),))
    assert _concluded(transcriber, short, card)[0].redo is None
    long = SpeechWindow(((0, 25 * SAMPLE_RATE),), ((0, 25 * SAMPLE_RATE),))  # 25 s + padding is a whole window
    assert _concluded(transcriber, long, transcriber.search_config)[0].redo is None


@pytest.fixture(scope="module")
def quiet_line(eval_dir: Path, tmp_path_factory) -> Path:
    """The dev sentence as a quiet 8 kHz telephone line would carry it."""
    audio = decode_audio(str(eval_dir / DOUBLED))
    path = tmp_path_factory.mktemp("doubled") / "quiet-8k.wav"
    sf.write(path, soxr.resample(audio, SAMPLE_RATE, 8000) * 0.1, 8000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def int8_transcriber(models_dir):
    """int8 on any CPU (the default follows the CPU), where the clip doubled."""
    from engine.transcriber import Transcriber

    return Transcriber.load("tiny.en", settings=EngineSettings.from_env({**os.environ, "ASYNC_ENGINE_COMPUTE_TYPE": "int8"}))


def _said_once(words: list[str]) -> None:
    text = " ".join(w.strip(".,").lower() for w in words)
    assert text == SENTENCE, text


def test_a_short_clip_is_transcribed_once(int8_transcriber, quiet_line):
    """The clip doubles from a shortened encoding on some CPUs' int8 kernels (an AVX-512 EPYC), not on others
    (an AVX2 one); wherever it does, the window is decoded again whole, and either way it is said once."""
    audio = decode_audio(str(quiet_line))
    short_only = dataclasses.replace(int8_transcriber.search_config, redo_repeats_whole=False)
    with_redo, int8_transcriber.search_config = int8_transcriber.search_config, short_only
    try:
        doubled = repeated_phrase(" ".join(w.text for w in int8_transcriber.transcribe(audio).words)) is not None
    finally:
        int8_transcriber.search_config = with_redo
    transcript = int8_transcriber.transcribe(audio)
    _said_once([w.text for w in transcript.words])
    assert transcript.redecoded == int(doubled), "decoded again whole exactly when its shortened encoding repeated"
    assert all(w.end_ms - w.start_ms >= 20 for w in transcript.words), "no word squeezed into an instant"


@pytest.fixture(scope="module")
def said_twice(tmp_path_factory) -> Path:
    """A short clip that really says its sentence twice: its shortened encoding repeats on every CPU."""
    path = tmp_path_factory.mktemp("twice") / "twice.wav"
    write_wav(path, speak_at(f"{TWICE}. {TWICE}.", SAMPLE_RATE), SAMPLE_RATE)
    return path


def test_a_window_that_says_a_phrase_twice_is_decoded_again_whole_and_stands(transcriber, said_twice):
    transcript = transcriber.transcribe(decode_audio(str(said_twice)))
    assert transcript.redecoded == 1
    assert repeated_phrase(" ".join(w.text for w in transcript.words)) == TWICE.lower().replace("four", "4")


def test_the_daemon_counts_the_redecode_on_the_request_job_and_metrics(tmp_path, said_twice, installed_model):
    with audio_server(said_twice.parent) as origin, \
            running_daemon(tmp_path, ASYNC_ENGINE_COMPUTE_TYPE="int8") as daemon:
        daemon.wait_healthy()
        answer = daemon.transcribe({"audio_url": f"{origin}/{said_twice.name}"})
        assert answer.status_code == 200, answer.text
        assert " ".join(w["text"] for w in answer.json()["words"]).count("previous message") == 2
        made = requests.post(f"{daemon.url}/v2/transcript", json={"audio_url": f"{origin}/{said_twice.name}"},
                             timeout=30).json()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = requests.get(f"{daemon.url}/v2/transcript/{made['id']}", timeout=10).json()
            if job["status"] in ("completed", "error"):
                break
            time.sleep(0.2)
        assert job["status"] == "completed", job
        assert " ".join(w["text"] for w in job["words"]).count("previous message") == 2
        metrics = {f.name: f.samples for f in text_string_to_metric_families(
            requests.get(daemon.url + "/metrics", timeout=10).text)}
        assert sum(s.value for s in metrics["async_engine_redecoded_windows"]) == 2
        log = daemon.log()
    request_lines = [line for line in log.splitlines() if answer.json()["uid"] in line and "status=200" in line]
    assert len(request_lines) == 1 and "redecoded=1" in request_lines[0], log[-3000:]
    job_lines = [line for line in log.splitlines() if f"job={made['id']}" in line and "status=completed" in line]
    assert len(job_lines) == 1 and "redecoded=1" in job_lines[0], log[-3000:]
