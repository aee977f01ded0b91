"""`scale`: throughput through one API node with one worker node, then with two, in one run.

The cluster is bench/cluster.py's: a redis-server of its own, an API node (SKIP_DECODER=1) and
worker nodes that reach each other only through Redis (each in a mount namespace with a private
/dev/shm), every worker node pinned to a core of its own with taskset, as if on a host of its
own. The same load runs against one worker node and then against two: every dev clip sent once
by --clients concurrent clients through POST /transcribe/url (no more clients than one node's
MAX_TRANSCRIPTS_PARALLEL, so nothing is refused; the API node places each request on the node with
the most free slots). Throughput = audio seconds / wall seconds; the ratio
of the two phases is the figure (goal >= 1.8x), WER beside each. The API node's memory (RSS, PSS)
is read at the end, with its peak during the runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import os
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench import dataset, measure, report
from bench.cluster import cluster, missing_tools, ready_nodes, wait_until
from bench.daemon_proc import audio_server, file_url
from bench.proctree import tree_memory_mb
from bench.wer import score


def _load(api_url: str, urls: list[str], clients: int, timeout: float) -> tuple[float, list[str]]:
    """Every URL once through `clients` concurrent clients; returns (wall seconds, texts in order)."""
    def ask(url: str) -> str:
        answer = requests.post(f"{api_url}/transcribe/url", json={"audio_url": url}, timeout=timeout)
        answer.raise_for_status()
        return answer.json()["blob"]

    started = time.monotonic()
    with futures.ThreadPoolExecutor(clients) as pool:
        texts = list(pool.map(ask, urls))
    return time.monotonic() - started, texts


class _PeakMemory:
    """The API node's RSS and PSS, sampled every half second on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = (0.0, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss, pss = tree_memory_mb(self.pid)
            self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return self.peak


def scale(args: argparse.Namespace) -> None:
    why_not = missing_tools()
    if why_not:
        raise SystemExit(f"bench scale cannot run here: {why_not}")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench scale pins each worker node to a core of its own: it needs 2 cores")
    busy = measure.busy_fraction()
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    audio_seconds = sum(len(dataset.load_audio(c)) for c in clips) / 16000
    if args.clients > args.parallel:
        raise SystemExit("--clients must not exceed --parallel: one worker node must admit every client (no 423)")
    env = {"ASYNC_ENGINE_MODEL": args.model, "DECODER_BEAM_SIZE": str(args.beam), "ASYNC_ENGINE_DECODERS": "1", "MAX_TRANSCRIPTS_PARALLEL": str(args.parallel), "LOGLEVEL": "WARNING"}
    rows, texts_by_phase = [], []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, audio_server(args.eval_dir) as base, \
            cluster(Path(tmp), **env) as made:
        api = made.api_node()
        memory = _PeakMemory(api.process.pid)
        urls = [file_url(base, args.eval_dir, c.path) for c in clips]
        for count in (1, 2):
            made.worker_node(cpus=str(cores[count - 1]))
            wait_until(lambda: ready_nodes(api) == count, 180)
            _load(api.url, urls[:args.clients], args.clients, args.timeout)  # warm-up of the new node(s)
            wall, texts = _load(api.url, urls, args.clients, args.timeout)
            texts_by_phase.append(texts)
            wer = 100 * score([c.reference for c in clips], texts, [c.source for c in clips]).overall.wer
            rows.append((count, wall, audio_seconds / wall, wer))
            print(f"{count} worker node(s): {wall:.1f} s wall, {audio_seconds / wall:.2f}x real time, WER {wer:.2f} %",
                  flush=True)
        peak_rss, peak_pss = memory.stop()
        rss, pss = tree_memory_mb(api.process.pid)
    ratio = rows[1][2] / rows[0][2]
    lines = ["| worker nodes | wall s | throughput (x real time) | vs one node | WER % |", "|---|---|---|---|---|"]
    lines += [f"| {count} | {wall:.1f} | {speed:.2f} | {speed / rows[0][2]:.2f}x | {wer:.2f} |"
              for count, wall, speed, wer in rows]
    same = sum(a == b for a, b in zip(*texts_by_phase))
    notes = [f"eval: {args.eval_dir} ({len(clips)} clips, {audio_seconds:.0f} s of audio), sent once per phase by "
             f"{args.clients} concurrent clients to POST /transcribe/url on the API node; one warm-up round of "
             f"{args.clients} clips after each node joins, not counted",
             f"worker nodes: model {args.model}, beam {args.beam}, MAX_TRANSCRIPTS_PARALLEL={args.parallel}, one "
             "decoder process, each pinned to a core of its own (taskset) in a mount namespace with a private "
             "/dev/shm; the API node places each request on the node with the most free slots",
             f"two nodes vs one: {ratio:.2f}x throughput (goal >= 1.8x); the same text for {same}/{len(clips)} clips",
             f"API node (SKIP_DECODER=1, no model): {rss:.0f} MB RSS, {pss:.0f} MB PSS at the end; peak during the "
             f"runs {peak_rss:.0f} MB RSS, {peak_pss:.0f} MB PSS",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    text = report.dated_section(f"{args.model} beam {args.beam}, scale-out: one and two worker nodes", notes,
                                "\n".join(lines))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
