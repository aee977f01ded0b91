"""Hostile clients and hostile origins (issue 9), each against the real daemon over real sockets.

What an attacker on the network can try: hold connections open without finishing a request,
trickle bytes, send headers or bodies the HTTP layer must refuse, nest JSON ten thousand deep,
name malformed URLs, hide credentials in a URL, and point the server at an origin that trickles,
inflates a gzip bomb or sends hundreds of MB that are not audio, or at a tiny file that decodes to
gigabytes. Every case checks the answer (API.md's JSON error with its code, or a transcript), what
it cost (the front's resident memory, read from /proc, with its peak reset through clear_refs),
and that the daemon still serves. docs/BAD_INPUT.md lists these rows with the matrix.

Cases where a failure could send traffic off this machine (addresses that carry a cloud-metadata
IPv4 address) run against a daemon in a network namespace of its own (tests/netns.py).
"""

from __future__ import annotations

import gzip
import http.server
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import requests
import soundfile as sf

from bench.hostile import (UNFINISHED_STARTS, hostile_origin, open_unfinished, wait_closed, write_junk,
                           write_tiny_huge_files)
from daemon_support import audio_server, loopback_server, running_daemon
from netns import isolated_host
from synth import silence, speak_at

READ_TIMEOUT_S = 3  # HTTP_REQUEST_READ_TIMEOUT of the module's daemon
IDLE_TIMEOUT_S = 6  # HTTP_IDLE_TIMEOUT
MAX_CONNECTIONS = 64  # HTTP_MAX_CONNECTIONS
MAX_BYTES = 400_000_000  # DOWNLOAD_MAX_BYTES: room for the 300 MB file, below the bomb's 1.5 GB
BOMB_BYTES = 1_500_000_000  # what the gzip bomb inflates to
JUNK_BYTES = 300_000_000  # the undecodable file
SR = 16000
_UID = re.compile(r"t_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# --- files and origins -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory, installed_model) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    speech = speak_at("please send the weekly report to the finance team before friday", SR)
    sf.write(root / "speech.wav", np.concatenate([silence(0.3, SR), speech, silence(0.3, SR)]), SR,
             subtype="PCM_16")
    write_tiny_huge_files(root)
    write_junk(root / "junk.bin", JUNK_BYTES)
    return root


@pytest.fixture(scope="module")
def origin(files) -> Iterator[str]:
    with audio_server(files) as url:
        yield url


@pytest.fixture(scope="module")
def hostile(origin) -> Iterator[str]:
    with hostile_origin(BOMB_BYTES, target=origin.replace("http://", "http://alice:s3cret-pw@") + "/missing.wav") as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("daemon"), DOWNLOAD_MAX_BYTES=str(MAX_BYTES),
                        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS), HTTP_REQUEST_READ_TIMEOUT=str(READ_TIMEOUT_S),
                        HTTP_IDLE_TIMEOUT=str(IDLE_TIMEOUT_S), DOWNLOAD_READ_TIMEOUT="5",
                        MAX_TRANSCRIPTS_PARALLEL="3") as running:
        running.wait_healthy()
        yield running


# --- checks ------------------------------------------------------------------------------------------------

def _error(daemon, response: requests.Response, status: int, code: int, *mentions: str) -> dict:
    """API.md's JSON error with this status and code, naming `mentions`; then /health still answers 200."""
    assert (response.status_code, response.headers.get("Content-Type")) == (status, "application/json"), \
        (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"code", "description", "uid"} and body["code"] == code, body
    assert _UID.fullmatch(body["uid"])
    for mention in mentions:
        assert mention.lower() in body["description"].lower(), (mention, body["description"])
    assert daemon.health().status_code == 200
    return body


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024


def _reset_peak(pid: int) -> None:
    """From now on VmHWM is the peak since this call (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _raw(daemon, payload: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send bytes as they are, read the answer to the end: (status, headers, body)."""
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before we were done; read what it said
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _raw_error(daemon, payload: bytes, status: int, code: int, mention: str) -> None:
    got, headers, body = _raw(daemon, payload)
    assert (got, headers.get("Content-Type")) == (status, "application/json"), (got, headers, body[:300])
    error = json.loads(body)
    assert set(error) == {"code", "description", "uid"} and error["code"] == code, error
    assert mention.lower() in error["description"].lower(), error
    assert _UID.fullmatch(error["uid"])
    assert error["uid"] in daemon.log(), "logged like any request"
    assert daemon.health().status_code == 200


# --- 1: connections that never finish a request -------------------------------------------------------------

def _open(daemon, first: bytes) -> socket.socket:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    return open_unfinished(host, int(port), first)


def test_unfinished_requests_cannot_lock_out_other_clients(daemon, origin):
    """Three times HTTP_MAX_CONNECTIONS connections that start a request and never finish it, in the four
    ways a slow client can: nothing at all, half a request line, headers without their end, a body short
    of its Content-Length. Health and transcriptions still answer at once; all of them are closed."""
    socks = [_open(daemon, UNFINISHED_STARTS[i % len(UNFINISHED_STARTS)]) for i in range(3 * MAX_CONNECTIONS)]
    try:
        started = time.monotonic()
        assert daemon.health().status_code == 200
        assert time.monotonic() - started < 1.0
        response = daemon.transcribe({"audio_url": f"{origin}/speech.wav"}, timeout=60)
        assert response.status_code == 200 and "weekly" in response.json()["blob"].lower()
        time.sleep(READ_TIMEOUT_S + 2.0)  # past every deadline, and the once-a-second sweep
        still_open = [s for s in socks if not wait_closed(s, 0.05)]
        assert not still_open, f"{len(still_open)} of {len(socks)} unfinished connections are still open"
    finally:
        for sock in socks:
            sock.close()
    log = daemon.log()
    assert re.search(r"slow or excess connections: .*evicted \d+ idle or incomplete ones .*HTTP_MAX_CONNECTIONS", log)
    assert "most from 127.0.0.1" in log


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_read_timeout(daemon):
    """A byte every 0.3 s keeps a socket busy forever under waitress's idle timeout; not under ours."""
    sock = _open(daemon, b"")
    started, closed_after = time.monotonic(), None
    try:
        for byte in (b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 200):
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            if wait_closed(sock, 0.3):
                closed_after = time.monotonic() - started
                break
    finally:
        sock.close()
    assert closed_after is not None and closed_after < READ_TIMEOUT_S + 2.0, closed_after


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(daemon):
    sock = _open(daemon, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    try:
        sock.settimeout(5)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                re.search(rb"Content-Length: (\d+)", answer).group(1)):
            answer += sock.recv(1 << 16)
        assert answer.startswith(b"HTTP/1.1 200")
        assert not wait_closed(sock, IDLE_TIMEOUT_S - 2), "kept open while within HTTP_IDLE_TIMEOUT"
        assert wait_closed(sock, 4.0), "closed once idle past HTTP_IDLE_TIMEOUT"
    finally:
        sock.close()


def test_health_answers_while_every_connection_serves_a_request(tmp_path, hostile, installed_model):
    """REJECT_OVER_PARALLEL=False and one slot: requests that wait for it hold every request thread, yet
    /health (threads of its own) answers at once; once all HTTP_MAX_CONNECTIONS serve requests, a new
    connection is refused with a JSON 503 rather than left hanging."""
    limit = 16
    with running_daemon(tmp_path, MAX_TRANSCRIPTS_PARALLEL="1", REJECT_OVER_PARALLEL="False",
                        REQUEST_TIMEOUT_SECONDS="8", HTTP_MAX_CONNECTIONS=str(limit)) as daemon:
        daemon.wait_healthy()
        with ThreadPoolExecutor(limit) as pool:
            slow = [pool.submit(daemon.transcribe, {"audio_url": f"{hostile}/trickle.wav"}, 60) for _ in range(8)]
            time.sleep(1.5)  # 1 downloading, 4 request threads waiting for the slot, 3 queued behind them
            started = time.monotonic()
            assert daemon.health().status_code == 200
            assert time.monotonic() - started < 0.5
            slow += [pool.submit(daemon.transcribe, {"audio_url": f"{hostile}/trickle.wav"}, 60) for _ in range(8)]
            time.sleep(1.5)
            response = requests.get(daemon.url + "/health", timeout=5)
            _, body = response.status_code, response.json()
            assert response.status_code == 503 and body["code"] == 14, response.text
            assert "HTTP_MAX_CONNECTIONS" in body["description"] and int(response.headers["Retry-After"]) > 0
            assert {f.result().status_code for f in slow} <= {504}  # each timed out: download or wait
        assert daemon.health().status_code == 200
        assert "refused" in daemon.log() and "new ones with 503" in daemon.log()


# --- 7: errors the HTTP layer answers itself ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("payload", "status", "mention"),
    [
        (b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 431,
         "headers are larger than 32768 bytes"),
        (b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
         400, "Invalid chunk size"),
        (b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400, "Content-Length is invalid"),
        (b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400, "Content-Length is invalid"),
        (b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
         + b"x" * 300_000, 413, "larger than 65536 bytes"),
        (b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not support"),
        (b"GARBAGE\r\n\r\n", 400, "Start line is invalid"),
        (b"GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n", 400, "malformed"),
    ],
    ids=["header-300KB", "bad-chunk-size", "content-length-not-a-number", "content-length-negative",
         "body-10MB-declared", "transfer-encoding-gzip", "no-request-line", "header-without-colon"],
)
def test_http_errors_are_json(daemon, payload, status, mention):
    _raw_error(daemon, payload, status, 9, mention)


# --- 6: input that used to raise inside the server ----------------------------------------------------------

def test_json_nested_ten_thousand_deep(daemon):
    body = b'{"audio_url": "http://127.0.0.1/a.wav", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    response = requests.post(daemon.url + "/transcribe/url", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    _error(daemon, response, 400, 9, "nested too deeply")


def test_a_field_nested_just_under_the_parser_limit(daemon):
    """A value json.loads accepts but that is too deep to echo back in the error."""
    body = b'{"audio_url": "http://127.0.0.1/a.wav", "punctuate": ' + b"[" * 980 + b"]" * 980 + b"}"
    response = requests.post(daemon.url + "/transcribe/url", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    _error(daemon, response, 400, 4, "punctuate must be true or false")


@pytest.mark.parametrize(("url", "mention"), [
    ("http://[::1/x.wav", "not a valid URL"),
    ("http://[::1]:99999/x.wav", "not a valid URL"),
    ("http://127.0.0.1:port/x.wav", "not a valid URL"),
    ("http://[not-an-address]/x.wav", "not a valid URL"),
], ids=["unclosed-ipv6-bracket", "port-out-of-range", "port-not-a-number", "bracketed-name"])
def test_malformed_urls(daemon, url, mention):
    _error(daemon, daemon.transcribe({"audio_url": url}), 400, 4, mention)


def test_a_redirect_to_a_malformed_url(daemon, hostile):
    _error(daemon, daemon.transcribe({"audio_url": f"{hostile}/to-broken-ipv6"}), 502, 1, "not a valid http(s) URL")


# --- 5: credentials in URLs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "secret", "masked"), [
    ("{creds}/missing.wav", "s3cret-pw", True),
    ("{hostile}/to-credentials", "s3cret-pw", False),  # the answer names the URL asked for, which has none
    ("{origin}/missing.wav?X-Amz-Signature=f00dfeed1234&X-Amz-Credential=AKIA9SECRET&part=1", "f00dfeed1234", True),
], ids=["userinfo", "userinfo-in-a-redirect", "signed-url-query"])
def test_credentials_never_come_back_or_reach_the_log(daemon, origin, hostile, path, secret, masked):
    url = path.format(creds=origin.replace("http://", "http://alice:s3cret-pw@"), hostile=hostile, origin=origin)
    body = _error(daemon, daemon.transcribe({"audio_url": url}), 502, 1, "HTTP 404")
    assert secret not in body["description"] and "AKIA9SECRET" not in body["description"], body["description"]
    assert ("***" in body["description"]) == masked, body["description"]
    assert body["uid"] in daemon.log()
    assert secret not in daemon.log() and "AKIA9SECRET" not in daemon.log()


# --- 2, 3: origins that trickle, inflate, or send hundreds of MB ---------------------------------------------

def test_a_trickling_origin_is_cut_off_at_the_request_deadline(tmp_path, hostile, origin, installed_model):
    """Content-Length 100 kB, then a byte a second: the read timeout never fires, the deadline must."""
    with running_daemon(tmp_path, REQUEST_TIMEOUT_SECONDS="6", DOWNLOAD_READ_TIMEOUT="5",
                        MAX_TRANSCRIPTS_PARALLEL="1") as daemon:
        daemon.wait_healthy()
        started = time.monotonic()
        response = daemon.transcribe({"audio_url": f"{hostile}/trickle.wav"}, timeout=60)
        took = time.monotonic() - started
        _error(daemon, response, 504, 2, "did not finish within REQUEST_TIMEOUT_SECONDS")
        assert 5.5 < took < 8.0, took
        # The slot it held is free again: the one-slot daemon transcribes the next request.
        assert daemon.transcribe({"audio_url": f"{origin}/speech.wav"}).status_code == 200


def test_gzip_bombs_are_refused_and_leave_no_memory_behind(daemon, hostile, origin):
    """Each bomb inflates to 1.5 GB: refused at DOWNLOAD_MAX_BYTES, and the front gives all of it back,
    at once (no garbage collection needed) and for good (no creep from bomb to bomb: glibc kept about
    2 MB of each until the front fixed its mmap threshold)."""
    front = daemon.process.pid
    assert daemon.transcribe({"audio_url": f"{origin}/speech.wav"}).status_code == 200  # warm
    before = _rss_mb(front)
    after = []
    for _ in range(6):
        _reset_peak(front)
        response = daemon.transcribe({"audio_url": f"{hostile}/bomb.wav"})
        _error(daemon, response, 413, 6, "inflates to more than that", f"{MAX_BYTES} bytes allowed")
        peak = _rss_mb(front, "VmHWM")
        after.append(_rss_mb(front))
        assert peak - before < MAX_BYTES / 2**20 + 150, (before, peak)  # the limit, not the 1.5 GB inflated
        assert after[-1] - before < 60, f"the front kept {after[-1] - before:.0f} MB after a refused bomb"
    assert after[-1] - after[0] < 6, f"the front crept from {after[0]:.0f} to {after[-1]:.0f} MB over 5 bombs"


def test_an_undecodable_300MB_file_leaves_no_memory_behind(daemon, origin):
    front = daemon.process.pid
    assert daemon.transcribe({"audio_url": f"{origin}/speech.wav"}).status_code == 200
    before = _rss_mb(front)
    for _ in range(2):
        _reset_peak(front)
        _error(daemon, daemon.transcribe({"audio_url": f"{origin}/junk.bin"}), 422, 3, "not audio")
        peak, after = _rss_mb(front, "VmHWM"), _rss_mb(front)
        assert peak - before < JUNK_BYTES / 2**20 + 150, (before, peak)  # the file once, not twice
        assert after - before < 60, f"the front kept {after - before:.0f} MB after a refused file"


@pytest.mark.parametrize(("path", "mention"), [
    ("/brotli.wav", "Content-Encoding 'br'"),
    ("/bad-gzip.wav", "not valid gzip data"),
], ids=["unsupported-content-encoding", "corrupt-gzip"])
def test_compressed_bodies_the_server_cannot_inflate(daemon, hostile, path, mention):
    _error(daemon, daemon.transcribe({"audio_url": f"{hostile}{path}"}), 502, 1, mention)


def test_a_gzip_encoded_audio_file_is_inflated(daemon, files, tmp_path):
    """An origin that compresses anyway (we ask for identity): a small gzip body is still audio."""
    packed = gzip.compress((files / "speech.wav").read_bytes())

    class Gzipped(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

    with loopback_server(Gzipped) as url:
        response = daemon.transcribe({"audio_url": f"{url}/speech.wav"})
    assert response.status_code == 200 and "weekly" in response.json()["blob"].lower()


# --- 4: tiny files that decode to gigabytes -----------------------------------------------------------------

@pytest.mark.parametrize(("name", "options", "duration", "budget_mb"), [
    ("1hz_mono.wav", {"audio_end_at": 1000}, 1.0, 60),
    ("1hz_mono.wav", {"audio_start_from": 7_200_000, "audio_end_at": 7_260_000}, 60.0, 60),
    ("1hz_8ch.wav", {"dual_channel": True, "audio_end_at": 60_000}, 60.0, 60),
    ("1hz_8ch.wav", {"dual_channel": True}, 1187.0, 2 * 2 * 1187 * SR * 4 / 2**20 + 80),
    ("1hz_64ch.wav", {"dual_channel": True, "audio_end_at": 60_000}, 60.0, 60),
    ("1hz_64ch.wav", {"audio_start_from": 3_600_000, "audio_end_at": 3_660_000}, 60.0, 60),
], ids=["1Hz-4h-first-second", "1Hz-4h-one-minute-at-2h", "8ch-dual-one-minute", "8ch-dual-all-20-min",
        "64ch-dual-one-minute", "64ch-mono-one-minute-at-1h"])
def test_memory_follows_the_audio_transcribed(daemon, origin, name, options, duration, budget_mb):
    """Before: 3.1 GB for the first second of the 28 KB file, 2.9 GB for the 19 KB 8-channel one, and a
    500 for the 64-channel one (55 GiB asked for). Now the front's peak is what the span costs at 16 kHz."""
    front = daemon.process.pid
    before = _rss_mb(front)
    _reset_peak(front)
    response = daemon.transcribe({"audio_url": f"{origin}/{name}", **options})
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(duration, abs=0.01)
    assert response.json()["words"] == []  # silence, as the file holds
    peak = _rss_mb(front, "VmHWM") - before
    assert peak < budget_mb, f"the front peaked {peak:.0f} MB above its resting level (budget {budget_mb:.0f} MB)"


def test_a_tiny_file_longer_than_the_limit_is_refused_before_decoding(daemon, origin):
    """40 KB at 1 Hz is 5.6 h, past MAX_AUDIO_SECONDS (4 h): refused from the header, for nothing."""
    front = daemon.process.pid
    before = _rss_mb(front)
    _reset_peak(front)
    response = daemon.transcribe({"audio_url": f"{origin}/1hz_5h.wav", "dual_channel": True})
    _error(daemon, response, 422, 5, "more than the 14400 s allowed (MAX_AUDIO_SECONDS)")
    assert _rss_mb(front, "VmHWM") - before < 30


# --- 8: cloud metadata behind IPv6 spellings, on an isolated host -------------------------------------------

@pytest.fixture(scope="module")
def isolated(tmp_path_factory, installed_model):
    with isolated_host() as host:
        with running_daemon(tmp_path_factory.mktemp("isolated"), host=host.address, wrapper=tuple(host.command),
                            DOWNLOAD_CONNECT_TIMEOUT="2") as running:
            running.wait_healthy()
            running.isolated_host = host
            yield running


@pytest.mark.parametrize("address", [
    "::169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "2002:a9fe:a9fe::", "::ffff:0:a9fe:a9fe",
    "::ffff:a9fe:a9fe", "2001:0:4136:e378:8000:63bf:5601:5601", "fe80::5efe:a9fe:a9fe", "2001:db8::5efe:a9fe:a9fe",
], ids=["ipv4-compatible", "nat64-well-known", "nat64-local-use", "6to4", "ipv4-translated", "ipv4-mapped",
        "teredo-client", "isatap-link-local", "isatap-global"])
def test_metadata_address_inside_ipv6_is_refused(isolated, address):
    started = time.monotonic()
    response = isolated.transcribe({"audio_url": f"http://[{address}]/latest/meta-data/"}, timeout=30)
    body = _error(isolated, response, 403, 18, "DOWNLOAD_DENY", "169.254.169.254")
    assert time.monotonic() - started < 2, "refused before connecting"
    assert "refused" not in body["description"]


def test_the_isolated_host_reaches_only_the_test_host(isolated, files):
    """The namespace works as the tests above assume: the test host answers, the rest of the world does not."""
    with audio_server(files, host=isolated.isolated_host.gateway) as url:
        assert isolated.transcribe({"audio_url": f"{url}/speech.wav"}).status_code == 200
    response = isolated.transcribe({"audio_url": "http://[2001:db8::1]/a.wav"}, timeout=30)
    _error(isolated, response, 502, 1, "unreachable")
