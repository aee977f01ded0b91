"""The alignment's median filter: a sorting network, checked against plain selection."""

from __future__ import annotations

import itertools

import numpy as np

from engine.decoding.alignment import _SORT_7, MEDIAN_FILTER_WIDTH, _median_filter


def test_the_network_sorts_every_input():
    """By the 0-1 principle, a comparator network that sorts all 128 inputs of 0s and 1s sorts any input."""
    for bits in itertools.product((0, 1), repeat=MEDIAN_FILTER_WIDTH):
        values = list(bits)
        for i, j in _SORT_7:
            values[i], values[j] = min(values[i], values[j]), max(values[i], values[j])
        assert values == sorted(bits), bits


def test_median_filter_equals_selection_with_reflected_edges():
    rng = np.random.default_rng(7)
    pad = MEDIAN_FILTER_WIDTH // 2
    for shape in ((6, 35, 600), (2, 3, 4), (1, 1, 9)):
        x = rng.standard_normal(shape).astype(np.float32)
        x[..., 1] = x[..., 2]  # ties
        padded = np.pad(x, [(0, 0), (0, 0), (pad, pad)], mode="reflect")
        windows = np.lib.stride_tricks.sliding_window_view(padded, MEDIAN_FILTER_WIDTH, axis=-1)
        assert np.array_equal(_median_filter(x), np.median(windows, axis=-1).astype(np.float32)), shape
    short = rng.standard_normal((2, 3, pad)).astype(np.float32)
    assert _median_filter(short) is short  # too short to filter: as openai/whisper leaves it
