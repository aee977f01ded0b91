"""Decoder-side life of one speech window: its searches, Whisper's seek rule, then its words.

Both compositions use it unchanged: the in-process Transcriber and the daemon's decoder
processes. The inference side only ever sees rows of tokens, logits and alignment scores.
"""

from __future__ import annotations

from engine.alignment import word_timings
from engine.audio import SAMPLE_RATE
from engine.fallback import WindowDecode, is_silence
from engine.features import WINDOW_SAMPLES
from engine.result import Word
from engine.search import SearchConfig, SearchResult
from engine.tokenizer import WhisperTokenizer
from engine.vad import SpeechWindow

MIN_REDO_SECONDS = 1.0  # an unfinished tail shorter than this is kept rather than decoded again


class WindowJob:
    def __init__(self, config: SearchConfig, tokenizer: WhisperTokenizer, span: SpeechWindow) -> None:
        self.span = SpeechWindow(span.start, min(span.end, span.start + WINDOW_SAMPLES))
        self.tokenizer = tokenizer
        self.decode = WindowDecode(config, tokenizer, self.samples / SAMPLE_RATE)
        self._result: SearchResult | None = None
        self._text: list[int] = []

    @property
    def samples(self) -> int:
        return self.span.end - self.span.start

    def conclude(self) -> tuple[list[int] | None, SpeechWindow | None]:
        """Settle the result once the last search is done.

        Returns the tokens to run the alignment pass on (None when there is no text), and the
        span to decode again when the model left its last segment open.
        """
        result = self.decode.result()
        redo = None
        if result.complete_seconds is not None:
            resume = self.span.start + int(result.complete_seconds * SAMPLE_RATE)
            if (self.span.end - resume) / SAMPLE_RATE >= MIN_REDO_SECONDS:
                result = result.without_unfinished_tail()
                redo = SpeechWindow(resume, self.span.end)
        self._result = result
        eot = self.tokenizer.eot
        self._text = [] if is_silence(result) else [t for t in result.tokens if t < eot]
        if not self._text:
            return None, redo
        return [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps, *self._text, eot], redo

    def words(self, scores) -> list[Word]:
        """Timed words in file time from the alignment pass over conclude()'s tokens."""
        if self._result is None or not self._text:
            return []
        eot = self.tokenizer.eot
        logprobs = [lp for t, lp in zip(self._result.tokens, self._result.token_logprobs) if t < eot]
        timings = word_timings(self.tokenizer, scores, self._text, logprobs, self.samples)
        offset_ms = self.span.start * 1000 / SAMPLE_RATE
        words = []
        for t in timings:
            text = t.text.strip()
            if not text:
                continue
            start = int(round(offset_ms + t.start * 1000))
            words.append(Word(
                text=text,
                start_ms=start,
                end_ms=max(int(round(offset_ms + t.end * 1000)), start + 1),
                confidence=round(min(1.0, max(0.0, t.probability)), 4),
            ))
        return words
