"""`prompt-cost`: what a long prompt costs a window's steps, and what prefilling it once per window saves.

Measured on the runtime directly (engine/model/runtime.py, the one the daemon's inference process
drives), with W dev windows encoded and a beam of B rows each:

- prefill: the prompt (<|startofprev|>, P tokens, the start token) fed to one row per window, as the
  search does now, against B rows per window, as it did before (every beam row prefilled alike);
  the one-row prefill then copies its cache to the other B - 1 rows, which is counted in;
- step: one token for all W x B rows, with rows that hold P prompt positions against rows that hold none,
  averaged over --steps steps (each row's attention reads its prompt's keys and values every step).

Then end to end, in-process: the general dev clips (bench/domain_data.general, --part) transcribed with
no list, and with word_boost of 50 terms they never say (bench/domains/unrelated_boost.txt), whose
windows are decoded boosted and then again as without the list; wall time and WER of each, alternated
--repeats times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import dataset, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--windows", type=int, default=8, help="windows decoded together (W)")
    parser.add_argument("--beam", type=int, default=5, help="rows per window (B)")
    parser.add_argument("--prompt-tokens", type=lambda t: [int(x) for x in t.split(",")], default=[0, 91, 223],
                        help="comma-separated prompt lengths (P)")
    parser.add_argument("--steps", type=int, default=40, help="steps timed per prompt length")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is reported")
    parser.add_argument("--part", choices=["dev", "test", "all"], default="dev",
                        help="half of the general clips for the end-to-end figure")


def prompt_cost(args: argparse.Namespace) -> None:
    from engine.audio.features import log_mel_windows
    from engine.transcriber import Transcriber

    transcriber = Transcriber.load(args.model)
    runtime, tokenizer = transcriber.runtime, transcriber.tokenizer
    clips = dataset.load_manifest(args.eval_dir)[: args.windows]
    audio = [dataset.load_audio(c)[: 30 * dataset.SAMPLE_RATE] for c in clips]
    handles = runtime.encode(log_mel_windows(audio, transcriber.n_mels), [len(a) for a in audio])
    filler = tokenizer.encode(" " + " ".join(["the quarterly review covers marketing and operations"] * 60))
    word = tokenizer.encode(" and")[0]
    rows = ["| prompt tokens | prefill, 1 row per window + copies, ms | prefill, every row, ms "
            "| step of all rows, ms | step vs no prompt |", "|---:|---:|---:|---:|---:|"]
    base_step = None
    for p in args.prompt_tokens:
        feed = (tokenizer.sot_prev, *filler[:p], tokenizer.sot) if p else (tokenizer.sot,)
        shared, each, step = [], [], []
        for _ in range(args.repeats):
            opened = [runtime.open_sequences(h, 1) for h in handles]
            started = time.perf_counter()
            runtime.step_logits([s for o in opened for s in o], [feed] * len(opened))
            widened = []
            for h, o in zip(handles, opened):
                extra = runtime.open_sequences(h, args.beam - 1)
                runtime.reorder(extra, o * len(extra))
                widened.append(o + extra)
            sequences = [s for w in widened for s in w]
            runtime.step_logits(sequences, [word] * len(sequences))  # applies the copies
            shared.append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(args.steps):
                runtime.step_logits(sequences, [word] * len(sequences))
            step.append((time.perf_counter() - started) / args.steps)
            runtime.close_sequences(sequences)
            every = [s for h in handles for s in runtime.open_sequences(h, args.beam)]
            started = time.perf_counter()
            runtime.step_logits(every, [feed] * len(every))
            each.append(time.perf_counter() - started)
            runtime.close_sequences(every)
        # the one-row prefill's figure includes one ordinary step (which applies the copies): take it out
        prefill_shared = np.median(shared) - np.median(step)
        base_step = base_step or float(np.median(step))
        rows.append(f"| {p} | {1000 * prefill_shared:.1f} | {1000 * np.median(each):.1f} | "
                    f"{1000 * np.median(step):.2f} | {np.median(step) / base_step:.2f}x |")
        print(rows[-1], flush=True)
    rows += ["", *_unrelated_list_cost(transcriber, args)]
    notes = [f"model {args.model} on the CPU (as served: {runtime.device}); {args.windows} dev windows encoded "
             f"together, {args.beam} rows each; step = one token for all {args.windows * args.beam} rows, "
             f"mean of {args.steps} steps after the prompt; medians of {args.repeats}",
             f"second table: the general {args.part} clips in-process, no list and the unrelated list alternated "
             f"{args.repeats} times, median wall"]
    text = report.dated_section(f"{args.model}, the cost of a long prompt and of an unrelated word_boost list", notes, "\n".join(rows))
    print(text)
    report.append(args.results, text)


def _unrelated_list_cost(transcriber, args: argparse.Namespace) -> list[str]:
    """Rows of a table: wall and WER of the general clips without a list and with the unrelated one."""
    from bench import domain_data
    from bench.domain_lm import UNRELATED_TERMS
    from bench.wer import score
    from engine.decoding.options import DecodeOptions

    general = domain_data.general(args.eval_dir)
    clips = general if args.part == "all" else domain_data.split(general, args.part)
    audio = [domain_data.load_clip_audio(c.audio) for c in clips]
    settings = {"no list": DecodeOptions(),
                "word_boost, 50 unrelated terms": DecodeOptions(word_boost=tuple(domain_data.read_lines(UNRELATED_TERMS)))}
    walls: dict[str, list[float]] = {name: [] for name in settings}
    wers: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, options in settings.items():
            started = time.perf_counter()
            texts = [t.text for t in transcriber.transcribe_many(audio, options=options)]
            walls[name].append(time.perf_counter() - started)
            wers[name] = 100 * score([c.reference for c in clips], texts).overall.wer
    base = float(np.median(walls["no list"]))
    rows = [f"| general {args.part} clips ({len(clips)}) | wall s | vs no list | WER % |", "|---|---:|---:|---:|"]
    for name in settings:
        wall = float(np.median(walls[name]))
        rows.append(f"| {name} | {wall:.1f} | {wall / base:.2f}x | {wers[name]:.2f} |")
        print(rows[-1], flush=True)
    return rows
