"""Whisper's decoding rules (openai/whisper's LogitFilter), each written once, in two halves that meet at three ints.

A rule decides what a hypothesis may say next from its own tokens; applying it means setting
columns of that row's logits to -inf. The tokens live in the decoder process, the logits where the
network makes them (a card, or the CPU inference process), and a logits row is 207 KB (51,864
float32) while what the rules make of a hypothesis's history fits in three column bounds. So:

- decoder side, `row_bounds`: a row's history -> (below, ts_from, last), per hypothesis, in Python
  (bookkeeping over a few rows, as openai/whisper and CTranslate2 keep it on the host);
- device side, `mask_rows`: every row of a step masked by its bounds in a handful of batched tensor
  operations, then the timestamp-mass test, which needs the whole row and so only runs there.

The rows' masks compose as one: a column is masked when it is below `below`, a timestamp before
`ts_from`, past `last`, or a suppressed token. Every rule of openai/whisper's ApplyTimestampRules,
SuppressTokens and SuppressBlank (plus the repetition guard) is one such bound:

| rule | bound |
|---|---|
| suppressed tokens (the model's list and the non-speech specials) | the static column mask |
| no timestamp past the window's audio | last <= the audio's last timestamp |
| first token: a timestamp (not blank, not text), at most max_initial_timestamp | below = timestamp_begin, last <= cap |
| a looping row may only end (repetition guard) | below = last = eot |
| timestamps in pairs: after a closing one, only a timestamp or the end | below = eot |
| after a pair, no timestamp | last = timestamp_begin - 1 |
| timestamps never go back | ts_from = the last timestamp (+1 once its pair is closed) |
| the timestamps' total probability beats every text token's: a timestamp | device, after the bounds |

The first-token rule's SuppressBlank tokens (the model's suppress_ids_begin: the blank and eot) lie
below timestamp_begin, so `below` covers them; SearchConfig checks that this holds for the model.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

SECONDS_PER_TIMESTAMP = 0.02


class Scorer(Protocol):
    """Adds to the ranking score of beam candidates, keeping a state of its own per hypothesis.

    The state is immutable and travels with the hypothesis (search.Hypothesis.states), so a
    language model's context or a boosted phrase's progress is never recomputed from the tokens.
    A scorer whose class sets `per_hypothesis = True` rewards a hypothesis as a whole (a boosted phrase
    spelled): the final choice adds its bonus to the length-normalised score rather than normalising it
    (search.Hypothesis.final_rank); a language model's per-word scores are normalised with the rest.
    """

    def initial(self) -> object:
        """The state of a hypothesis with no tokens yet."""

    def proposals(self, state: object) -> Sequence[int]:
        """Tokens to rank for this hypothesis besides the model's top choices (the search drops masked ones)."""

    def advance(self, state: object, tokens: Sequence[int]) -> tuple[list[float], list[object]]:
        """For each of `tokens` continuing the hypothesis in `state`: its bonus (log domain) and next state."""


def repeated_tail(text_tokens: list[int]) -> int:
    """Length of the tail that only repeats the n-gram before it, once it loops; 0 if it does not.

    Short n-grams must repeat more often before they count (a word said twice is speech; a
    phrase said four times in a row by a 30 s window is almost always a decoding loop).
    """
    for n in range(1, 13):
        repeats = max(3, -(-12 // n))
        if len(text_tokens) < n * repeats:
            continue
        tail = text_tokens[-n * repeats :]
        if all(tail[i] == tail[i % n] for i in range(len(tail))):
            return n * (repeats - 1)
    return 0


def row_bounds(tokens: Sequence[int], eot: int, timestamp_begin: int, last_timestamp: int,
               first_last_timestamp: int) -> tuple[int, int, int]:
    """(below, ts_from, last): the columns a hypothesis with `tokens` may not take next are those below
    `below`, the timestamps before `ts_from`, and those past `last` (the table in the module docstring).

    `last_timestamp`: the window's audio ends there; `first_last_timestamp`: the first token's cap.
    """
    tb = timestamp_begin
    if not tokens:
        return tb, tb, min(last_timestamp, first_last_timestamp)
    if repeated_tail([t for t in tokens if t < eot]):
        return eot, tb, eot
    below, ts_from, last = 0, tb, last_timestamp
    last_ts = tokens[-1] >= tb
    penultimate_ts = len(tokens) < 2 or tokens[-2] >= tb
    if last_ts:
        if penultimate_ts:
            last = tb - 1
        else:
            below = eot
    stamp = next((t for t in reversed(tokens) if t >= tb), None)
    if stamp is not None:
        ts_from = stamp if last_ts and not penultimate_ts else stamp + 1
    return below, ts_from, last


class RowMasks:
    """The device half: every row of a step masked by its bounds, then the timestamp-mass rule.

    Only what a step can mask is touched: the suppressed columns of every row, the timestamp
    columns of every row (1,501 of 51,864), and the text columns only of the rows whose bounds reach
    below timestamp_begin (a first token, a closing timestamp, a loop: a few rows a step). Built as
    whole [rows, vocab] masks, the same rules took a third of the reduction's time on the CPU.
    """

    def __init__(self, suppress: Sequence[int], timestamp_begin: int, n_vocab: int, device: torch.device) -> None:
        self._tb = timestamp_begin
        self._device = device
        self._suppress = torch.as_tensor(sorted(suppress), device=device, dtype=torch.int64)
        self._text_columns = torch.arange(timestamp_begin, device=device)
        self._timestamp_columns = torch.arange(timestamp_begin, n_vocab, device=device)

    def apply(self, logits: torch.Tensor, bounds: np.ndarray, scaled: torch.Tensor | None = None) -> None:
        """Mask float32 logits [rows, vocab] in place; bounds: int64 [rows, 3] from row_bounds, on the host.

        `scaled`, when given, is exp(logits - a per-row constant) (the reduction's softmax numerators):
        whatever is masked in `logits` is zeroed there too, so its sums stay those of the masked row.
        """
        tb, dev, inf = self._tb, self._device, float("-inf")
        pairs = [(logits, inf)] + ([(scaled, 0.0)] if scaled is not None else [])
        for tensor, fill in pairs:
            tensor.index_fill_(1, self._suppress, fill)
        on_device = torch.as_tensor(bounds, device=dev)
        outside = (self._timestamp_columns < on_device[:, 1:2]) | (self._timestamp_columns > on_device[:, 2:3])
        for tensor, fill in pairs:
            tensor[:, tb:].masked_fill_(outside, fill)
        reaching = np.flatnonzero((bounds[:, 0] > 0) | (bounds[:, 2] < tb - 1))
        if reaching.size:
            rows = torch.as_tensor(reaching, device=dev)
            limits = on_device.index_select(0, rows)
            below = (self._text_columns < limits[:, 0:1]) | (self._text_columns > limits[:, 2:3])
            for tensor, fill in pairs:
                block = tensor[:, :tb].index_select(0, rows)
                tensor[:, :tb].index_copy_(0, rows, block.masked_fill_(below, fill))
        # A timestamp when the timestamps' total probability beats every text token's. Both sides carry
        # the same normaliser, so it is compared on logits, with no softmax.
        fired = torch.nonzero(torch.logsumexp(logits[:, tb:], dim=-1) > logits[:, :tb].amax(dim=-1))[:, 0]
        for tensor, fill in pairs:
            tensor[:, :tb].index_fill_(0, fired, fill)
