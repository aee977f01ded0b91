"""Drive one window's search against the real runtime, the way engine.transcriber does for many."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from engine.decoding.loop import Continue, apply_instruction
from engine.decoding.reduce import StepReducer
from engine.decoding.search import SearchConfig, SearchResult, WindowSearch
from engine.model.runtime import InferenceRuntime


@lru_cache(maxsize=8)
def _cached_reducer(suppress: tuple[int, ...], no_speech: int, tb: int, candidates: int, n_vocab: int) -> StepReducer:
    return StepReducer(suppress, no_speech, tb, candidates, n_vocab, "cpu")


def _reducer(config: SearchConfig, n_vocab: int) -> StepReducer:
    return _cached_reducer(config.suppress, config.no_speech, config.timestamp_begin, config.candidates, n_vocab)


def advance(search: WindowSearch, logits: np.ndarray) -> tuple[list[int], list[int]]:
    """Advance `search` by whole logits rows [rows, vocab], reduced first as the inference side reduces them.

    Call it once per step, in order: it asks the search for its rows' rules, as the decode loop does."""
    rules = search.rules()
    reduced = _reducer(search.cfg, logits.shape[1]).reduce(torch.from_numpy(np.array(logits, np.float32)), [rules])
    return search.advance(reduced[0])


def decode_window(runtime: InferenceRuntime, mels: torch.Tensor, search: WindowSearch,
                  on_advance: Callable[[list[int], list[int]], None] | None = None,
                  samples: int | None = None) -> SearchResult:
    """`samples` None encodes the whole 30 s window (as the references do); the transcriber passes its window's."""
    handle = runtime.encode(mels, None if samples is None else [samples])[0]
    sequences = runtime.open_sequences(handle, search.rows)
    feed = search.first_tokens()
    reducer = search.cfg.reducer(runtime.dims.n_vocab, runtime.device)
    rules = search.rules()
    while True:
        tokens, parents = search.advance(reducer.reduce(runtime.step_logits(sequences, feed), [rules])[0])
        if search.done:
            break
        if on_advance:
            on_advance(tokens, parents)
        rules = search.rules()
        sequences, feed, _ = apply_instruction(runtime, handle, sequences, Continue(tokens, parents, rules))
    runtime.close_sequences(sequences)
    runtime.release_window(handle)
    return search.result()
