"""Whisper's temperature fallback: decode a window again when its beam result looks wrong.

A result is suspect when its text compresses too well (a loop) or the model was unsure of it
(low average log-probability), unless the window is silence. Each retry decodes at the next
temperature of the transcription's schedule (DecodeOptions.temperatures: rising from 0 by default);
when every attempt is suspect, the most probable one that does not loop wins. The thresholds are
openai/whisper's and faster-whisper's defaults.

Two more decodes serve a domain's vocabulary (docs/LANGUAGE_MODEL.md), each at the schedule's first
temperature and after the window's text is decided (the first attempt's, or the fallback's choice):

- **Unboost**: with word_boost, a window decoded with the terms boosted whose text neither spells
  one of them nor nearly spells one (engine/lm/domain_terms.py) is decoded again, with its whole
  schedule, as if word_boost were empty: a list that has nothing to find in a window must leave it
  as it would have been (named in the prompt, the terms cost general speech a point or more).
- **Recheck**: a window whose text nearly spells a boosted term (the request's list, tested even
  when the window was unboosted), a rare word or listed phrase of the request's prompt
  (engine/lm/domain_terms.prompt_terms), or one of a custom language model's terms, without spelling
  it, is decoded once more with only the terms it nearly spelled boosted. The recheck's text replaces
  the decided one only when it spells one of those terms (the recheck exists to let a term in;
  boosted, a window can also wander off into text the model does not believe, and without the term
  that is all it is), is neither suspect nor silence, and does not say a phrase twice that the
  decided text said once (the model copying the list of terms in its prompt).
"""

from __future__ import annotations

import dataclasses

from engine.text.compression import compression_ratio
from engine.decoding.options import DecodeOptions
from engine.decoding.repeats import adds_repeat
from engine.decoding.search import SearchConfig, SearchResult, WindowSearch
from engine.lm.domain_terms import MAX_TERMS_PER_WINDOW, DomainTerms, boosted_terms, prompt_terms
from engine.lm.text import spells_any
from engine.text.tokenizer import WhisperTokenizer

COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
# A recheck that says a phrase of this many words twice where the decided text did not ("Montreal forced
# aligner, forced aligner" for "Montreal forced liner") copied the list of terms in its prompt, not the audio.
RECHECK_REPEAT_WORDS = 2


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
        self._rechecking = False
        self._rechecked: SearchResult | None = None
        self._missed: tuple[str, ...] = ()  # the terms the recheck boosted
        self._terms = options.word_boost  # the request's, tested for near misses even after an unboost
        self._start(options)

    def _start(self, options: DecodeOptions) -> WindowSearch:
        """The window's attempts from the first, decoded with `options` (the request's, or them without word_boost)."""
        self._options = options
        self._prompt = options.prompt_tokens(self._tokenizer)
        self._scorers = options.scorers(self._tokenizer)
        self._attempts: list[tuple[SearchResult, float]] = []
        self.search = WindowSearch(self._config, self._seconds, self._temperatures[0], prompt=self._prompt,
                                   scorers=self._scorers)
        return self.search

    def retry(self) -> WindowSearch | None:
        """Record the finished search; return the next one to run, or None when decided."""
        result = self.search.result()
        text = self._tokenizer.decode(result.tokens).strip()
        ratio = compression_ratio(text)
        suspect = ratio > COMPRESSION_RATIO_THRESHOLD or result.avg_logprob < LOGPROB_THRESHOLD
        if self._rechecking:
            self._rechecking = False
            if (not suspect and not is_silence(result) and spells_any(text, self._missed)
                    and not adds_repeat(self._decided_text(), text, RECHECK_REPEAT_WORDS)):
                self._rechecked = result
            return None
        self._attempts.append((result, ratio))
        if not suspect or is_silence(result) or len(self._attempts) == len(self._temperatures):
            decided = self._decided_text()
            return self._unboost(decided) or self._recheck(decided)
        temperature = self._temperatures[len(self._attempts)]
        self.search = WindowSearch(self._config, self._seconds, temperature, seed=len(self._attempts),
                                   prompt=self._prompt, scorers=self._scorers)
        return self.search

    def _unboost(self, text: str) -> WindowSearch | None:
        """The window decoded again as if word_boost were empty, when the boosted text has nothing to do with it."""
        if not self._options.word_boost:
            return None
        if spells_any(text, self._options.word_boost) or self._boosted_terms().near_misses(text):
            return None
        return self._start(dataclasses.replace(self._options, word_boost=()))

    def _recheck(self, text: str) -> WindowSearch | None:
        """The window once more, at the first temperature, with the terms the decided text nearly spelled boosted."""
        if is_silence(self._decided()):
            return None
        missed = self._near_misses(text)
        if not missed:
            return None
        # Only those terms: named alone in the prompt, a term is spelled more often than in a long list
        # (dev clinic speech: 12.7 % WER against 14.5 % with no recheck).
        boosted = dataclasses.replace(self._options, word_boost=missed)
        self._missed = missed
        self._rechecking = True
        self.search = WindowSearch(self._config, self._seconds, self._temperatures[0],
                                   prompt=boosted.prompt_tokens(self._tokenizer), scorers=boosted.scorers(self._tokenizer))
        return self.search

    def _decided_text(self) -> str:
        return self._tokenizer.decode(self._decided().tokens).strip()

    def _boosted_terms(self) -> DomainTerms:
        return boosted_terms(self._terms, self._tokenizer)

    def _near_misses(self, text: str) -> tuple[str, ...]:
        """The boosted terms, the prompt's rare words and the language model's terms that `text` nearly spells,
        at most MAX_TERMS_PER_WINDOW."""
        found = list(self._boosted_terms().near_misses(text)) if self._terms else []
        if self._options.prompt:
            found += prompt_terms(self._options.prompt, self._tokenizer).near_misses(text)
        if self._config.domain_terms is not None:
            found += [t for t in self._config.domain_terms.near_misses(text) if t not in self._terms]
        return tuple(dict.fromkeys(found))[:MAX_TERMS_PER_WINDOW]

    def result(self) -> SearchResult:
        return self._rechecked if self._rechecked is not None else self._decided()

    def _decided(self) -> SearchResult:
        last, ratio = self._attempts[-1]
        if len(self._attempts) == 1 or ratio <= COMPRESSION_RATIO_THRESHOLD and last.avg_logprob >= LOGPROB_THRESHOLD:
            return last
        if is_silence(last):
            return last
        not_looping = [r for r, c in self._attempts if c <= COMPRESSION_RATIO_THRESHOLD]
        return max(not_looping or [r for r, _ in self._attempts], key=lambda r: r.avg_logprob)
