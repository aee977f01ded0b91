"""The front's view of the transcription back end, so the HTTP layer can be tested without workers."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.result import Word


class JobClient(Protocol):
    def submit(self, uid: str, pcm: np.ndarray, timeout: float) -> list[list[Word]]:
        """pcm: float32 [channels, samples] at 16 kHz (1 channel, or 2 for dual_channel). Blocks until done;
        returns one word list per channel, times in ms from the start of pcm. Raises ApiError on failure."""

    def health(self) -> tuple[bool, dict]:
        """(ready, body): body has at least "status" and "workers", a list of {"name","kind","state","pid"}."""
