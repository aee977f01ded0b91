"""Decoder-side life of one speech window: its searches, Whisper's seek rule, then its words.

Both compositions use it unchanged: the in-process Transcriber and the daemon's decoder
processes. The inference side only ever sees rows of tokens, logits and alignment scores.
"""

from __future__ import annotations

from engine.decoding.alignment import fit_to_speech, word_timings
from engine.audio.files import SAMPLE_RATE
from engine.decoding.options import DecodeOptions
from engine.decoding.fallback import WindowDecode, is_silence
from engine.model.encoder_width import encoder_width
from engine.audio.features import N_FRAMES, WINDOW_SAMPLES
from engine.decoding.repeats import repeated_phrase
from engine.result import Word
from engine.decoding.rules import SECONDS_PER_TIMESTAMP
from engine.decoding.search import SearchConfig, SearchResult
from engine.text.tokenizer import WhisperTokenizer
from engine.audio.speech_window import SpeechWindow

MIN_REDO_SECONDS = 1.0  # an unfinished tail shorter than this is kept rather than decoded again
# Speech the VAD found this long, starting this far after the model's last timestamp, was skipped.
SKIPPED_SPEECH_SECONDS = 0.5
SKIPPED_AFTER_SECONDS = 0.3


class WindowJob:
    def __init__(self, config: SearchConfig, tokenizer: WhisperTokenizer, span: SpeechWindow,
                 options: DecodeOptions = DecodeOptions()) -> None:
        self.span = span.first(WINDOW_SAMPLES)
        self.tokenizer = tokenizer
        self._config = config
        self.decode = WindowDecode(config, tokenizer, self.samples / SAMPLE_RATE, options)
        self._result: SearchResult | None = None
        self._text: list[int] = []
        self.redo: SpeechWindow | None = None  # set by conclude()

    @property
    def samples(self) -> int:
        return self.span.samples

    def conclude(self) -> list[int] | None:
        """Settle the result once the last search is done.

        Returns the tokens to run the alignment pass on (None when there is no text), and sets
        `redo`: the span to decode again when the model left its last segment open or skipped speech,
        or the whole window, to be encoded whole, when its shortened encoding repeated itself. The
        alignment tokens never include the prompt: openai/whisper and faster-whisper align the
        text after the bare SOT sequence too, whatever prompt steered the decode.
        """
        result = self.decode.result()
        if self._repeats_itself_shortened(result):
            self._result, self._text, self.redo = result, [], self.span.whole()
            return None
        redo = None
        if result.complete_seconds is not None:
            resume = int(result.complete_seconds * SAMPLE_RATE)
            if (self.samples - resume) / SAMPLE_RATE >= MIN_REDO_SECONDS:
                result = result.without_unfinished_tail()
                redo = self.span.after(resume)
        self._result = result
        eot = self.tokenizer.eot
        self._text = [] if is_silence(result) else [t for t in result.tokens if t < eot]
        self.redo = redo
        if not self._text:
            return None
        if redo is None:
            self.redo = self._skipped_speech(result)
        return [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps, *self._text, eot]

    def _repeats_itself_shortened(self, result: SearchResult) -> bool:
        """A window encoded short whose text says a phrase twice back to back: decode it again whole.

        Whisper decoding a short clip from a shortened encoder window now and then says the clip's
        sentence twice, the second copy squeezed by the alignment into the window's last instant;
        the same clip encoded whole comes back once. Such a repeat is rare in speech and cheap to
        spot in the text, and decoding the few windows that show one again whole costs far less
        than encoding every short window whole (docs/DESIGN.md "Encoder width"). The whole
        decode's text stands, repeat or not: it is what Whisper itself would say.
        """
        if not self._config.redo_repeats_whole or self.span.encode_whole:
            return False
        if encoder_width(self.samples) >= N_FRAMES or is_silence(result):
            return False
        return repeated_phrase(self.tokenizer.decode([t for t in result.tokens if t < self.tokenizer.eot])) is not None

    def _skipped_speech(self, result: SearchResult) -> SpeechWindow | None:
        """The rest of the window, when the model closed its text before speech the VAD heard.

        Whisper ends a window with a single timestamp when it judges the speech over, and a new
        voice after a pause (the other side of a call, mixed to mono) is easily judged absent.
        Decoding the rest again, from that timestamp, finds it; each redo is shorter, so it ends.
        """
        stamps = [t for t in result.tokens if t >= self.tokenizer.timestamp_begin]
        if not stamps:
            return None
        end = (stamps[-1] - self.tokenizer.timestamp_begin) * SECONDS_PER_TIMESTAMP
        skipped = sum(e - s for s, e in self.span.speech_seconds() if s >= end + SKIPPED_AFTER_SECONDS)
        if end <= 0 or skipped < SKIPPED_SPEECH_SECONDS:
            return None
        return self.span.after(int(end * SAMPLE_RATE))

    def words(self, scores) -> list[Word]:
        """Timed words in file time from the alignment pass over conclude()'s tokens."""
        if self._result is None or not self._text:
            return []
        eot = self.tokenizer.eot
        logprobs = [lp for t, lp in zip(self._result.tokens, self._result.token_logprobs) if t < eot]
        timings = word_timings(self.tokenizer, scores, self._text, logprobs, self.samples)
        fit_to_speech(timings, self.span.speech_seconds())
        words = []
        for t in timings:
            text = t.text.strip()
            if not text:
                continue
            start = self._file_ms(t.start)
            words.append(Word(
                text=text,
                start_ms=start,
                end_ms=max(self._file_ms(t.end), start + 1),
                confidence=round(min(1.0, max(0.0, t.probability)), 4),
            ))
        return words

    def _file_ms(self, seconds: float) -> int:
        """A time in the window's joined audio as ms from the start of the file."""
        return int(round(self.span.file_sample(seconds * SAMPLE_RATE) * 1000 / SAMPLE_RATE))
