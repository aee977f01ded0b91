"""What a live stream is set up with: its audio's format and its turns' rules.

Plain values with nothing heavy to import, so a process that only checks a stream's parameters and
relays it (an API node) loads no audio or model code.
"""

from __future__ import annotations

from dataclasses import dataclass

ENCODINGS = ("pcm_s16le", "pcm_mulaw")
MIN_RATE, MAX_RATE = 8000, 48000


@dataclass(frozen=True)
class TurnSettings:
    """AssemblyAI's end-of-turn parameters, with its defaults."""

    end_of_turn_confidence_threshold: float = 0.4
    min_turn_silence_ms: int = 400  # min_end_of_turn_silence_when_confident
    max_turn_silence_ms: int = 1280
    vad_threshold: float = 0.4

    def __post_init__(self) -> None:
        if not 0.0 <= self.end_of_turn_confidence_threshold <= 1.0:
            raise ValueError("end_of_turn_confidence_threshold must be between 0 and 1")
        if not 0.0 < self.vad_threshold < 1.0:
            raise ValueError("vad_threshold must be between 0 and 1 (exclusive)")
        if not 0 <= self.min_turn_silence_ms <= 60_000 or not 0 <= self.max_turn_silence_ms <= 60_000:
            raise ValueError("turn silences must be between 0 and 60000 ms")
