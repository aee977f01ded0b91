"""A window of speech as pieces of a file: what the VAD plans and both sides of decoding share.

Kept apart from the VAD so that processes which only pass windows along (the daemon's supervisor
and inference workers) need numpy, not the VAD model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.audio.files import SAMPLE_RATE


@dataclass(frozen=True)
class SpeechWindow:
    """Speech worth transcribing as one unit: pieces of the file, played back to back.

    Pieces are the VAD's speech segments with up to ``pad`` of their surroundings, so a silence
    longer than two pads is cut down to two pads. Whisper given a long silence inside a window
    tends to end its text before the speech that follows (on call channels, where half the time is
    the other side talking, it dropped one word in ten), and packing speech tighter also means fewer
    30 s encoder passes per hour of audio.
    """

    pieces: tuple[tuple[int, int], ...]  # [start, end) in file samples, in order, disjoint
    # The VAD's speech segments inside the pieces, in file samples: word timings are kept inside
    # them, since alignment alone lets a word stretch over a pause.
    speech: tuple[tuple[int, int], ...] = ()
    # Encode at Whisper's whole 30 s even where the runtime shortens windows (engine/model/encoder_width.py):
    # this window is being decoded again because its shortened encoding said its text twice.
    encode_whole: bool = False

    @property
    def start(self) -> int:
        return self.pieces[0][0]

    @property
    def end(self) -> int:
        return self.pieces[-1][1]

    @property
    def samples(self) -> int:
        """Length of the window's audio once its pieces are joined."""
        return sum(end - start for start, end in self.pieces)

    def gather(self, audio: np.ndarray) -> np.ndarray:
        """The window's audio from the file's: its pieces joined (a view when there is one piece)."""
        if len(self.pieces) == 1:
            return audio[..., self.start : self.end]
        return np.concatenate([audio[..., start:end] for start, end in self.pieces], axis=-1)

    def file_sample(self, offset: float) -> float:
        """The file position of a position in the joined audio."""
        for start, end in self.pieces:
            if offset <= end - start:
                return start + offset
            offset -= end - start
        return float(self.end)

    def window_offset(self, sample: int) -> int:
        """The position in the joined audio of a file position inside (or between) the pieces."""
        before = 0
        for start, end in self.pieces:
            if sample < end:
                return before + max(0, sample - start)
            before += end - start
        return before

    def speech_seconds(self) -> list[tuple[float, float]]:
        """The VAD's speech segments in seconds of the joined audio."""
        return [(self.window_offset(s) / SAMPLE_RATE, self.window_offset(e) / SAMPLE_RATE) for s, e in self.speech]

    def speech_ms(self) -> list[tuple[int, int]]:
        """The VAD's speech segments in ms of the file (the speaker labels' regions)."""
        return [(start * 1000 // SAMPLE_RATE, end * 1000 // SAMPLE_RATE) for start, end in self.speech]

    def whole(self) -> "SpeechWindow":
        """The same window, to be encoded whole."""
        return replace(self, encode_whole=True)

    def encoded_samples(self) -> int | None:
        """What InferenceRuntime.encode takes for this window: its length, or None to encode it whole."""
        return None if self.encode_whole else self.samples

    def after(self, offset: int) -> "SpeechWindow":
        """The rest of the window from a position in the joined audio."""
        cut = int(self.file_sample(offset))
        pieces = tuple((max(start, cut), end) for start, end in self.pieces if end > cut)
        return SpeechWindow(pieces, tuple((max(s, cut), e) for s, e in self.speech if e > cut))

    def first(self, samples: int) -> "SpeechWindow":
        """At most the first `samples` of the joined audio."""
        if self.samples <= samples:
            return self
        cut = int(self.file_sample(samples))
        pieces = tuple((start, min(end, cut)) for start, end in self.pieces if start < cut)
        return SpeechWindow(pieces, tuple((s, min(e, cut)) for s, e in self.speech if s < cut))
