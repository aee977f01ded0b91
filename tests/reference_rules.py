"""The oracle: Whisper's decoding rules as the search applied them, in numpy, to whole logits rows, before the
rules moved to where the logits are made (engine/decoding/rules.py). test_reduce.py checks that the batched
rules mask exactly what these did, and that the search fed only candidates chooses what these rows chose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from engine.decoding.rules import repeated_tail

NEG_INF = -np.inf
SECONDS_PER_TIMESTAMP = 0.02


class HasTokens(Protocol):
    """What a rule reads of a live hypothesis (search.Hypothesis has it)."""

    tokens: list[int]


class LogitRule(Protocol):
    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        """Mask, in place, what each row (live[i]'s next token) may not be."""


def logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=-1)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):  # a fully suppressed range has log-mass -inf, correctly
        return safe + np.log(np.exp(x - safe[..., None]).sum(axis=-1))


@dataclass(frozen=True)
class SuppressTokens:
    """Tokens never emitted: the model's suppress list and the non-speech specials."""

    tokens: tuple[int, ...]

    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        logits[:, list(self.tokens)] = NEG_INF


@dataclass(frozen=True)
class NoTimestampPastAudio:
    """No timestamp after the window's last sample (the encoder saw only padding there)."""

    last_timestamp: int

    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        logits[:, self.last_timestamp + 1 :] = NEG_INF


@dataclass(frozen=True)
class FirstToken:
    """The first sampled token is a timestamp no later than max_initial_timestamp, never a blank."""

    suppress_begin: tuple[int, ...]
    timestamp_begin: int
    max_initial_timestamp: float

    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        last = self.timestamp_begin + int(round(self.max_initial_timestamp / SECONDS_PER_TIMESTAMP))
        for row, hyp in enumerate(live):
            if not hyp.tokens:
                logits[row, list(self.suppress_begin)] = NEG_INF
                logits[row, : self.timestamp_begin] = NEG_INF
                logits[row, last + 1 :] = NEG_INF


@dataclass(frozen=True)
class RepetitionGuard:
    """A row whose text has started to loop may only end."""

    eot: int

    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        for row, hyp in enumerate(live):
            if hyp.tokens and repeated_tail([t for t in hyp.tokens if t < self.eot]):
                eot_logit = logits[row, self.eot]
                logits[row] = NEG_INF
                logits[row, self.eot] = eot_logit


@dataclass(frozen=True)
class TimestampPairing:
    """Timestamps come in pairs (a segment's end, the next one's start) and never go back."""

    eot: int
    timestamp_begin: int

    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        tb = self.timestamp_begin
        for row, hyp in enumerate(live):
            seq = hyp.tokens
            if not seq:
                continue
            last_ts = seq[-1] >= tb
            penultimate_ts = len(seq) < 2 or seq[-2] >= tb
            if last_ts:
                if penultimate_ts:
                    logits[row, tb:] = NEG_INF
                else:
                    logits[row, : self.eot] = NEG_INF
            stamps = [t for t in seq if t >= tb]
            if stamps:
                floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
                logits[row, tb:floor] = NEG_INF


@dataclass(frozen=True)
class TimestampMass:
    """A timestamp when the timestamps' total probability beats every text token's.

    Both sides of the comparison carry the same normaliser, so it is made on logits, no softmax.
    """

    timestamp_begin: int

    def apply(self, logits: np.ndarray, live: Sequence[HasTokens]) -> None:
        tb = self.timestamp_begin
        mass = logsumexp(logits[:, tb:])
        best_text = logits[:, :tb].max(axis=-1)
        for row in np.nonzero(mass > best_text)[0]:
            logits[row, :tb] = NEG_INF
