"""`soak`: a fixed number of mixed good and hostile requests at the daemon's parallel limit, under a
slow-client attack, memory and shared memory watched.

The real `serve` process tree runs with MAX_TRANSCRIPTS_PARALLEL=K and REJECT_OVER_PARALLEL=False,
and K client threads keep it at that limit. About 75 % of the requests are good: short dev clips
(some with format_text=false, punctuate=false or audio_start_from), now and then a generated stereo
call with dual_channel=true, and tiny 1 Hz WAVs that claim hours (one 64 channels wide) of which a
short span is asked for: they must answer 200 with that span's duration and no words. The other
25 % are bad, from the plain (404, refused port, an HTML page, random bytes named .wav, invalid
fields, a mono file with dual_channel=true) to the hostile ones of bench/hostile.py: a tiny file
past MAX_AUDIO_SECONDS, a gzip bomb, 300 MB that are not audio, an origin that trickles a byte a
second, JSON nested 10000 deep, malformed URLs (also behind a redirect), credentials in the URL
(which must not come back in the answer), an unsupported Content-Encoding, and HTTP the server must
refuse itself (a 300 KB header, a bad chunk size, a Content-Length that is not a number), sent over
a raw socket. Every answer is checked against the status and error code docs/API.md promises for
it; every error must be the JSON object {code, description, uid}.

For the whole client run `SLOW_CLIENTS` connections that never finish a request stay open (each one
the server closes is replaced; the requests start once their first burst is over), against
HTTP_MAX_CONNECTIONS=64 and HTTP_REQUEST_READ_TIMEOUT=5: the server must close them and log it, and
keep answering everyone else. REQUEST_TIMEOUT_SECONDS=20 bounds what the trickling origin costs (a
slot for 20 s; it is kept rare).

Meanwhile a thread samples every `--interval` s: GET /health (latency and status: anything but 200
during the run fails the verdict, since a load balancer would take the server out); the VmRSS of
every process of the tree by role (front, supervisor, each inference and decoder worker as /health
names them); and the tree's shared memory. Its blocks are anonymous memfds (daemon/workers/shm.py): they
have no name in /dev/shm, so they are counted per process as the distinct `/memfd:<tree prefix>`
entries of /proc/PID/fd and /proc/PID/maps, with the per-request PCM blocks (`_pcm_` in the name)
apart. A PCM block lives while its request does; one still open or mapped by any process once the
daemon is idle is memory that is never freed, so the verdict wants 0 at the end of the run. The
names the tree puts in /dev/shm (queue semaphores, only until its workers have started) are listed
too: 0 expected in steady state and after shutdown. The statvfs of /dev/shm (all users) is kept
for reference; memfds do not count there.

Warm-up is the first 10 % of the requests: what a process holds after it is its steady level, and
at the end of the run it should be within 5 % of that. Both samples are taken idle (the clients
pause after the warm-up), since one taken while a gzip bomb inflates holds its 500 MB for a moment.
The time series goes to bench/cache/ (gitignored) as CSV; `read_csv` and `trajectory_table` re-read
it for analysis.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import random
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
import soundfile as sf
from tqdm import tqdm

from bench import dataset, measure, report
from bench.daemon_proc import Daemon, audio_server, file_url, free_port, running_daemon
from bench.hostile import SlowClients, hostile_origin, write_junk, write_tiny_huge_files
from bench.proctree import machine_cpu_seconds, tree_cpu_seconds, tree_pids
from daemon.workers.leftovers import tree_names, tree_prefix

CACHE = Path(__file__).resolve().parent / "cache"
SHM_DIR = Path("/dev/shm")
TOLERANCE_PCT = 5.0
SOAK_ENV = {"REJECT_OVER_PARALLEL": "False", "REQUEST_TIMEOUT_SECONDS": "20", "HTTP_MAX_CONNECTIONS": "64",
            "HTTP_REQUEST_READ_TIMEOUT": "5"}
SLOW_CLIENTS = 96  # unfinished connections held open, past HTTP_MAX_CONNECTIONS
SLOW_LOG_LINE = "slow or excess connections"
BOMB_BYTES = 1_500_000_000  # the gzip bomb inflates to 3 times the default DOWNLOAD_MAX_BYTES
JUNK_BYTES = 300_000_000  # under DOWNLOAD_MAX_BYTES: downloaded whole, then found not to be audio
SECRET = "s3cret-pw"
JSON_FIELDS = {"code", "description", "uid"}
WIRE_HEADER_300KB = b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n"
WIRE_BAD_CHUNK = (b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"zz\r\nabc\r\n0\r\n\r\n")
WIRE_BAD_LENGTH = b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"
CALL_SENTENCES = [
    "thank you for calling the support line", "how can I help you today",
    "I was charged twice on my invoice", "let me check your account",
    "my order number is four five six", "the package never arrived",
    "I can send a replacement tomorrow", "that would be great thanks",
]


# --- the requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request and what docs/API.md says it must get back."""

    kind: str
    body: dict | None  # sent as JSON
    status: int
    code: int | None = None  # the error code of a bad request; None for 200
    raw: str | None = None  # sent as-is with Content-Type application/json instead of `body`
    wire: bytes | None = None  # sent as-is over a raw socket: HTTP the server must refuse itself
    pcm_bytes: int = 0  # float32 16 kHz samples the front puts in shared memory for it (good ones only)
    silence_s: float | None = None  # a silent span: the answer must last this long and hold no words
    secret: str | None = None  # must not come back in the answer

    @property
    def good(self) -> bool:
        return self.status == 200

    @property
    def expected(self) -> str:
        return "200" if self.good else f"{self.status} code {self.code}"


@dataclass
class Fixtures:
    """URLs the requests point at: dev clips with durations, generated files, dead ends, a hostile origin."""

    clips: list[tuple[str, float]]
    calls: list[tuple[str, float]]
    gen: str  # base URL of the generated files (tiny WAVs, junk.bin, ...)
    hostile: str  # base URL of bench.hostile's origin
    mono: str
    html: str
    noise: str
    missing: str
    refused: str


def _clip(rng: random.Random, fx: Fixtures) -> tuple[str, float]:
    return rng.choice(fx.clips)


def _pcm(seconds: float, channels: int = 1) -> int:
    return int(seconds * dataset.SAMPLE_RATE) * 4 * channels


def _good(kind: str, rng: random.Random, fx: Fixtures, **options) -> Request:
    url, seconds = _clip(rng, fx)
    return Request(kind, {"audio_url": url, **options}, 200, pcm_bytes=_pcm(seconds))


def _call(rng: random.Random, fx: Fixtures) -> Request:
    url, seconds = rng.choice(fx.calls)
    return Request("stereo call dual_channel", {"audio_url": url, "dual_channel": True}, 200,
                   pcm_bytes=_pcm(seconds, 2))


def _start_from(rng: random.Random, fx: Fixtures) -> Request:
    """Skip into a clip long enough to keep a second of speech; sometimes cut the end too."""
    url, seconds = rng.choice([c for c in fx.clips if c[1] >= 3.0] or fx.clips)
    start = int(rng.uniform(0.2, 0.5) * seconds * 1000)
    end = int(seconds * 1000)
    body = {"audio_url": url, "audio_start_from": start}
    if rng.random() < 0.5:
        end = body["audio_end_at"] = int(start + rng.uniform(0.5, 0.9) * (seconds * 1000 - start))
    return Request("clip audio_start_from", body, 200, pcm_bytes=_pcm((end - start) / 1000))


def _tiny(kind: str, name: str, seconds: float, channels: int = 1,
          **options) -> Callable[[random.Random, Fixtures], Request]:
    """A 1 Hz WAV of a few KB that lasts hours, of which `seconds` are asked for: the front must hold
    that span at 16 kHz (`channels` of it), never the whole file, and answer its silence."""
    return lambda rng, fx: Request(kind, {"audio_url": f"{fx.gen}/{name}", **options}, 200,
                                   pcm_bytes=_pcm(seconds, channels), silence_s=seconds)


def _bad(kind: str, status: int, code: int, url: Callable[[Fixtures], str],
         **options) -> Callable[[random.Random, Fixtures], Request]:
    return lambda rng, fx: Request(kind, {"audio_url": url(fx), **options}, status, code)


def _credentials(rng: random.Random, fx: Fixtures) -> Request:
    """A password in the URL of a missing file: the 502 names the URL, which must not carry it back."""
    url = fx.gen.replace("http://", f"http://alice:{SECRET}@") + "/missing.wav"
    return Request("credentials in the URL", {"audio_url": url}, 502, 1, secret=SECRET)


def _nested(rng: random.Random, fx: Fixtures) -> Request:
    raw = '{"audio_url": "' + fx.clips[0][0] + '", "x": ' + "[" * 10_000 + "]" * 10_000 + "}"
    return Request("JSON nested 10000 deep", None, 400, 9, raw=raw)


def _wire(kind: str, status: int, payload: bytes) -> Callable[[random.Random, Fixtures], Request]:
    return lambda rng, fx: Request(kind, None, status, 9, wire=payload)


def _invalid(rng: random.Random, fx: Fixtures) -> Request:
    """Strict validation: 400 code 4 before any download, 400 code 9 for a body that is not JSON,
    422 code 4 for a start past the end (known only once the file is decoded)."""
    url, seconds = _clip(rng, fx)
    choice = rng.randrange(5)
    if choice == 0:
        return Request("invalid: unknown field", {"audio_url": url, "speakers": 2}, 400, 4)
    if choice == 1:
        return Request("invalid: string for boolean", {"audio_url": url, "punctuate": "true"}, 400, 4)
    if choice == 2:
        return Request("invalid: start >= end", {"audio_url": url, "audio_start_from": 2000,
                                                 "audio_end_at": 1000}, 400, 4)
    if choice == 3:
        return Request("invalid: body not JSON", None, 400, 9, raw='{"audio_url": "' + url + '",')
    return Request("invalid: start past the end", {"audio_url": url,
                                                   "audio_start_from": int(seconds * 1000) + 1000}, 422, 4)


# name, share of the requests, builder. Good kinds first, 75 % in all; bad ones 25 %. The trickling
# origin holds a slot for REQUEST_TIMEOUT_SECONDS, so it stays rare.
KINDS: list[tuple[str, float, Callable[[random.Random, Fixtures], Request]]] = [
    ("clip", 0.50, lambda r, fx: _good("clip", r, fx)),
    ("clip format_text=false", 0.06, lambda r, fx: _good("clip format_text=false", r, fx, format_text=False)),
    ("clip punctuate=false", 0.06, lambda r, fx: _good("clip punctuate=false", r, fx, punctuate=False)),
    ("clip audio_start_from", 0.06, _start_from),
    ("stereo call dual_channel", 0.03, _call),
    ("tiny 1 Hz file: first 1 s of 3.9 h", 0.015,
     _tiny("tiny 1 Hz file: first 1 s of 3.9 h", "1hz_mono.wav", 1.0, audio_end_at=1000)),
    ("tiny 1 Hz file: 8 channels dual_channel, 1 min", 0.015,
     _tiny("tiny 1 Hz file: 8 channels dual_channel, 1 min", "1hz_8ch.wav", 60.0, 2, dual_channel=True,
           audio_end_at=60_000)),
    ("tiny 1 Hz file: 64 channels, 1 min at 1 h", 0.01,
     _tiny("tiny 1 Hz file: 64 channels, 1 min at 1 h", "1hz_64ch.wav", 60.0, audio_start_from=3_600_000,
           audio_end_at=3_660_000)),
    ("404 URL", 0.02, lambda r, fx: Request("404 URL", {"audio_url": fx.missing}, 502, 1)),
    ("refused port", 0.02, lambda r, fx: Request("refused port", {"audio_url": fx.refused}, 502, 1)),
    ("HTML page", 0.02, lambda r, fx: Request("HTML page", {"audio_url": fx.html}, 422, 3)),
    ("random bytes .wav", 0.02, lambda r, fx: Request("random bytes .wav", {"audio_url": fx.noise}, 422, 3)),
    ("invalid", 0.04, _invalid),
    ("mono with dual_channel", 0.02,
     lambda r, fx: Request("mono with dual_channel", {"audio_url": fx.mono, "dual_channel": True}, 422, 11)),
    ("tiny 1 Hz file past MAX_AUDIO_SECONDS", 0.01,
     _bad("tiny 1 Hz file past MAX_AUDIO_SECONDS", 422, 5, lambda fx: f"{fx.gen}/1hz_5h.wav")),
    ("gzip bomb 1.5 GB", 0.01, _bad("gzip bomb 1.5 GB", 413, 6, lambda fx: f"{fx.hostile}/bomb.wav")),
    ("300 MB not audio", 0.01, _bad("300 MB not audio", 422, 3, lambda fx: f"{fx.gen}/junk.bin")),
    ("trickling origin", 0.005, _bad("trickling origin", 504, 2, lambda fx: f"{fx.hostile}/trickle.wav")),
    ("JSON nested 10000 deep", 0.01, _nested),
    ("malformed URL", 0.01, _bad("malformed URL", 400, 4, lambda fx: "http://[::1/x.wav")),
    ("redirect to a malformed URL", 0.01,
     _bad("redirect to a malformed URL", 502, 1, lambda fx: f"{fx.hostile}/to-broken-ipv6")),
    ("credentials in the URL", 0.01, _credentials),
    ("unsupported Content-Encoding", 0.01,
     _bad("unsupported Content-Encoding", 502, 1, lambda fx: f"{fx.hostile}/brotli.wav")),
    ("wire: 300 KB header", 0.01, _wire("wire: 300 KB header", 431, WIRE_HEADER_300KB)),
    ("wire: bad chunk size", 0.0075, _wire("wire: bad chunk size", 400, WIRE_BAD_CHUNK)),
    ("wire: Content-Length abc", 0.0075, _wire("wire: Content-Length abc", 400, WIRE_BAD_LENGTH)),
]


def _counts(n: int) -> list[int]:
    """Exact share of each kind in n requests (largest remainder), so small runs keep the mix; when n
    has room for every kind, a kind too rare to get one takes it from the commonest, so that a short
    smoke run still sends every case once."""
    raw = [n * share for _, share, _ in KINDS]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(KINDS):
        for i in [i for i, c in enumerate(counts) if c == 0]:
            counts[i] += 1
            counts[counts.index(max(counts))] -= 1
    return counts


def plan(n: int, warmup: int, fx: Fixtures, seed: int, parallel: int = 1) -> list[Request]:
    """n requests in a seeded random order, with every kind at least once in the warm-up when it
    has room (the rarest, heaviest kinds first), so the steady level is one that has seen them all.

    The first `parallel` requests are stereo calls: every client at once on the heaviest request
    is the busiest moment of the run, and the inference process's buffers grow to their high-water
    mark there (the first soak met it only after warm-up, at request 387, and read it as growth).
    """
    rng = random.Random(seed)
    kinds = [i for i, c in enumerate(_counts(n)) for _ in range(c)]
    rng.shuffle(kinds)
    for rank, kind in enumerate(sorted(set(kinds), key=lambda k: KINDS[k][1])):
        if rank >= warmup or kind in kinds[:warmup]:
            continue
        at = kinds.index(kind)
        swap = next((j for j in range(warmup) if kinds[:warmup].count(kinds[j]) > 1), None)
        if swap is None:
            break
        kinds[swap], kinds[at] = kinds[at], kinds[swap]
    call = next(i for i, (name, _, _) in enumerate(KINDS) if name == "stereo call dual_channel")
    for slot in range(min(parallel, warmup, kinds.count(call))):
        at = kinds.index(call, slot)
        kinds[slot], kinds[at] = kinds[at], kinds[slot]
    return [KINDS[k][2](rng, fx) for k in kinds]


def _fixtures(root: Path, gen_base: str, hostile_base: str, eval_dir: Path, eval_base: str,
              clips: list[dataset.Clip], max_clip_s: float, seed: int) -> Fixtures:
    """Write the generated files into `root` (served at gen_base) and pick the short dev clips."""
    from engine.audio.files import decode_audio
    from engine.errors import AudioDecodeError
    from tests.synth import two_party_call

    short = []
    for c in clips:
        seconds = sf.info(str(c.path)).duration
        if seconds <= max_clip_s:
            short.append((file_url(eval_base, eval_dir, c.path), seconds))
    if not short:
        raise SystemExit(f"no dev clip is {max_clip_s} s or shorter")
    rng = random.Random(seed)
    calls = []
    for i in range(4):
        turns = [(1 + t % 2, rng.choice(CALL_SENTENCES)) for t in range(rng.randint(3, 5))]
        audio, _ = two_party_call(turns, gap_s=rng.choice([0.5, 1.0, 2.0]))
        sf.write(root / f"call{i}.wav", audio, 16000, subtype="PCM_16")
        calls.append((f"{gen_base}/call{i}.wav", len(audio) / 16000))
        if i == 0:
            sf.write(root / "mono.wav", audio.mean(axis=1), 16000, subtype="PCM_16")
    (root / "page.html").write_text("<!doctype html><html><head><title>Not audio</title></head>"
                                    "<body><p>This page is not a sound file.</p></body></html>\n")
    noise_rng = np.random.default_rng(seed)
    while True:  # random bytes could by chance look like an MPEG frame; keep a draw that cannot decode
        (root / "noise.wav").write_bytes(noise_rng.integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes())
        try:
            decode_audio(str(root / "noise.wav"))
        except AudioDecodeError:
            break
    write_tiny_huge_files(root)
    write_junk(root / "junk.bin", JUNK_BYTES)
    return Fixtures(short, calls, gen_base, hostile_base, f"{gen_base}/mono.wav", f"{gen_base}/page.html",
                    f"{gen_base}/noise.wav", f"{gen_base}/no-such-file.wav", f"http://127.0.0.1:{free_port()}/x.wav")


# --- sending and checking -----------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None
    code: int | None
    latency: float
    problem: str | None  # None when the answer is what the request must get


def _send(url: str, req: Request, timeout: float) -> Outcome:
    if req.wire is not None:
        return _send_wire(url, req, timeout)
    start = time.perf_counter()
    try:
        if req.raw is not None:
            resp = requests.post(url, data=req.raw.encode(), timeout=timeout,
                                 headers={"Content-Type": "application/json"})
        else:
            resp = requests.post(url, json=req.body, timeout=timeout)
    except requests.RequestException as exc:
        return Outcome(None, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    return _outcome(req, resp.status_code, resp.headers.get("Content-Type", ""), resp.content,
                    time.perf_counter() - start)


def _send_wire(url: str, req: Request, timeout: float) -> Outcome:
    """Send `req.wire` as it is and read the answer to the end (the server closes after an error).
    The server may answer before the payload is all sent (the 300 KB header): what it said is read."""
    address = urlsplit(url)
    start = time.perf_counter()
    data = b""
    try:
        with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
            try:
                sock.sendall(req.wire)
            except (BrokenPipeError, ConnectionResetError):
                pass
            while chunk := sock.recv(1 << 16):
                data += chunk
    except ConnectionResetError:
        pass  # keep what came before the reset
    except OSError as exc:
        return Outcome(None, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - start
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        return Outcome(None, None, latency, f"no HTTP status line in the answer: {data[:200]!r}")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return _outcome(req, int(status_line[1]), headers.get("content-type", ""), body, latency)


def _outcome(req: Request, status: int, content_type: str, content: bytes, latency: float) -> Outcome:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) and not req.good else None
    text = content[:200].decode(errors="replace")
    return Outcome(status, code, latency, _check(req, status, content_type, body, text))


def _check(req: Request, status: int, content_type: str, body: object, text: str) -> str | None:
    if status != req.status:
        return f"HTTP {status}, expected {req.expected}: {text}"
    if not isinstance(body, dict) or content_type.split(";")[0].strip() != "application/json":
        return f"HTTP {status} ({content_type or 'no Content-Type'}) without a JSON object: {text}"
    if not str(body.get("uid", "")).startswith("t_"):
        return "no uid"
    return _check_transcript(req, body) if req.good else _check_error(req, body)


def _check_transcript(req: Request, body: dict) -> str | None:
    if not isinstance(body.get("blob"), str) or not isinstance(body.get("words"), list):
        return "200 without blob or words"
    if req.body.get("dual_channel") and (body.get("stereo_decode") is not True
                                         or not isinstance(body.get("utterances"), list)):
        return "dual_channel answer is not a stereo decode with utterances"
    if req.silence_s is not None and (body["words"] or abs(body.get("duration", -1) - req.silence_s) > 0.01):
        return (f"expected {req.silence_s:g} s of silence, got duration {body.get('duration')} and "
                f"{len(body['words'])} words")
    return None


def _check_error(req: Request, body: dict) -> str | None:
    if set(body) != JSON_FIELDS:
        return f"error with fields {sorted(body)}, expected {sorted(JSON_FIELDS)}"
    if body["code"] != req.code:
        return f"code {body['code']}, expected {req.code}: {str(body['description'])[:200]}"
    if req.secret is not None and req.secret in str(body["description"]):
        return f"the description gives back the secret {req.secret!r} of the URL"
    return None


# --- sampling -----------------------------------------------------------------------------------------


PROC_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "fds", "memfd blocks", "pcm blocks", "pcm kB")


@dataclass(frozen=True)
class Block:
    """A memfd block as one process sees it."""

    size: int  # st_size through a descriptor, else the length the process maps
    allocated: int | None  # st_blocks * 512 through a descriptor; None when the process only maps it


def _proc(pid: int) -> dict[str, int]:
    """Memory in kB from /proc/PID/status and the number of open file descriptors."""
    base = Path("/proc") / str(pid)
    try:
        text = (base / "status").read_text()
        fds = len(os.listdir(base / "fd"))
    except OSError:
        return {}
    values = {k: int(v) for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|RssShmem):\s+(\d+) kB", text, re.M)}
    values["fds"] = fds
    return values


def _memfds(pid: int, prefix: str) -> dict[str, Block]:
    """The tree's memfd blocks that `pid` holds open (/proc/PID/fd) or maps (/proc/PID/maps), by name.
    A block lives while any descriptor or mapping does, so either one keeps its memory taken."""
    tag = f"/memfd:{prefix}"
    base = Path("/proc") / str(pid)
    blocks: dict[str, Block] = {}
    try:
        fds = os.listdir(base / "fd")
        maps = (base / "maps").read_text()
    except OSError:
        return {}
    for fd in fds:
        try:
            link = os.readlink(base / "fd" / fd)
            if link.startswith(tag):
                st = os.stat(base / "fd" / fd)  # follows the link to the memfd itself
                blocks[_block_name(link)] = Block(st.st_size, st.st_blocks * 512)
        except OSError:
            continue  # closed meanwhile
    mapped: Counter[str] = Counter()
    for line in maps.splitlines():
        if tag in line:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            mapped[_block_name(line[line.index("/memfd:"):])] += end - start
    for name, length in mapped.items():
        blocks.setdefault(name, Block(length, None))
    return blocks


def _block_name(entry: str) -> str:
    """`/memfd:<name> (deleted)` -> name."""
    return entry.removeprefix("/memfd:").removesuffix(" (deleted)")


def _block_counts(blocks: dict[str, Block]) -> dict[str, int]:
    pcm = [b.size for name, b in blocks.items() if "_pcm_" in name]
    return {"memfd blocks": len(blocks), "pcm blocks": len(pcm), "pcm kB": sum(pcm) // 1024}


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _tmpfs_used() -> int:
    """Bytes used on /dev/shm by every user: names, not memfds (those are on an internal mount)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@dataclass
class Health:
    """One GET /health: how long it took, its status (None: no answer) and the body's status word."""

    latency: float
    status: int | None
    state: str
    workers: dict[int, str]  # pid -> worker name


def _health(url: str) -> Health:
    start = time.perf_counter()
    try:
        resp = requests.get(url + "/health", timeout=5)
    except requests.RequestException as exc:
        return Health(time.perf_counter() - start, None, type(exc).__name__, {})
    latency = time.perf_counter() - start
    try:
        body = resp.json()
        workers = {w["pid"]: w["name"] for w in body["workers"]}
        return Health(latency, resp.status_code, str(body.get("status")), workers)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Health(latency, resp.status_code, "no JSON body", {})


@dataclass
class Sample:
    t: float
    completed: int
    label: str
    rss: dict[str, dict[str, int]]  # role -> PROC_KEYS (memory in kB, then counts)
    names: int  # the tree's names in /dev/shm (queue semaphores until the workers have started)
    blocks: int  # distinct memfd blocks open or mapped in any process of the tree
    block_bytes: int  # their memory: st_blocks of those open somewhere, the mapped length of the others
    block_apparent: int  # st_size (or the mapped length), the sizes the blocks were created with
    pcm_blocks: int  # of `blocks`, the per-request ones (owned by the front for one request)
    pcm_bytes: int  # their st_size (or mapped length)
    tmpfs_used: int  # bytes in use on the whole /dev/shm filesystem (statvfs), all users; memfds not included
    health_s: float  # latency of the GET /health taken with the sample
    health_status: int | None  # its HTTP status; None when it got no answer
    health_state: str  # the body's "status": ok, loading, restarting, unresponsive


def _shared_memory(per_pid: list[dict[str, Block]]) -> dict[str, int]:
    """Sample's shared-memory fields over the tree: every block once, as seen through a descriptor
    where some process has one open (its allocated size is known only there)."""
    tree: dict[str, Block] = {}
    for blocks in per_pid:
        for name, block in blocks.items():
            if name not in tree or tree[name].allocated is None:
                tree[name] = block
    pcm = [b.size for name, b in tree.items() if "_pcm_" in name]
    return {"blocks": len(tree), "block_bytes": sum(b.size if b.allocated is None else b.allocated
                                                     for b in tree.values()),
            "block_apparent": sum(b.size for b in tree.values()), "pcm_blocks": len(pcm), "pcm_bytes": sum(pcm)}


@dataclass
class Sampler:
    """Samples /health, the daemon tree and its shared memory on a thread; `mark` takes a labelled sample now.

    The tree prefix is read from /proc/<front pid>/stat (the front's start time), so the sampler must
    be made while the front runs."""

    daemon: Daemon
    interval: float
    samples: list[Sample] = field(default_factory=list)
    completed: int = 0
    roles: dict[int, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.root = self.daemon.process.pid
        self.prefix = tree_prefix(self.root)
        self.t0 = time.monotonic()

    def start(self) -> "Sampler":
        self.mark("start")
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.mark("")

    def _classify(self, pids: list[int], workers: dict[int, str]) -> None:
        """Name new pids by role; a role that comes back with a new pid is a restart."""
        for pid in (p for p in pids if p not in self.roles):
            if pid == self.root:
                role = "front"
            elif "resource_tracker" in _cmdline(pid):
                role = "resource tracker"
            elif pid in workers:
                role = workers[pid]
            elif _ppid(pid) == self.root:
                role = "supervisor"
            else:
                continue  # a worker not in /health yet: named at a later sample
            old = self.pids.get(role)
            if old is not None and old != pid:
                self.restarts.append(f"{role}: pid {old} -> {pid} after {self.completed} requests")
            self.roles[pid], self.pids[role] = role, pid

    def mark(self, label: str) -> Sample:
        with self._lock:
            health = _health(self.daemon.url)
            pids = tree_pids(self.root)
            self._classify(pids, health.workers)
            per_pid = {pid: _memfds(pid, self.prefix) for pid in pids}
            sample = Sample(round(time.monotonic() - self.t0, 2), self.completed, label, self._rss(per_pid),
                            len(tree_names(self.prefix)), tmpfs_used=_tmpfs_used(), health_s=round(health.latency, 4),
                            health_status=health.status, health_state=health.state,
                            **_shared_memory(list(per_pid.values())))
            self.samples.append(sample)
            return sample

    def _rss(self, per_pid: dict[int, dict[str, Block]]) -> dict[str, dict[str, int]]:
        """PROC_KEYS by role, for the processes named so far."""
        rss = {}
        for pid, blocks in per_pid.items():
            role = self.roles.get(pid)
            values = _proc(pid) if role is not None and self.pids.get(role) == pid else {}
            if values:
                rss[role] = {**values, **_block_counts(blocks)}
        return rss

    def labelled(self, label: str) -> Sample:
        return next(s for s in self.samples if s.label == label)


def _role_order(role: str) -> tuple[int, str]:
    rank = {"front": 0, "supervisor": 1, "resource tracker": 2}
    return (rank.get(role, 3 if role.startswith("inference") else 4), role)


def _optional(cast: Callable[[str], object]) -> Callable[[str], object]:
    return lambda text: cast(text) if text != "" else None


# CSV column, Sample attribute, how to read it back
SAMPLE_COLUMNS: list[tuple[str, str, Callable[[str], object]]] = [
    ("t_s", "t", float), ("completed", "completed", int), ("label", "label", str),
    ("dev_shm_names", "names", int), ("memfd_blocks", "blocks", int), ("memfd_bytes", "block_bytes", int),
    ("memfd_apparent_bytes", "block_apparent", int), ("pcm_blocks", "pcm_blocks", int),
    ("pcm_bytes", "pcm_bytes", int), ("dev_shm_used_bytes", "tmpfs_used", int), ("health_s", "health_s", float),
    ("health_status", "health_status", _optional(int)), ("health_state", "health_state", str),
]


def _proc_column(role: str, key: str) -> str:
    return f"{role} {key}" + (" kB" if key.startswith(("Vm", "Rss")) else "")


def write_csv(path: Path, samples: list[Sample], roles: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([c for c, _, _ in SAMPLE_COLUMNS] + [_proc_column(r, k) for r in roles for k in PROC_KEYS])
        for s in samples:
            out.writerow(["" if getattr(s, a) is None else getattr(s, a) for _, a, _ in SAMPLE_COLUMNS]
                         + [s.rss.get(r, {}).get(k, "") for r in roles for k in PROC_KEYS])


def read_csv(path: Path) -> tuple[list[Sample], list[str]]:
    """Samples and roles back from a time series written by write_csv, for analysis after a run."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    roles = list(dict.fromkeys(c.rsplit(" VmRSS", 1)[0] for c in (rows[0] if rows else {}) if c.endswith(" VmRSS kB")))
    samples = []
    for row in rows:
        rss = {}
        for r in roles:
            values = {k: int(row[_proc_column(r, k)]) for k in PROC_KEYS if row.get(_proc_column(r, k))}
            if values:
                rss[r] = values
        fields = {a: cast(row[c]) for c, a, cast in SAMPLE_COLUMNS}
        samples.append(Sample(rss=rss, **fields))
    return samples, roles


# --- the run ------------------------------------------------------------------------------------------


def run_clients(daemon: Daemon, reqs: list[Request], k: int, warmup: int, sampler: Sampler, timeout: float,
                settle: float) -> tuple[list[Outcome], float]:
    """K threads take the next request in order, first through the warm-up, then through the rest.

    Between the two, once the warm-up's last answer is back and `settle` s have passed, the warm-up
    sample is taken with nothing in flight, as the final one is: a sample taken while a gzip bomb
    is being inflated would hold its 500 MB and read as shrinkage later. Returns the outcomes and
    the wall time of both phases (the pause not counted)."""
    outcomes: list[Outcome | None] = [None] * len(reqs)
    bar = tqdm(total=len(reqs), desc=f"soak K={k}", unit="req")
    url = daemon.url + "/transcribe/url"
    wall = _run_phase(url, reqs, range(warmup), outcomes, k, sampler, bar, timeout)
    time.sleep(settle)
    sampler.mark("warm-up")
    wall += _run_phase(url, reqs, range(warmup, len(reqs)), outcomes, k, sampler, bar, timeout)
    bar.close()
    return [o for o in outcomes if o is not None], wall


def _run_phase(url: str, reqs: list[Request], indices: range, outcomes: list[Outcome | None], k: int,
               sampler: Sampler, bar: tqdm, timeout: float) -> float:
    """Send reqs[i] for i in `indices` from k threads; returns the wall time."""
    lock = threading.Lock()
    next_index = iter(indices)

    def client() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            outcome = _send(url, reqs[i], timeout)
            with lock:
                outcomes[i] = outcome
                sampler.completed += 1
                last = sampler.samples[-1]
                bar.set_postfix(mismatch=sum(o is not None and o.problem is not None for o in outcomes),
                                rss_mb=sum(v.get("VmRSS", 0) for v in last.rss.values()) // 1024,
                                pcm=last.pcm_blocks, refresh=False)
                bar.update()
                if outcome.problem is not None:
                    tqdm.write(f"mismatch #{i} {reqs[i].kind}: {outcome.problem}")

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(k)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "–"


def _slope(samples: list[Sample], role: str, warmup: int) -> float | None:
    """Least-squares RSS growth in MB per 100 requests over the samples after warm-up."""
    points = [(s.completed, s.rss[role]["VmRSS"] / 1024) for s in samples
              if s.completed >= warmup and role in s.rss and "VmRSS" in s.rss[role]]
    xs = np.array([p[0] for p in points], dtype=float)
    if len(points) < 3 or np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, [p[1] for p in points], 1)[0] * 100)


def memory_table(sampler: Sampler, roles: list[str], warmup: int) -> tuple[str, list[str]]:
    """One row per process; returns the table and the roles over the tolerance."""
    start, warm, end = (sampler.labelled(x) for x in ("start", "warm-up", "end"))
    lines = ["| process | pid | RSS idle MB | RSS after warm-up MB | RSS final MB | RSS max MB | "
             "final vs warm-up | anon Δ MB | shmem Δ MB | trend MB / 100 req | within 5 % | "
             "open fds warm-up → final | memfd blocks warm-up → final | "
             "PCM blocks open or mapped, warm-up → final (final MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    over = []

    def mb(sample: Sample, role: str, key: str = "VmRSS") -> float | None:
        value = sample.rss.get(role, {}).get(key)
        return None if value is None else value / 1024

    def count(sample: Sample, role: str, key: str) -> str:
        return str(sample.rss.get(role, {}).get(key, "–"))

    for role in roles:
        idle, w, e = mb(start, role), mb(warm, role), mb(end, role)
        peak = max((s.rss[role]["VmRSS"] for s in sampler.samples if role in s.rss), default=0) / 1024
        change = 100 * (e - w) / w if w and e is not None else None
        anon = (mb(end, role, "RssAnon") or 0) - (mb(warm, role, "RssAnon") or 0)
        shmem = (mb(end, role, "RssShmem") or 0) - (mb(warm, role, "RssShmem") or 0)
        slope = _slope(sampler.samples, role, warmup)
        ok = change is not None and abs(change) <= TOLERANCE_PCT
        if not ok:
            over.append(role)
        fmt = lambda v: f"{v:.1f}" if v is not None else "–"  # noqa: E731
        lines.append(f"| {role} | {sampler.pids.get(role, '–')} | {fmt(idle)} | {fmt(w)} | {fmt(e)} | {peak:.1f} | "
                     f"{f'{change:+.2f} %' if change is not None else '–'} | {anon:+.1f} | {shmem:+.1f} | "
                     f"{f'{slope:+.2f}' if slope is not None else '–'} | {'yes' if ok else '**no**'} | "
                     f"{count(warm, role, 'fds')} → {count(end, role, 'fds')} | "
                     f"{count(warm, role, 'memfd blocks')} → {count(end, role, 'memfd blocks')} | "
                     f"{count(warm, role, 'pcm blocks')} → {count(end, role, 'pcm blocks')} "
                     f"({(mb(end, role, 'pcm kB') or 0):.1f}) |")
    total = lambda s: sum(v.get("VmRSS", 0) for v in s.rss.values()) / 1024  # noqa: E731
    tw, te = total(warm), total(end)
    lines.append(f"| whole tree (sum) | | {total(start):.1f} | {tw:.1f} | {te:.1f} | "
                 f"{max(total(s) for s in sampler.samples):.1f} | {100 * (te - tw) / tw:+.2f} % | | | | | | | |")
    return "\n".join(lines), over


def trajectory_table(samples: list[Sample], roles: list[str], n: int, steps: int = 10) -> str:
    """RSS of every process at each tenth of the run, to tell steady growth from a one-off step."""
    lines = ["| requests answered | " + " | ".join(f"{r} MB" for r in roles)
             + " | memfd blocks (of which PCM) | /dev/shm names |",
             "|---:|" + "---:|" * (len(roles) + 2)]
    for step in range(steps + 1):
        target = math.ceil(n * step / steps)
        sample = next((s for s in samples if s.completed >= target), None)
        if sample is None:
            continue
        cells = " | ".join(f"{sample.rss[r]['VmRSS'] / 1024:.1f}" if "VmRSS" in sample.rss.get(r, {}) else "–"
                           for r in roles)
        lines.append(f"| {sample.completed} | {cells} | {sample.blocks} ({sample.pcm_blocks}) | {sample.names} |")
    return "\n".join(lines)


def shm_table(sampler: Sampler, after: tuple[int, int]) -> str:
    """The tree's memfd blocks (per-request PCM apart), its names in /dev/shm, and the whole /dev/shm in
    use for reference (other users' files count there; memfds do not)."""
    start, end = sampler.labelled("start"), sampler.labelled("end")
    mb = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    top = lambda attr: max(getattr(s, attr) for s in sampler.samples)  # noqa: E731

    def row(name: str, s: Sample) -> str:
        return (f"| {name} | {s.names} | {s.blocks} | {s.pcm_blocks} | {mb(s.block_bytes)} | {mb(s.block_apparent)} | "
                f"{mb(s.pcm_bytes)} | {mb(s.tmpfs_used)} |")

    return "\n".join([
        f"| shared memory | `{sampler.prefix}*` names in /dev/shm | memfd blocks in the tree | of which per-request "
        "`_pcm_` | MB allocated | MB apparent | PCM MB | whole /dev/shm used MB (all users, memfds not counted) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("start (idle, after startup)", start),
        f"| max during the run | {top('names')} | {top('blocks')} | {top('pcm_blocks')} | {mb(top('block_bytes'))} | "
        f"{mb(top('block_apparent'))} | {mb(top('pcm_bytes'))} | {mb(top('tmpfs_used'))} |",
        row("end of the run (daemon idle)", end),
        f"| after SIGTERM shutdown | {after[0]} | – | – | – | – | – | {mb(after[1])} |",
    ])


def requests_table(reqs: list[Request], outcomes: list[Outcome]) -> str:
    lines = ["| request kind | expected | sent | mismatches | p50 s | p95 s | max s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for req, out in zip(reqs, outcomes):
        groups.setdefault((req.kind, req.expected), []).append(out)
    order = {name: i for i, (name, _, _) in enumerate(KINDS)}
    rank = lambda kind: order.get(kind, order.get(kind.split(":")[0], len(order)))  # noqa: E731
    for (kind, expected), outs in sorted(groups.items(), key=lambda g: (rank(g[0][0]), g[0])):
        lat = [o.latency for o in outs]
        lines.append(f"| {kind} | {expected} | {len(outs)} | {sum(o.problem is not None for o in outs)} | "
                     f"{_pct(lat, 50)} | {_pct(lat, 95)} | {max(lat):.2f} |")
    return "\n".join(lines)


def _health_lines(samples: list[Sample]) -> tuple[str, str]:
    """A note on /health's latency under attack, and the verdict: 200 at every sample."""
    latencies = [s.health_s for s in samples]
    failed = [s for s in samples if s.health_status != 200]
    p50 = np.percentile(latencies, 50) * 1000
    note = (f"/health, taken with each of the {len(samples)} samples: p50 {p50:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms")
    detail = "; ".join(f"{s.health_status or 'no answer'} {s.health_state} at {s.t:.0f} s ({s.completed} answered)"
                       for s in failed[:10])
    verdict = ("/health answered 200 at every sample during the run: "
               + ("yes" if not failed else f"**no** ({len(failed)} samples: {detail})"))
    return note, verdict


def _slow_verdict(slow: SlowClients, log: str) -> str:
    lines = log.count(SLOW_LOG_LINE)
    ok = slow.closed > 0 and lines > 0
    return (f"slow clients ({slow.count} unfinished requests kept open against HTTP_MAX_CONNECTIONS "
            f"{SOAK_ENV['HTTP_MAX_CONNECTIONS']}) closed by the server and logged: {'yes' if ok else '**no**'} "
            f"({slow.opened} opened, {slow.closed} closed by the server; '{SLOW_LOG_LINE}' log lines: {lines})")


def _wait_flooded(slow: SlowClients, within: float = 10.0) -> None:
    """Wait until the slow clients have opened their count once, so the run meets their steady churn.

    In their first burst 96 connections arrive within milliseconds; a client that connects then and
    sends its request a few ms later (this process's threads share the GIL with the burst) is among
    the oldest silent connections when the 65th arrives, and is evicted: a smoke run lost its first
    request so. Afterwards they reopen what the server closed in rounds 0.5 s apart, and a client's
    connection is evicted only if it is still silent at the next round."""
    deadline = time.monotonic() + within
    while slow.opened < slow.count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=dataset.REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "daemon", "engine", "config"],
                               cwd=dataset.REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"HEAD {head}" + (f", uncommitted changes in {', '.join(changed)}" if changed else ", clean")


def soak(args: argparse.Namespace) -> None:
    """Run the soak, print the section and append it to RESULTS.md."""
    busy = measure.busy_fraction()
    warmup = max(1, math.ceil(args.requests * args.warmup / 100))
    clips = dataset.load_manifest(args.eval_dir)
    env = {"ASYNC_ENGINE_MODEL": args.model, "DECODER_BEAM_SIZE": str(args.beam),
           "MAX_TRANSCRIPTS_PARALLEL": str(args.parallel), **SOAK_ENV}
    git = _git_state()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, \
            audio_server(Path(tmp)) as gen_base, audio_server(args.eval_dir) as eval_base, \
            hostile_origin(BOMB_BYTES) as hostile_base:
        fx = _fixtures(Path(tmp), gen_base, hostile_base, args.eval_dir, eval_base, clips, args.max_clip_seconds,
                       args.seed)
        reqs = plan(args.requests, warmup, fx, args.seed, args.parallel)
        with running_daemon(**env) as daemon:
            sampler = Sampler(daemon, args.interval).start()
            address = urlsplit(daemon.url)
            cpu = (tree_cpu_seconds(daemon.process.pid), measure.own_cpu_seconds(), machine_cpu_seconds())
            with SlowClients(address.hostname, address.port, SLOW_CLIENTS) as slow:
                _wait_flooded(slow)
                outcomes, wall = run_clients(daemon, reqs, args.parallel, warmup, sampler, args.timeout,
                                             args.settle)
            cpu = (tree_cpu_seconds(daemon.process.pid) - cpu[0], measure.own_cpu_seconds() - cpu[1],
                   machine_cpu_seconds() - cpu[2])
            time.sleep(args.settle)
            sampler.mark("end")
            sampler.stop()
            try:
                health = requests.get(daemon.url + "/health", timeout=5)
                health_text = f"{health.status_code} {json.dumps(health.json().get('workers'))}"
            except (requests.RequestException, ValueError) as exc:
                health_text = f"unreachable ({exc})"
            exit_code = daemon.stop()
            after = (len(tree_names(sampler.prefix)), _tmpfs_used())
            log = daemon.log_path.read_text(errors="replace")

    roles = sorted({r for s in sampler.samples for r in s.rss}, key=_role_order)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    csv_path = args.csv or CACHE / f"soak-{stamp}.csv"
    write_csv(csv_path, sampler.samples, roles)

    mem, over = memory_table(sampler, roles, warmup)
    good = [o.latency for r, o in zip(reqs, outcomes) if r.good]
    bad = [o.latency for r, o in zip(reqs, outcomes) if not r.good]
    every = good + bad
    statuses = Counter("no answer" if o.status is None else str(o.status) if o.code is None else f"{o.status}/{o.code}"
                       for o in outcomes)
    problems = [(i, r, o) for i, (r, o) in enumerate(zip(reqs, outcomes)) if o.problem is not None]
    others = max(0.0, cpu[2] - cpu[0] - cpu[1])
    end = sampler.labelled("end")
    health_note, health_verdict = _health_lines(sampler.samples)
    verdicts = [
        f"every process within {TOLERANCE_PCT:.0f} % of its post-warm-up RSS at the end: "
        + ("yes" if not over else f"**no** ({', '.join(over)})"),
        "0 PCM blocks mapped or open in any process at the end of the run: "
        + ("yes" if end.pcm_blocks == 0 else f"**no** ({end.pcm_blocks}: " + ", ".join(
            f"{r} {end.rss[r]['pcm blocks']} ({end.rss[r]['pcm kB'] / 1024:.1f} MB)"
            for r in roles if end.rss.get(r, {}).get("pcm blocks")) + ")"),
        f"0 `{sampler.prefix}*` names in /dev/shm at every sample and after shutdown: "
        + ("yes" if max(s.names for s in sampler.samples) == 0 and after[0] == 0 else
           f"**no** (max {max(s.names for s in sampler.samples)} during the run, {after[0]} after shutdown)"),
        health_verdict,
        _slow_verdict(slow, log),
        f"answers as documented: {len(outcomes) - len(problems)}/{len(outcomes)}, mismatches {len(problems)}",
    ]
    notes = [
        f"{args.requests} requests ({len(good)} good, {len(bad)} bad), K={args.parallel} client threads, daemon env "
        f"{env}, defaults otherwise; daemon startup to /health 200: {daemon.startup_s:.1f} s",
        f"good clips: the {len(fx.clips)} dev.tsv clips of {args.max_clip_seconds:g} s or less (mean "
        f"{np.mean([s for _, s in fx.clips]):.1f} s) from {args.eval_dir}; stereo calls: {len(fx.calls)} generated "
        f"two-party calls (eSpeak NG); tiny 1 Hz WAVs, the gzip bomb ({BOMB_BYTES / 1e9:g} GB inflated), the "
        f"{JUNK_BYTES / 1e6:g} MB undecodable file and the hostile origin from bench/hostile.py; request order "
        f"seeded ({args.seed}), every kind at least once in the warm-up when it has room",
        f"warm-up = the first {warmup} requests ({args.warmup:g} %); 'after warm-up' is the sample taken "
        f"{args.settle:g} s after the warm-up's last answer (the clients wait for it), 'final' one "
        f"{args.settle:g} s after the last answer: both with no request in flight; RSS = VmRSS from "
        f"/proc/PID/status sampled every {args.interval:g} s ({len(sampler.samples)} samples); anon/shmem Δ = RssAnon "
        f"and RssShmem change over the same span; trend = least-squares slope over the samples after warm-up; "
        f"memfd blocks = distinct `/memfd:{sampler.prefix}*` entries of /proc/PID/fd and /proc/PID/maps; the "
        f"front's open fds after warm-up include the slow clients' sockets",
        f"wall {wall:.1f} s, {len(outcomes) / wall:.2f} requests/s; latency p50/p95: all {_pct(every, 50)}/"
        f"{_pct(every, 95)} s, good {_pct(good, 50)}/{_pct(good, 95)} s, bad {_pct(bad, 50)}/{_pct(bad, 95)} s",
        health_note,
        "status counts (status/code): " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
        f"CPU during the run ({os.cpu_count()} cores): daemon tree {cpu[0]:.0f} s, benchmark process {cpu[1]:.0f} s, "
        f"other processes {others:.0f} s; machine {100 * busy:.0f} % busy in the second before start",
        f"worker restarts: {'; '.join(sampler.restarts) if sampler.restarts else 'none'}; /health after the run: "
        f"{health_text}; daemon exit status after SIGTERM: {exit_code}; tracebacks in its log: "
        f"{log.count('Traceback')}",
        f"code under test: {git}",
        f"time series: {csv_path.relative_to(dataset.REPO_ROOT) if csv_path.is_relative_to(dataset.REPO_ROOT) else csv_path}",
        f"PCM the front put in shared memory for the good requests after warm-up (float32, 16 kHz, per channel "
        f"for dual_channel): {sum(r.pcm_bytes for r in reqs[warmup:]) / 2**20:.1f} MB; during warm-up: "
        f"{sum(r.pcm_bytes for r in reqs[:warmup]) / 2**20:.1f} MB",
    ] + verdicts
    notes += [f"mismatch, request #{i} ({r.kind}, expected {r.expected}): {o.problem}" for i, r, o in problems[:20]]
    if len(problems) > 20:
        notes.append(f"... and {len(problems) - 20} more mismatches")
    body = "\n\n".join([mem, trajectory_table(sampler.samples, roles, args.requests), shm_table(sampler, after),
                         requests_table(reqs, outcomes)])
    text = report.dated_section(f"{args.model} beam {args.beam}, soak ({args.requests} requests, K={args.parallel})",
                                notes, body)
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
