"""`calls`: generated two-party stereo calls, the case dual_channel exists for.

Each call alternates two eSpeak NG voices, one per channel, with pauses of 0.3 to 4 s between
turns, so each channel is silent for long stretches while the other side talks: exactly where
Whisper drops speech that follows a silence. The engine transcribes every channel of every call
in one batch (as the daemon shares decoder steps across channels); faster-whisper transcribes
each channel alone, without and with its VAD filter. Reported: WER per system over all
channels, wall time and its ratio, and for the engine's dual_channel utterances how many calls
came back with their turns in spoken order and how far utterance starts were from the truth.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

import numpy as np

from bench import report
from bench.wer import count_errors

SENTENCES = [
    "thank you for calling the support line", "how can I help you today",
    "I was charged twice on my invoice", "let me check your account",
    "my order number is four five six", "the package never arrived",
    "I can send a replacement tomorrow", "that would be great thanks",
    "is there anything else I can help with", "no that is all goodbye",
    "please hold for a moment", "sure no problem",
]
GAPS_S = [0.3, 0.6, 1.0, 2.0, 4.0]


@dataclass
class Call:
    turns: list[tuple[int, str]]
    audio: np.ndarray  # (samples, 2)
    starts: list[float]  # true start of each turn, seconds

    def reference(self, channel: int) -> str:
        return " ".join(text for ch, text in self.turns if ch == channel)


def generate(count: int, seed: int) -> list[Call]:
    from tests.synth import two_party_call

    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        turns = [(1 + i % 2, rng.choice(SENTENCES)) for i in range(rng.randint(4, 8))]
        audio, starts = two_party_call(turns, gap_s=rng.choice(GAPS_S))
        calls.append(Call(turns, audio, starts))
    return calls


def _wer(calls: list[Call], texts: list[str]) -> tuple[float, int, int]:
    """WER over every channel; texts are in channel order: call 0 ch 1, call 0 ch 2, call 1 ch 1, ..."""
    errors = words = 0
    for i, call in enumerate(calls):
        for ch in (1, 2):
            count = count_errors(call.reference(ch), texts[2 * i + ch - 1])
            errors, words = errors + count.errors, words + count.words
    return 100 * errors / words, errors, words


def calls(args: argparse.Namespace) -> None:
    """Engine (batched, dual_channel utterances) vs faster-whisper per channel; print and append."""
    from bench.peers import FasterWhisperRunner
    from engine.text.response import response_body
    from engine.text.format import TextOptions
    from engine.transcriber import Transcriber

    generated = generate(args.count, args.seed)
    channels = [np.ascontiguousarray(call.audio[:, ch]) for call in generated for ch in (0, 1)]
    audio_s = sum(len(c) for c in channels) / 16000
    transcriber = Transcriber.load(args.model, beam_size=args.beam)
    transcriber.transcribe(channels[0][:16000 * 5])  # warm-up, untimed
    started = time.perf_counter()
    transcripts = transcriber.transcribe_many(channels, dual_channel=True)
    engine_s = time.perf_counter() - started
    rows = [("engine (all channels batched)", [t.text for t in transcripts], engine_s)]
    # The rule for a mono file, which keeps its head and tail (engine/audio/vad.py): on a side of a call
    # they are the other side's turns, so dual_channel trims them; this row shows why.
    started = time.perf_counter()
    kept = transcriber.transcribe_many(channels)
    rows.append(("engine, each side's head and tail kept as a mono file's", [t.text for t in kept],
                 time.perf_counter() - started))
    fw = FasterWhisperRunner(args.model, args.beam)
    for name, vad in ((f"{report.BASELINE}", False), (f"{report.BASELINE} vad_filter=True", True)):
        fw.transcribe(channels[0][:16000 * 5], vad_filter=vad)
        started = time.perf_counter()
        texts = [fw.transcribe(c, vad_filter=vad) for c in channels]
        rows.append((name, texts, time.perf_counter() - started))

    in_order, errors_s = 0, []
    for i, call in enumerate(generated):
        body = response_body([transcripts[2 * i].words, transcripts[2 * i + 1].words], 0.0, 0,
                             TextOptions(), True)
        utterances = body["utterances"]
        if [int(u["channel"]) for u in utterances] == [ch for ch, _ in call.turns]:
            in_order += 1
            errors_s += [abs(u["start"] / 1000 - truth) for u, truth in zip(utterances, call.starts)]

    lines = ["| system | WER % | errors / words | wall s | audio s / wall s | engine speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, texts, wall in rows:
        wer, errors, words = _wer(generated, texts)
        lines.append(f"| {name} | {wer:.2f} | {errors} / {words} | {wall:.1f} | {audio_s / wall:.1f} | "
                     f"{wall / engine_s:.2f}x |")
    notes = [f"{args.count} calls (seed {args.seed}), {2 * args.count} channels, {audio_s:.0f} s of channel "
             f"audio; turns of 4-8 sentences, pauses {GAPS_S} s",
             f"model {args.model}, beam {args.beam}; faster-whisper int8, cpu_threads=2",
             f"engine dual_channel utterances: {in_order}/{len(generated)} calls with every turn in spoken "
             f"order on its channel; utterance start error over those: mean {np.mean(errors_s):.3f} s, "
             f"p90 {np.percentile(errors_s, 90):.3f} s, max {max(errors_s):.3f} s"
             if errors_s else f"engine dual_channel utterances: {in_order}/{len(generated)} calls in order"]
    text = report.dated_section(f"{args.model} beam {args.beam}, generated stereo calls", notes, "\n".join(lines))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
