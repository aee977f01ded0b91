"""Speaker labels through the real daemon and the CLI: AssemblyAI's SDK, /transcribe/url, the command line.

A conversation of two recorded readers taking turns (bench/speakers.py builds it from ../shared/eval;
the module skips without it) is served from loopback; the daemon runs its real processes.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import assemblyai as aai
import pytest
import requests
import soundfile as sf

from bench import dataset
from bench.speakers import Conversation, build, speaker_at
from daemon_support import ROOT, audio_server, running_daemon

EVAL = dataset.default_eval_dir()
pytestmark = pytest.mark.skipif(not (EVAL / "dev.tsv").is_file(), reason=f"no eval set at {EVAL}")


@pytest.fixture(scope="module")
def conversation() -> Conversation:
    return build(EVAL, {2: 1}, seed=4)[0]


@pytest.fixture(scope="module")
def origin(tmp_path_factory, conversation) -> Iterator[str]:
    root = tmp_path_factory.mktemp("conversation")
    sf.write(root / "conversation.wav", conversation.audio, dataset.SAMPLE_RATE, subtype="PCM_16")
    with audio_server(root) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("speakers-daemon")) as running:
        running.wait_healthy()
        yield running


def _right_share(words: list[tuple[str, int, int]], conversation: Conversation) -> float:
    """The share of (speaker, start ms, end ms) words whose speaker is their turn's, under the mapping the
    words themselves vote for."""
    votes: dict[tuple[str, str], int] = {}
    truths = []
    for speaker, start, end in words:
        truth = speaker_at(conversation.turns, (start + end) / 2000)
        truths.append(truth)
        votes[speaker, truth] = votes.get((speaker, truth), 0) + 1
    mapping = {speaker: max((n, truth) for (s, truth), n in votes.items() if s == speaker)[1]
               for speaker, _, _ in words}
    return sum(mapping[speaker] == truth for (speaker, _, _), truth in zip(words, truths)) / len(words)


def test_assemblyai_sdk_speaker_labels(daemon, origin, conversation):
    aai.settings.base_url = daemon.url
    aai.settings.api_key = "unused"
    aai.settings.polling_interval = 0.2
    transcript = aai.Transcriber().transcribe(f"{origin}/conversation.wav",
                                              aai.TranscriptionConfig(speaker_labels=True))
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert {u.speaker for u in transcript.utterances} == {"A", "B"}
    assert all(w.speaker in ("A", "B") for w in transcript.words)
    assert sum(len(u.words) for u in transcript.utterances) == len(transcript.words)
    assert _right_share([(w.speaker, w.start, w.end) for w in transcript.words], conversation) >= 0.9
    given = aai.Transcriber().transcribe(f"{origin}/conversation.wav",
                                         aai.TranscriptionConfig(speaker_labels=True, speakers_expected=2))
    assert {u.speaker for u in given.utterances} == {"A", "B"}


def test_transcribe_url_speaker_labels(daemon, origin, conversation):
    body = requests.post(daemon.url + "/transcribe/url", json={
        "audio_url": f"{origin}/conversation.wav", "speaker_labels": True,
        "speaker_options": {"min_speakers_expected": 2, "max_speakers_expected": 3}}, timeout=300).json()
    assert {u["speaker"] for u in body["utterances"]} == {"A", "B"}
    assert body["stereo_decode"] is False and all("channel" not in w for w in body["words"])
    assert _right_share([(w["speaker"], w["start"], w["end"]) for w in body["words"]], conversation) >= 0.9
    # a span of the file: its words keep file times, and still find their speakers
    start = int(conversation.turns[1].start * 1000)
    spanned = requests.post(daemon.url + "/transcribe/url", json={
        "audio_url": f"{origin}/conversation.wav", "speaker_labels": True, "audio_start_from": start},
        timeout=300).json()
    assert spanned["words"][0]["start"] >= start
    assert _right_share([(w["speaker"], w["start"], w["end"]) for w in spanned["words"]], conversation) >= 0.9


@pytest.mark.parametrize(("fields", "mention"), [
    ({"speaker_labels": True, "dual_channel": True}, "speaker_labels and dual_channel do not go together"),
    ({"speakers_expected": 2}, "speakers_expected needs speaker_labels: true"),
    ({"speaker_labels": True, "speakers_expected": 0}, "speakers_expected must be a whole number from 1 to 10"),
    ({"speaker_labels": True, "speaker_options": {"min_speakers_expected": 3, "max_speakers_expected": 2}},
     "must be at most max_speakers_expected"),
], ids=["with-dual-channel", "count-without-labels", "count-zero", "bounds-crossed"])
def test_speaker_options_refused(daemon, origin, fields, mention):
    response = requests.post(daemon.url + "/transcribe/url", json={"audio_url": f"{origin}/conversation.wav",
                                                                   **fields}, timeout=30)
    assert (response.status_code, response.json()["code"]) == (400, 4), response.text
    assert mention in response.json()["description"]


def test_cli_speaker_labels(tmp_path, conversation, installed_model):
    path = Path(tmp_path) / "conversation.wav"
    sf.write(path, conversation.audio, dataset.SAMPLE_RATE, subtype="PCM_16")
    run = subprocess.run([sys.executable, "-m", "engine.cli", "transcribe", str(path), "--speaker-labels",
                          "--speakers-expected", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("[") and " speaker A] " in lines[0]
    assert {line.split(" speaker ")[1][0] for line in lines} == {"A", "B"}


def test_openai_sdk_diarized_json(daemon, conversation, tmp_path):
    """OpenAI's SDK parses diarized_json into its TranscriptionDiarized: segments of one speaker each."""
    import openai

    path = Path(tmp_path) / "conversation.wav"
    sf.write(path, conversation.audio, dataset.SAMPLE_RATE, subtype="PCM_16")
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused", max_retries=0)
    with open(path, "rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="diarized_json")
    assert result.task == "transcribe" and result.text
    assert {segment.speaker for segment in result.segments} == {"A", "B"}
    assert all(segment.type == "transcript.text.segment" and segment.end >= segment.start
               for segment in result.segments)
    assert " ".join(segment.text for segment in result.segments) == result.text


def _data_url(audio) -> str:
    out = io.BytesIO()
    sf.write(out, audio, dataset.SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(out.getvalue()).decode()


def test_openai_sdk_known_speaker_named(daemon, conversation, tmp_path):
    """A sample of one reader's voice names that reader's segments; the other stays A."""
    import openai

    path = Path(tmp_path) / "conversation.wav"
    sf.write(path, conversation.audio, dataset.SAMPLE_RATE, subtype="PCM_16")
    first = conversation.turns[0]
    sample = conversation.audio[int(first.start * dataset.SAMPLE_RATE): int(first.end * dataset.SAMPLE_RATE)]
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused", max_retries=0)
    with open(path, "rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="diarized_json",
            known_speaker_names=["Reader"], known_speaker_references=[_data_url(sample)])
    assert {segment.speaker for segment in result.segments} == {"Reader", "A"}
    right = [segment.speaker == ("Reader" if speaker_at(conversation.turns, (segment.start + segment.end) / 2)
                                 == first.speaker else "A") for segment in result.segments]
    assert sum(right) >= 0.9 * len(right), [(s.speaker, s.start, s.text) for s in result.segments]


@pytest.mark.parametrize(("fields", "param", "mention"), [
    ([("known_speaker_names[]", "Ann")], "known_speaker_names[]",
     "known_speaker_names[] and known_speaker_references[] need response_format diarized_json"),
    ([("response_format", "diarized_json"), ("known_speaker_names[]", "Ann")], "known_speaker_references[]",
     "go in pairs"),
    ([("response_format", "diarized_json"), ("known_speaker_names[]", "Ann"),
      ("known_speaker_references[]", "https://example.com/ann.wav")], "known_speaker_references[]",
     "it is not a base64 data: URL"),
    ([("response_format", "diarized_json"), ("known_speaker_names[]", "Ann"),
      ("known_speaker_references[]", "data:audio/wav;base64," + base64.b64encode(b"not audio" * 50).decode())],
     "known_speaker_references[]", "it is not audio the server can decode"),
], ids=["without-diarized-json", "name-without-sample", "not-a-data-url", "not-audio"])
def test_openai_known_speakers_refused(daemon, fields, param, mention):
    form = [("file", ("a.wav", b"RIFF", "audio/wav")), ("model", (None, "whisper-1"))]
    response = requests.post(daemon.url + "/v1/audio/transcriptions",
                             files=form + [(name, (None, value)) for name, value in fields], timeout=30)
    assert (response.status_code, response.json()["code"]) == (400, 4), response.text
    assert mention in response.json()["description"] and response.json()["error"]["param"] == param


def test_openai_known_speaker_sample_too_short(daemon, conversation):
    short = _data_url(conversation.audio[: dataset.SAMPLE_RATE])  # 1 s
    form = [("file", ("a.wav", b"RIFF", "audio/wav")), ("model", (None, "whisper-1")),
            ("response_format", (None, "diarized_json")), ("known_speaker_names[]", (None, "Ann")),
            ("known_speaker_references[]", (None, short))]
    response = requests.post(daemon.url + "/v1/audio/transcriptions", files=form, timeout=30)
    assert response.status_code == 400 and "a sample must be 2 to 10 s of audio; got 1.0 s" in response.text
