"""A step's logits turned into what the search needs, where the logits are made: a few floats a row.

The search (engine/decoding/search.py) decides from each row's best candidates, not from its whole
vocabulary: the beam keeps `beam` of each row's `beam + 1` best tokens (openai/whisper takes the
same top-(beam+1)), a language model or a boosted word reranks a few more, a sampled row needs its
one draw. So the inference process reduces every row of a step in batched tensor operations (one
call each for all rows of all windows, no per-row Python) and only this crosses to the decoders:

    [raw shift, no-speech log-prob, K candidate ids, K log-probs, E requested log-probs]

- the K = 2 x beam best tokens after the rules (engine/decoding/rules.py), best first, with their
  log-probabilities under the rules (the beam's score); a sampled row's draw is candidate 0;
- raw shift: norm(after the rules) - norm(before), so a candidate's log-probability under the model
  alone (the confidences, which stay the model's own) is its log-prob + the shift;
- the no-speech log-probability before the rules (the window's first step reads it);
- E: the log-probabilities of tokens the decoder asked for by id (word_boost's and the language
  model's proposals, which may rank far below the top), -inf where the rules mask them.

At beam 5 that is 22 float32, 88 bytes a row instead of 207 KB (docs/DESIGN.md "Thin steps").
Sampling at temperature > 0 draws on the device too, with Gumbel noise from a counter-based hash of
(the row's key, the column): a window's draws depend only on its own seed, step and row, so a
request stays repeatable and a window's words do not depend on its neighbours in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from engine.decoding.rules import RowMasks

HEAD = 2  # raw shift, no-speech log-prob
RAW_SHIFT, NO_SPEECH = 0, 1
MAX_REQUESTED = 128  # log-probs a row may ask for by id (word_boost proposals); the search asks for no more
_HASH = 0x45D9F3B
_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # spreads the columns of one row over the hash's 32-bit input
_FAINT = 1e-30  # a masked row's summed numerators below this are renormalised exactly


def step_width(candidates: int, requested: int = 0) -> int:
    """Float32 columns of one reduced row."""
    return HEAD + 2 * candidates + requested


@dataclass(frozen=True)
class RowRules:
    """What the inference side needs to reduce one window's next step, one entry per row it feeds.

    bounds: int64 [rows, 3], rules.row_bounds of each row's hypothesis.
    keys: the sampling key of each row (its window's seed, step and row); unused at temperature 0.
    requested: per row, token ids whose log-probabilities the decoder wants besides the top K.
    """

    bounds: np.ndarray
    temperature: float = 0.0
    keys: tuple[int, ...] = ()
    requested: tuple[tuple[int, ...], ...] = ()

    @property
    def rows(self) -> int:
        return len(self.bounds)

    @property
    def width_requested(self) -> int:
        return max((len(r) for r in self.requested), default=0)


class StepReducer:
    """Built once per model and device: the rules' static masks and the candidate count."""

    def __init__(self, suppress: Sequence[int], no_speech: int, timestamp_begin: int, candidates: int, n_vocab: int,
                 device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.candidates = candidates
        self._no_speech = no_speech
        self._masks = RowMasks(suppress, timestamp_begin, n_vocab, self.device)
        self._columns = torch.arange(n_vocab, device=self.device, dtype=torch.int64)

    @torch.inference_mode()
    def reduce(self, logits: torch.Tensor, rules: Sequence[RowRules]) -> list[np.ndarray]:
        """float32 logits [rows, vocab] of a step (used as scratch) -> one float32 array per window,
        [its rows, step_width(K, its widest request)], in the order of `rules`."""
        k = self.candidates
        bounds = np.concatenate([r.bounds for r in rules])
        # One exp for both norms: the row's softmax numerators against its raw maximum, summed before the
        # rules and, zeroed where they mask, after (two torch.logsumexp calls cost twice the passes).
        peak = logits.amax(dim=-1, keepdim=True)
        scaled = torch.exp(logits - peak)
        raw_norm = peak[:, 0] + torch.log(scaled.sum(dim=-1))
        no_speech = logits[:, self._no_speech] - raw_norm
        self._masks.apply(logits, bounds, scaled)
        kept = scaled.sum(dim=-1)
        norm = peak[:, 0] + torch.log(kept)
        faint = torch.nonzero(kept < _FAINT)[:, 0]  # all it allows is ~70 nats below what it masks: exactly, then
        if len(faint):
            norm[faint] = torch.logsumexp(logits.index_select(0, faint), dim=-1)
        values, ids = torch.topk(logits, k, dim=-1, sorted=True)
        self._sample(logits, rules, values, ids)
        parts = [(norm - raw_norm)[:, None], no_speech[:, None], ids.float(), values - norm[:, None]]
        widest = max(r.width_requested for r in rules)
        if widest:
            parts.append(self._requested(logits, rules, widest) - norm[:, None])
        packed = torch.cat(parts, dim=1).cpu().numpy()
        out, row = [], 0
        for r in rules:
            out.append(packed[row : row + r.rows, : step_width(k, r.width_requested)])
            row += r.rows
        return out

    def _sample(self, logits: torch.Tensor, rules: Sequence[RowRules], values: torch.Tensor,
                ids: torch.Tensor) -> None:
        """Put each sampled row's draw from softmax(logits / T) in candidate 0 (the Gumbel-max trick)."""
        rows, temps, keys, row = [], [], [], 0
        for r in rules:
            if r.temperature > 0:
                rows.extend(range(row, row + r.rows))
                temps.extend([r.temperature] * r.rows)
                keys.extend(r.keys)
            row += r.rows
        if not rows:
            return
        dev = self.device
        index = torch.as_tensor(rows, device=dev)
        chosen = torch.index_select(logits, 0, index)
        counter = torch.as_tensor(keys, device=dev, dtype=torch.int64)[:, None] + self._columns * _GOLDEN
        draw = (chosen / torch.as_tensor(temps, device=dev)[:, None] + _gumbel(counter)).argmax(dim=-1)
        ids[index, 0] = draw
        values[index, 0] = chosen.gather(1, draw[:, None])[:, 0]

    def _requested(self, logits: torch.Tensor, rules: Sequence[RowRules], widest: int) -> torch.Tensor:
        wanted = np.zeros((logits.shape[0], widest), dtype=np.int64)
        missing = np.ones_like(wanted, dtype=bool)
        row = 0
        for r in rules:
            for i, tokens in enumerate(r.requested):
                wanted[row + i, : len(tokens)] = tokens
                missing[row + i, : len(tokens)] = False
            row += r.rows
        found = logits.gather(1, torch.as_tensor(wanted, device=self.device))
        return found.masked_fill_(torch.as_tensor(missing, device=self.device), float("-inf"))


def _gumbel(counter: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from int64 counters, a pure function of each counter (any device, any batch)."""
    x = counter & _MASK32
    x = (((x >> 16) ^ x) * _HASH) & _MASK32
    x = (((x >> 16) ^ x) * _HASH) & _MASK32
    x = (x >> 16) ^ x
    uniform = (x.double() + 0.5) / 2.0**32
    return (-torch.log(-torch.log(uniform))).float()


def sampling_key(seed: int, step: int, row: int) -> int:
    """A row's 32-bit counter base, mixed from the (seed, step, row) of one of a window's draws."""
    x = 0
    for part in (seed, step, row):
        x = ((x ^ part) * 0x01000193 + 0x7F4A7C15) & _MASK32
        x ^= x >> 15
    return x
