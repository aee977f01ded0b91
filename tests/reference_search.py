"""The oracle: the search as it was before the steps were reduced where the logits are made, driven by whole
logits rows (207 KB each) and reference_rules' numpy rules. Everything but the step itself is the engine's.
test_reduce.py decodes real speech with it and with engine/decoding/search.py fed only candidates, and
expects the same tokens."""

from __future__ import annotations

import numpy as np
import torch

from engine.decoding import search
from engine.decoding.rules import SECONDS_PER_TIMESTAMP
from engine.decoding.search import Hypothesis, SearchConfig
from reference_rules import (FirstToken, LogitRule, NoTimestampPastAudio, RepetitionGuard, SuppressTokens, TimestampMass,
                             TimestampPairing, logsumexp)


def _top_tokens(rows: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest logits' token ids of each row, in no particular order."""
    return torch.topk(torch.from_numpy(rows), count, dim=-1, sorted=False).indices.numpy()


class WindowSearch(search.WindowSearch):
    def __init__(self, config: SearchConfig, audio_seconds: float, temperature: float = 0.0, seed: int = 0) -> None:
        super().__init__(config, audio_seconds, temperature, seed)
        last_timestamp = config.timestamp_begin + int(round(min(audio_seconds, 30.0) / SECONDS_PER_TIMESTAMP))
        self.logit_rules: tuple[LogitRule, ...] = (
            SuppressTokens(config.suppress),
            NoTimestampPastAudio(last_timestamp),
            FirstToken(config.suppress_begin, config.timestamp_begin, config.max_initial_timestamp),
            RepetitionGuard(config.eot),
            TimestampPairing(config.eot, config.timestamp_begin),
            TimestampMass(config.timestamp_begin),
        )
        self._rng = np.random.default_rng(seed)

    def _filter(self, logits: np.ndarray) -> np.ndarray:
        """Apply the rules in place to a [rows, vocab] matrix, one row per live hypothesis."""
        for rule in self.logit_rules:
            rule.apply(logits, self._live)
        return logits

    def advance(self, logits: np.ndarray) -> tuple[list[int], list[int]]:
        """Consume one logits row per row; return the next tokens and the parent row of each.

        The rows that follow are exactly the returned ones: fewer rows than before means the
        others ended, and a parent that is not the row's own index means its cache is copied.
        `logits` is used as scratch space (the rules are applied in place): no copy per step.
        """
        if self._sot_fed < len(self.cfg.sot_sequence):
            if self._sot_fed == 0:
                row = logits[0]
                self.no_speech_prob = float(np.exp(row[self.cfg.no_speech] - logsumexp(row)))
            self._sot_fed += 1
            if self._sot_fed < len(self.cfg.sot_sequence):
                return [self.cfg.sot_sequence[self._sot_fed]] * self.rows, list(range(self.rows))
        block = logits[: len(self._live)]
        if block.dtype != np.float32:
            block = block.astype(np.float32)
        raw_norm = logsumexp(block)  # before the rules: confidences are the model's own
        filtered = self._filter(block)
        norm = logsumexp(filtered)
        # A chosen token is never one the rules set to -inf, so its raw logit is still in place.
        if self.temperature == 0:
            kept = self._beam_step(filtered, norm, raw_norm)
        else:
            kept = self._sample_step(filtered, norm, raw_norm)
        return self._continue_with(kept)

    def _beam_step(self, filtered: np.ndarray, norm: np.ndarray, raw_norm: np.ndarray) -> list[tuple[int, Hypothesis]]:
        width = self.cfg.beam_size + 1
        top = _top_tokens(filtered, width)
        candidates: list[tuple[float, int, int, float, tuple]] = []
        for row, hyp in enumerate(self._live):
            tokens = top[row].tolist()
            for scorer, state in zip(self.scorers, hyp.states):
                tokens += [t for t in scorer.proposals(state) if t not in tokens]
            bonus, whole, states = self._score(hyp, tokens)
            for i, token in enumerate(tokens):
                logit = float(filtered[row, token])
                if np.isfinite(logit):
                    extra = bonus[i] if bonus else 0.0
                    after = tuple(s[i] for s in states)
                    candidates.append((hyp.score + logit - float(norm[row]), row, token, extra, after,
                                       whole[i] if whole else 0.0))
        candidates.sort(key=lambda c: -(c[0] + self._live[c[1]].bonus + c[3]))
        kept: list[tuple[int, Hypothesis]] = []
        for score, row, token, extra, after, extra_whole in candidates:
            hyp = self._live[row].extended(token, float(filtered[row, token] - raw_norm[row]), score, extra, after,
                                           extra_whole)
            if token == self.cfg.eot:
                if len(self._finished) < self.cfg.beam_size:
                    self._finished.append(hyp)
            else:
                kept.append((row, hyp))
                if len(kept) == self.cfg.beam_size:
                    break
        return kept

    def _sample_step(self, filtered: np.ndarray, norm: np.ndarray, raw_norm: np.ndarray) -> list[tuple[int, Hypothesis]]:
        """Sample each row from softmax(logits / T) with the Gumbel-max trick."""
        gumbel = -np.log(-np.log(self._rng.uniform(1e-12, 1.0, size=filtered.shape)))
        choices = np.argmax(filtered / self.temperature + gumbel, axis=-1)
        kept: list[tuple[int, Hypothesis]] = []
        for row, (hyp, token) in enumerate(zip(self._live, choices.tolist())):
            logit = float(filtered[row, token])
            extended = hyp.extended(token, logit - float(raw_norm[row]), hyp.score + logit - float(norm[row]))
            if token == self.cfg.eot:
                self._finished.append(extended)
            else:
                kept.append((row, extended))
        return kept
