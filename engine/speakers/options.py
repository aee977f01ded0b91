"""What a caller may ask of speaker labels; light to import (the front validates requests with it)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_SPEAKERS = 10


def speaker_name(number: int) -> str:
    """AssemblyAI's speaker labels: A, B, C, ... in order of first appearance."""
    return chr(ord("A") + number)


@dataclass(frozen=True)
class SpeakerOptions:
    """AssemblyAI's speakers_expected and speaker_options.{min,max}_speakers_expected."""

    expected: int | None = None
    min_speakers: int = 1
    max_speakers: int = MAX_SPEAKERS
