"""The official AssemblyAI and OpenAI Python SDKs, pointed at the real daemon, used as their users would.

API.md makes the SDKs the contract: they post what their request models hold and parse answers into
their response models, so anything this server answers that they cannot read fails here. One daemon
(real processes, the tiny.en model, real HTTP on loopback, an API key) serves the module; speech is
generated with eSpeak NG, and a loopback receiver plays the customer's webhook endpoint.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import assemblyai as aai
import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from bench.daemon_proc import OriginHandler
from daemon_support import audio_server, loopback_server, running_daemon
from synth import silence, speak_at, two_party_call

KEY = "sdk-test-key-0123456789"
SR = 16000
SENTENCE = "please send the weekly report to the finance team before friday"
CALL = [(1, "thank you for calling the support line"), (2, "I was charged twice on my invoice"),
        (1, "let me check that for you")]


@pytest.fixture(scope="module")
def files(tmp_path_factory, installed_model) -> Path:
    root = tmp_path_factory.mktemp("sdk-audio")
    speech = speak_at(SENTENCE, SR)
    sf.write(root / "speech.wav", np.concatenate([silence(0.4, SR), speech, silence(0.4, SR)]), SR, subtype="PCM_16")
    call, _ = two_party_call(CALL)
    sf.write(root / "call.wav", call, SR, subtype="PCM_16")
    (root / "junk.wav").write_bytes(np.random.default_rng(3).bytes(40_000))
    return root


@pytest.fixture(scope="module")
def origin(files) -> Iterator[str]:
    with audio_server(files) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("sdk-daemon"), ASYNC_ENGINE_API_KEY=KEY,
                        MAX_TRANSCRIPTS_PARALLEL="2") as running:
        running.wait_healthy()
        yield running


@pytest.fixture()
def aai_client(daemon) -> aai.Transcriber:
    aai.settings.base_url = daemon.url
    aai.settings.api_key = KEY
    aai.settings.polling_interval = 0.2
    return aai.Transcriber()


@pytest.fixture()
def oai(daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=KEY, max_retries=0)


def _said(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


# --- AssemblyAI --------------------------------------------------------------------------------------------

def test_upload_and_transcribe_real_speech(aai_client, files):
    transcript = aai_client.transcribe(str(files / "speech.wav"))
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert {"weekly", "report", "finance", "friday"} <= _said(transcript.text), transcript.text
    assert transcript.audio_url.startswith(aai.settings.base_url + "/v2/upload/")
    words = transcript.words
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0 <= w.confidence <= 1 and w.start < w.end for w in words)
    assert transcript.audio_duration == 5 and 0 < transcript.confidence <= 1
    assert transcript.id.startswith("t_")


def test_transcribe_a_url_with_options(aai_client, origin):
    config = aai.TranscriptionConfig(punctuate=False, format_text=False, audio_start_from=300, audio_end_at=2600)
    transcript = aai_client.transcribe(f"{origin}/speech.wav", config)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    raw = transcript.json_response
    assert (raw["punctuate"], raw["format_text"], raw["audio_start_from"], raw["audio_end_at"]) == (False, False, 300,
                                                                                                      2600)
    assert transcript.text == transcript.text.lower() and not re.search(r"[.,?!]", transcript.text)
    assert "weekly" in _said(transcript.text) and "friday" not in _said(transcript.text)
    assert all(300 <= w.start and w.end <= 2600 + 50 for w in transcript.words)


def test_dual_channel_turns(aai_client, origin):
    transcript = aai_client.transcribe(f"{origin}/call.wav", aai.TranscriptionConfig(dual_channel=True))
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert [u.channel for u in transcript.utterances] == ["1", "2", "1"]
    assert "invoice" in _said(transcript.utterances[1].text)
    assert {w.channel for w in transcript.words} == {"1", "2"}


def test_every_export(aai_client, origin):
    transcript = aai_client.transcribe(f"{origin}/speech.wav")
    srt = transcript.export_subtitles_srt()
    assert srt.startswith("1\n00:00:0") and "-->" in srt and "weekly" in srt.lower()
    vtt = transcript.export_subtitles_vtt(chars_per_caption=16)
    cues = [line for line in vtt.splitlines()[2:] if line and "-->" not in line]
    assert vtt.startswith("WEBVTT") and cues and all(len(cue) <= 16 or " " not in cue for cue in cues)
    sentences = transcript.get_sentences()
    assert sentences and sentences[0].words and "weekly" in sentences[0].text.lower()
    paragraphs = transcript.get_paragraphs()
    assert paragraphs and paragraphs[0].text
    found = transcript.word_search(["weekly", "finance team", "zebra"])
    counts = {m.text: m.count for m in found}
    assert counts["weekly"] == 1 and counts["finance team"] == 1 and counts["zebra"] == 0
    match = next(m for m in found if m.text == "weekly")
    assert match.timestamps[0][0] == transcript.words[match.indexes[0]].start


def test_get_list_and_delete(aai_client, origin, daemon):
    made = [aai_client.submit(f"{origin}/speech.wav") for _ in range(3)]
    fetched = aai.Transcript.get_by_id(made[0].id)
    assert fetched.id == made[0].id and fetched.status in tuple(aai.TranscriptStatus)
    page = aai_client.list_transcripts(aai.ListTranscriptParameters(limit=2))
    assert page.page_details.limit == 2 and page.page_details.result_count == 2
    assert [t.id for t in page.transcripts] == [made[2].id, made[1].id]  # newest first
    older = aai_client.list_transcripts(aai.ListTranscriptParameters(limit=2,
                                                                    before_id=page.page_details.before_id_of_prev_url))
    assert older.transcripts[0].id == made[0].id
    for transcript in made:
        transcript.wait_for_completion()
    deleted = aai.Transcript.delete_by_id(made[1].id)
    assert deleted.text == "Deleted by user." and deleted.words is None
    with pytest.raises(aai.types.TranscriptError, match="deleted"):
        aai.Transcript.get_by_id(made[1].id).export_subtitles_srt()
    with pytest.raises(aai.types.TranscriptError, match="no transcript"):
        aai.Transcript.get_by_id("t_00000000-0000-4000-8000-000000000000")


class _Receiver(OriginHandler):
    """The customer's webhook endpoint: records every call; answers 500 while `failures` last."""

    calls: queue.Queue
    failures: list

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.put((body, dict(self.headers)))
        self.send_body(500 if self.failures and self.failures.pop() else 200, b"ok")


def test_webhook_with_its_auth_header_and_a_retry(aai_client, origin):
    calls: queue.Queue = queue.Queue()
    with loopback_server(type("Receiver", (_Receiver,), {"calls": calls, "failures": [True]})) as hook:
        config = aai.TranscriptionConfig(webhook_url=f"{hook}/hooks/asr", webhook_auth_header_name="X-Hook-Secret",
                                         webhook_auth_header_value="s3cr3t")
        transcript = aai_client.transcribe(f"{origin}/speech.wav", config)
        first, headers = calls.get(timeout=30)
        assert first == {"transcript_id": transcript.id, "status": "completed"}
        assert headers["X-Hook-Secret"] == "s3cr3t"
        again, _ = calls.get(timeout=30)  # the first answer was a 500: delivered again, 10 s later
        assert again == first
    deadline = time.monotonic() + 10
    while aai.Transcript.get_by_id(transcript.id).json_response["webhook_status_code"] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_junk_audio_ends_as_an_error_transcript(aai_client, files):
    transcript = aai_client.transcribe(str(files / "junk.wav"))
    assert transcript.status == aai.TranscriptStatus.error
    assert "not audio the server can decode" in transcript.error


def test_an_option_the_server_does_not_support_is_a_400_naming_it(aai_client, origin):
    with pytest.raises(aai.types.TranscriptError, match="sentiment_analysis is not supported"):
        aai_client.transcribe(f"{origin}/speech.wav", aai.TranscriptionConfig(sentiment_analysis=True))


def test_a_wrong_key_is_401(daemon, origin):
    aai.settings.base_url = daemon.url
    with pytest.raises(aai.types.TranscriptError, match="wrong API key"):
        aai.Transcriber(client=aai.Client(api_key="wrong-key-0123456789abc")).transcribe(f"{origin}/speech.wav")
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="wrong-key-0123456789abc", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


# --- OpenAI ---------------------------------------------------------------------------------------------

def test_openai_models(oai, daemon):
    assert {"tiny.en", "whisper-1"} <= {model.id for model in oai.models.list()}


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_openai_every_response_format(oai, files, response_format):
    with open(files / "speech.wav", "rb") as audio:
        kwargs = {"timestamp_granularities": ["word", "segment"]} if response_format == "verbose_json" else {}
        result = oai.audio.transcriptions.create(model="whisper-1", file=audio, response_format=response_format,
                                                 **kwargs)
    if response_format == "json":
        assert {"weekly", "friday"} <= _said(result.text)
    elif response_format == "verbose_json":
        assert result.language == "english" and 4 < result.duration < 6
        assert result.words and result.words[0].start < result.words[0].end
        assert result.segments and result.segments[0].text.startswith(" ")
        assert " ".join(w.word for w in result.words).lower().startswith("please")
    elif response_format == "text":
        assert isinstance(result, str) and "weekly" in result.lower()
    else:
        assert "-->" in result and (result.startswith("WEBVTT") == (response_format == "vtt"))


def test_openai_stream_sends_each_turn_as_a_delta_then_the_whole_text(oai, tmp_path):
    """stream=true: the file read as a live stream's turns, each turn's text an event as it is decoded."""
    second = "the meeting with the new client has moved to tuesday afternoon"
    audio = np.concatenate([silence(0.4, SR), speak_at(SENTENCE, SR), silence(2.0, SR), speak_at(second, SR),
                            silence(0.4, SR)])
    sf.write(tmp_path / "two.wav", audio, SR, subtype="PCM_16")
    with open(tmp_path / "two.wav", "rb") as file:
        events = list(oai.audio.transcriptions.create(model="whisper-1", file=file, stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert [e.type for e in events] == ["transcript.text.delta"] * len(deltas) + ["transcript.text.done"]
    assert len(deltas) == 2, deltas  # one a turn
    assert events[-1].text == "".join(e.delta for e in deltas)
    assert {"weekly", "friday"} <= _said(deltas[0].delta) and {"client", "afternoon"} <= _said(deltas[1].delta)
    with open(tmp_path / "two.wav", "rb") as file, pytest.raises(openai.BadRequestError, match="json or text"):
        oai.audio.transcriptions.create(model="whisper-1", file=file, stream=True, response_format="srt")


def test_openai_prompt_and_language(oai, files):
    with open(files / "speech.wav", "rb") as audio:
        result = oai.audio.transcriptions.create(model="whisper-1", file=audio, language="en",
                                                 prompt="Weekly finance report.", temperature=0)
    assert "weekly" in _said(result.text)
    with open(files / "speech.wav", "rb") as audio, pytest.raises(openai.BadRequestError, match="English"):
        oai.audio.transcriptions.create(model="whisper-1", file=audio, language="de")
    with open(files / "speech.wav", "rb") as audio, pytest.raises(openai.BadRequestError, match="model"):
        oai.audio.transcriptions.create(model="gpt-9-transcribe", file=audio)


def test_openai_over_capacity_is_429(tmp_path, files, installed_model):
    with running_daemon(tmp_path, MAX_TRANSCRIPTS_PARALLEL="1") as daemon:
        daemon.wait_healthy()
        client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused-key", max_retries=0)
        results: list = []

        def call() -> None:
            try:
                with open(files / "call.wav", "rb") as audio:
                    results.append(client.audio.transcriptions.create(model="whisper-1", file=audio))
            except openai.RateLimitError as error:
                results.append(error)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert refused and len(results) == 3
        assert int(refused[0].response.headers["Retry-After"]) > 0


def test_sync_and_async_apis_show_the_same_jobs(daemon, origin):
    """/transcribe/url makes a job like every entry point: its uid is a transcript id."""
    headers = {"Authorization": KEY}
    body = requests.post(f"{daemon.url}/transcribe/url", json={"audio_url": f"{origin}/speech.wav"},
                         headers=headers, timeout=120).json()
    stored = requests.get(f"{daemon.url}/v2/transcript/{body['uid']}", headers=headers, timeout=10).json()
    assert stored["status"] == "completed" and stored["text"] == body["blob"]
    assert [w["start"] for w in stored["words"]] == [w["start"] for w in body["words"]]


def test_wer_through_the_sdk_equals_transcribe_url(aai_client, daemon, eval_dir):
    """One decoding path for every entry point: the same clips give the same words either way."""
    from bench.wer import count_errors

    rows = [line.split("\t") for line in (eval_dir / "dev.tsv").read_text().splitlines()]
    picked = [r for r in rows if r[0].startswith(("jfk/", "librispeech_1089/", "hifitts_6097_whispercpp/"))][:12]
    by_sdk = [aai_client.transcribe(str(eval_dir / path)).text for path, _ in picked]
    with audio_server(eval_dir) as url:
        by_url = [requests.post(f"{daemon.url}/transcribe/url", json={"audio_url": f"{url}/{path}"},
                                headers={"Authorization": KEY}, timeout=120).json()["blob"] for path, _ in picked]
    errors = [sum(count_errors(ref, text).errors for (_, ref), text in zip(picked, texts)) for texts in (by_sdk, by_url)]
    assert sum(count_errors(ref, "").words for _, ref in picked) > 100
    assert errors[0] == errors[1] and by_sdk == by_url, (errors, by_sdk, by_url)
