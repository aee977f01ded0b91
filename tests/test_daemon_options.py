"""Every request option of API.md over the real daemon, alone and combined, on a generated stereo call."""

from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from daemon_support import audio_server, running_daemon
from synth import two_party_call

TURNS = [
    (1, "thank you for calling the support line, how can I help you today"),
    (2, "hello, I was charged forty nine dollars twice on my last invoice"),
    (1, "I am sorry about that, let me check your account"),
    (2, "thank you, I will wait"),
]
TOLERANCE_MS = 500
# Marks that may stay inside a word when punctuation is off ("don't", "$49.99", "10:30", "well-known").
_INNER = re.compile(r"(?<=\w)['\-.,:](?=\w)")


@pytest.fixture(scope="module")
def call(tmp_path_factory, installed_model) -> tuple[Path, list[float]]:
    root = tmp_path_factory.mktemp("call")
    samples, starts = two_party_call(TURNS)
    sf.write(root / "call.wav", samples, 16000)
    sf.write(root / "mono.wav", samples.mean(axis=1), 16000)
    return root, starts


@pytest.fixture(scope="module")
def origin(call):
    with audio_server(call[0]) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("daemon")) as running:
        running.wait_healthy()
        yield running


def _ask(daemon, origin: str, **options) -> dict:
    response = daemon.transcribe({"audio_url": f"{origin}/{options.pop('file', 'call.wav')}", **options})
    assert response.status_code == 200, response.text
    return response.json()


def _has_punctuation(text: str) -> bool:
    return any(c in string.punctuation.replace("$", "").replace("%", "") for c in _INNER.sub("", text))


def test_dual_channel_call_comes_back_as_turns_in_spoken_order(daemon, origin, call):
    body = _ask(daemon, origin, dual_channel=True)
    starts = call[1]
    assert body["stereo_decode"] is True
    utterances = body["utterances"]
    assert [u["channel"] for u in utterances] == ["1", "2", "1", "2"]
    for utterance, truth in zip(utterances, starts):
        assert abs(utterance["start"] - truth * 1000) <= TOLERANCE_MS, (utterance["text"], truth)
        assert utterance["end"] > utterance["start"] and 0 < utterance["confidence"] <= 1
        assert all(w["channel"] == utterance["channel"] for w in utterance["words"])
        assert utterance["text"] == " ".join(w["text"] for w in utterance["words"])
    assert "support" in utterances[0]["text"].lower() and "charged" in utterances[1]["text"].lower()
    assert "$49" in utterances[1]["text"], "format_text (default true) writes amounts with digits"
    assert body["words"] == [w for u in utterances for w in u["words"]]
    assert [w["start"] for w in body["words"]] == sorted(w["start"] for w in body["words"])
    assert body["blob"] == " ".join(u["text"] for u in utterances)
    assert body["duration"] == pytest.approx(len(sf.read(call[0] / "call.wav")[0]) / 16000, abs=1e-3)


def test_format_text_false_gives_spoken_lower_case_words(daemon, origin):
    written = _ask(daemon, origin, dual_channel=True)
    spoken = _ask(daemon, origin, dual_channel=True, format_text=False)
    assert "forty nine dollars" in spoken["blob"]
    assert not re.search(r"\d", spoken["blob"]) and spoken["blob"] == spoken["blob"].lower()
    assert spoken["blob"].count(" ") > written["blob"].count(" "), "$49 became three words"
    amount = next(w for w in written["words"] if w["text"].startswith("$49"))
    parts = [w for w in spoken["words"] if amount["start"] <= w["start"] < amount["end"]]
    assert [w["text"] for w in parts][:3] == ["forty", "nine", "dollars"]
    assert parts[0]["start"] == amount["start"] and max(w["end"] for w in parts) == amount["end"]


def test_punctuate_false_removes_marks_and_keeps_timings(daemon, origin):
    marked = _ask(daemon, origin, dual_channel=True)
    plain = _ask(daemon, origin, dual_channel=True, punctuate=False)
    assert _has_punctuation(marked["blob"])
    assert not _has_punctuation(plain["blob"])
    assert [(w["start"], w["end"]) for w in plain["words"]] == [(w["start"], w["end"]) for w in marked["words"]]
    assert any(c.isupper() for c in plain["blob"]), "casing stays; only ENABLE_AUTO_PUNCTUATION=False drops it"


def test_only_the_requested_span_is_transcribed_with_file_times(daemon, origin, call):
    starts = call[1]
    begin, end = int(starts[1] * 1000) - 400, int(starts[3] * 1000) - 200
    body = _ask(daemon, origin, dual_channel=True, audio_start_from=begin, audio_end_at=end)
    assert body["duration"] == pytest.approx((end - begin) / 1000, abs=1e-3)
    assert [u["channel"] for u in body["utterances"]] == ["2", "1"]
    assert abs(body["utterances"][0]["start"] - starts[1] * 1000) <= TOLERANCE_MS
    assert all(begin <= w["start"] and w["end"] <= end for w in body["words"])
    assert "support" not in body["blob"].lower() and "wait" not in body["blob"].lower()


def test_every_option_together(daemon, origin, call):
    starts = call[1]
    begin = int(starts[1] * 1000) - 400
    body = _ask(daemon, origin, dual_channel=True, format_text=False, punctuate=False, audio_start_from=begin)
    assert [u["channel"] for u in body["utterances"]] == ["2", "1", "2"]
    assert "forty nine dollars" in body["blob"]
    assert body["blob"] == body["blob"].lower() and not _has_punctuation(body["blob"])
    assert all(w["start"] >= begin for w in body["words"])


def test_a_stereo_file_without_dual_channel_is_downmixed(daemon, origin):
    body = _ask(daemon, origin)
    assert body["stereo_decode"] is False and body["utterances"] is None
    assert "support" in body["blob"].lower() and "charged" in body["blob"].lower()
    assert all("channel" not in w for w in body["words"])


def test_a_mono_file_with_dual_channel_is_refused(daemon, origin):
    response = daemon.transcribe({"audio_url": f"{origin}/mono.wav", "dual_channel": True})
    assert response.status_code == 422
    assert response.json()["code"] == 11 and "one channel" in response.json()["description"]


def test_auto_punctuation_off_overrides_the_request(tmp_path, origin):
    with running_daemon(tmp_path, ENABLE_AUTO_PUNCTUATION="False") as daemon:
        daemon.wait_healthy()
        body = _ask(daemon, origin, dual_channel=True, punctuate=True)
    assert body["blob"] == body["blob"].lower() and not _has_punctuation(body["blob"])
    assert "$49" in body["blob"], "numbers are still written with digits"


def test_real_two_channel_recording_scores_as_its_channels_alone(daemon, transcriber, eval_dir):
    """../shared/eval/mfa_stereo_twochannel: dual_channel must not change what each channel says."""
    from bench.wer import count_errors
    from engine.audio.files import decode_audio
    from engine.text.response import response_body
    from engine.text.format import TextOptions

    folder = eval_dir / "mfa_stereo_twochannel"
    name, reference = (folder / "refs.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t", 1)
    channels = decode_audio(folder / name, keep_channels=True)
    alone = [
        response_body([t.words], 0.0, 0, TextOptions(), False)["blob"]
        for t in transcriber.transcribe_many([np.ascontiguousarray(c) for c in channels[:2]])
    ]
    with audio_server(folder) as url:
        words = _ask(daemon, url, file=name, dual_channel=True)["words"]
    together = [" ".join(w["text"] for w in words if w["channel"] == channel) for channel in ("1", "2")]
    alone_errors = count_errors(reference, " ".join(alone)).errors
    together_errors = count_errors(reference, " ".join(together)).errors
    assert count_errors(reference, "").words > 50
    # One inference process of one thread sums in another order than the test's process of two;
    # a near-tie may flip one word, never more.
    assert abs(together_errors - alone_errors) <= 1, (alone, together)
