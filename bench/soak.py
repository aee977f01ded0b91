"""`soak`: a fixed number of mixed good and bad requests at the daemon's parallel limit, memory watched.

The real `serve` process tree runs with MAX_TRANSCRIPTS_PARALLEL=K and REJECT_OVER_PARALLEL=False,
and K client threads keep it at that limit. About 80 % of the requests are good (short dev clips,
some with format_text=false, punctuate=false or audio_start_from, now and then a generated stereo
call with dual_channel=true) and about 20 % bad (404, refused port, an HTML page, random bytes
named .wav, invalid fields, a mono file with dual_channel=true). Every answer is checked against the
status and error code docs/API.md promises for it.

Meanwhile a thread samples every `--interval` s the VmRSS of every process of the tree by role
(front, supervisor, resource tracker, each inference and decoder worker as /health names them)
and the daemon's blocks in /dev/shm (names starting `ae<front pid>_`). Warm-up is the first 10 %
of the requests: what a process holds after it is its steady level, and at the end of the run it
should be within 5 % of that. Per process it also counts open file descriptors and the daemon's
blocks that are still mapped after their owner unlinked them: such a block has left the /dev/shm
listing but its memory is freed only when the last mapping goes. The time series goes to
bench/cache/ (gitignored) as CSV; `read_csv` and `trajectory_table` re-read it for analysis.
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
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import soundfile as sf
from tqdm import tqdm

from bench import dataset, measure, report
from bench.daemon_proc import Daemon, audio_server, file_url, free_port, running_daemon
from bench.proctree import machine_cpu_seconds, tree_cpu_seconds, tree_pids

CACHE = Path(__file__).resolve().parent / "cache"
SHM_DIR = Path("/dev/shm")
TOLERANCE_PCT = 5.0
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
    pcm_bytes: int = 0  # float32 16 kHz samples the front puts in shared memory for it (good ones only)

    @property
    def good(self) -> bool:
        return self.status == 200

    @property
    def expected(self) -> str:
        return "200" if self.good else f"{self.status} code {self.code}"


@dataclass
class Fixtures:
    """URLs the requests point at: dev clips with durations, generated files, dead ends."""

    clips: list[tuple[str, float]]
    calls: list[tuple[str, float]]
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


# name, share of the requests, builder. Good kinds first; bad ones add up to 20 %.
KINDS: list[tuple[str, float, Callable[[random.Random, Fixtures], Request]]] = [
    ("clip", 0.59, lambda r, fx: _good("clip", r, fx)),
    ("clip format_text=false", 0.06, lambda r, fx: _good("clip format_text=false", r, fx, format_text=False)),
    ("clip punctuate=false", 0.06, lambda r, fx: _good("clip punctuate=false", r, fx, punctuate=False)),
    ("clip audio_start_from", 0.06, _start_from),
    ("stereo call dual_channel", 0.03, _call),
    ("404 URL", 0.03, lambda r, fx: Request("404 URL", {"audio_url": fx.missing}, 502, 1)),
    ("refused port", 0.03, lambda r, fx: Request("refused port", {"audio_url": fx.refused}, 502, 1)),
    ("HTML page", 0.03, lambda r, fx: Request("HTML page", {"audio_url": fx.html}, 422, 3)),
    ("random bytes .wav", 0.03, lambda r, fx: Request("random bytes .wav", {"audio_url": fx.noise}, 422, 3)),
    ("invalid fields", 0.05, _invalid),
    ("mono with dual_channel", 0.03,
     lambda r, fx: Request("mono with dual_channel", {"audio_url": fx.mono, "dual_channel": True}, 422, 11)),
]


def _counts(n: int) -> list[int]:
    """Exact share of each kind in n requests (largest remainder), so small runs keep the mix."""
    raw = [n * share for _, share, _ in KINDS]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
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


def _fixtures(root: Path, gen_base: str, eval_dir: Path, eval_base: str, clips: list[dataset.Clip],
              max_clip_s: float, seed: int) -> Fixtures:
    """Write the generated files into `root` (served at gen_base) and pick the short dev clips."""
    from engine.audio import decode_audio
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
    return Fixtures(short, calls, f"{gen_base}/mono.wav", f"{gen_base}/page.html", f"{gen_base}/noise.wav",
                    f"{gen_base}/no-such-file.wav", f"http://127.0.0.1:{free_port()}/x.wav")


# --- sending and checking -----------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None
    code: int | None
    latency: float
    problem: str | None  # None when the answer is what the request must get


def _send(url: str, req: Request, timeout: float) -> Outcome:
    start = time.perf_counter()
    try:
        if req.raw is not None:
            resp = requests.post(url, data=req.raw.encode(), timeout=timeout,
                                 headers={"Content-Type": "application/json"})
        else:
            resp = requests.post(url, json=req.body, timeout=timeout)
    except requests.RequestException as exc:
        return Outcome(None, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - start
    try:
        body = resp.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) and not req.good else None
    return Outcome(resp.status_code, code, latency, _check(req, resp, body))


def _check(req: Request, resp: requests.Response, body: object) -> str | None:
    if resp.status_code != req.status:
        return f"HTTP {resp.status_code}, expected {req.expected}: {resp.text[:200]}"
    if not isinstance(body, dict):
        return f"HTTP {resp.status_code} without a JSON object: {resp.text[:200]}"
    if not str(body.get("uid", "")).startswith("t_"):
        return "no uid"
    if req.good:
        if not isinstance(body.get("blob"), str) or not isinstance(body.get("words"), list):
            return "200 without blob or words"
        if req.body.get("dual_channel") and (body.get("stereo_decode") is not True
                                             or not isinstance(body.get("utterances"), list)):
            return "dual_channel answer is not a stereo decode with utterances"
    elif body.get("code") != req.code:
        return f"code {body.get('code')}, expected {req.code}: {str(body.get('description'))[:200]}"
    return None


# --- sampling -----------------------------------------------------------------------------------------


PROC_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "fds", "shm maps", "unlinked shm maps", "unlinked shm kB")


def _proc(pid: int, prefix: str) -> dict[str, int]:
    """Memory in kB from /proc/PID/status, open file descriptors, and how many of the daemon's
    /dev/shm blocks the process has mapped (in all, and of those already unlinked by their owner:
    their memory stays allocated until every process unmaps them)."""
    base = Path("/proc") / str(pid)
    try:
        text = (base / "status").read_text()
        maps = (base / "maps").read_text()
        fds = len(os.listdir(base / "fd"))
    except OSError:
        return {}
    values = {k: int(v) for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|RssShmem):\s+(\d+) kB", text, re.M)}
    mapped: dict[str, int] = {}  # block name (with " (deleted)" once unlinked) -> bytes mapped
    for line in maps.splitlines():
        if f"/dev/shm/{prefix}" in line:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            name = line.split("/dev/shm/", 1)[1]
            mapped[name] = mapped.get(name, 0) + end - start
    unlinked = [size for name, size in mapped.items() if name.endswith("(deleted)")]
    values.update({"fds": fds, "shm maps": len(mapped), "unlinked shm maps": len(unlinked),
                   "unlinked shm kB": sum(unlinked) // 1024})
    return values


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
    """Bytes used on /dev/shm: a block unlinked by its owner but still mapped elsewhere counts here
    (its memory is not freed) although it has no name left to list."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@dataclass
class Sample:
    t: float
    completed: int
    label: str
    rss: dict[str, dict[str, int]]  # role -> PROC_KEYS (memory in kB, then counts)
    shm_files: int
    shm_bytes: int  # allocated (st_blocks), what the blocks cost in memory
    shm_apparent: int  # st_size, the sizes the blocks were created with
    pcm_files: int  # per-request blocks, owned by the front for one request
    tmpfs_used: int = 0  # bytes in use on the whole /dev/shm filesystem (statvfs), unlinked-but-mapped blocks included


@dataclass
class Sampler:
    """Samples the daemon tree and its /dev/shm blocks on a thread; `mark` takes a labelled sample now."""

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
        self.prefix = f"ae{self.root}_"
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

    def _workers(self) -> dict[int, str]:
        try:
            return {w["pid"]: w["name"] for w in requests.get(self.daemon.url + "/health", timeout=5).json()["workers"]}
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return {}

    def _classify(self, pids: list[int]) -> None:
        """Name new pids by role; a role that comes back with a new pid is a restart."""
        new = [p for p in pids if p not in self.roles]
        if not new:
            return
        workers = self._workers() if any(p != self.root for p in new) else {}
        for pid in new:
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
            pids = tree_pids(self.root)
            self._classify(pids)
            rss = {}
            for pid in pids:
                role = self.roles.get(pid)
                if role is not None and self.pids.get(role) == pid:
                    values = _proc(pid, self.prefix)
                    if values:
                        rss[role] = values
            files = size = apparent = pcm = 0
            for path in SHM_DIR.iterdir() if SHM_DIR.is_dir() else []:
                if path.name.startswith(self.prefix):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    files, size, apparent = files + 1, size + st.st_blocks * 512, apparent + st.st_size
                    pcm += "_pcm_" in path.name
            sample = Sample(time.monotonic() - self.t0, self.completed, label, rss, files, size, apparent, pcm,
                            _tmpfs_used())
            self.samples.append(sample)
            return sample

    def labelled(self, label: str) -> Sample:
        return next(s for s in self.samples if s.label == label)


def _role_order(role: str) -> tuple[int, str]:
    rank = {"front": 0, "supervisor": 1, "resource tracker": 2}
    return (rank.get(role, 3 if role.startswith("inference") else 4), role)


def write_csv(path: Path, samples: list[Sample], roles: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_s", "completed", "label", "shm_files", "shm_bytes", "shm_apparent_bytes", "pcm_files",
                      "dev_shm_used_bytes"]
                     + [f"{r} {k}" + (" kB" if k.startswith(("Vm", "Rss")) else "") for r in roles for k in PROC_KEYS])
        for s in samples:
            out.writerow([f"{s.t:.2f}", s.completed, s.label, s.shm_files, s.shm_bytes, s.shm_apparent,
                          s.pcm_files, s.tmpfs_used] + [s.rss.get(r, {}).get(k, "") for r in roles for k in PROC_KEYS])


def read_csv(path: Path) -> tuple[list[Sample], list[str]]:
    """Samples and roles back from a time series written by write_csv, for analysis after a run."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    roles = list(dict.fromkeys(c.rsplit(" VmRSS", 1)[0] for c in (rows[0] if rows else {}) if c.endswith(" VmRSS kB")))
    samples = []
    for row in rows:
        rss = {}
        for r in roles:
            values = {k: int(row[f"{r} {k}" + (" kB" if k.startswith(("Vm", "Rss")) else "")])
                      for k in PROC_KEYS if row.get(f"{r} {k}" + (" kB" if k.startswith(("Vm", "Rss")) else ""))}
            if values:
                rss[r] = values
        samples.append(Sample(float(row["t_s"]), int(row["completed"]), row["label"], rss, int(row["shm_files"]),
                              int(row["shm_bytes"]), int(row["shm_apparent_bytes"]), int(row["pcm_files"]),
                              int(row.get("dev_shm_used_bytes") or 0)))
    return samples, roles


# --- the run ------------------------------------------------------------------------------------------


def run_clients(daemon: Daemon, reqs: list[Request], k: int, warmup: int, sampler: Sampler,
                timeout: float) -> tuple[list[Outcome], float]:
    """K threads take the next request in order; the warm-up sample is taken as its last one returns."""
    outcomes: list[Outcome | None] = [None] * len(reqs)
    lock = threading.Lock()
    next_index = iter(range(len(reqs)))
    mismatches = 0
    bar = tqdm(total=len(reqs), desc=f"soak K={k}", unit="req")
    url = daemon.url + "/transcribe/url"

    def client() -> None:
        nonlocal mismatches
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            outcome = _send(url, reqs[i], timeout)
            with lock:
                outcomes[i] = outcome
                sampler.completed += 1
                mismatches += outcome.problem is not None
                done = sampler.completed
                last = sampler.samples[-1]
                bar.set_postfix(mismatch=mismatches, rss_mb=sum(v.get("VmRSS", 0) for v in last.rss.values()) // 1024,
                                shm=last.shm_files, refresh=False)
                bar.update()
                if outcome.problem is not None:
                    tqdm.write(f"mismatch #{i} {reqs[i].kind}: {outcome.problem}")
            if done == warmup:
                sampler.mark("warm-up")

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(k)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    bar.close()
    return [o for o in outcomes if o is not None], wall


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
             "open fds warm-up → final | unlinked shm blocks still mapped, warm-up → final (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
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
                     f"{count(warm, role, 'unlinked shm maps')} → {count(end, role, 'unlinked shm maps')} "
                     f"({(mb(end, role, 'unlinked shm kB') or 0):.1f}) |")
    total = lambda s: sum(v.get("VmRSS", 0) for v in s.rss.values()) / 1024  # noqa: E731
    tw, te = total(warm), total(end)
    lines.append(f"| whole tree (sum) | | {total(start):.1f} | {tw:.1f} | {te:.1f} | "
                 f"{max(total(s) for s in sampler.samples):.1f} | {100 * (te - tw) / tw:+.2f} % | | | | | | |")
    return "\n".join(lines), over


def trajectory_table(samples: list[Sample], roles: list[str], n: int, steps: int = 10) -> str:
    """RSS of every process at each tenth of the run, to tell steady growth from a one-off step."""
    lines = ["| requests answered | " + " | ".join(f"{r} MB" for r in roles) + " | /dev/shm files |",
             "|---:|" + "---:|" * (len(roles) + 1)]
    for step in range(steps + 1):
        target = math.ceil(n * step / steps)
        sample = next((s for s in samples if s.completed >= target), None)
        if sample is None:
            continue
        cells = " | ".join(f"{sample.rss[r]['VmRSS'] / 1024:.1f}" if "VmRSS" in sample.rss.get(r, {}) else "–"
                           for r in roles)
        lines.append(f"| {sample.completed} | {cells} | {sample.shm_files} |")
    return "\n".join(lines)


def shm_table(sampler: Sampler, after: tuple[int, int, int]) -> str:
    """The daemon's named blocks, and the whole /dev/shm in use (which also counts blocks that are
    unlinked but still mapped by some process, and anything other users put there)."""
    start, end = sampler.labelled("start"), sampler.labelled("end")
    top = max(sampler.samples, key=lambda s: (s.shm_bytes, s.shm_files))
    mb = lambda b: f"{b / 2**20:.1f}"  # noqa: E731

    def row(name: str, s: Sample) -> str:
        return (f"| {name} | {s.shm_files} | {s.pcm_files} | {mb(s.shm_bytes)} | {mb(s.shm_apparent)} | "
                f"{mb(s.tmpfs_used)} |")

    return "\n".join([
        f"| /dev/shm | `{sampler.prefix}*` files | of which per-request `_pcm_` | MB allocated | MB apparent | "
        "whole /dev/shm used MB (all users) |",
        "|---|---:|---:|---:|---:|---:|",
        row("start (idle, after startup)", start),
        f"| max during the run | {max(s.shm_files for s in sampler.samples)} | "
        f"{max(s.pcm_files for s in sampler.samples)} | {mb(top.shm_bytes)} | "
        f"{mb(max(s.shm_apparent for s in sampler.samples))} | {mb(max(s.tmpfs_used for s in sampler.samples))} |",
        row("end of the run (daemon idle)", end),
        f"| after SIGTERM shutdown | {after[0]} | – | {mb(after[1])} | – | {mb(after[2])} |",
    ])


def requests_table(reqs: list[Request], outcomes: list[Outcome]) -> str:
    lines = ["| request kind | expected | sent | mismatches | p50 s | p95 s | max s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for req, out in zip(reqs, outcomes):
        groups.setdefault((req.kind, req.expected), []).append(out)
    order = {name: i for i, (name, _, _) in enumerate(KINDS)}
    for (kind, expected), outs in sorted(groups.items(), key=lambda g: (order.get(g[0][0].split(":")[0], 9), g[0])):
        lat = [o.latency for o in outs]
        lines.append(f"| {kind} | {expected} | {len(outs)} | {sum(o.problem is not None for o in outs)} | "
                     f"{_pct(lat, 50)} | {_pct(lat, 95)} | {max(lat):.2f} |")
    return "\n".join(lines)


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
           "MAX_TRANSCRIPTS_PARALLEL": str(args.parallel), "REJECT_OVER_PARALLEL": "False"}
    git = _git_state()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, \
            audio_server(Path(tmp)) as gen_base, audio_server(args.eval_dir) as eval_base:
        fx = _fixtures(Path(tmp), gen_base, args.eval_dir, eval_base, clips, args.max_clip_seconds, args.seed)
        reqs = plan(args.requests, warmup, fx, args.seed, args.parallel)
        with running_daemon(**env) as daemon:
            sampler = Sampler(daemon, args.interval).start()
            cpu = (tree_cpu_seconds(daemon.process.pid), measure.own_cpu_seconds(), machine_cpu_seconds())
            outcomes, wall = run_clients(daemon, reqs, args.parallel, warmup, sampler, args.timeout)
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
            left = [p for p in SHM_DIR.iterdir() if p.name.startswith(sampler.prefix)]
            after = (len(left), sum(p.stat().st_blocks * 512 for p in left if p.exists()), _tmpfs_used())
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
    verdicts = [
        f"every process within {TOLERANCE_PCT:.0f} % of its post-warm-up RSS at the end: "
        + ("yes" if not over else f"**no** ({', '.join(over)})"),
        f"per-request shared memory back to 0 blocks at the end of the run: {'yes' if end.pcm_files == 0 else '**no**'}"
        f" ({end.pcm_files}); every `{sampler.prefix}*` block gone after shutdown: "
        + ("yes" if after[0] == 0 else f"**no** ({after[0]} left)"),
        "blocks unlinked by their owner but still mapped by a daemon process at the end (their memory is not "
        "freed; 0 expected): " + (", ".join(f"{r} {end.rss[r]['unlinked shm maps']} ({end.rss[r]['unlinked shm kB'] / 1024:.1f} MB)"
                                             for r in roles if end.rss.get(r, {}).get("unlinked shm maps"))
                                   or "none"),
        f"answers as documented: {len(outcomes) - len(problems)}/{len(outcomes)}, mismatches {len(problems)}",
    ]
    notes = [
        f"{args.requests} requests ({len(good)} good, {len(bad)} bad), K={args.parallel} client threads, daemon env "
        f"{env}, defaults otherwise; daemon startup to /health 200: {daemon.startup_s:.1f} s",
        f"good clips: the {len(fx.clips)} dev.tsv clips of {args.max_clip_seconds:g} s or less (mean "
        f"{np.mean([s for _, s in fx.clips]):.1f} s) from {args.eval_dir}; stereo calls: {len(fx.calls)} generated "
        f"two-party calls (eSpeak NG); request order seeded ({args.seed}), every kind at least once in the warm-up "
        f"when it has room",
        f"warm-up = the first {warmup} requests ({args.warmup:g} %); 'after warm-up' is the sample taken as the "
        f"{warmup}th answer came back, 'final' one taken {args.settle:g} s after the last answer; RSS = VmRSS from "
        f"/proc/PID/status sampled every {args.interval:g} s ({len(sampler.samples)} samples); anon/shmem Δ = RssAnon "
        f"and RssShmem change over the same span; trend = least-squares slope over the samples after warm-up",
        f"wall {wall:.1f} s, {len(outcomes) / wall:.2f} requests/s; latency p50/p95: all {_pct(every, 50)}/"
        f"{_pct(every, 95)} s, good {_pct(good, 50)}/{_pct(good, 95)} s, bad {_pct(bad, 50)}/{_pct(bad, 95)} s",
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
