"""Whisper's byte-level BPE tokenizer and the special tokens the search rules need.

Special token ids differ between English-only and multilingual vocabularies, so they are looked
up by name in tokenizer.json rather than hard-coded.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer


class WhisperTokenizer:
    def __init__(self, path: Path, n_vocab: int) -> None:
        self._tok = Tokenizer.from_file(str(path))
        self.eot = self._id("<|endoftext|>")
        self.sot = self._id("<|startoftranscript|>")
        self.transcribe = self._id("<|transcribe|>")
        self.translate = self._id("<|translate|>")
        self.sot_lm = self._id("<|startoflm|>")
        self.sot_prev = self._id("<|startofprev|>")
        self.no_timestamps = self._id("<|notimestamps|>")
        self.no_speech = self._tok.token_to_id("<|nospeech|>") or self._id("<|nocaptions|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.multilingual = n_vocab >= 51865  # the multilingual vocabulary is one token larger

    def _id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer has no {token} token")
        return token_id

    @cached_property
    def sot_sequence(self) -> tuple[int, ...]:
        """The prompt: English transcription on multilingual models, the bare start token otherwise."""
        if self.multilingual:
            return (self.sot, self._id("<|en|>"), self.transcribe)
        return (self.sot,)

    @cached_property
    def non_speech_specials(self) -> tuple[int, ...]:
        """Special tokens the decoder must never emit while transcribing."""
        return (self.sot, self.transcribe, self.translate, self.sot_lm, self.sot_prev, self.no_speech, self.no_timestamps)

    @cached_property
    def token_texts(self) -> tuple[str, ...]:
        """The text of every text token (ids below eot) alone, for scorers that follow spelled words.

        A token holding part of a multi-byte character reads as U+FFFD; English words never need one.
        """
        return tuple(self._tok.decode([t]) for t in range(self.eot))

    @cached_property
    def tokens_by_lower_text(self) -> dict[str, tuple[int, ...]]:
        """Text token ids by lower-cased text (lower_text): the tokens that spell a given piece, in any casing."""
        found: dict[str, list[int]] = {}
        for token, text in enumerate(self.token_texts):
            found.setdefault(lower_text(text), []).append(token)
        return {text: tuple(ids) for text, ids in found.items()}

    def decode(self, tokens: list[int]) -> str:
        """Text of the text tokens, timestamps and specials dropped."""
        return self._tok.decode([t for t in tokens if t < self.eot])

    def decode_piece(self, tokens: list[int]) -> str:
        return self._tok.decode(tokens, skip_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids


def lower_text(text: str) -> str:
    """Text compared without regard to casing or the apostrophe's form (word_boost's matching)."""
    return text.lower().replace("\u2019", "'")
