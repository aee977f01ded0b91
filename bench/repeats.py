"""`repeats`: doubled sentences, WER and speed of three encoder-width rules, in-process, on two sets.

The sets: the dev clips, and the short clips cut from them (bench/short_clips.py: single
sentences of 1.5-5 s at 16 kHz, 8 kHz and 8 kHz 20 dB quieter). The rules, all in one process on
the same decoded audio:

- "short": every window under 22 s encoded at its length plus 8 s of padding, nothing more (the
  code before the re-decode);
- "whole": every window encoded at 30 s, as openai/whisper and faster-whisper do;
- "short + re-decode": the shipped rule: short, and a window whose text says a phrase twice back
  to back decoded again whole (engine/decoding/window.py).

Each rule transcribes each set twice: all clips in one transcribe_many call, and one clip at a
time. A transcript counts as a repeat when it says a phrase of 3 or more words twice back to back
and its reference does not (engine/decoding/repeats.py). faster-whisper (same weights, one clip at a time)
is scored beside them for reference; its speed is not the point here and is left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from bench import dataset, report, short_clips
from bench.wer import score

RULES = ("short", "whole", "short + re-decode")


@dataclasses.dataclass
class Pass:
    rule: str
    data: str
    texts: list[str]
    wer: float
    repeats: int
    redecoded: int
    batched_s: float | None = None
    sequential_s: float | None = None


def _repeats(clips: list[dataset.Clip], texts: list[str]) -> list[int]:
    from engine.decoding.repeats import adds_repeat

    return [i for i, (c, t) in enumerate(zip(clips, texts)) if adds_repeat(c.reference, t)]


def _set_rule(transcriber, rule: str, shipped, padding: int) -> None:
    """Point the in-process transcriber at one rule (this process only); `shipped`: its own search config and
    `padding`: engine.model.encoder_width's, as loaded."""
    import engine.model.encoder_width

    engine.model.encoder_width.PADDING_FRAMES = engine.model.encoder_width.N_FRAMES if rule == "whole" else padding
    transcriber.search_config = dataclasses.replace(shipped, redo_repeats_whole=rule == "short + re-decode")


def _timed(fn: Callable[[], list]) -> tuple[list, float]:
    start = time.monotonic()
    out = fn()
    return out, time.monotonic() - start


def _one_pass(transcriber, rule: str, data: str, clips: list[dataset.Clip], audios: list[np.ndarray]) -> Pass:
    results, batched = _timed(lambda: transcriber.transcribe_many(audios))
    texts = [r.text for r in results]
    one_by_one, sequential = _timed(lambda: [transcriber.transcribe(a).text for a in
                                             tqdm(audios, desc=f"{rule} {data} one at a time", unit="clip",
                                                  leave=False)])
    differ = sum(a != b for a, b in zip(texts, one_by_one))
    if differ:
        print(f"note: {rule} {data}: {differ} text(s) differ between batched and one at a time", flush=True)
    wer = score([c.reference for c in clips], texts).overall.wer
    found = _repeats(clips, texts)
    run = Pass(rule, data, texts, wer, len(found), sum(r.redecoded for r in results), batched, sequential)
    print(f"{rule} {data}: WER {100 * wer:.2f} %, repeats {len(found)}, re-decoded {run.redecoded}, "
          f"batched {batched:.1f} s, one at a time {sequential:.1f} s", flush=True)
    return run


def _table(passes: list[Pass], audio_s: dict[str, float]) -> str:
    lines = ["| data | rule | WER % | repeats not in the reference | windows re-decoded "
             "| all at once: audio s / wall s | vs short | one at a time: audio s / wall s | vs short |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {p.data: p for p in passes if p.rule == "short"}
    for p in passes:
        if p.batched_s is None:
            lines.append(f"| {p.data} | {p.rule} | {100 * p.wer:.2f} | {p.repeats} | - | - | - | - | - |")
            continue
        ref = base[p.data]
        speed = audio_s[p.data] / p.batched_s, audio_s[p.data] / p.sequential_s
        ratios = ref.batched_s / p.batched_s, ref.sequential_s / p.sequential_s
        lines.append(f"| {p.data} | {p.rule} | {100 * p.wer:.2f} | {p.repeats} | {p.redecoded} | {speed[0]:.2f} "
                     f"| {ratios[0]:.3f} | {speed[1]:.2f} | {ratios[1]:.3f} |")
    return "\n".join(lines)


def repeats(args: argparse.Namespace) -> None:
    """Every rule on both sets; print and append the section."""
    import engine.model.encoder_width
    from engine.transcriber import Transcriber

    sets, audios, audio_s = short_clips.with_dev(args.eval_dir, args.model, args.beam)
    transcriber = Transcriber.load(args.model, beam_size=args.beam)
    shipped, padding = transcriber.search_config, engine.model.encoder_width.PADDING_FRAMES
    transcriber.transcribe_many(audios["dev"][:4])  # warm-up
    passes: list[Pass] = []
    try:
        for name, clips in sets.items():
            for rule in RULES:
                _set_rule(transcriber, rule, shipped, padding)
                passes.append(_one_pass(transcriber, rule, name, clips, audios[name]))
    finally:
        engine.model.encoder_width.PADDING_FRAMES = padding
        transcriber.search_config = shipped
    if not args.no_fw:
        from bench.peers import FasterWhisperRunner

        runner = FasterWhisperRunner(args.model, args.beam)
        for name, clips in sets.items():
            texts = [runner.transcribe(a) for a in tqdm(audios[name], desc=f"faster-whisper {name}", unit="clip")]
            wer = score([c.reference for c in clips], texts).overall.wer
            passes.append(Pass(report.BASELINE, name, texts, wer, len(_repeats(clips, texts)), 0))
    short_set = sets["short clips"]
    notes = [f"dev: {args.eval_dir}/dev.tsv ({len(sets['dev'])} clips, {audio_s['dev']:.1f} s); short clips: "
             f"{len(short_set)} single sentences of {short_clips.MIN_SECONDS:g}-{short_clips.MAX_SECONDS:g} s cut "
             f"from the dev recordings ({audio_s['short clips']:.1f} s; bench/short_clips.py), each at 16 kHz, 8 kHz "
             "and 8 kHz 20 dB quieter",
             f"engine in-process on the CPU, model {args.model}, beam {args.beam}; short = "
             f"{padding / 100:g} s of padding (engine/model/encoder_width.py); WER and repeats from the all-at-once pass",
             "repeats: transcripts saying a phrase of 3+ words twice back to back that the reference does not "
             "(engine/decoding/repeats.py); vs short: that rule's throughput over short's (higher is faster)"]
    notes += [f"repeat, {p.rule}, {sets[p.data][i].path.name}: \"{p.texts[i]}\""
              for p in passes for i in _repeats(sets[p.data], p.texts)]
    text = report.dated_section(f"{args.model} beam {args.beam}, repeated sentences and the encoder width", notes,
                                _table(passes, audio_s))
    print(text)
    report.append(args.results, text)
