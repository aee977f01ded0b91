"""Fixed-shape decoder steps (engine/model/step_graphs.py) compute what the eager step computes.

On a card they are captured as CUDA graphs; the capture replays exactly these kernels, so proving
the fixed-shape step here, eagerly on the CPU, with padding rows, several windows of different
row counts, several time buckets and beam reorders, proves the arithmetic the graphs replay.
Also here: reorders, which wait for the next step to be applied in one batch, keep the meaning of
applying each in turn.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

from engine.audio.files import SAMPLE_RATE
from engine.audio.features import log_mel_windows
from engine.model.runtime import InferenceRuntime
from engine.model.store import load_stored_model
from engine.text.tokenizer import WhisperTokenizer
from synth import speak

TEXTS = ("the quick brown fox jumps over the lazy dog", "send the invoice to accounts payable by friday")


@pytest.fixture(scope="module")
def stored(models_dir):
    return load_stored_model(models_dir, "tiny.en", "cpu", torch.float32)


@pytest.fixture(scope="module")
def mels(stored) -> torch.Tensor:
    clips = []
    for text in TEXTS:
        samples, rate = speak(text)
        clips.append(soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32))
    clips.append(np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE * 4).astype(np.float32))
    return log_mel_windows(clips, stored.dims.n_mels)


def _runtimes(stored, mels):
    eager = InferenceRuntime(stored, "cpu", step_graphs=False)
    fixed = InferenceRuntime(stored, "cpu", step_graphs=True)
    for runtime in (eager, fixed):
        runtime.reserve(len(mels), 5)  # as serving does: caches keep their memory, graphs stay valid
    handles = [runtime.encode(mels) for runtime in (eager, fixed)]
    assert handles[0] == handles[1]
    return eager, fixed, handles[0]


def test_fixed_shape_steps_match_eager_steps(stored, mels):
    tokenizer = WhisperTokenizer(stored.path / "tokenizer.json", stored.dims.n_vocab)
    eager, fixed, windows = _runtimes(stored, mels)
    sot = tuple(tokenizer.sot_sequence)
    prompt = tuple(tokenizer.encode(" ".join(TEXTS * 3))[:70])  # positions past the 64-token bucket
    rows_per_window = (5, 1, 3)
    feeds = [sot] * 5 + [sot] + [(tokenizer.sot_prev, *prompt, *sot)] * 3
    sequences = []
    for runtime in (eager, fixed):
        opened = [runtime.open_sequences(w, n) for w, n in zip(windows, rows_per_window)]
        sequences.append([s for rows in opened for s in rows])
    assert sequences[0] == sequences[1]
    rows = sequences[0]
    expected = eager.step(rows, feeds)
    np.testing.assert_allclose(fixed.step(rows, feeds), expected, atol=1e-4)  # prefill: the eager path in both
    rng = np.random.default_rng(1)
    for step in range(12):
        # the best token of each row, some rows a runner-up, as a beam's rows differ
        order = np.argsort(-expected, axis=1)
        tokens = [int(order[i, rng.integers(0, 3)]) for i in range(len(rows))]
        if step % 3 == 1:  # the 5-row window keeps its best parents, as beam search does
            for runtime in (eager, fixed):
                runtime.reorder(rows[:5], [rows[p] for p in (1, 1, 0, 4, 2)])
        if step == 6:  # the 1-row window ends: fewer rows, fewer groups
            for runtime in (eager, fixed):
                runtime.close_sequences(rows[5:6])
            rows = rows[:5] + rows[6:]
            tokens = tokens[:5] + tokens[6:]
        expected = eager.step(rows, tokens)
        got = fixed.step(rows, tokens)
        assert got.shape == expected.shape == (len(rows), stored.dims.n_vocab)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"step {step}")
    assert fixed.step_graph_buckets == (fixed.step_graph_buckets[0], 0)  # nothing is captured on the CPU
    assert fixed.step_graph_buckets[0] >= 2  # several buckets were built


def test_reorders_waiting_for_the_next_step_apply_in_turn(stored, mels):
    tokenizer = WhisperTokenizer(stored.path / "tokenizer.json", stored.dims.n_vocab)
    runtime = InferenceRuntime(stored, "cpu")
    window = runtime.encode(mels[:1])[0]
    rows = runtime.open_sequences(window, 3)
    words = tokenizer.encode(" the quick brown")
    runtime.step(rows, [tuple(tokenizer.sot_sequence)] * 3)
    runtime.step(rows, words)  # three rows, three different histories
    reference = runtime.step(rows, [words[0]] * 3)
    runtime.reorder(rows[:2], [rows[1], rows[0]])  # swap 0 and 1 ...
    runtime.reorder(rows[2:], [rows[1]])  # ... then 2 copies the new 1, which is the old 0
    runtime.reorder(rows[:1], [rows[2]])  # ... then 0 copies the new 2: the old 0 too
    got = runtime.step(rows, [words[1]] * 3)
    # every row now holds the old row 0's history, so all three continue it identically
    np.testing.assert_allclose(got[1], got[0], atol=1e-5)
    np.testing.assert_allclose(got[2], got[0], atol=1e-5)
    assert not np.allclose(reference[0], reference[1], atol=1e-3)  # the histories did differ
