"""A row's logits must not depend on the other rows of its decoder step.

The daemon's inference process advances every window in flight in one step, whichever requests they
belong to, so a window's words would otherwise change with the server's load (and a benchmark of the
in-process transcriber would not speak for the daemon). Each test steps one window alone, then the
same window beside others, on the real tiny.en model, and compares the logits bit for bit. float32
is left out: its GEMMs round a row differently with the batch's size (it serves as a reference, not
by default).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.files import SAMPLE_RATE
from engine.audio.features import N_FRAMES, log_mel_windows
from engine.model.encoder_width import encoder_width
from engine.model.runtime import InferenceRuntime
from engine.model.store import load_stored_model
from engine.settings import cpu_has_bf16_matrix_units
from synth import speak_at

SOT = 50257
# A second window whose rows run ahead: its prompt is longer than a 16-position attention block, so
# its step reads more self-attention positions than the first window's own length.
LONG_PROMPT = [SOT, 50362, *range(440, 460)]
# Windows beside the first: 40 rows in a step, where oneDNN's bfloat16 GEMM over more than 384 inputs
# rounds some rows differently than in a step of 5.
BESIDE = 7


@pytest.fixture(scope="module")
def stored(models_dir):
    return load_stored_model(models_dir, "tiny.en", "cpu", torch.float32)


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    return [speak_at("please send the weekly report", SAMPLE_RATE),
            speak_at("our meeting moved to the afternoon, please call me back after lunch", SAMPLE_RATE)]


def _skip_bfloat16_without_amx(compute_type: str) -> None:
    if compute_type == "bfloat16" and not cpu_has_bf16_matrix_units():
        pytest.skip("bfloat16 serves only on CPUs with AMX (amx_bf16), where its kernels' row independence "
                    "is measured; this CPU has none")


def _logits_of_first_window(runtime: InferenceRuntime, audios: list[np.ndarray], beside: bool) -> np.ndarray:
    """The first window's 5 rows after its prompt and two tokens, alone or with BESIDE copies of the second
    window's rows in the same steps."""
    chosen = audios[:1] + (audios[1:] * BESIDE if beside else [])
    handles = runtime.encode(log_mel_windows(chosen, 80), [len(a) for a in chosen])
    first = runtime.open_sequences(handles[0], 5)
    runtime.step(first, [(SOT, 50362)] * 5)
    other = [row for handle in handles[1:] for row in runtime.open_sequences(handle, 5)]
    if other:
        runtime.step(other, [tuple(LONG_PROMPT)] * len(other))
    logits = None
    for token in (440, 1002):  # the first window's rows last: GEMM kernels treat a batch's tail rows apart
        logits = runtime.step(other + first, [token + row for row in range(5)] * len(chosen))
    return logits[-5:]


@pytest.mark.parametrize("compute_type", ["int8", "bfloat16"])  # float32's GEMMs round rows by batch size
def test_a_windows_logits_do_not_depend_on_the_rows_beside_it(stored, audios, compute_type):
    _skip_bfloat16_without_amx(compute_type)
    make = lambda: InferenceRuntime(stored, "cpu", int8=compute_type == "int8",  # noqa: E731
                                    bf16=compute_type == "bfloat16")
    alone = _logits_of_first_window(make(), audios, beside=False)
    beside = _logits_of_first_window(make(), audios, beside=True)
    assert np.isfinite(alone).all() and alone.std() > 1.0
    assert np.array_equal(alone, beside)


@pytest.mark.parametrize("compute_type", ["int8", "bfloat16"])
def test_a_windows_encoding_does_not_depend_on_the_windows_encoded_with_it(stored, audios, compute_type):
    """Windows of one encoder width are encoded in one batch: the first window's logits must be the same
    when it is encoded alone and when it is the last of a batch of four."""
    _skip_bfloat16_without_amx(compute_type)
    short = audios[0]
    others = [speak_at(text, SAMPLE_RATE) for text in ("call me back", "the report is late", "send it today")]
    widths = {encoder_width(len(a), N_FRAMES) for a in [*others, short]}
    assert len(widths) == 1, "one encoder width, so one encoder batch"

    def logits(batch: list[np.ndarray]) -> np.ndarray:
        runtime = InferenceRuntime(stored, "cpu", int8=compute_type == "int8", bf16=compute_type == "bfloat16")
        handles = runtime.encode(log_mel_windows(batch, 80), [len(a) for a in batch])
        rows = runtime.open_sequences(handles[-1], 5)
        return runtime.step(rows, [(SOT, 50362, 440 + row) for row in range(5)])

    alone = logits([short])
    assert np.isfinite(alone).all() and alone.std() > 1.0
    assert np.array_equal(logits([*others, short]), alone)
