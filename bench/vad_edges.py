"""`vad-edges`: a file's head and tail kept in its windows (shipped) or trimmed to the VAD's speech.

Silero misses quiet voice qualities Whisper hears (engine/audio/vad.py `_with_file_edges`), and
the words it misses sit at an utterance's edges. The two rules, in one process on the same decoded
audio, all clips of a set in one transcribe_many call, on:

- the dev set, split into its spontaneous Montreal Forced Aligner recordings (mfa_selfrecorded:
  whispered, creaky, breathy, falsetto) and the rest (read speech a change must not cost);
- the short clips cut from dev (bench/short_clips.py: 1.5-5 s sentences at 16 kHz, 8 kHz and 8 kHz
  20 dB quieter), where a trimmed edge is a large part of each clip.

faster-whisper (same weights, no VAD, as it runs by default) is scored beside them. Each row gives WER,
the errors that are insertions (what a kept silence would add if the model heard words in it) and speed.
"""

from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from bench import dataset, report, short_clips
from bench.domain_data import MFA_SOURCE
from bench.wer import WerCount, count_errors

RULES = {"trimmed (before)": False, "kept (shipped)": True}


def _per_clip(clips: list[dataset.Clip], texts: list[str]) -> list[WerCount]:
    return [count_errors(c.reference, t) for c, t in zip(clips, texts)]


def _row(data: str, system: str, clips: list[dataset.Clip], counts: list[WerCount], speed: str) -> str:
    """The set's WER, then the recordings' and the rest's with their errors and insertions."""
    parts = {"recordings": WerCount(), "other": WerCount()}
    for clip, count in zip(clips, counts):
        parts["recordings" if clip.source.split("@")[0] == MFA_SOURCE else "other"].add(count)
    total = WerCount()
    cells = []
    for part in parts.values():
        total.add(part)
        cells.append(f"{100 * part.wer:.2f} ({part.errors}, {part.insertions} inserted)" if part.words else "–")
    return f"| {data} | {system} | {100 * total.wer:.2f} | " + " | ".join(cells) + f" | {speed} |"


def vad_edges(args: argparse.Namespace) -> None:
    """Both rules and faster-whisper on dev and the short clips; print and append the section."""
    from engine.audio.vad import VoiceActivityDetector
    from engine.transcriber import Transcriber

    sets, audios, audio_s = short_clips.with_dev(args.eval_dir, args.model, args.beam)
    transcriber = Transcriber.load(args.model, beam_size=args.beam)
    transcriber.transcribe_many(audios["dev"][:4])  # warm-up
    rows = ["| data | system | WER % | recordings (mfa_selfrecorded): WER % (errors, insertions) "
            "| the rest: WER % (errors, insertions) | audio s / wall s |",
            "|---|---|---:|---:|---:|---:|"]
    shipped = transcriber.vad
    changed: list[str] = []
    try:
        for name, clips in sets.items():
            errors = []
            for rule, keep in RULES.items():
                transcriber.vad = VoiceActivityDetector(keep_file_edges=keep)
                started = time.monotonic()
                texts = [t.text for t in transcriber.transcribe_many(audios[name])]
                wall = time.monotonic() - started
                counts = _per_clip(clips, texts)
                rows.append(_row(name, f"ours, edges {rule}", clips, counts, f"{audio_s[name] / wall:.2f}"))
                print(rows[-1], flush=True)
                errors.append([c.errors for c in counts])
            moved = [(c, a, b) for c, a, b in zip(clips, *errors) if a != b]
            changed.append(f"{name}: {sum(b < a for _, a, b in moved)} clips better with the edges kept, "
                           f"{sum(b > a for _, a, b in moved)} worse"
                           + ("; " + ", ".join(f"{c.path.name} {a} → {b}" for c, a, b in moved) if len(moved) <= 12 else ""))
    finally:
        transcriber.vad = shipped
    if not args.no_fw:
        from bench.peers import FasterWhisperRunner

        runner = FasterWhisperRunner(args.model, args.beam)
        for name, clips in sets.items():
            texts = [runner.transcribe(a) for a in tqdm(audios[name], desc=f"faster-whisper {name}", unit="clip")]
            rows.append(_row(name, report.BASELINE, clips, _per_clip(clips, texts), "–"))
            print(rows[-1], flush=True)
    notes = [f"dev: {args.eval_dir}/dev.tsv ({len(sets['dev'])} clips, {audio_s['dev']:.1f} s); short clips: "
             f"{len(sets['short clips'])} single sentences cut from the dev recordings ({audio_s['short clips']:.1f} s; "
             "bench/short_clips.py), each at 16 kHz, 8 kHz and 8 kHz 20 dB quieter",
             f"engine in-process on the CPU, model {args.model}, beam {args.beam}, each set in one transcribe_many "
             "call; faster-whisper one clip at a time, without VAD (its default)",
             *changed,
             "edges kept: the file's head and tail joined to its first and last window where the window still fits "
             "(engine/audio/vad.py); trimmed: cut to the VAD's speech and its 0.5 s pads, as before"]
    text = report.dated_section(f"{args.model} beam {args.beam}, a file's head and tail kept or trimmed by the VAD",
                                notes, "\n".join(rows))
    print(text)
    report.append(args.results, text)
