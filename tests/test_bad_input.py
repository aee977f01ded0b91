"""The bad-input matrix (issue 5): every way a request or its audio can be wrong, against the real daemon.

One real daemon (real processes, the real tiny.en model, real HTTP on loopback) serves the whole
module, with limits small enough that generated files reach them: DOWNLOAD_MAX_BYTES, MAX_AUDIO_SECONDS
and a 2 s DOWNLOAD_READ_TIMEOUT. Audio comes from a loopback file server (daemon_support.audio_server);
misbehaving origins (error statuses, a redirect loop, a stall, oversized bodies) from a small
http.server in this module. Every row checks the answer (API.md's JSON error with its status and code,
or a 200 transcript) and that /health still answers 200 afterwards. docs/BAD_INPUT.md is this matrix as
a table; keep the two in step.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import requests
import soundfile as sf
import soxr

from bench.daemon_proc import OriginHandler
from daemon_support import audio_server, free_port, loopback_server, running_daemon
from synth import VOICE_A, VOICE_B, silence, speak_at, tone, white_noise

MAX_BYTES = 2_000_000  # above the largest good file here (8 channels, 6.6 s: 1.7 MB)
MAX_SECONDS = 20
READ_TIMEOUT_S = 2
OVERSIZE = MAX_BYTES + 500_000
SR = 16000

SENTENCE = "please send the weekly report to the finance team before friday"
TURNS = ["thank you for calling the support line", "I was charged twice on my invoice"]  # channel 1, 2
# Words each party says that the mix must keep (mixing may blur an ending: "charged" came back "charge").
CHANNEL_WORDS = {"1": ("calling", "support", "line"), "2": ("twice", "invoice")}
_UID = re.compile(r"t_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# --- audio ------------------------------------------------------------------------------------------------

def _say(text: str, voice: str) -> np.ndarray:
    return speak_at(text, SR, voice)


def _padded(speech: np.ndarray, rate: int) -> np.ndarray:
    return np.concatenate([silence(0.3, rate), speech, silence(0.3, rate)])


def _call(turns: list[np.ndarray], gap_s: float = 0.8) -> np.ndarray:
    """(samples, 2): channel 1 says the first turn, channel 2 the second, one after the other."""
    gap = int(gap_s * SR)
    call = np.zeros((gap + sum(len(t) + gap for t in turns), 2), np.float32)
    at = gap
    for channel, turn in enumerate(turns):
        call[at: at + len(turn), channel] = turn
        at += len(turn) + gap
    return call


def _cut_wav(data: bytes) -> bytes:
    """A 16-bit mono WAV cut to its header and the first half of its samples."""
    assert data[36:40] == b"data", "soundfile writes the canonical 44-byte header"
    samples = (len(data) - 44) // 2
    return data[: 44 + 2 * (samples // 2)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, installed_model) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    sentence, first, second = _say(SENTENCE, VOICE_A), _say(TURNS[0], VOICE_A), _say(TURNS[1], VOICE_B)
    speech = _padded(sentence, SR)
    sf.write(root / "speech.wav", speech, SR, subtype="PCM_16")
    (root / "trunc.wav").write_bytes(_cut_wav((root / "speech.wav").read_bytes()))
    for kind in ("flac", "mp3"):
        sf.write(root / f"speech.{kind}", speech, SR)
        whole = (root / f"speech.{kind}").read_bytes()
        (root / f"trunc.{kind}").write_bytes(whole[: len(whole) // 2])
    for rate in (8000, 48000):
        sf.write(root / f"speech_{rate}.wav", _padded(soxr.resample(sentence, SR, rate), rate), rate,
                 subtype="PCM_16")

    rng = np.random.default_rng(5)
    (root / "random.wav").write_bytes(rng.bytes(48_000))
    (root / "random.mp3").write_bytes(rng.bytes(48_000))
    (root / "sync_random.mp3").write_bytes(b"\xff\xfb\x90\x64" + rng.bytes(48_000))  # an MPEG frame header, then noise
    (root / "page.html").write_text("<!doctype html><html><head><title>Not found</title></head>"
                                    "<body><h1>Sorry, this page is not audio</h1></body></html>")
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "no_samples.wav", np.zeros(0, np.float32), SR, subtype="PCM_16")
    sf.write(root / "too_long.wav", silence(MAX_SECONDS + 5, 8000), 8000, subtype="PCM_U8")  # 200 kB

    sf.write(root / "silence.wav", silence(5.0, SR), SR, subtype="PCM_16")
    sf.write(root / "noise.wav", white_noise(5.0, SR, seed=3), SR, subtype="PCM_16")
    chord = sum(tone(f, 5.0, SR, 0.2) for f in (261.63, 329.63, 392.0))  # C major
    sf.write(root / "chord.wav", chord, SR, subtype="PCM_16")
    scale = [262, 294, 330, 349, 392, 440, 494, 523, 494, 440, 392, 349, 330, 294, 262]
    melody = np.concatenate([tone(f, 0.4, SR, 0.3) + tone(2 * f, 0.4, SR, 0.1) for f in scale])
    sf.write(root / "melody.wav", melody, SR, subtype="PCM_16")
    sf.write(root / "one_ms.wav", speech[SR: SR + SR // 1000], SR, subtype="PCM_16")

    call = _call([first, second])
    sf.write(root / "ch1.wav", call.mean(axis=1), SR, subtype="PCM_16")
    for n in (2, 3, 4, 6, 8):
        # Telephony recorders put silence (or mixes) past the first two channels.
        wide = np.zeros((len(call), n), np.float32)
        wide[:, :2] = call
        sf.write(root / f"ch{n}.wav", wide, SR, subtype="PCM_16")
    assert max(p.stat().st_size for p in root.iterdir()) < MAX_BYTES
    return root


# --- origins ----------------------------------------------------------------------------------------------

class _BadOrigin(OriginHandler):
    """An origin that misbehaves in the ways a customer's server can."""

    release: threading.Event

    def route(self) -> None:
        if self.path in ("/status/404", "/status/500"):
            self.send_body(int(self.path.rsplit("/", 1)[1]), b"<html><body>error page</body></html>",
                           ("Content-Type", "text/html"))
        elif self.path == "/loop.wav":
            self.redirect("/loop.wav")
        elif self.path == "/stall.wav":
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", "320044")
            self.end_headers()
            self.wfile.write(b"RIFF")
            self.wfile.flush()
            self.release.wait(30)
            self.close_connection = True
        elif self.path == "/large-declared.wav":
            self.send_response(200)
            self.send_header("Content-Length", str(OVERSIZE))
            self.end_headers()
            self._send_zeros(lambda chunk: self.wfile.write(chunk))
        elif self.path == "/large-chunked.wav":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._send_zeros(lambda chunk: self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/large-unsized.wav":  # no length, no chunking: the body ends when the socket closes
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self._send_zeros(lambda chunk: self.wfile.write(chunk))
            self.close_connection = True
        else:
            self.send_error(404)

    @staticmethod
    def _send_zeros(write) -> None:
        chunk = bytes(1 << 16)
        for _ in range(-(-OVERSIZE // len(chunk))):
            write(chunk)


@pytest.fixture(scope="module")
def bad_origin() -> Iterator[str]:
    release = threading.Event()
    with loopback_server(type("Origin", (_BadOrigin,), {"release": release})) as url:
        try:
            yield url
        finally:
            release.set()


@pytest.fixture(scope="module")
def origin(files) -> Iterator[str]:
    with audio_server(files) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("daemon"), DOWNLOAD_MAX_BYTES=str(MAX_BYTES),
                        MAX_AUDIO_SECONDS=str(MAX_SECONDS), DOWNLOAD_READ_TIMEOUT=str(READ_TIMEOUT_S),
                        DOWNLOAD_CONNECT_TIMEOUT="2", DOWNLOAD_MAX_REDIRECTS="5",
                        MAX_TRANSCRIPTS_PARALLEL="4") as running:
        running.wait_healthy()
        yield running


# --- checks -----------------------------------------------------------------------------------------------

def _error(daemon, response: requests.Response, status: int, code: int, *mentions: str) -> dict:
    """API.md's error: exactly {code, description, uid} as JSON, with the status; then /health is 200."""
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "description", "uid"}
    assert _UID.fullmatch(body["uid"]), body["uid"]
    for mention in mentions:
        assert mention.lower() in body["description"].lower(), (mention, body["description"])
    _still_healthy(daemon)
    return body


def _transcript(daemon, response: requests.Response) -> dict:
    """A 200 transcript in API.md's shape; then /health is 200."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"blob", "duration", "stereo_decode", "uid", "utterances", "words"}
    assert _UID.fullmatch(body["uid"])
    for word in body["words"]:
        assert 0 <= word["start"] < word["end"] and 0 <= word["confidence"] <= 1 and word["text"]
    _still_healthy(daemon)
    return body


def _still_healthy(daemon) -> None:
    health = daemon.health()
    assert health.status_code == 200, health.text


def _said(body: dict) -> set[str]:
    return {re.sub(r"[^\w']", "", w["text"]).lower() for w in body["words"]}


def _post_raw(daemon, data: bytes, content_type: str | None = "application/json", **kwargs) -> requests.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return requests.post(daemon.url + "/transcribe/url", data=data, headers=headers, timeout=60, **kwargs)


# --- the request itself -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("data", "content_type", "status", "code", "mention"),
    [
        (b'{"audio_url": "http://127.0.0.1/a.wav"', "application/json", 400, 9, "not valid JSON"),
        (b"{'audio_url': 'http://127.0.0.1/a.wav'}", "application/json", 400, 9, "not valid JSON"),
        (b"", "application/json", 400, 9, "not valid JSON"),
        (b'["http://127.0.0.1/a.wav"]', "application/json", 400, 9, "JSON object"),
        (b'"http://127.0.0.1/a.wav"', "application/json", 400, 9, "JSON object"),
        (b'{"audio_url": "http://127.0.0.1/\xff\xfe.wav"}', "application/json", 400, 9, "not valid JSON"),
        (b'{"audio_url": "' + b"a" * (64 * 1024) + b'"}', "application/json", 413, 9, "larger than"),
        (b'{"audio_url": "http://127.0.0.1/a.wav"}', "text/plain", 415, 10, "Content-Type"),
        (b"audio_url=http%3A%2F%2F127.0.0.1%2Fa.wav", "application/x-www-form-urlencoded", 415, 10,
         "Content-Type"),
    ],
    ids=["json-truncated", "json-single-quotes", "json-empty-body", "json-array", "json-string",
         "json-not-utf8", "body-over-64KiB", "content-type-text-plain", "content-type-form-urlencoded"],
)
def test_malformed_body(daemon, data, content_type, status, code, mention):
    _error(daemon, _post_raw(daemon, data, content_type), status, code, mention)


def test_multipart_form_data(daemon, origin):
    response = requests.post(daemon.url + "/transcribe/url", files={"audio_url": (None, f"{origin}/speech.wav")},
                             timeout=60)
    _error(daemon, response, 415, 10, "Content-Type", "multipart/form-data")


GOOD_URL = "{origin}/speech.wav"  # filled in by the test
_BOOL = "must be true or false"
_MS = "must be a whole number of milliseconds >= 0"
_URL = "audio_url must be a non-empty string"


def _with(**fields) -> dict:
    """A body that is right but for `fields`."""
    return {"audio_url": GOOD_URL, **fields}


FIELD_ROWS = [
    ("missing-audio-url", {}, "audio_url is required"),
    ("missing-audio-url-with-options", {"dual_channel": True, "punctuate": False}, "audio_url is required"),
    ("audio-url-number", {"audio_url": 42}, f"{_URL}; got a JSON number"),
    ("audio-url-null", {"audio_url": None}, f"{_URL}; got a JSON null"),
    ("audio-url-list", {"audio_url": [GOOD_URL]}, f"{_URL}; got a JSON array"),
    ("audio-url-object", {"audio_url": {"href": GOOD_URL}}, f"{_URL}; got a JSON object"),
    ("audio-url-empty", {"audio_url": ""}, f'{_URL}; got ""'),
    ("unknown-field", _with(language="en"), "unknown field 'language'"),
    ("unknown-field-typo", _with(dual_chanel=True), "unknown field 'dual_chanel'"),
    ("format-text-string", _with(format_text="yes"), f"format_text {_BOOL}"),
    ("dual-channel-number", _with(dual_channel=1), f"dual_channel {_BOOL}"),
    ("punctuate-null", _with(punctuate=None), f"punctuate {_BOOL}"),
    ("start-string", _with(audio_start_from="10"), f"audio_start_from {_MS}"),
    ("start-float", _with(audio_start_from=1.5), f"audio_start_from {_MS}"),
    ("start-bool", _with(audio_start_from=True), f"audio_start_from {_MS}"),
    ("end-string", _with(audio_end_at="2000"), f"audio_end_at {_MS}"),
    ("start-negative", _with(audio_start_from=-1), f"audio_start_from {_MS}"),
    ("end-negative", _with(audio_end_at=-1000), f"audio_end_at {_MS}"),
    ("start-after-end", _with(audio_start_from=2000, audio_end_at=1000),
     "audio_start_from (2000 ms) must be less than audio_end_at (1000 ms)"),
    ("start-equals-end", _with(audio_start_from=1000, audio_end_at=1000),
     "audio_start_from (1000 ms) must be less than audio_end_at (1000 ms)"),
    # audio_start_from defaults to 0, so audio_end_at 0 is start >= end whatever the audio: 400, not 422.
    ("end-zero-default-start", _with(audio_end_at=0), "audio_end_at"),
    ("scheme-file", {"audio_url": "file:///etc/passwd"}, "http or https URL; 'file:///etc/passwd' has scheme 'file'"),
    ("scheme-ftp", {"audio_url": "ftp://127.0.0.1/speech.wav"}, "has scheme 'ftp'"),
    ("scheme-gopher", {"audio_url": "gopher://127.0.0.1:70/1"}, "has scheme 'gopher'"),
    ("scheme-data", {"audio_url": "data:audio/wav;base64,UklGRg=="}, "has scheme 'data'"),
    ("no-scheme", {"audio_url": "www.example.com/speech.wav"}, "'www.example.com/speech.wav' has no scheme"),
    ("no-host", {"audio_url": "http:///speech.wav"}, "'http:///speech.wav' has no host name"),
]


@pytest.mark.parametrize(("body", "mention"), [row[1:] for row in FIELD_ROWS], ids=[row[0] for row in FIELD_ROWS])
def test_invalid_field(daemon, origin, body, mention):
    filled = {k: _fill(v, origin) for k, v in body.items()}
    _error(daemon, daemon.transcribe(filled), 400, 4, mention)


def _fill(value, origin: str):
    if isinstance(value, str):
        return value.replace("{origin}", origin)
    if isinstance(value, list):
        return [_fill(v, origin) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, origin) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("span", "mention"),
    [({"audio_start_from": 60_000}, "audio_start_from (60000 ms) is at or past the end"),
     ({"audio_start_from": 1000, "audio_end_at": 60_000}, "audio_end_at (60000 ms) is past the end")],
    ids=["start-past-end-of-audio", "end-past-end-of-audio"],
)
def test_span_outside_the_audio(daemon, origin, span, mention):
    _error(daemon, daemon.transcribe({"audio_url": f"{origin}/speech.wav", **span}), 422, 4, mention)


# --- downloading audio_url --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("path", "status", "code", "mentions"),
    [
        ("http://does-not-exist.invalid/a.wav", 502, 1, ("could not be resolved",)),
        ("http://127.0.0.1:{dead}/a.wav", 502, 1, ("refused",)),
        ("{bad}/status/404", 502, 1, ("HTTP 404 Not Found",)),
        ("{bad}/status/500", 502, 1, ("HTTP 500 Internal Server Error",)),
        ("{bad}/loop.wav", 502, 1, ("more than 5 redirects",)),
        ("{bad}/stall.wav", 504, 2, ("sent nothing for 2 s", "DOWNLOAD_READ_TIMEOUT")),
        ("{bad}/large-declared.wav", 413, 6, ("DOWNLOAD_MAX_BYTES", f"declares {OVERSIZE} bytes")),
        ("{bad}/large-chunked.wav", 413, 6, ("DOWNLOAD_MAX_BYTES", "sent more than")),
        ("{bad}/large-unsized.wav", 413, 6, ("DOWNLOAD_MAX_BYTES", "sent more than")),
        ("http://169.254.169.254/latest/meta-data/", 403, 18, ("DOWNLOAD_DENY", "169.254.0.0/16")),
        ("http://[fd00:ec2::254]/latest/meta-data/", 403, 18, ("DOWNLOAD_DENY",)),
    ],
    ids=["unresolvable-host", "connection-refused", "origin-404", "origin-500", "redirect-loop",
         "origin-stalls-after-headers", "too-large-content-length", "too-large-chunked",
         "too-large-no-length-close-delimited", "cloud-metadata-ipv4", "cloud-metadata-ipv6"],
)
def test_download_failure(daemon, bad_origin, path, status, code, mentions):
    url = path.format(bad=bad_origin, dead=free_port())
    started = time.monotonic()
    response = daemon.transcribe({"audio_url": url})
    waited = time.monotonic() - started
    body = _error(daemon, response, status, code, *mentions)
    assert url in body["description"], "a download error names the URL"
    assert waited < READ_TIMEOUT_S + 10, "no download may hang the request"
    if code == 2:
        assert waited >= READ_TIMEOUT_S, "the origin was given DOWNLOAD_READ_TIMEOUT to send more"


# --- what the file holds ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "status", "code", "mentions"),
    [
        ("too_long.wav", 422, 5, ("25 s long", f"{MAX_SECONDS} s allowed", "MAX_AUDIO_SECONDS")),
        ("empty.wav", 422, 12, ("holds no audio", "0 bytes")),
        ("no_samples.wav", 422, 12, ("holds no audio", "no samples")),
        ("trunc.flac", 422, 3, ("not audio the server can decode", "corrupted")),
        ("random.wav", 422, 3, ("not audio the server can decode",)),
        ("random.mp3", 422, 3, ("not audio the server can decode",)),
        ("sync_random.mp3", 422, 3, ("not audio the server can decode",)),
        ("page.html", 422, 3, ("not audio the server can decode",)),
    ],
    ids=["longer-than-MAX_AUDIO_SECONDS", "zero-byte-file", "wav-header-without-samples", "truncated-flac",
         "random-bytes-wav", "random-bytes-mp3", "mp3-frame-header-then-random-bytes", "html-page"],
)
def test_unusable_file(daemon, origin, name, status, code, mentions):
    body = _error(daemon, daemon.transcribe({"audio_url": f"{origin}/{name}"}), status, code, *mentions)
    assert "does not exist" not in body["description"], "the file was downloaded; it is its content that is wrong"


@pytest.mark.parametrize("name", ["trunc.wav", "trunc.mp3"], ids=["truncated-wav", "truncated-mp3"])
def test_truncated_file_transcribes_what_survived(daemon, origin, files, name):
    """A WAV or MP3 cut in half decodes up to the cut: 200 with the first half's words and no others."""
    whole = sf.info(str(files / "speech.wav")).duration
    body = _transcript(daemon, daemon.transcribe({"audio_url": f"{origin}/{name}"}))
    if name.endswith(".wav"):
        assert body["duration"] == pytest.approx(sf.info(str(files / name)).duration, abs=1e-3)
    assert whole * 0.4 < body["duration"] < whole * 0.6
    said = _said(body)
    assert {"weekly", "report"} <= said, body["blob"]
    assert not said & {"finance", "team", "before", "friday"}, body["blob"]
    assert all(w["end"] <= body["duration"] * 1000 + 1 for w in body["words"])


@pytest.mark.parametrize(
    "name", ["silence.wav", "noise.wav", "chord.wav", "melody.wav"],
    ids=["pure-silence", "white-noise", "tone-chord", "tone-melody"],
)
def test_no_speech_gives_no_words(daemon, origin, files, name):
    """API.md: silence is 200 with an empty blob and no words; noise and music must not become sentences."""
    body = _transcript(daemon, daemon.transcribe({"audio_url": f"{origin}/{name}"}))
    assert (body["blob"], body["words"]) == ("", [])
    assert body["duration"] == pytest.approx(sf.info(str(files / name)).duration, abs=1e-3)
    assert (body["stereo_decode"], body["utterances"]) == (False, None)


def test_one_millisecond_of_audio(daemon, origin):
    """16 samples are audio (not code 12) but too short for a word: 200, empty blob, duration 0.001 s."""
    body = _transcript(daemon, daemon.transcribe({"audio_url": f"{origin}/one_ms.wav"}))
    assert (body["blob"], body["words"], body["duration"]) == ("", [], 0.001)


@pytest.mark.parametrize("rate", [8000, 48000], ids=["speech-8kHz", "speech-48kHz"])
def test_other_sample_rates(daemon, origin, files, rate):
    body = _transcript(daemon, daemon.transcribe({"audio_url": f"{origin}/speech_{rate}.wav"}))
    assert body["duration"] == pytest.approx(sf.info(str(files / f"speech_{rate}.wav")).duration, abs=1e-3)
    assert {"weekly", "report", "finance", "friday"} <= _said(body), body["blob"]


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 8], ids=[f"{n}-channel" for n in (1, 2, 3, 4, 6, 8)])
def test_channels_mixed_down(daemon, origin, channels):
    """dual_channel false: every channel is mixed to mono and all of the call is transcribed."""
    body = _transcript(daemon, daemon.transcribe({"audio_url": f"{origin}/ch{channels}.wav"}))
    assert (body["stereo_decode"], body["utterances"]) == (False, None)
    assert all("channel" not in w for w in body["words"])
    said = _said(body)
    for channel, words in CHANNEL_WORDS.items():
        assert set(words) <= said, f"channel {channel}'s words are missing from the mix: {body['blob']!r}"


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 8], ids=[f"{n}-channel-dual" for n in (1, 2, 3, 4, 6, 8)])
def test_channels_dual(daemon, origin, channels):
    """dual_channel true: mono is code 11; two or more channels give turns of the first two channels."""
    response = daemon.transcribe({"audio_url": f"{origin}/ch{channels}.wav", "dual_channel": True})
    if channels == 1:
        _error(daemon, response, 422, 11, "one channel")
        return
    body = _transcript(daemon, response)
    assert body["stereo_decode"] is True
    assert [u["channel"] for u in body["utterances"]] == ["1", "2"]
    for utterance in body["utterances"]:
        said = {re.sub(r"[^\w']", "", w["text"]).lower() for w in utterance["words"]}
        assert set(CHANNEL_WORDS[utterance["channel"]]) <= said, utterance["text"]
    assert {w["channel"] for w in body["words"]} == {"1", "2"}
    assert body["blob"] == " ".join(u["text"] for u in body["utterances"])
