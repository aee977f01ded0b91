"""The evaluation set, read in place from the shared folder (never copied into the repo).

Audio goes through the engine's own decoder so every system sees exactly the same
16 kHz mono float32 samples and decoding time stays out of the timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_eval_dir() -> Path:
    """../shared/eval relative to the repo root, where the workplace keeps the data."""
    return REPO_ROOT.parent / "shared" / "eval"


@dataclass(frozen=True)
class Clip:
    """One dev clip: where it is, what was said, and which corpus it comes from."""

    path: Path
    reference: str
    source: str


@dataclass(frozen=True)
class LongFile:
    """Clips joined by silences: tests long-form chunking rather than 30 s windows."""

    audio: np.ndarray
    reference: str
    clip_count: int

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def load_manifest(eval_dir: Path, limit: int | None = None) -> list[Clip]:
    """Parse dev.tsv (`<relative path>\\t<reference>`), in file order, first `limit` clips."""
    clips = []
    for line in (eval_dir / "dev.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rel, reference = line.split("\t", 1)
        clips.append(Clip(path=eval_dir / rel, reference=reference, source=Path(rel).parts[0]))
    return clips[:limit] if limit else clips


def load_audio(clip: Clip) -> np.ndarray:
    """16 kHz mono float32 samples of a clip, decoded by the engine itself."""
    from engine.audio.files import decode_audio

    return decode_audio(str(clip.path))


def build_long_file(clips: list[Clip], audios: list[np.ndarray], minutes: float = 10.0,
                    gap_seconds: float = 1.0) -> LongFile:
    """Concatenate whole clips with silences until adding another would pass `minutes`.

    Stops at the last clip that fits (at least one), so the reference stays exact;
    with too few clips the file is simply shorter than asked.
    """
    limit = int(minutes * 60 * SAMPLE_RATE)
    gap = np.zeros(int(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    texts: list[str] = []
    length = 0
    for clip, audio in zip(clips, audios):
        extra = len(audio) + (len(gap) if parts else 0)
        if parts and length + extra > limit:
            break
        if parts:
            parts.append(gap)
        parts.append(audio.astype(np.float32, copy=False))
        texts.append(clip.reference)
        length += extra
    return LongFile(audio=np.concatenate(parts), reference=" ".join(texts), clip_count=len(texts))
