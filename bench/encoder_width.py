"""`encoder-width`: the engine in-process on the dev clips with a window's padding set to each value.

A window shorter than 30 s is encoded at its own length plus engine.model.encoder_width.PADDING_FRAMES of
padding (docs/DESIGN.md "Encoder width"). This sets that constant for the run (in this process only)
and transcribes every clip in one transcribe_many call per value, so throughput and WER sit side by
side; "whole" encodes every window at 30 s as openai/whisper does.
"""

from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from bench import dataset, report
from bench.wer import score


def encoder_width(args: argparse.Namespace) -> None:
    import engine.model.encoder_width
    from bench.engine_runner import EngineRunner

    clips = dataset.load_manifest(args.eval_dir, args.limit)
    audios = [dataset.load_audio(c) for c in tqdm(clips, desc="decoding", unit="clip")]
    audio_s = sum(len(a) for a in audios) / dataset.SAMPLE_RATE
    runner = EngineRunner(args.model, args.beam)
    runner.transcribe_many(audios[:2])  # warm-up
    rows = ["| padding | audio s / wall s | wall s | WER % |", "|---|---:|---:|---:|"]
    kept = engine.model.encoder_width.PADDING_FRAMES
    try:
        for value in args.padding:
            engine.model.encoder_width.PADDING_FRAMES = 3000 if value == "whole" else int(value)
            started = time.monotonic()
            texts = runner.transcribe_many(audios)
            wall = time.monotonic() - started
            wer = score([c.reference for c in clips], texts, [c.source for c in clips]).overall.wer
            label = "whole 30 s windows" if value == "whole" else f"{int(value) / 100:g} s"
            rows.append(f"| {label} | {audio_s / wall:.2f} | {wall:.1f} | {100 * wer:.2f} |")
            print(rows[-1], flush=True)
    finally:
        engine.model.encoder_width.PADDING_FRAMES = kept
    notes = [f"eval: {args.eval_dir} ({len(clips)} clips, {audio_s:.1f} s), engine in-process on the CPU, "
             f"model {args.model}, beam {args.beam}, one transcribe_many call per value; padding in mel "
             f"frames of 10 ms, widths rounded up to {engine.model.encoder_width.WIDTH_STEP_FRAMES / 100:g} s; "
             f"serving uses {kept / 100:g} s"]
    text = report.dated_section(f"{args.model} beam {args.beam}, encoder width", notes, "\n".join(rows))
    print(text)
    report.append(args.results, text)
