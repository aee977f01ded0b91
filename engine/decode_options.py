"""Per-transcription decoding choices: Whisper's initial prompt and the temperature schedule.

They travel with a transcription from the API to every one of its windows, across processes in the
daemon, so they are a small frozen picklable value with nothing heavy to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.tokenizer import WhisperTokenizer

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# Prompt tokens kept (the last ones, as Whisper keeps them; Whisper itself allows 223). Every
# hypothesis row's self-attention cache is reserved for the longest search (InferenceRuntime.reserve)
# in chunks of 64 positions: n_text_ctx / 2 + 4 = 228 positions without a prompt round up to 256;
# with <|startofprev|> and 91 prompt tokens it is exactly 320, so any bound from 28 to 91 costs the
# same 64 positions and 91 is the most they buy. Each position is layers × 2 × d_model values a row:
# tiny.en on CPU (float32) gains 0.75 MiB a row, 60 MiB for 16 windows × 5 rows (240 → 300 MiB).
MAX_PROMPT_TOKENS = 91


@dataclass(frozen=True)
class DecodeOptions:
    """How the windows of one transcription are decoded.

    prompt: Whisper's initial prompt (OpenAI's `prompt`): text the model reads as if it preceded
        the audio, which steers spelling and style. Our windows are decoded independently, so it
        precedes every window. Only its last MAX_PROMPT_TOKENS tokens are used; None or blank
        means no prompt.
    temperatures: the fallback schedule. The first is tried first (0 is beam search, above 0
        samples `best_of` rows); a suspect result is decoded again at each next one in turn.
        A single temperature decodes each window once, at that temperature.
    """

    prompt: str | None = None
    temperatures: tuple[float, ...] = TEMPERATURES

    def __post_init__(self) -> None:
        temperatures = tuple(float(t) for t in self.temperatures)
        if not temperatures:
            raise ValueError("temperatures must hold at least one temperature")
        if not all(0.0 <= t <= 1.0 for t in temperatures):
            raise ValueError(f"temperatures must be between 0 and 1; got {temperatures}")
        object.__setattr__(self, "temperatures", temperatures)

    @classmethod
    def for_request(cls, prompt: str | None = None, temperature: float | None = None) -> "DecodeOptions":
        """OpenAI's transcription parameters: temperature None or 0 keeps the fallback schedule.

        OpenAI: "If set to 0, the model will use log probability to automatically increase the
        temperature until certain thresholds are hit"; any other temperature samples at it alone.
        """
        return cls(prompt, (temperature,) if temperature else TEMPERATURES)

    def prompt_tokens(self, tokenizer: WhisperTokenizer) -> tuple[int, ...]:
        """What the decoder reads before the SOT sequence: <|startofprev|> and the prompt's tokens.

        Encoded as Whisper encodes an initial prompt (" " + the stripped text); empty without one.
        """
        text = (self.prompt or "").strip()
        if not text:
            return ()
        return (tokenizer.sot_prev, *tokenizer.encode(" " + text)[-MAX_PROMPT_TOKENS:])
