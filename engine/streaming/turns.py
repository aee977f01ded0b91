"""A live stream cut into turns, each decoded again as it grows and once more, whole, when it ends.

The state machine only decides; whoever drives it (the daemon's stream session, a test, the bench)
runs the decodes it asks for, on the same decoding path as a file's windows, and hands their words
back. Time is the stream's own: samples received, never the wall clock, so a turn ends at the same
place however fast the audio arrives.

- A turn starts when the VAD has heard MIN_SPEECH_MS of speech, TURN_PAD_MS before it.
- While it grows, its audio so far is decoded again every PARTIAL_EVERY_MS of new audio, one decode
  in flight at a time, so the pace falls back by itself when the workers are busy rather than the
  stream falling behind. Words two successive decodes agree on from the start are final
  (LocalAgreement-2, as whisper_streaming does); a final word stays final.
- The audio a decode covers stops TURN_PAD_MS after the last speech, so once the speaker pauses, the
  decode of the turn so far is exactly the decode its end would need: it is kept, and when the
  silence settings end the turn with no speech since, it is the final result at once (no decode
  waits between the end of the silence and the end_of_turn message).
- The turn ends after `max_turn_silence_ms` of silence; after `min_turn_silence_ms` when the decode
  of the whole turn ends in a sentence's last mark with at least `end_of_turn_confidence_threshold`
  confidence; on ForceEndpoint; or when it reaches MAX_TURN_MS (Whisper reads 30 s at most).
"""

from __future__ import annotations

import itertools
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from engine.audio.files import SAMPLE_RATE
from engine.audio.live_vad import FRAME_SAMPLES, LiveVad
from engine.result import Word
from engine.streaming.settings import TurnSettings

MIN_SPEECH_MS = 96  # three VAD frames: a click or a breath does not start a turn
TURN_PAD_MS = 300  # audio kept before a turn's first speech and after its last
PARTIAL_EVERY_MS = 500
MAX_TURN_MS = 28_000
_SENTENCE_END = (".", "?", "!")


@dataclass(frozen=True)
class Decode:
    """Decode this audio (16 kHz mono) and call LiveTurns.decoded(ticket, words) with its words, in ms of the
    audio given; `final`: the turn has ended and waits for it."""

    ticket: int
    audio: np.ndarray
    final: bool
    # the end of the turn waits for it (the final, or the pause's decode, which becomes the final when the
    # silence ends the turn): it should go ahead of everything else
    urgent: bool


@dataclass(frozen=True)
class TurnUpdate:
    """A Turn message's content: the turn's words in stream ms, how many from the start are final."""

    turn: int
    words: list[Word]
    final_words: int
    end_of_turn: bool
    end_of_turn_confidence: float


@dataclass
class _Turn:
    order: int
    start: int  # stream sample
    speech_end: int  # stream sample after the last speech frame
    committed: list[Word] = field(default_factory=list)
    previous: list[Word] | None = None  # the last partial decode's words
    covered: int = 0  # stream sample up to which the last decode requested reached
    decoded: tuple[int, list[Word], float] | None = None  # (end sample, words, confidence) of the newest decode back
    ended: bool = False


class LiveTurns:
    def __init__(self, settings: TurnSettings = TurnSettings(), vad: LiveVad | None = None,
                 partials: bool = True) -> None:
        """`partials` False: only the decodes a turn's end needs (a recording read as a stream, where nobody
        watches a turn grow)."""
        self.settings = settings
        self.partials = partials
        self.vad = vad or LiveVad()
        self._audio = np.zeros(0, np.float32)  # from self._base on
        self._base = 0  # stream sample of self._audio[0]
        self._frames = 0  # VAD frames scored
        self._speech_run = 0  # consecutive speech frames
        self._silence = 0  # samples of silence since the last speech (in a turn)
        self._turn: _Turn | None = None
        self._orders = itertools.count()
        self._tickets = itertools.count()
        self._in_flight: dict[int, tuple[_Turn, int, bool]] = {}  # ticket -> turn, end sample, final
        self._partial: int | None = None  # the ticket of the partial decode in flight
        self._last_partial = 0  # stream sample where the last partial was asked for

    def update(self, settings: TurnSettings) -> None:
        self.settings = settings

    def push(self, audio: np.ndarray) -> list[Decode | TurnUpdate]:
        """The stream's next 16 kHz samples; what to decode and what to tell the client now."""
        self._audio = np.concatenate([self._audio, audio.astype(np.float32, copy=False)])
        out: list[Decode | TurnUpdate] = []
        for probability in self.vad.push(audio):
            frame_end = (self._frames + 1) * FRAME_SAMPLES
            self._frames += 1
            out += self._frame(probability >= self.settings.vad_threshold, frame_end)
        out += self._maybe_partial()
        self._trim()
        return out

    def force_endpoint(self) -> list[Decode | TurnUpdate]:
        """End the turn in progress now (ForceEndpoint, Terminate)."""
        if self._turn is None:
            return []
        return self._end(self._turn)

    def decoded(self, ticket: int, words: list[Word]) -> list[TurnUpdate | Decode]:
        """A decode asked for has its words (in ms of the audio it was given)."""
        turn, end, final = self._in_flight.pop(ticket)
        if ticket == self._partial:
            self._partial = None
        offset = turn.start * 1000 // SAMPLE_RATE
        words = [Word(w.text, w.start_ms + offset, w.end_ms + offset, w.confidence) for w in words]
        if final:
            return [TurnUpdate(turn.order, words, len(words), True, _confidence(words))]
        if turn.ended or (turn.decoded is not None and turn.decoded[0] > end):
            return []  # after its turn's end (the final speaks for it), or after a decode of more of the turn
        turn.decoded = (end, words, _confidence(words))
        out: list[TurnUpdate | Decode] = [self._partial_update(turn, words)] if words else []
        if turn is self._turn:
            out += self._maybe_end(turn)
        return out + self._maybe_partial()

    # -- the VAD's frames -------------------------------------------------------------------------

    def _frame(self, speech: bool, frame_end: int) -> list[Decode | TurnUpdate]:
        rate = SAMPLE_RATE // 1000
        if speech:
            self._speech_run += 1
            self._silence = 0
            if self._turn is None and self._speech_run * FRAME_SAMPLES >= MIN_SPEECH_MS * rate:
                first = frame_end - self._speech_run * FRAME_SAMPLES
                start = max(self._base, first - TURN_PAD_MS * rate)
                self._turn = _Turn(next(self._orders), start, frame_end)
                self._last_partial = start
            if self._turn is not None:
                self._turn.speech_end = frame_end
            return []
        self._speech_run = 0
        if self._turn is None:
            return []
        self._silence = frame_end - self._turn.speech_end
        return self._maybe_end(self._turn)

    def _maybe_end(self, turn: _Turn) -> list[Decode | TurnUpdate]:
        rate = SAMPLE_RATE // 1000
        silence_ms = self._silence // rate
        if self._frames * FRAME_SAMPLES - turn.start >= MAX_TURN_MS * rate:
            return self._end(turn)
        if silence_ms >= self.settings.max_turn_silence_ms:
            return self._end(turn)
        decoded = turn.decoded
        confident = (decoded is not None and decoded[0] >= self._speech_cut(turn)
                     and decoded[2] >= self.settings.end_of_turn_confidence_threshold)
        if silence_ms >= self.settings.min_turn_silence_ms and confident:
            return self._end(turn)
        return []

    def _maybe_partial(self) -> list[Decode | TurnUpdate]:
        turn = self._turn
        if turn is None:
            return []
        cut = self._speech_cut(turn)
        now = self._base + self._audio.size
        if cut <= now and turn.covered < cut:
            # the pause's decode: the turn so far, exactly as its end would decode it; it goes at once, beside
            # a partial in flight, since the end of the turn waits for it
            return [self._decode(turn, cut, final=False, urgent=True)]
        due = now - self._last_partial >= PARTIAL_EVERY_MS * SAMPLE_RATE // 1000
        if not self.partials or self._partial is not None or not due or min(cut, now) <= turn.covered:
            return []
        self._last_partial = now
        decode = self._decode(turn, min(cut, now), final=False)
        self._partial = decode.ticket
        return [decode]

    def _speech_cut(self, turn: _Turn) -> int:
        """Where the turn's audio ends for a decode: TURN_PAD_MS after its last speech."""
        return turn.speech_end + TURN_PAD_MS * SAMPLE_RATE // 1000

    def _end(self, turn: _Turn) -> list[Decode | TurnUpdate]:
        turn.ended = True
        self._turn = None
        self._silence = 0
        now = self._base + self._audio.size
        cut = min(self._speech_cut(turn), now)
        if turn.decoded is not None and turn.decoded[0] >= cut:
            words = turn.decoded[1]
            return [TurnUpdate(turn.order, words, len(words), True, turn.decoded[2])]
        for ticket, (owner, end, _) in self._in_flight.items():
            if owner is turn and end >= cut:  # the pause's decode, on its way: it is the final one
                self._in_flight[ticket] = (owner, end, True)
                return []
        return [self._decode(turn, cut, final=True, urgent=True)]

    def _decode(self, turn: _Turn, end: int, final: bool, urgent: bool = False) -> Decode:
        ticket = next(self._tickets)
        self._in_flight[ticket] = (turn, end, final)
        turn.covered = max(turn.covered, end)
        audio = self._audio[turn.start - self._base: end - self._base].copy()
        return Decode(ticket, audio, final, urgent)

    def _partial_update(self, turn: _Turn, words: list[Word]) -> TurnUpdate:
        """LocalAgreement-2: the words this decode and the one before agree on, from the start, are final."""
        previous = turn.previous or []
        agreed = 0
        for before, now in zip(previous, words):
            if _plain(before.text) != _plain(now.text):
                break
            agreed += 1
        turn.previous = words
        if agreed > len(turn.committed):
            turn.committed = words[:agreed]
        shown = turn.committed + words[len(turn.committed):]
        return TurnUpdate(turn.order, shown, len(turn.committed), False, _confidence(words))

    def _trim(self) -> None:
        """Keep the turn's audio, or only what a turn starting now would reach back to (decodes hold copies)."""
        lookback = (TURN_PAD_MS + MIN_SPEECH_MS) * SAMPLE_RATE // 1000 + FRAME_SAMPLES
        keep_from = self._turn.start if self._turn is not None else self._base + self._audio.size - lookback
        drop = max(0, keep_from - self._base)
        if drop:
            self._audio = self._audio[drop:]
            self._base += drop


def _plain(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum() or c == "'")


def _confidence(words: list[Word]) -> float:
    """How sure the decode is that the turn is over: a sentence's last mark, as sure as the word that holds it."""
    if not words or not words[-1].text.endswith(_SENTENCE_END):
        return 0.0
    return round(words[-1].confidence, 4)


def recording_turns(audio: np.ndarray, decode: Callable[[np.ndarray], list[Word]], parallel: int = 4,
                    settings: TurnSettings = TurnSettings(), vad: LiveVad | None = None) -> Iterator[TurnUpdate]:
    """A whole recording's final turns, in order, each as soon as it and those before it are decoded.

    The recording is read as a stream at full speed (no partials) and its turns' decodes run `parallel`
    at a time, so the first turn's text comes long before the last is decoded: what a client asking for
    a file's transcript as server-sent events (OpenAI's stream=true) wants.
    """
    turns = LiveTurns(settings, vad, partials=False)
    pending: dict[Future, int] = {}
    done: dict[int, TurnUpdate] = {}
    following = 0
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="recording-turns") as pool:

        def run(asked: list) -> None:
            for item in asked:
                if isinstance(item, Decode):
                    pending[pool.submit(decode, item.audio)] = item.ticket
                elif item.end_of_turn:
                    done[item.turn] = item

        def collect(block: bool) -> None:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED, timeout=None if block else 0)
            for future in finished:
                run(turns.decoded(pending.pop(future), future.result()))

        step = 4 * SAMPLE_RATE
        for start in range(0, audio.size, step):
            run(turns.push(audio[start:start + step]))
            while len(pending) >= parallel:
                collect(block=True)
            collect(block=False)
            while following in done:
                yield done.pop(following)
                following += 1
        run(turns.force_endpoint())
        while pending or following in done:
            if following in done:
                yield done.pop(following)
                following += 1
            else:
                collect(block=True)
