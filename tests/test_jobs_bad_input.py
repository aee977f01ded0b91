"""The bad-input matrix of the job surfaces: uploads, AssemblyAI transcripts, ids and views, webhooks, OpenAI forms.

One real daemon (real processes, the real tiny.en model, real HTTP on loopback) serves the whole
module, with limits small enough that generated files reach them (DOWNLOAD_MAX_BYTES,
MAX_AUDIO_SECONDS, a 2 s DOWNLOAD_READ_TIMEOUT) and an API key, so every request carries one and
both of its spellings are exercised. Audio is generated: half a second of silence (transcribed in a
blink), one short eSpeak NG sentence, random bytes. A loopback origin that trickles its file until
the test lets go holds jobs in `processing` (and so others in `queued`) for as long as a row needs.

Every error row checks the whole answer: the status, a JSON body of exactly {code, description, uid}
plus the surface's own error field (AssemblyAI's `error` string on /v2/, OpenAI's `error` object on
/v1/), a t_ uid, what the description names; then that /health still answers 200. Jobs a row
starts are waited for, so no row leaves work running under the next one.
docs/BAD_INPUT.md ("Jobs: uploads, transcripts, ids, webhooks, OpenAI forms") is this module as a
table; keep the two in step.
"""

from __future__ import annotations

import io
import re
import threading
import time
from typing import Iterator
from urllib.parse import quote

import numpy as np
import pytest
import requests
import soundfile as sf

from bench.daemon_proc import OriginHandler
from daemon.errors import ERROR_TABLE
from daemon_support import loopback_server, running_daemon
from synth import silence, speak_at

KEY = "jobs-bad-input-key-0123456789"
MAX_BYTES = 2_000_000
MAX_SECONDS = 20
READ_TIMEOUT_S = 2
SR = 16000
SENTENCE = "please send the weekly report"
NAMES = {kind.code: kind.name for kind in ERROR_TABLE}
_UID = re.compile(r"t_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_TOKEN_URL = re.compile(r"http://127\.0\.0\.1:\d+/v2/upload/[0-9a-f]{32}")
UNKNOWN_ID = "t_00000000-0000-4000-8000-000000000000"
VIEWS = ("srt", "vtt", "sentences", "paragraphs", "word-search?words=weekly")


# --- audio ------------------------------------------------------------------------------------------------

def _wav(samples: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype=subtype)
    return out.getvalue()


SHORT = _wav(silence(0.5, SR))  # 16 kB: a valid file that transcribes at once (no speech: no words)
RANDOM = np.random.default_rng(11).bytes(48_000)
TOO_LONG = _wav(silence(MAX_SECONDS + 5, 8000), 8000, "PCM_U8")  # 25 s in 200 kB


@pytest.fixture(scope="module")
def speech(installed_model) -> bytes:
    """A 2.4 s sentence: a transcript with words, for the rows where words must (not) come back."""
    said = speak_at(SENTENCE, SR)
    return _wav(np.concatenate([silence(0.3, SR), said, silence(0.3, SR)]))


# --- the daemon, the client, the origin -------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("jobs-daemon"), ASYNC_ENGINE_API_KEY=KEY,
                        DOWNLOAD_MAX_BYTES=str(MAX_BYTES), MAX_AUDIO_SECONDS=str(MAX_SECONDS),
                        DOWNLOAD_READ_TIMEOUT=str(READ_TIMEOUT_S), DOWNLOAD_CONNECT_TIMEOUT="2",
                        MAX_TRANSCRIPTS_PARALLEL="2") as running:
        running.wait_healthy()
        yield running


@pytest.fixture(scope="module")
def api(daemon) -> Iterator[requests.Session]:
    """A client that sends the key as AssemblyAI's SDK does, `Authorization: <key>`."""
    with requests.Session() as session:
        session.headers["Authorization"] = KEY
        yield session


class _Holder(OriginHandler):
    """Serves `audio` for any path, a byte every 0.25 s (so DOWNLOAD_READ_TIMEOUT never fires) until
    `release` is set, then the rest at once: the job downloading it stays `processing` until then."""

    audio: bytes
    release: threading.Event

    def route(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(self.audio)))
        self.end_headers()
        sent = 0
        while not self.release.is_set() and sent < 200:  # 50 s at most, should a test forget to release
            self.wfile.write(self.audio[sent: sent + 1])
            self.wfile.flush()
            sent += 1
            self.release.wait(0.25)
        self.wfile.write(self.audio[sent:])


@pytest.fixture()
def holder(speech) -> Iterator[tuple[str, threading.Event]]:
    release = threading.Event()
    with loopback_server(type("Holder", (_Holder,), {"audio": speech, "release": release})) as url:
        try:
            yield url, release
        finally:
            release.set()


# --- checks -----------------------------------------------------------------------------------------------

def _error(daemon, response: requests.Response, status: int, code: int, *mentions: str, param: object = None) -> dict:
    """API.md's error with the surface's own field; then /health is 200.

    /v2/: exactly {code, description, uid, error}, `error` the description (AssemblyAI's SDK raises
    with it). /v1/: exactly {code, description, uid, error}, `error` OpenAI's {message, type, param,
    code} (its SDK raises BadRequestError, AuthenticationError, ... from it).
    """
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "description", "uid", "error"}, body
    assert _UID.fullmatch(body["uid"]), body["uid"]
    for mention in mentions:
        assert mention.lower() in body["description"].lower(), (mention, body["description"])
    path = response.request.path_url
    if path.startswith("/v1/"):
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error")
        assert body["error"] == {"message": body["description"], "type": kind, "param": param, "code": NAMES[code]}
    else:
        assert path.startswith("/v2/"), path
        assert body["error"] == body["description"]
    _still_healthy(daemon)
    return body


def _still_healthy(daemon) -> None:
    health = daemon.health()
    assert health.status_code == 200, health.text


def _upload(api, daemon, data: bytes) -> str:
    """A fresh upload_url (each row its own: deleting a transcript deletes its upload)."""
    response = api.post(daemon.url + "/v2/upload", data=data, timeout=30)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"upload_url"}
    return response.json()["upload_url"]


def _submit(api, daemon, body: dict) -> requests.Response:
    return api.post(daemon.url + "/v2/transcript", json=body, timeout=30)


def _get(api, daemon, job_id: str) -> dict:
    response = api.get(f"{daemon.url}/v2/transcript/{job_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _finished(api, daemon, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (body := _get(api, daemon, job_id))["status"] not in ("completed", "error"):
        assert time.monotonic() < deadline, f"{job_id} still {body['status']} after {timeout} s"
        time.sleep(0.1)
    return body


def _reaches(api, daemon, job_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (now := _get(api, daemon, job_id)["status"]) != status:
        assert time.monotonic() < deadline, f"{job_id} is {now}, never {status}"
        time.sleep(0.05)


def _error_transcript(api, daemon, response: requests.Response, *mentions: str) -> dict:
    """Accepted (200, queued), then ended in status error with a description naming the cause."""
    assert response.status_code == 200, response.text
    body = _finished(api, daemon, response.json()["id"])
    assert body["status"] == "error", body
    assert (body["text"], body["words"], body["confidence"]) == (None, None, None)
    for mention in mentions:
        assert mention.lower() in body["error"].lower(), (mention, body["error"])
    _still_healthy(daemon)
    return body


def _said(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", (text or "").lower()))


# --- POST /v2/upload --------------------------------------------------------------------------------------

def _chunks(total: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length): the server learns its size only as it arrives."""
    chunk = bytes(1 << 16)
    for _ in range(-(-total // len(chunk))):
        yield chunk


@pytest.mark.parametrize(
    "data",
    [pytest.param(bytes(MAX_BYTES + 1), id="one-byte-over-declared"),
     pytest.param(bytes(MAX_BYTES + 500_000), id="over-limit-declared"),
     pytest.param(_chunks(MAX_BYTES + 500_000), id="over-limit-chunked")],
)
def test_upload_over_the_limit(daemon, data):
    """An upload past DOWNLOAD_MAX_BYTES is the file-too-large error (code 6, API.md) that names the
    setting, with AssemblyAI's `error`, whether its size is declared or found out as it streams in."""
    response = requests.post(daemon.url + "/v2/upload", data=data, headers={"Authorization": KEY}, timeout=60)
    _error(daemon, response, 413, 6, "DOWNLOAD_MAX_BYTES", str(MAX_BYTES))


def test_upload_at_the_limit(daemon, api):
    """Exactly DOWNLOAD_MAX_BYTES is allowed: the limit is inclusive."""
    assert _TOKEN_URL.fullmatch(_upload(api, daemon, bytes(MAX_BYTES)))
    _still_healthy(daemon)


@pytest.mark.parametrize(
    ("headers", "mention"),
    [({}, "has no Authorization header"), ({"Authorization": "wrong-key-0123456789abcdef"}, "wrong API key"),
     ({"Authorization": f"Basic {KEY}"}, "wrong API key")],
    ids=["no-api-key", "wrong-api-key", "basic-scheme"],
)
def test_upload_without_the_key(daemon, headers, mention):
    response = requests.post(daemon.url + "/v2/upload", data=SHORT, headers=headers, timeout=30)
    _error(daemon, response, 401, 16, "Authorization: Bearer <key>", mention)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("authorization", [KEY, f"Bearer {KEY}", f"bearer   {KEY}  "],
                         ids=["key-alone", "bearer-key", "bearer-lower-case-spaces"])
def test_upload_key_spellings(daemon, authorization):
    """AssemblyAI's SDK sends `Authorization: <key>`, OpenAI's `Authorization: Bearer <key>`: both work."""
    response = requests.post(daemon.url + "/v2/upload", data=SHORT, headers={"Authorization": authorization},
                             timeout=30)
    assert response.status_code == 200, response.text
    assert _TOKEN_URL.fullmatch(response.json()["upload_url"]), response.json()


@pytest.mark.parametrize(
    ("data", "mentions"),
    [(b"", ("holds no audio", "0 bytes")),
     (RANDOM, ("not audio the server can decode",)),
     (TOO_LONG, ("25 s long", f"{MAX_SECONDS} s allowed", "MAX_AUDIO_SECONDS"))],
    ids=["empty-upload", "random-bytes-upload", "longer-than-MAX_AUDIO_SECONDS"],
)
def test_unusable_upload_ends_as_an_error_transcript(daemon, api, data, mentions):
    """The upload is stored as it is (any bytes are a file); the transcript of it is accepted, then ends
    in status error with the cause, as AssemblyAI's does: the SDK shows `error`."""
    upload_url = _upload(api, daemon, data)
    body = _error_transcript(api, daemon, _submit(api, daemon, {"audio_url": upload_url}), *mentions)
    assert body["audio_url"] == upload_url


# --- POST /v2/transcript: the body ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("data", "content_type", "status", "code", "mention"),
    [(b'{"audio_url": ', "application/json", 400, 9, "not valid JSON"),
     (b"", "application/json", 400, 9, "not valid JSON"),
     (b'["http://127.0.0.1/a.wav"]', "application/json", 400, 9, "must be a JSON object"),
     (b'"http://127.0.0.1/a.wav"', "application/json", 400, 9, "must be a JSON object"),
     (b'{"audio_url": "http://127.0.0.1/a.wav"}', "text/plain", 415, 10, "Content-Type must be application/json")],
    ids=["not-json", "empty-body", "json-array", "json-string", "content-type-text-plain"],
)
def test_transcript_body_malformed(daemon, api, data, content_type, status, code, mention):
    response = api.post(daemon.url + "/v2/transcript", data=data, headers={"Content-Type": content_type}, timeout=30)
    _error(daemon, response, status, code, mention)


_SUPPORTED = "supported: audio_end_at, audio_start_from, audio_url"
_OK_URL = "http://127.0.0.1:9/a.wav"  # never fetched: every row here is refused before a job exists


def _with(**fields) -> dict:
    return {"audio_url": _OK_URL, **fields}


def _row(row_id: str, body: dict, mentions: tuple[str, ...]):
    return pytest.param(body, mentions, id=row_id)


_HOOK = "http://127.0.0.1:9/hook"  # nothing listens there: no row may depend on a delivery


FIELD_ROWS = [
    _row("missing-audio-url", {}, ("audio_url is required",)),
    _row("missing-audio-url-with-options", {"punctuate": False}, ("audio_url is required",)),
    _row("audio-url-number", {"audio_url": 42}, ("audio_url must be a non-empty string; got a JSON number",)),
    _row("audio-url-empty", {"audio_url": "  "}, ('audio_url must be a non-empty string; got "  "',)),
    _row("scheme-ftp", {"audio_url": "ftp://127.0.0.1/a.wav"}, ("audio_url must be an http or https URL", "'ftp'")),
    _row("no-host", {"audio_url": "http:///a.wav"}, ("audio_url 'http:///a.wav' has no host name",)),
    _row("port-out-of-range", {"audio_url": "http://127.0.0.1:99999/a.wav"},
         ("is not a valid URL", "Port out of range")),
    _row("unclosed-ipv6-bracket", {"audio_url": "http://[::1/a.wav"}, ("audio_url", "is not a valid URL")),
    _row("unknown-field", _with(speaker_labelz=True),
         ("unknown field 'speaker_labelz'", "the fields are audio_end_at")),
    _row("unknown-field-camel-case", _with(audioUrl=_OK_URL), ("unknown field 'audioUrl'",)),
    _row("redact-pii-true", _with(redact_pii=True), ("redact_pii is not supported", _SUPPORTED)),
    _row("word-boost-a-string", _with(word_boost="invoice"), ("word_boost must be a list of words or phrases",)),
    _row("boost-param-unknown", _with(word_boost=["invoice"], boost_param="max"),
         ("boost_param must be one of low, default, high",)),
    _row("speech-model-set", _with(speech_model="best"), ("speech_model is not supported",)),
    _row("speakers-expected-without-labels", _with(speakers_expected=2), ("speakers_expected needs speaker_labels: true",)),
    _row("speakers-expected-11", _with(speaker_labels=True, speakers_expected=11),
         ("speakers_expected must be a whole number from 1 to 10; got 11",)),
    _row("speaker-bounds-crossed", _with(speaker_labels=True, speaker_options={"min_speakers_expected": 4,
                                                                              "max_speakers_expected": 2}),
         ("speaker_options.min_speakers_expected (4) must be at most max_speakers_expected (2)",)),
    _row("speaker-options-without-labels", _with(speaker_options={"max_speakers_expected": 2}),
         ("speaker_options needs speaker_labels: true",)),
    _row("speaker-labels-with-dual-channel", _with(speaker_labels=True, dual_channel=True),
         ("speaker_labels and dual_channel do not go together",)),
    _row("language-fr", _with(language_code="fr"), ("language_code 'fr' is not supported", "English")),
    _row("language-list", _with(language_code=["en"]), ("is not supported", "English")),
    _row("punctuate-string", _with(punctuate="yes"), ("punctuate must be true or false",)),
    _row("format-text-number", _with(format_text=1), ("format_text must be true or false",)),
    _row("start-negative", _with(audio_start_from=-1),
         ("audio_start_from must be a whole number of milliseconds >= 0",)),
    _row("start-float", _with(audio_start_from=1.5), ("audio_start_from must be a whole number",)),
    _row("end-string", _with(audio_end_at="2000"), ("audio_end_at must be a whole number",)),
    _row("start-after-end", _with(audio_start_from=2000, audio_end_at=1000),
         ("audio_start_from (2000 ms) must be less than audio_end_at (1000 ms)",)),
    _row("start-equals-end", _with(audio_start_from=1000, audio_end_at=1000),
         ("audio_start_from (1000 ms) must be less than audio_end_at (1000 ms)",)),
    _row("temperature-2", _with(temperature=2), ("temperature must be a number from 0 to 1",)),
    _row("temperature-bool", _with(temperature=True), ("temperature must be a number from 0 to 1",)),
    _row("temperature-string", _with(temperature="0.5"), ("temperature must be a number from 0 to 1",)),
    _row("prompt-number", _with(prompt=5), ("prompt must be a string",)),
    _row("webhook-scheme-ftp", _with(webhook_url="ftp://127.0.0.1/hook"),
         ("webhook_url must be an http or https URL", "'ftp'")),
    _row("webhook-no-host", _with(webhook_url="http:///hook"), ("webhook_url", "has no host name")),
    _row("webhook-unclosed-ipv6-bracket", _with(webhook_url="http://[::1/hook"),
         ("webhook_url", "is not a valid URL")),
    _row("webhook-number", _with(webhook_url=5), ("webhook_url must be a non-empty string; got a JSON number",)),
    _row("webhook-auth-name-without-value", _with(webhook_url=_HOOK, webhook_auth_header_name="X-Key"),
         ("webhook_auth_header_name and webhook_auth_header_value go together",)),
    _row("webhook-auth-value-without-name", _with(webhook_url=_HOOK, webhook_auth_header_value="s"),
         ("go together",)),
    _row("webhook-auth-name-not-a-header-name",
         _with(webhook_url=_HOOK, webhook_auth_header_name="X Bad:\r\nName", webhook_auth_header_value="s"),
         ("webhook_auth_header_name must be an HTTP header name",)),
]


@pytest.mark.parametrize(("body", "mentions"), FIELD_ROWS)
def test_transcript_field_refused(daemon, api, body, mentions):
    """Refused at submit, before a job exists: 400 code 4 naming the field and what is wrong with it."""
    _error(daemon, _submit(api, daemon, body), 400, 4, *mentions)


def test_upload_url_with_an_unknown_token(daemon, api):
    """An upload URL of this server whose token it does not hold is a 404 code 20, never a download."""
    url = f"{daemon.url}/v2/upload/{'0' * 32}"
    _error(daemon, _submit(api, daemon, {"audio_url": url}), 404, 20, f"the upload {url!r} is not on this server",
           "upload the file again")


@pytest.mark.parametrize(
    "options",
    [{"speaker_labels": False}, {"word_boost": []}, {"speech_model": None}, {"redact_pii": False},
     {"custom_spelling": {}}, {"language_code": "en_us"}, {"language_code": "EN"},
     {"audio_start_from": 0, "audio_end_at": 400, "temperature": 0, "prompt": ""}],
    ids=["speaker-labels-false", "word-boost-empty", "speech-model-null", "redact-pii-false",
         "custom-spelling-empty", "language-en-us", "language-EN", "every-supported-option-at-its-edge"],
)
def test_options_that_ask_for_nothing_are_accepted(daemon, api, options):
    """An unsupported option set to false, null, 0 or empty asks for nothing (the SDK sends such
    defaults): accepted, and the transcript completes."""
    response = _submit(api, daemon, {"audio_url": _upload(api, daemon, SHORT), **options})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    assert _finished(api, daemon, response.json()["id"])["status"] == "completed"
    _still_healthy(daemon)


def test_an_absurd_audio_start_from(daemon, api):
    """10^30 ms is past the end of any audio: refused at submit, naming the field and its range."""
    response = _submit(api, daemon, {"audio_url": _upload(api, daemon, SHORT), "audio_start_from": 10 ** 30})
    _error(daemon, response, 400, 4, "audio_start_from must be a whole number of milliseconds", "at most 2147483647")


# --- webhooks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hook", ["http://169.254.169.254/latest/hook", "http://[fd00:ec2::254]/hook"],
                         ids=["cloud-metadata-ipv4", "cloud-metadata-ipv6"])
def test_webhook_to_a_metadata_address(daemon, api, hook):
    """A webhook_url is checked like a download at every delivery, not at submit (its address may change
    by then): accepted, the transcript completes, the delivery is refused before connecting, so
    webhook_status_code stays null, and the log says so with the job id."""
    response = _submit(api, daemon, {"audio_url": _upload(api, daemon, SHORT), "webhook_url": hook})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert _finished(api, daemon, job_id)["status"] == "completed"
    pattern = re.compile(rf"WARNING async_engine\.webhooks\[\d+\] job={job_id} webhook attempt 1/7 to "
                         rf"{re.escape(hook)}: Webhook error to {re.escape(hook)}, the server may not connect to .*"
                         r"is in DOWNLOAD_DENY .*; next in 10 s")
    deadline = time.monotonic() + 15
    while not pattern.search(daemon.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.1)
    body = _get(api, daemon, job_id)
    assert (body["webhook_url"], body["webhook_status_code"]) == (hook, None)
    _still_healthy(daemon)


# --- ids and views ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def completed_id(daemon, api, speech) -> str:
    response = _submit(api, daemon, {"audio_url": _upload(api, daemon, speech)})
    body = _finished(api, daemon, response.json()["id"])
    assert body["status"] == "completed" and "weekly" in _said(body["text"]), body
    return body["id"]


@pytest.mark.parametrize(
    "job_id",
    [UNKNOWN_ID, "t_nope", "t_'; DROP TABLE jobs;--", "\x00", "ü日本", "a" * 10_000],
    ids=["unknown-uuid", "unknown-short", "sql-quote", "nul-byte", "non-ascii", "10KB-id"],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_id(daemon, api, job_id, method):
    """Whatever the id, 404 code 20, quoting at most 80 characters of it."""
    response = api.request(method, f"{daemon.url}/v2/transcript/{quote(job_id, safe='')}", timeout=10)
    body = _error(daemon, response, 404, 20, "there is no transcript", "JOB_RETENTION_HOURS")
    assert len(body["description"]) < 300


@pytest.mark.parametrize("view", VIEWS, ids=[v.split("?")[0] for v in VIEWS])
def test_export_of_an_unknown_id(daemon, api, view):
    _error(daemon, api.get(f"{daemon.url}/v2/transcript/{UNKNOWN_ID}/{view}", timeout=10), 404, 20,
           f"there is no transcript '{UNKNOWN_ID}'")


def test_export_of_queued_and_processing_transcripts(daemon, api, holder):
    """Two jobs held downloading fill both slots (processing); the third waits (queued). Neither state
    has an export: 400 code 21 naming the state."""
    origin, release = holder
    held = []
    for name in ("a", "b"):
        held.append(_submit(api, daemon, {"audio_url": f"{origin}/{name}.wav"}).json()["id"])
        _reaches(api, daemon, held[-1], "processing")
    waiting = _submit(api, daemon, {"audio_url": _upload(api, daemon, SHORT)}).json()["id"]
    try:
        assert _get(api, daemon, waiting)["status"] == "queued"
        for job_id, state in ((held[0], "processing"), (waiting, "queued")):
            for view in VIEWS:
                response = api.get(f"{daemon.url}/v2/transcript/{job_id}/{view}", timeout=10)
                _error(daemon, response, 400, 21, f"transcript {job_id} is {state}", f"no {view.split('?')[0]}")
    finally:
        release.set()
        for job_id in (*held, waiting):
            assert _finished(api, daemon, job_id)["status"] == "completed"


@pytest.fixture(scope="module")
def error_id(daemon, api) -> str:
    response = _submit(api, daemon, {"audio_url": _upload(api, daemon, b"")})
    return _error_transcript(api, daemon, response, "holds no audio")["id"]


@pytest.mark.parametrize("view", VIEWS, ids=[v.split("?")[0] for v in VIEWS])
def test_export_of_an_error_transcript(daemon, api, error_id, view):
    _error(daemon, api.get(f"{daemon.url}/v2/transcript/{error_id}/{view}", timeout=10), 400, 21,
           f"transcript {error_id} is error")


def test_export_of_a_deleted_transcript(daemon, api, speech):
    """DELETE keeps the record (AssemblyAI's "Deleted by user.") without its words; no view has anything."""
    response = _submit(api, daemon, {"audio_url": _upload(api, daemon, speech)})
    job_id = _finished(api, daemon, response.json()["id"])["id"]
    deleted = api.delete(f"{daemon.url}/v2/transcript/{job_id}", timeout=10)
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert (body["status"], body["text"], body["audio_url"], body["words"]) == (
        "completed", "Deleted by user.", "http://deleted_by_user", None)
    assert _get(api, daemon, job_id)["words"] is None
    for view in VIEWS:
        _error(daemon, api.get(f"{daemon.url}/v2/transcript/{job_id}/{view}", timeout=10), 400, 21,
               f"transcript {job_id} is deleted")
    again = api.delete(f"{daemon.url}/v2/transcript/{job_id}", timeout=10)  # deleting twice is harmless
    assert again.status_code == 200 and again.json()["text"] == "Deleted by user."


def test_delete_while_processing(daemon, api, holder):
    """A transcript being transcribed cannot be deleted (its words would land after the deletion): 400 code 21,
    and once it has completed, DELETE removes its words."""
    origin, release = holder
    job_id = _submit(api, daemon, {"audio_url": f"{origin}/held.wav"}).json()["id"]
    _reaches(api, daemon, job_id, "processing")
    _error(daemon, api.delete(f"{daemon.url}/v2/transcript/{job_id}", timeout=10), 400, 21,
           f"transcript {job_id} is being transcribed")
    release.set()
    assert _finished(api, daemon, job_id)["status"] == "completed"
    deleted = api.delete(f"{daemon.url}/v2/transcript/{job_id}", timeout=10)
    assert deleted.status_code == 200
    assert (deleted.json()["text"], deleted.json()["words"], deleted.json()["confidence"]) == \
        ("Deleted by user.", None, None)


def test_delete_of_a_queued_transcript_takes_it_off_the_queue(daemon, api, holder, speech):
    origin, release = holder
    for name in ("a", "b"):  # both slots busy, so the transcript below stays queued
        _reaches(api, daemon, _submit(api, daemon, {"audio_url": f"{origin}/{name}.wav"}).json()["id"], "processing")
    queued = _submit(api, daemon, {"audio_url": _upload(api, daemon, speech)}).json()["id"]
    deleted = api.delete(f"{daemon.url}/v2/transcript/{queued}", timeout=10)
    assert deleted.status_code == 200 and deleted.json()["status"] == "error"
    assert deleted.json()["error"] == "deleted before it was transcribed"
    release.set()
    time.sleep(1.0)  # the slots free up; a deleted job is never taken
    body = api.get(f"{daemon.url}/v2/transcript/{queued}", timeout=10).json()
    assert (body["status"], body["text"]) == ("error", "Deleted by user.")


def test_delete_keeps_an_upload_another_transcript_uses(daemon, api, holder, speech):
    """AssemblyAI lets many transcripts use one upload_url: deleting one of them must not fail the others."""
    origin, release = holder
    for name in ("a", "b"):  # both slots busy, so the two transcripts below stay queued
        _reaches(api, daemon, _submit(api, daemon, {"audio_url": f"{origin}/{name}.wav"}).json()["id"], "processing")
    upload_url = _upload(api, daemon, speech)
    first, second = (_submit(api, daemon, {"audio_url": upload_url}).json()["id"] for _ in range(2))
    assert api.delete(f"{daemon.url}/v2/transcript/{first}", timeout=10).status_code == 200
    release.set()
    _finished(api, daemon, first)
    body = _finished(api, daemon, second)
    assert body["status"] == "completed" and "weekly" in _said(body["text"]), body


@pytest.mark.parametrize(
    ("view", "mentions"),
    [("xml", ("there is no /v2/transcript/",)),
     ("word-search", ("words is required",)),
     ("word-search?words=,%20,", ("words is required",)),
     ("srt?chars_per_caption=0", ("chars_per_caption must be a whole number from 1 to 10000", "got '0'")),
     ("vtt?chars_per_caption=abc", ("chars_per_caption must be a whole number", "got 'abc'")),
     ("srt?chars_per_caption=-5", ("chars_per_caption must be a whole number", "got '-5'")),
     pytest.param("srt?chars_per_caption=%C2%B2", ("chars_per_caption must be a whole number",),
                  id="chars-per-caption-superscript-two")],
    ids=["unknown-view", "word-search-without-words", "word-search-only-commas", "chars-per-caption-0",
         "chars-per-caption-abc", "chars-per-caption-negative", None],
)
def test_view_refused(daemon, api, completed_id, view, mentions):
    response = api.get(f"{daemon.url}/v2/transcript/{completed_id}/{view}", timeout=10)
    status, code = (404, 17) if view == "xml" else (400, 4)
    _error(daemon, response, status, code, *mentions)


@pytest.mark.parametrize(
    ("query", "mentions"),
    [("limit=0", ("limit must be a whole number from 1 to 200", "got '0'")),
     ("limit=1000", ("limit must be a whole number from 1 to 200", "got '1000'")),
     ("limit=x", ("got 'x'",)),
     ("limit=-1", ("got '-1'",)),
     pytest.param("limit=%C2%B2", ("limit must be a whole number",), id="limit-superscript-two"),
     ("status=bogus", ("status must be one of queued, processing, completed, error", "got 'bogus'")),
     ("created_on=yesterday", ("created_on must be a date, YYYY-MM-DD", "got 'yesterday'")),
     pytest.param("created_on=2024-02-30", ("created_on",), id="created-on-february-30")],
    ids=["limit-0", "limit-1000", "limit-x", "limit-negative", None, "status-bogus", "created-on-yesterday", None],
)
def test_list_refused(daemon, api, query, mentions):
    _error(daemon, api.get(f"{daemon.url}/v2/transcript?{query}", timeout=10), 400, 4, *mentions)


@pytest.mark.parametrize("cursor", ["before_id", "after_id"])
@pytest.mark.parametrize("job_id", [UNKNOWN_ID, "x" * 2000], ids=["unknown-uuid", "2KB-id"])
def test_list_with_an_unknown_cursor(daemon, api, completed_id, cursor, job_id):
    """An id the server does not hold (expired, or never there) as a cursor: an empty page, not an error,
    so a client paging with a stale cursor simply stops; both page links are null."""
    response = api.get(f"{daemon.url}/v2/transcript", params={cursor: job_id}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcripts"] == []
    assert body["page_details"]["result_count"] == 0
    assert (body["page_details"]["prev_url"], body["page_details"]["next_url"]) == (None, None)
    _still_healthy(daemon)


# --- POST /v1/audio/transcriptions ------------------------------------------------------------------------

def _openai(daemon, fields: list[tuple[str, tuple]], **kwargs) -> requests.Response:
    return requests.post(daemon.url + "/v1/audio/transcriptions", files=fields,
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=60, **kwargs)


def _form(*extra: tuple[str, tuple], file: bytes | None = SHORT, model: str | None = "whisper-1") -> list:
    fields = [] if model is None else [("model", (None, model))]
    fields += [] if file is None else [("file", ("audio.wav", file, "audio/wav"))]
    return fields + list(extra)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b'{"model": "whisper-1"}', "application/json"), (b"model=whisper-1", "application/x-www-form-urlencoded"),
     (SHORT, "audio/wav")],
    ids=["json", "form-urlencoded", "raw-audio"],
)
def test_openai_not_multipart(daemon, data, content_type):
    response = requests.post(daemon.url + "/v1/audio/transcriptions", data=data,
                             headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type}, timeout=30)
    _error(daemon, response, 415, 10, "Content-Type must be multipart/form-data", f"got '{content_type}'")


def test_openai_multipart_without_a_boundary(daemon):
    response = requests.post(daemon.url + "/v1/audio/transcriptions", data=b"junk",
                             headers={"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data"},
                             timeout=30)
    _error(daemon, response, 400, 9, "No boundary")


@pytest.mark.parametrize(
    ("fields", "param", "mentions"),
    [(_form(file=None), "file", ("file is required",)),
     (_form(("speaker", (None, "1"))), "speaker",
      ("unknown form field 'speaker'", "the fields are boost_param, file, known_speaker_names[]")),
     (_form(model=None), "model", ("model is required: the served model's name or whisper-1",)),
     (_form(model="gpt-4o-transcribe"), "model", ("model must be one of", "got 'gpt-4o-transcribe'")),
     (_form(("response_format", (None, "xml"))), "response_format",
      ("response_format must be one of json, text, srt, vtt, verbose_json", "got 'xml'")),
     (_form(("timestamp_granularities[]", (None, "word"))), "timestamp_granularities[]",
      ("timestamp_granularities[] needs response_format verbose_json",)),
     (_form(("response_format", (None, "verbose_json")), ("timestamp_granularities[]", (None, "sentence"))),
      "timestamp_granularities[]", ("timestamp_granularities[] must be word or segment; got 'sentence'",)),
     (_form(("temperature", (None, "hot"))), "temperature", ("temperature must be a number from 0 to 1", "'hot'")),
     (_form(("temperature", (None, "3"))), "temperature", ("temperature must be a number from 0 to 1", "'3'")),
     (_form(("temperature", (None, "nan"))), "temperature", ("temperature must be a number from 0 to 1",)),
     (_form(("language", (None, "fr"))), "language", ("language 'fr' is not supported", "English")),
     (_form(("stream", (None, "true")), ("response_format", (None, "srt"))), "stream",
      ("stream=true sends the text as events: response_format must be json or text; got srt",)),
     (_form(("stream", (None, "often"))), "stream", ("stream must be",)),
     (_form(("include[]", (None, "logprobs"))), "include[]", ("include[] is not supported",))],
    ids=["no-file", "unknown-field", "model-missing", "model-unknown", "response-format-xml",
         "granularities-without-verbose-json", "granularity-sentence", "temperature-hot", "temperature-3",
         "temperature-nan", "language-fr", "stream-srt", "stream-often", "include-logprobs"],
)
def test_openai_form_refused(daemon, fields, param, mentions):
    """400 code 4, with OpenAI's error object naming the form field at fault in `param`."""
    _error(daemon, _openai(daemon, fields), 400, 4, *mentions, param=param)


def test_openai_stream_false_is_accepted(daemon):
    response = _openai(daemon, _form(("stream", (None, "false"))))
    assert response.status_code == 200, response.text
    assert response.json() == {"text": ""}


@pytest.mark.parametrize(
    ("file", "status", "code", "mentions"),
    [(bytes(MAX_BYTES + 100_000), 413, 6, ("larger than the 2000000 bytes allowed", "DOWNLOAD_MAX_BYTES")),
     pytest.param(bytes(MAX_BYTES + (1 << 20) + 100_000), 413, 6, ("DOWNLOAD_MAX_BYTES",),
                  id="over-limit-past-the-form-allowance"),
     (RANDOM, 422, 3, ("not audio the server can decode",)),
     (b"", 422, 12, ("holds no audio", "0 bytes")),
     (TOO_LONG, 422, 5, ("25 s long", "MAX_AUDIO_SECONDS"))],
    ids=["over-limit", None, "random-bytes", "empty-file", "longer-than-MAX_AUDIO_SECONDS"],
)
def test_openai_file_refused(daemon, file, status, code, mentions):
    _error(daemon, _openai(daemon, _form(file=file)), status, code, *mentions)


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/models"], ids=["transcriptions", "models"])
def test_openai_without_the_key(daemon, path):
    """OpenAI's SDK raises AuthenticationError from a 401 whose error type is authentication_error."""
    response = requests.post(daemon.url + path, files=_form(), timeout=30) if path.endswith("transcriptions") else \
        requests.get(daemon.url + path, timeout=30)
    _error(daemon, response, 401, 16, "has no Authorization header")


def test_openai_unknown_model(daemon):
    response = requests.get(daemon.url + "/v1/models/gpt-4o-transcribe", headers={"Authorization": f"Bearer {KEY}"},
                            timeout=10)
    _error(daemon, response, 404, 4, "the model 'gpt-4o-transcribe' is not served here", param="model")
