"""`heldout`: real two-speaker-channel speech that dev.tsv does not contain.

mfa_stereo_twochannel holds one stereo file with a different recording on each
channel and a single reference for the whole file. Each system transcribes each
channel as mono and the texts are joined channel 1 then channel 2; the reverse
order is scored too, so the table itself shows which order the reference follows.
The daemon's dual_channel=true answer is then checked against the per-channel runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import report
from bench.daemon_proc import audio_server, file_url, running_daemon
from bench.dataset import SAMPLE_RATE
from bench.wer import WerCount, count_errors, normalise

FOLDER = "mfa_stereo_twochannel"


@dataclass
class ChannelRun:
    """One system's text per channel and the time it took for both."""

    system: str
    texts: tuple[str, str]
    wall_s: float

    def score(self, reference: str, order: tuple[int, int] = (0, 1)) -> WerCount:
        return count_errors(reference, " ".join(self.texts[i] for i in order))


def _reference(eval_dir: Path) -> tuple[Path, str]:
    """The single (file, reference) row of the folder's refs.tsv."""
    line = (eval_dir / FOLDER / "refs.tsv").read_text(encoding="utf-8").strip().splitlines()[0]
    name, text = line.split("\t", 1)
    return eval_dir / FOLDER / name, text


def _per_channel(system: str, transcribe: Callable[[np.ndarray], str],
                 channels: np.ndarray) -> ChannelRun:
    transcribe(channels[0][: SAMPLE_RATE * 5])  # warm-up, untimed
    start = time.perf_counter()
    texts = (transcribe(channels[0]), transcribe(channels[1]))
    return ChannelRun(system, texts, time.perf_counter() - start)


def _daemon(args: argparse.Namespace, path: Path) -> ChannelRun:
    """One dual_channel request; words regrouped by channel, each in time order."""
    env = {"ASYNC_ENGINE_MODEL": args.model, "DECODER_BEAM_SIZE": str(args.beam)}
    with audio_server(args.eval_dir) as base, running_daemon(**env) as daemon:
        body = {"audio_url": file_url(base, args.eval_dir, path), "dual_channel": True}
        daemon.transcribe(body)  # warm-up, untimed
        start = time.perf_counter()
        response = daemon.transcribe(body)
        wall = time.perf_counter() - start
    response.raise_for_status()
    words = response.json()["words"]
    texts = tuple(" ".join(w["text"] for w in words if w["channel"] == ch) for ch in ("1", "2"))
    return ChannelRun("daemon (HTTP, dual_channel)", texts, wall)


def table(runs: list[ChannelRun], reference: str) -> str:
    lines = ["| system | WER % ch1+ch2 | errors / words | WER % ch2+ch1 | wall s (both channels) |",
             "|---|---:|---:|---:|---:|"]
    for r in runs:
        fwd, rev = r.score(reference), r.score(reference, (1, 0))
        lines.append(f"| {r.system} | {100 * fwd.wer:.2f} | {fwd.errors} / {fwd.words} | "
                     f"{100 * rev.wer:.2f} | {r.wall_s:.1f} |")
    return "\n".join(lines)


def heldout(args: argparse.Namespace) -> None:
    """Engine, faster-whisper and the daemon on the held-out stereo file; print and append."""
    from bench.engine_runner import EngineRunner
    from bench.peers import FasterWhisperRunner
    from engine.audio.files import decode_audio

    path, reference = _reference(args.eval_dir)
    channels = decode_audio(str(path), keep_channels=True)
    runs = [_per_channel("engine (in-process, per channel)",
                         EngineRunner(args.model, args.beam).transcribe, channels),
            _per_channel(f"{report.BASELINE} (per channel)",
                         FasterWhisperRunner(args.model, args.beam).transcribe, channels),
            _daemon(args, path)]
    engine, daemon = runs[0], runs[-1]
    same = [normalise(a) == normalise(b) for a, b in zip(engine.texts, daemon.texts)]
    notes = [f"file: {path} ({channels.shape[1] / SAMPLE_RATE:.1f} s, {channels.shape[0]} channels); "
             f"reference from refs.tsv, one text for the whole file",
             f"model {args.model}, beam {args.beam}; faster-whisper int8, cpu_threads=2",
             "daemon: words of channel \"1\" then channel \"2\" from `words` (the blob follows "
             "utterances in time order)",
             f"daemon dual_channel vs engine per channel, same normalised text: channel 1 {same[0]}, "
             f"channel 2 {same[1]}"]
    notes += [f"{r.system} channel {i + 1}: \"{t}\"" for r in runs for i, t in enumerate(r.texts)]
    text = report.dated_section(f"{args.model} beam {args.beam}, held-out stereo file", notes,
                                table(runs, reference))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
