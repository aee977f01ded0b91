"""`load` and `http-wer`: the daemon under K concurrent clients against faster-whisper.

The daemon is measured as customers use it: a real `serve` process tree that
downloads each clip over loopback HTTP and decodes it itself. faster-whisper gets
pre-decoded audio (it has no server), so its numbers leave out download and decode.
The engine in-process (Transcriber.transcribe_many) on the same clips checks that
HTTP serving does not change the transcripts.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import dataset, measure, report
from bench.daemon_proc import Daemon, audio_server, file_url, running_daemon
from bench.pool import PoolResult, run_pool
from bench.proctree import TreeSampler, machine_cpu_seconds, tree_cpu_seconds
from bench.wer import WerReport, normalise, score

DAEMON = "daemon (HTTP)"


@dataclass
class LoadRun:
    """One system at one concurrency over the clips."""

    system: str
    concurrency: int
    pool: PoolResult
    audio_s: float
    wer: WerReport
    peak_rss_mb: float | None
    peak_pss_mb: float | None = None

    @property
    def speed(self) -> float:
        """Throughput: audio seconds per wall second."""
        return self.audio_s / self.pool.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.pool.latencies, q))


def _texts(pool: PoolResult) -> list[str]:
    """Failed items score as empty transcripts (all deletions) and are counted as errors."""
    return [t or "" for t in pool.texts]


def _daemon_runs(args: argparse.Namespace, clips: list[dataset.Clip], audio_s: float,
                 notes: list[str], device: str, long: dataset.LongFile | None = None) -> list[LoadRun]:
    """Start the daemon once, warm it up with one request, then one pass per concurrency."""
    env = {"ASYNC_ENGINE_MODEL": args.model, "DECODER_BEAM_SIZE": str(args.beam),
           "MAX_TRANSCRIPTS_PARALLEL": str(max(args.concurrency)), "REJECT_OVER_PARALLEL": "False",
           **({"ASYNC_ENGINE_DEVICES": "cuda:0", "ASYNC_ENGINE_CUDA_GRAPHS": args.cuda_graphs} if device == "cuda"
              else {})}  # float16 on a card by default
    runs = []
    with audio_server(args.eval_dir) as base, running_daemon(**env) as daemon:
        notes.append(f"daemon startup to /health 200: {daemon.startup_s:.1f} s; env {env}, "
                     f"defaults otherwise")
        urls = [file_url(base, args.eval_dir, c.path) for c in clips]
        sampler = TreeSampler(daemon.process.pid).start()
        idle_rss = sampler.last_rss_mb or 0.0
        _post(daemon, urls[0])
        for k in args.concurrency:
            sampler.reset_peaks()
            print(f"{DAEMON} K={k}: {len(clips)} clips ...", flush=True)
            cpu = (tree_cpu_seconds(daemon.process.pid), measure.own_cpu_seconds(),
                   machine_cpu_seconds())
            pool = run_pool(k, len(clips), lambda i: _post(daemon, urls[i]))
            notes.append(_cpu_note(k, pool.wall_s, tree_cpu_seconds(daemon.process.pid) - cpu[0],
                                   measure.own_cpu_seconds() - cpu[1], machine_cpu_seconds() - cpu[2]))
            sampler.sample()
            runs.append(LoadRun(DAEMON, k, pool, audio_s,
                                score([c.reference for c in clips], _texts(pool),
                                      [c.source for c in clips]),
                                sampler.peak_rss_mb, sampler.peak_pss_mb))
            notes.append(f"daemon tree RSS after K={k}: {sampler.last_rss_mb:.0f} MB "
                         f"(idle after startup {idle_rss:.0f} MB)")
            _progress(runs[-1])
        sampler.stop()
        if long is not None:
            notes.append(_long_file(args, daemon, long, device))
    return runs


def _long_file(args: argparse.Namespace, daemon: Daemon, long: dataset.LongFile, device: str) -> str:
    """One request for the long file (a WAV served over loopback), then faster-whisper on its samples."""
    import soundfile as sf

    from bench.peers import FasterWhisperRunner

    with tempfile.TemporaryDirectory(prefix="bench-long-") as directory:
        path = Path(directory, "long.wav")
        # float samples: the daemon decodes exactly what faster-whisper is given (16-bit rounding alone
        # moved tiny.en's WER on this file from 6.81 to 7.69 % in-process)
        sf.write(path, long.audio, dataset.SAMPLE_RATE, subtype="FLOAT")
        with audio_server(Path(directory)) as base:
            print(f"{DAEMON}: one {long.duration:.0f} s file ...", flush=True)
            started = time.perf_counter()
            text = _post(daemon, file_url(base, Path(directory), path))
            daemon_s = time.perf_counter() - started
    runner = FasterWhisperRunner(args.model, args.beam, num_workers=1, device=device)
    print(f"{report.BASELINE}: one {long.duration:.0f} s file ...", flush=True)
    started = time.perf_counter()
    fw_text = runner.transcribe(long.audio)
    fw_s = time.perf_counter() - started
    wer = [100 * score([long.reference], [t]).overall.wer for t in (text, fw_text)]
    return (f"one {long.duration:.0f} s file ({long.clip_count} dev clips joined by 1 s silences), one request: "
            f"{DAEMON} {daemon_s:.1f} s ({long.duration / daemon_s:.2f}x real time, WER {wer[0]:.2f} %), "
            f"faster-whisper {fw_s:.1f} s ({long.duration / fw_s:.2f}x, WER {wer[1]:.2f} %): "
            f"{fw_s / daemon_s:.2f}x faster-whisper's throughput")


def _cpu_note(k: int, wall: float, tree: float, own: float, machine: float) -> str:
    """Where the machine's CPU went during a pass; "others" large means the timings are disturbed."""
    others = max(0.0, machine - tree - own)
    return (f"CPU during daemon K={k} ({wall:.1f} s wall, {os.cpu_count()} cores): daemon tree "
            f"{tree:.1f} s, benchmark process {own:.1f} s, other processes {others:.1f} s")


def _post(daemon: Daemon, url: str) -> str:
    response = daemon.transcribe({"audio_url": url})
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()["blob"]


def _fw_runs(args: argparse.Namespace, clips: list[dataset.Clip], audios: list[np.ndarray],
             audio_s: float, device: str) -> list[LoadRun]:
    """One WhisperModel(num_workers=K) per concurrency, shared by K threads."""
    from bench.peers import FasterWhisperRunner

    runs = []
    for k in args.concurrency:
        gc.collect()
        measure.reset_peak_rss()
        runner = FasterWhisperRunner(args.model, args.beam, num_workers=k, device=device)
        runner.transcribe(audios[0])
        print(f"{report.BASELINE} K={k}: {len(clips)} clips ...", flush=True)
        pool = run_pool(k, len(clips), lambda i, fw=runner: fw.transcribe(audios[i]))
        runs.append(LoadRun(report.BASELINE, k, pool, audio_s,
                            score([c.reference for c in clips], _texts(pool),
                                  [c.source for c in clips]),
                            measure.peak_rss_mb()))
        _progress(runs[-1])
        del runner
    return runs


def _in_process(args: argparse.Namespace, audios: list[np.ndarray]) -> list[str]:
    from bench.engine_runner import EngineRunner

    print(f"engine in-process: {len(audios)} clips in one transcribe_many call ...", flush=True)
    return EngineRunner(args.model, args.beam).transcribe_many(audios)


def _progress(run: LoadRun) -> None:
    print(f"  {run.system} K={run.concurrency}: {run.pool.wall_s:.1f} s wall, {run.speed:.2f}x, "
          f"WER {100 * run.wer.overall.wer:.2f} %, {len(run.pool.errors)} errors", flush=True)


def table(runs: list[LoadRun]) -> str:
    """One row per system and concurrency; throughput ratio against faster-whisper at the same K."""
    base = {r.concurrency: r for r in runs if r.system == report.BASELINE}
    lines = ["| system | K | clips | errors | audio s | wall s | audio s / wall s | vs FW | "
             "p50 s | p95 s | max s | WER % | peak RSS MB | peak PSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        b = base.get(r.concurrency)
        ratio = f"{r.speed / b.speed:.2f}x" if b else "–"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "–"
        pss = f"{r.peak_pss_mb:.0f}" if r.peak_pss_mb is not None else "–"
        lines.append(f"| {r.system} | {r.concurrency} | {len(r.pool.texts)} | {len(r.pool.errors)} | "
                     f"{r.audio_s:.1f} | {r.pool.wall_s:.1f} | {r.speed:.2f} | {ratio} | "
                     f"{r.percentile(50):.2f} | {r.percentile(95):.2f} | "
                     f"{max(r.pool.latencies):.2f} | {100 * r.wer.overall.wer:.2f} | {rss} | {pss} |")
    return "\n".join(lines)


def _outliers(run: LoadRun, clips: list[dataset.Clip], audios: list[np.ndarray]) -> str:
    """The three slowest requests relative to their audio, to spot stalls."""
    ratios = [(lat / (len(a) / dataset.SAMPLE_RATE), lat, c, len(a) / dataset.SAMPLE_RATE)
              for lat, c, a in zip(run.pool.latencies, clips, audios)]
    worst = sorted(ratios, key=lambda x: x[0], reverse=True)[:3]
    cells = ", ".join(f"{c.path.name} {lat:.1f} s for {dur:.1f} s audio" for _, lat, c, dur in worst)
    return f"slowest vs length, {run.system} K={run.concurrency}: {cells}"


def _compare(daemon_runs: list[LoadRun], engine_hyps: list[str], clips: list[dataset.Clip]) -> list[str]:
    """HTTP vs in-process: corpus WER of each, and how many clips' texts differ."""
    engine = score([c.reference for c in clips], engine_hyps, [c.source for c in clips])
    notes = [f"engine in-process (transcribe_many, same model and beam): WER "
             f"{100 * engine.overall.wer:.2f} % ({engine.overall.errors} errors / "
             f"{engine.overall.words} words)"]
    for r in daemon_runs:
        texts = _texts(r.pool)
        raw = sum(a.split() != b.split() for a, b in zip(texts, engine_hyps))
        norm = sum(normalise(a) != normalise(b) for a, b in zip(texts, engine_hyps))
        notes.append(f"daemon K={r.concurrency} vs in-process: WER {100 * r.wer.overall.wer:.2f} % "
                     f"vs {100 * engine.overall.wer:.2f} %; texts differ on {raw} clips "
                     f"({norm} after Whisper normalisation)")
    return notes


def _save(name: str, clips: list[dataset.Clip], args: argparse.Namespace, texts: list[str]) -> None:
    """Per-clip texts in bench/cache/hyps/ (gitignored) for clip-by-clip diffs."""
    names = [str(c.path.relative_to(args.eval_dir)) for c in clips]
    report.write_hypotheses(report.HYPOTHESES / f"{name}.tsv", names, [c.reference for c in clips], texts)


def load(args: argparse.Namespace, with_fw: bool = True, device: str = "cpu",
         extra_notes: list[str] | None = None) -> None:
    """Daemon at each concurrency, then faster-whisper (if with_fw), then (on the CPU) the engine in-process.

    device "cuda": the daemon on card 0 (float16, its default there) against faster-whisper float16 on
    the same card (`python -m bench gpu`)."""
    busy = measure.busy_fraction()
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    audios = [dataset.load_audio(c) for c in tqdm(clips, desc="decoding", unit="clip")]
    audio_s = sum(len(a) for a in audios) / dataset.SAMPLE_RATE
    notes = [f"eval: {args.eval_dir} ({len(clips)} clips"
             f"{f', first {args.limit} of dev.tsv' if args.limit else ''}, {audio_s:.1f} s)",
             f"model {args.model}, beam {args.beam}; K client threads share one work queue, "
             f"each clip requested once; latency = request sent to transcript received",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start",
             *(extra_notes or [])]
    long = None
    if getattr(args, "long_minutes", 0) > 0:
        every = dataset.load_manifest(args.eval_dir)
        long = dataset.build_long_file(every, [dataset.load_audio(c) for c in every], args.long_minutes)
    runs = _daemon_runs(args, clips, audio_s, notes, device, long)
    for r in runs:
        _save(f"daemon-K{r.concurrency}", clips, args, _texts(r.pool))
    if with_fw:
        runs += _fw_runs(args, clips, audios, audio_s, device)
        kind = "int8, cpu_threads=2" if device == "cpu" else "float16 on cuda:0 (the daemon's card)"
        notes.append(f"faster-whisper: {kind}, beam as above, one "
                     "WhisperModel(num_workers=K) shared by the K threads; it is given pre-decoded "
                     "audio while the daemon downloads (loopback HTTP) and decodes every clip, so "
                     "its wall time leaves out work the daemon's includes")
    if device == "cpu":  # the in-process check runs on the CPU; on a GPU host it would only measure that
        engine_hyps = _in_process(args, audios)
        _save("engine-in-process", clips, args, engine_hyps)
        notes += _compare([r for r in runs if r.system == DAEMON], engine_hyps, clips)
    notes.append("peak RSS MB: daemon = VmRSS summed over its process tree, sampled every 0.5 s "
                 "(shared pages counted once per process; PSS splits them); faster-whisper = "
                 "VmHWM of the benchmark process (model plus decoded audio)")
    notes += [_outliers(r, clips, audios) for r in runs]
    for r in runs:
        notes += [f"error, {r.system} K={r.concurrency}, {clips[i].path.name}: {e}"
                  for i, e in sorted(r.pool.errors.items())]
    title = f"{args.model} beam {args.beam}, " + ("load" if with_fw else "HTTP vs in-process WER") + \
        (" on cuda:0 (float16)" if device == "cuda" else "")
    text = report.dated_section(title, notes, table(runs))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
