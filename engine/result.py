"""Transcripts and their JSON form, shared by the CLI and the daemon so both answer alike."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class Word:
    text: str
    start_ms: int  # from the start of the original file
    end_ms: int
    confidence: float  # in [0, 1]

    def as_dict(self) -> dict:
        return {"confidence": self.confidence, "end": self.end_ms, "start": self.start_ms, "text": self.text}


@dataclass
class Transcript:
    words: list[Word]
    duration: float  # seconds of audio transcribed
    redecoded: int = 0  # windows decoded again whole after their shortened encoding repeated itself
    # where the VAD heard speech: [start, end) ms, in time order; the speaker labels embed these
    speech: list[tuple[int, int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def as_dict(self, uid: str | None = None) -> dict:
        """The response body of POST /transcribe/url (../shared/API.md) for a mono transcription."""
        return {
            "blob": self.text,
            "duration": self.duration,
            "stereo_decode": False,
            "uid": uid or new_uid(),
            "utterances": None,
            "words": [w.as_dict() for w in self.words],
        }


def new_uid() -> str:
    return f"t_{uuid.uuid4()}"
