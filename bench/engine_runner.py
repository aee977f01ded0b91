"""Our engine behind the same small interface as the peer runner."""

from __future__ import annotations

import numpy as np


class EngineRunner:
    """A loaded engine.transcriber.Transcriber, used one file at a time or batched."""

    def __init__(self, model: str, beam_size: int) -> None:
        from engine.transcriber import Transcriber

        self._transcriber = Transcriber.load(model, beam_size=beam_size)

    def transcribe(self, audio: np.ndarray) -> str:
        """Text of one clip: the sequential mode, comparable to faster-whisper."""
        return self._transcriber.transcribe(audio).text

    def transcribe_many(self, audios: list[np.ndarray]) -> list[str]:
        """Texts of many clips in one call, letting the engine batch across them."""
        return [r.text for r in self._transcriber.transcribe_many(audios)]
