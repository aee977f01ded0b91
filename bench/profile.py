"""`profile`: where the daemon's time goes, per process, under K concurrent clients (py-spy).

Starts the daemon with defaults, warms it up, then records every process of the tree (front,
supervisor, each inference and decoder process) with py-spy for --seconds while K clients send the
dev clips through /transcribe/url. py-spy counts only samples where a thread is on the CPU, so a
process's sample count over (seconds x rate) is how busy it was; for each process the table gives
that, then the functions holding most of its samples (inclusive: the function and what it calls;
self: the function's own lines). py-spy slows what it samples a little: read the shares, not the
wall time. Needs py-spy (pip install py-spy) and the right to ptrace the daemon (root, or
kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench import dataset, measure, report
from bench.daemon_proc import audio_server, file_url, running_daemon
from bench.scale import _load

_RATE = 50  # samples per second
_SKIP = ("<module>", "spawn_main", "_main", "_bootstrap", "BaseProcess.run", "Thread.run", "_process", "entry.py",
         "handler_thread", "service", "execute", "translate_proxy_headers", "App.__call__", "decorate_context")


def _tree(front: int, workers: dict[int, str]) -> dict[int, str]:
    children = subprocess.run(["pgrep", "-P", str(front)], capture_output=True, text=True).stdout.split()
    named = {front: "front", **workers}
    for pid in map(int, children):
        if pid not in named and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            named[pid] = "supervisor"
    return named


def _summary(raw: Path, seconds: float, top: int) -> tuple[float, list[str]]:
    """(busy fraction, 'share% function' lines) from py-spy's raw (collapsed stacks) output."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if not any(skip in frame for skip in _SKIP):
                inclusive[frame] += int(count)
    if not total:
        return 0.0, []
    lines = [f"{100 * n / total:.0f}% {name}" for name, n in inclusive.most_common(top)]
    lines += [f"self {100 * n / total:.0f}% {name}" for name, n in own.most_common(3)]
    return total / (seconds * _RATE), lines


def profile(args: argparse.Namespace) -> None:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when its bin/ is not on PATH
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("bench profile needs py-spy: pip install py-spy")
    busy = measure.busy_fraction()
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    rows = ["| K | process | busy (on CPU) | where its samples are (inclusive, then self) |", "|---|---|---|---|"]
    card = {"ASYNC_ENGINE_DEVICES": "cuda:0"} if args.device == "cuda" else {}
    with audio_server(args.eval_dir) as base, running_daemon(ASYNC_ENGINE_MODEL=args.model,
                                                             DECODER_BEAM_SIZE=str(args.beam), REJECT_OVER_PARALLEL="False",
                                                             **card) as daemon, \
            tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        urls = [file_url(base, args.eval_dir, c.path) for c in clips]
        _load(daemon.url, urls[:8], 8, 600)  # warm-up
        workers = {w["pid"]: w["name"] for w in requests.get(daemon.url + "/health", timeout=10).json()["workers"]}
        for k in args.concurrency:
            tree = _tree(daemon.process.pid, workers)
            spies = [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(round(args.seconds)), "-r", str(_RATE),
                                       "--format", "raw", "-o", f"{tmp}/{k}-{name}.txt", "--nonblocking"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for pid, name in tree.items()]
            time.sleep(1.0)  # py-spy attached
            _load(daemon.url, urls * max(1, round(args.seconds * 2 / len(urls))), k, 600)  # outlasts the recording
            for spy_process in spies:
                spy_process.wait(args.seconds + 60)
            for name in sorted(tree.values(), key=lambda n: (n != "front", n)):
                fraction, lines = _summary(Path(f"{tmp}/{k}-{name}.txt"), args.seconds, args.top)
                rows.append(f"| {k} | {name} | {100 * fraction:.0f} % | {'; '.join(lines)} |")
                print(rows[-1], flush=True)
    notes = [f"eval: {args.eval_dir} ({len(clips)} clips, sent again and again by K clients while py-spy records "
             f"{args.seconds:g} s at {_RATE} Hz, non-blocking, each process of the tree)",
             f"daemon: model {args.model}, beam {args.beam}, on {args.device}, defaults otherwise; one warm-up round "
             "first",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    text = report.dated_section(f"{args.model} beam {args.beam}, profile of the daemon's processes"
                                + (" on cuda:0" if args.device == "cuda" else ""), notes,
                                "\n".join(rows))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
