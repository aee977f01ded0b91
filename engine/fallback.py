"""Whisper's temperature fallback: decode a window again when its beam result looks wrong.

A result is suspect when its text compresses too well (a loop) or the model was unsure of it
(low average log-probability), unless the window is silence. Each retry decodes at the next
temperature of the transcription's schedule (DecodeOptions.temperatures: rising from 0 by default);
when every attempt is suspect, the most probable one that does not loop wins. The thresholds are
openai/whisper's and faster-whisper's defaults.
"""

from __future__ import annotations

import zlib

from engine.decode_options import DecodeOptions
from engine.search import SearchConfig, SearchResult, WindowSearch
from engine.tokenizer import WhisperTokenizer

COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_silence(result: SearchResult) -> bool:
    """Whisper's no-speech test: a likely <|nospeech|> that the decode does not contradict."""
    return result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD


class WindowDecode:
    """The attempts at one window; `search` is the one the inference side is feeding now."""

    def __init__(self, config: SearchConfig, tokenizer: WhisperTokenizer, audio_seconds: float,
                 options: DecodeOptions = DecodeOptions()) -> None:
        self._config = config
        self._tokenizer = tokenizer
        self._seconds = audio_seconds
        self._temperatures = options.temperatures
        self._prompt = options.prompt_tokens(tokenizer)
        self._scorers = options.scorers(tokenizer)
        self._attempts: list[tuple[SearchResult, float]] = []
        self.search = WindowSearch(config, audio_seconds, self._temperatures[0], prompt=self._prompt,
                                   scorers=self._scorers)

    def retry(self) -> WindowSearch | None:
        """Record the finished search; return the next one to run, or None when decided."""
        result = self.search.result()
        ratio = compression_ratio(self._tokenizer.decode(result.tokens).strip())
        self._attempts.append((result, ratio))
        suspect = ratio > COMPRESSION_RATIO_THRESHOLD or result.avg_logprob < LOGPROB_THRESHOLD
        if not suspect or is_silence(result) or len(self._attempts) == len(self._temperatures):
            return None
        temperature = self._temperatures[len(self._attempts)]
        self.search = WindowSearch(self._config, self._seconds, temperature, seed=len(self._attempts),
                                   prompt=self._prompt, scorers=self._scorers)
        return self.search

    def result(self) -> SearchResult:
        last, ratio = self._attempts[-1]
        if len(self._attempts) == 1 or ratio <= COMPRESSION_RATIO_THRESHOLD and last.avg_logprob >= LOGPROB_THRESHOLD:
            return last
        if is_silence(last):
            return last
        not_looping = [r for r, c in self._attempts if c <= COMPRESSION_RATIO_THRESHOLD]
        return max(not_looping or [r for r, _ in self._attempts], key=lambda r: r.avg_logprob)
