"""Drive one window's search against the real runtime, the way engine.transcriber does for many."""

from __future__ import annotations

from typing import Callable

import torch

from engine.decoding.loop import Continue, apply_instruction
from engine.model.runtime import InferenceRuntime
from engine.decoding.search import SearchResult, WindowSearch


def decode_window(runtime: InferenceRuntime, mels: torch.Tensor, search: WindowSearch,
                  on_advance: Callable[[list[int], list[int]], None] | None = None,
                  samples: int | None = None) -> SearchResult:
    """`samples` None encodes the whole 30 s window (as the references do); the transcriber passes its window's."""
    handle = runtime.encode(mels, None if samples is None else [samples])[0]
    sequences = runtime.open_sequences(handle, search.rows)
    feed = search.first_tokens()
    while True:
        tokens, parents = search.advance(runtime.step(sequences, feed))
        if search.done:
            break
        if on_advance:
            on_advance(tokens, parents)
        sequences, feed = apply_instruction(runtime, handle, sequences, Continue(tokens, parents))
    runtime.close_sequences(sequences)
    runtime.release_window(handle)
    return search.result()
