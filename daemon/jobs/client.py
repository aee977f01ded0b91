"""The jobs' view of the process tree that transcribes: what the scheduler needs of the workers.

daemon/workers/dispatcher.py is the implementation; unit tests of the HTTP layer use a stand-in.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.decode_options import DecodeOptions
from engine.result import Word


class WorkerPool(Protocol):
    def submit(self, uid: str, pcm: np.ndarray, timeout: float, options: DecodeOptions = DecodeOptions()
               ) -> list[list[Word]]:
        """pcm: float32 [channels, samples] at 16 kHz (1 channel, or 2 for dual_channel). Blocks until done;
        returns one word list per channel, times in ms from the start of pcm. Raises ApiError on failure."""

    def health(self) -> tuple[bool, dict]:
        """(ready, body): body has at least "status" and "workers", a list of {"name","kind","state","pid"}."""
