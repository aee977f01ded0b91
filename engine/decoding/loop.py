"""One window's decode loop, written once for the in-process Transcriber and the daemon's two pools.

Each step of a window has two halves that meet at one small instruction:
- `next_instruction` (decoder side) runs the search over the step's reduced rows (each row's best
  candidates, engine/decoding/reduce.py) and Whisper's fallback around it: keep searching, search
  again at the next temperature, or stop and align the text; a search's instruction carries the
  rules the inference side reduces the next step with;
- `apply_instruction` (inference side) does what the instruction asks of the window's rows in the
  runtime: keep the best parents' caches, drop the rest, open fresh rows.

The Transcriber calls both in one process; the daemon calls the first in a decoder process and the
second in an inference process, with the instruction travelling between them in a queue message.
Either way every rule is this module's, so an in-process measurement speaks for the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from engine.decoding.reduce import RowRules
from engine.decoding.window import WindowJob
from engine.model.runtime import InferenceRuntime

Feed = list[Union[int, tuple[int, ...]]]  # a row's next token, or (a search's first step) its prompt tokens


@dataclass(frozen=True)
class Continue:
    """Row i continues from row parents[i] with tokens[i]; rows past len(parents) are dropped, and rows
    opened when there are more parents than rows (a beam widening from its prompt's one row)."""

    tokens: list[int]
    parents: list[int]
    rules: RowRules


@dataclass(frozen=True)
class Restart:
    """A new search over the same audio (the next temperature), one row per first feed."""

    tokens: Feed
    rules: RowRules


@dataclass(frozen=True)
class Align:
    """The search is over and found text: run the alignment pass over these tokens."""

    tokens: list[int]


@dataclass(frozen=True)
class Finish:
    """The search is over and found no text: nothing left to run for this window."""


Instruction = Union[Continue, Restart, Align, Finish]


def next_instruction(job: WindowJob, step: np.ndarray) -> Instruction:
    """Advance the window's search by one reduced step [rows, width] and say what comes next."""
    search = job.decode.search
    tokens, parents = search.advance(step)
    if not search.done:
        return Continue(tokens, parents, search.rules())
    again = job.decode.retry()
    if again is not None:
        return Restart(again.first_tokens(), again.rules())
    text = job.conclude()
    return Finish() if text is None else Align(text)


def apply_instruction(runtime: InferenceRuntime, window: int, sequences: list[int],
                      instruction: Instruction) -> tuple[list[int], Feed | None, RowRules | None]:
    """The window's rows after the instruction, what they are fed next (None: no more steps), and the
    rules their next step is reduced with."""
    if isinstance(instruction, Continue):
        count = len(instruction.parents)
        kept = sequences[:count]
        if count > len(kept):
            kept += runtime.open_sequences(window, count - len(kept))
        if instruction.parents != list(range(count)):
            runtime.reorder(kept, [sequences[p] for p in instruction.parents])
        runtime.close_sequences(sequences[count:])
        return kept, instruction.tokens, instruction.rules
    runtime.close_sequences(sequences)
    if isinstance(instruction, Restart):
        return runtime.open_sequences(window, len(instruction.tokens)), instruction.tokens, instruction.rules
    return [], None, None
