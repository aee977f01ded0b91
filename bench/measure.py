"""Timed passes over the data: what is timed is transcription only.

Model load is timed apart, one untimed warm-up call precedes each timed pass
(first-call allocations and lazy init would otherwise bill the first clip),
and audio is decoded beforehand so decoding speed does not blur the comparison.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.dataset import SAMPLE_RATE
from bench.wer import WerReport, score

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Run:
    """One system over one data set: accuracy, speed and memory."""

    system: str
    data: str
    wer: WerReport
    audio_s: float
    wall_s: float
    cpu_s: float
    load_s: float
    peak_rss_mb: float | None

    @property
    def rtf(self) -> float:
        """Real-time factor: wall seconds per audio second (lower is faster)."""
        return self.wall_s / self.audio_s

    @property
    def speed(self) -> float:
        """Audio seconds per wall second (higher is faster)."""
        return self.audio_s / self.wall_s


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark so each system's peak is its own (Linux only)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """Peak resident memory since the last reset, from VmHWM; None off Linux."""
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """Result of fn() and its wall time in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def own_cpu_seconds() -> float:
    """User + system CPU time of this process, all threads included."""
    t = os.times()
    return t.user + t.system


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of machine CPU used by anything during a short sample (Linux /proc/stat).

    Other jobs on a 2-core machine halve our wall-clock speed without changing
    WER, so a run records how busy the machine was before it started.
    """
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def run_sequential(system: str, data: str, transcribe: Callable[[np.ndarray], str],
                   audios: list[np.ndarray], references: list[str], sources: list[str] | None,
                   load_s: float) -> tuple[Run, list[str]]:
    """One call per file, like a faster-whisper user would loop; returns the run and its texts."""
    transcribe(audios[0])
    cpu = own_cpu_seconds()
    hyps, wall = timed(lambda: [transcribe(a) for a in tqdm(audios, desc=f"{system} {data}",
                                                            unit="clip", leave=False)])
    cpu = own_cpu_seconds() - cpu
    return _run(system, data, hyps, audios, references, sources, wall, cpu, load_s), hyps


def run_batched(system: str, data: str, transcribe_many: Callable[[list[np.ndarray]], list[str]],
                audios: list[np.ndarray], references: list[str], sources: list[str] | None,
                load_s: float) -> tuple[Run, list[str]]:
    """All files in one call so the system may batch across them."""
    transcribe_many(audios[:1])
    print(f"{system} {data}: {len(audios)} clips in one call ...", flush=True)
    cpu = own_cpu_seconds()
    hyps, wall = timed(lambda: transcribe_many(audios))
    cpu = own_cpu_seconds() - cpu
    return _run(system, data, hyps, audios, references, sources, wall, cpu, load_s), hyps


def _run(system: str, data: str, hyps: list[str], audios: list[np.ndarray], references: list[str],
         sources: list[str] | None, wall: float, cpu: float, load_s: float) -> Run:
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    return Run(system=system, data=data, wer=score(references, hyps, sources), audio_s=audio_s,
               wall_s=wall, cpu_s=cpu, load_s=load_s, peak_rss_mb=peak_rss_mb())
