"""`steps`: what crosses from the inference process to a decoder per hypothesis row per step, and what the
decoder processes spend per decoded token, this checkout against a baseline checkout, same load, one run.

- Bytes per row: the dev clips transcribed in-process (the daemon's workers reduce with the same
  StepReducer), every reduced step's bytes over its rows; the baseline's row was a whole logits row
  (n_vocab float32).
- Decoder CPU per token: each daemon (--baseline's checkout, then this one, alternating --rounds
  times) gets a warm-up, then the same clips through /transcribe/url from K clients. The decoder
  processes' CPU seconds (utime + stime from /proc, their whole life minus what the warm-up left)
  are divided by the tokens of the texts they returned. Wall time, the inference process's CPU and
  WER are given beside it.
- First requests: right after /health 200 (before the warm-up), 12 clips from 4 clients; the same 12
  again after the measured load. The p95 latencies of both say whether a start's one-time costs
  still fall on the first requests.
"""

from __future__ import annotations

import argparse
import time
from concurrent import futures
from pathlib import Path

import numpy as np
import requests

from bench import dataset, measure, report
from bench.daemon_proc import audio_server, file_url, running_daemon
from bench.scale import _load
from bench.wer import score


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks (USER_HZ 100)


def _bytes_per_row(clips: list[dataset.Clip], model: str, beam: int) -> tuple[float, int, int]:
    """(mean bytes per reduced row, steps, rows) over the clips, in-process."""
    from engine.transcriber import Transcriber

    transcriber = Transcriber.load(model, beam)
    reduce = transcriber.reducer.reduce
    counted = {"bytes": 0, "rows": 0, "steps": 0}

    def counting(logits, rules):
        out = reduce(logits, rules)
        counted["steps"] += 1
        counted["rows"] += sum(len(a) for a in out)
        counted["bytes"] += sum(a.nbytes for a in out)
        return out

    transcriber.reducer.reduce = counting
    transcriber.transcribe_many([dataset.load_audio(c) for c in clips])
    return counted["bytes"] / counted["rows"], counted["steps"], counted["rows"]


def _p95(api_url: str, urls: list[str]) -> float:
    """p95 latency of `urls` sent from 4 clients."""
    def ask(url: str) -> float:
        started = time.monotonic()
        requests.post(f"{api_url}/transcribe/url", json={"audio_url": url}, timeout=600).raise_for_status()
        return time.monotonic() - started

    with futures.ThreadPoolExecutor(4) as pool:
        return float(np.percentile(list(pool.map(ask, urls)), 95))


def _round(source: Path, args: argparse.Namespace, urls: list[str], tokenizer) -> dict:
    with running_daemon(source, ASYNC_ENGINE_MODEL=args.model, DECODER_BEAM_SIZE=str(args.beam),
                        REJECT_OVER_PARALLEL="False") as daemon:
        first = _p95(daemon.url, urls[-12:])
        _load(daemon.url, urls[:8], 4, 600)  # warm-up
        workers = requests.get(daemon.url + "/health", timeout=10).json()["workers"]
        decoders = [w["pid"] for w in workers if w["kind"] == "decoder"]
        inference = [w["pid"] for w in workers if w["kind"] == "inference"]
        before = [sum(map(_cpu_seconds, pids)) for pids in (decoders, inference)]
        wall, texts = _load(daemon.url, urls, args.concurrency, 600)
        after = [sum(map(_cpu_seconds, pids)) for pids in (decoders, inference)]
        later = _p95(daemon.url, urls[-12:])
    tokens = sum(len(tokenizer.encode(" " + t.strip())) for t in texts)
    return {"wall": wall, "decoder": after[0] - before[0], "inference": after[1] - before[1], "tokens": tokens,
            "texts": texts, "first": first, "later": later}


def steps(args: argparse.Namespace) -> None:
    from engine.model.store import model_path
    from engine.settings import EngineSettings
    from engine.text.tokenizer import WhisperTokenizer

    busy = measure.busy_fraction()
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    settings = EngineSettings.from_env()
    tokenizer = WhisperTokenizer(model_path(settings.models_dir, args.model) / "tokenizer.json", 51864)
    row_bytes, n_steps, n_rows = _bytes_per_row(clips, args.model, args.beam)
    print(f"bytes per row per step: {row_bytes:.1f} over {n_rows} rows, {n_steps} steps", flush=True)
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with audio_server(args.eval_dir) as base:
        urls = [file_url(base, args.eval_dir, c.path) for c in clips]
        for _ in range(args.rounds):
            for name, source in (("baseline", args.baseline), ("this", dataset.REPO_ROOT)):
                run = _round(source, args, urls, tokenizer)
                runs[name].append(run)
                print(f"{name}: wall {run['wall']:.1f} s, decoders {run['decoder']:.2f} CPU s, inference "
                      f"{run['inference']:.2f} CPU s, {run['tokens']} tokens", flush=True)
    references = [c.reference for c in clips]
    rows = ["| checkout | round | wall s | decoder CPU s | decoder CPU ms per token | inference CPU s | WER % | "
            "p95 s, first 12 after start | p95 s, same 12 later |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    per_token = {}
    for name, name_runs in runs.items():
        for i, run in enumerate(name_runs, 1):
            ms = 1000 * run["decoder"] / run["tokens"]
            per_token.setdefault(name, []).append(ms)
            rows.append(f"| {name} | {i} | {run['wall']:.1f} | {run['decoder']:.2f} | {ms:.3f} | "
                        f"{run['inference']:.2f} | {100 * score(references, run['texts']).overall.wer:.2f} | "
                        f"{run['first']:.2f} | {run['later']:.2f} |")
    ratios = [b / t for b, t in zip(per_token["baseline"], per_token["this"])]
    notes = [f"eval: {args.eval_dir} ({len(clips)} dev clips), K={args.concurrency} clients, /transcribe/url; "
             f"daemons alternate, {args.rounds} rounds, one warm-up of 8 clips each",
             f"baseline: the checkout at {args.baseline}; this: {dataset.REPO_ROOT}",
             f"model {args.model}, beam {args.beam}, compute type and the rest the daemon's defaults",
             f"bytes per hypothesis row per step, inference -> decoder: {row_bytes:.1f} (this, measured over "
             f"{n_rows} rows in {n_steps} in-process steps of the same clips) against 207,456 (a whole float32 "
             f"logits row, the baseline)",
             "decoder CPU per token, baseline / this: " + ", ".join(f"{r:.1f}x" for r in ratios),
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    text = report.dated_section(f"{args.model} beam {args.beam}, what crosses per step and decoder CPU per token",
                                notes, "\n".join(rows))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
