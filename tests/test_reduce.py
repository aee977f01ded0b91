"""The step reduced where the logits are made (engine/decoding/reduce.py, engine/decoding/rules.py).

Each batched rule must mask what the numpy rules the search applied to whole rows masked
(reference_rules.py, the oracle), the candidates must be those rows' best, a sampled row's draw must
be repeatable and its own, and a search fed only candidates must choose, on real speech, the tokens
the search fed whole rows chose (reference_search.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_rules as ref
import reference_search
from drive import decode_window
from engine.decoding.loop import Continue, apply_instruction
from engine.audio.features import log_mel_windows
from engine.audio.files import SAMPLE_RATE, decode_audio
from engine.decoding.reduce import HEAD, MAX_REQUESTED, NO_SPEECH, RAW_SHIFT, RowRules, sampling_key, step_width
from engine.decoding.rules import RowMasks, row_bounds
from engine.decoding.search import SearchConfig, WindowSearch
from engine.model.runtime import InferenceRuntime
from engine.model.store import load_stored_model
from engine.text.tokenizer import WhisperTokenizer
from synth import speak_at

NEG = -np.inf


@pytest.fixture(scope="module")
def model_config(tiny_en_path: Path) -> dict:
    return json.loads((tiny_en_path / "config.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(tiny_en_path: Path, model_config) -> WhisperTokenizer:
    return WhisperTokenizer(tiny_en_path / "tokenizer.json", model_config["dims"]["n_vocab"])


@pytest.fixture(scope="module")
def cfg(tokenizer, model_config) -> SearchConfig:
    return SearchConfig.for_model(tokenizer, model_config, beam_size=5)


class _Hyp:
    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens


def _histories(tokenizer, rng: np.random.Generator) -> list[list[int]]:
    """Every shape of history the rules tell apart: empty, text, open and closed timestamp pairs, loops."""
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    words = tokenizer.encode(" we can go home now and then")
    out = [[], [tb], [tb + 3], [tb, *words[:2]], [tb, *words[:2], tb + 40], [tb, *words[:2], tb + 40, tb + 40],
           [tb, *words[:3], tb + 60, tb + 61, *words[3:5]], [tb, *(words[:3] * 4)], [tb, *([words[0]] * 12)],
           [tb + 10, *words, tb + 200, tb + 201, *words[:2], tb + 300]]
    for _ in range(30):  # and random mixtures of text and rising timestamps
        tokens, stamp = [], tb + int(rng.integers(0, 20))
        for _ in range(int(rng.integers(1, 30))):
            if rng.random() < 0.2:
                stamp += int(rng.integers(0, 30))
                tokens.append(stamp)
            else:
                tokens.append(int(rng.choice(words)))
        out.append(tokens)
    assert all(t != eot for h in out for t in h)
    return out


def _logits(rows: int, vocab: int, tokenizer, rng: np.random.Generator) -> np.ndarray:
    """Random rows, some of them leaning on timestamps so that the mass rule fires on some and not others."""
    logits = rng.normal(0, 3, (rows, vocab)).astype(np.float32)
    tb = tokenizer.timestamp_begin
    logits[::3, tb:] += 4.0
    logits[1::4, tokenizer.eot] += 8.0
    return logits


def _reference_filter(cfg: SearchConfig, logits: np.ndarray, live: list[_Hyp], audio_seconds: float) -> np.ndarray:
    last = cfg.timestamp_begin + int(round(min(audio_seconds, 30.0) / 0.02))
    rules = (ref.SuppressTokens(cfg.suppress), ref.NoTimestampPastAudio(last),
             ref.FirstToken(cfg.suppress_begin, cfg.timestamp_begin, cfg.max_initial_timestamp),
             ref.RepetitionGuard(cfg.eot), ref.TimestampPairing(cfg.eot, cfg.timestamp_begin),
             ref.TimestampMass(cfg.timestamp_begin))
    out = logits.copy()
    for rule in rules:
        rule.apply(out, live)
    return out


def _batched_filter(cfg: SearchConfig, logits: np.ndarray, live: list[_Hyp], audio_seconds: float) -> np.ndarray:
    tb = cfg.timestamp_begin
    last = tb + int(round(min(audio_seconds, 30.0) / 0.02))
    first = tb + int(round(cfg.max_initial_timestamp / 0.02))
    bounds = np.array([row_bounds(h.tokens, cfg.eot, tb, last, first) for h in live], dtype=np.int64)
    out = torch.from_numpy(logits.copy())
    RowMasks(cfg.suppress, tb, logits.shape[1], torch.device("cpu")).apply(out, bounds)
    return out.numpy()


@pytest.mark.parametrize("audio_seconds", [30.0, 7.3, 0.5])
def test_the_batched_rules_mask_what_the_numpy_rules_masked(cfg, tokenizer, audio_seconds):
    rng = np.random.default_rng(int(audio_seconds * 10))
    live = [_Hyp(h) for h in _histories(tokenizer, rng)]
    logits = _logits(len(live), 51864, tokenizer, rng)
    expected = _reference_filter(cfg, logits, live, audio_seconds)
    got = _batched_filter(cfg, logits, live, audio_seconds)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    np.testing.assert_array_equal(got[np.isfinite(got)], expected[np.isfinite(expected)])
    fired = [(np.isneginf(expected[i, : cfg.timestamp_begin]).all()) for i in range(len(live))]
    assert any(fired) and not all(fired), "the cases include rows where the timestamp mass wins and rows where not"


def test_a_reduced_row_is_the_rows_best_candidates_and_its_norms(cfg, tokenizer):
    rng = np.random.default_rng(7)
    live = [_Hyp(h) for h in _histories(tokenizer, rng)[:12]]
    logits = _logits(len(live), 51864, tokenizer, rng)
    filtered = _reference_filter(cfg, logits, live, 30.0)
    search = WindowSearch(cfg, 30.0)
    search._live = live  # the rows' histories, as a search in the middle of its beam would hold them
    search.rows = len(live)
    rules = search.rules()
    reduced = cfg.reducer(51864, "cpu").reduce(torch.from_numpy(logits.copy()), [rules])[0]
    k = cfg.candidates
    assert reduced.shape == (len(live), step_width(k)) and reduced.nbytes / len(live) == 88  # beam 5: 22 floats
    raw_norm = ref.logsumexp(logits.astype(np.float64))
    norm = ref.logsumexp(filtered.astype(np.float64))
    for row in range(len(live)):
        order = np.argsort(-filtered[row], kind="stable")[:k]
        ids = reduced[row, HEAD : HEAD + k].astype(np.int64)
        finite = np.isfinite(filtered[row, order])
        np.testing.assert_array_equal(ids[finite], order[finite])
        np.testing.assert_allclose(reduced[row, HEAD + k : HEAD + 2 * k][finite], filtered[row, order][finite] - norm[row],
                                   atol=1e-4)
        assert reduced[row, RAW_SHIFT] == pytest.approx(norm[row] - raw_norm[row], abs=1e-4)
        assert reduced[row, NO_SPEECH] == pytest.approx(logits[row, cfg.no_speech] - raw_norm[row], abs=1e-4)


def test_requested_tokens_come_back_with_their_log_probs_and_masked_ones_as_minus_inf(cfg, tokenizer):
    rng = np.random.default_rng(3)
    logits = _logits(2, 51864, tokenizer, rng)
    word = tokenizer.encode(" aligner")[0]
    masked = cfg.suppress[3]
    bounds = np.array([[0, cfg.timestamp_begin, cfg.timestamp_begin + 1500]] * 2, dtype=np.int64)
    rules = RowRules(bounds, requested=((word, masked), (word,)))
    reduced = cfg.reducer(51864, "cpu").reduce(torch.from_numpy(logits.copy()), [rules])[0]
    tail = reduced[:, HEAD + 2 * cfg.candidates :]
    assert tail.shape == (2, 2) and np.isneginf(tail[0, 1]) and np.isneginf(tail[1, 1]), "asked for nothing there"
    for row in range(2):
        filtered = _reference_filter(cfg, logits[row : row + 1], [_Hyp([word])], 30.0)
        assert tail[row, 0] == pytest.approx(filtered[0, word] - ref.logsumexp(filtered.astype(np.float64))[0], abs=1e-4)
    assert step_width(cfg.candidates, MAX_REQUESTED) * 4 <= 1024, "a row at its widest stays under 1 KB"


def _draws(cfg, logits: np.ndarray, keys: list[int], temperature: float) -> list[int]:
    bounds = np.array([[0, cfg.timestamp_begin, cfg.timestamp_begin + 1500]] * len(keys), dtype=np.int64)
    rules = RowRules(bounds, temperature, tuple(keys))
    reduced = cfg.reducer(logits.shape[1], "cpu").reduce(torch.from_numpy(logits.copy()), [rules])[0]
    return reduced[:, HEAD].astype(np.int64).tolist()


def test_sampling_is_repeatable_its_own_and_follows_softmax(cfg, tokenizer):
    a, b = tokenizer.encode(" yes")[0], tokenizer.encode(" no")[0]
    row = np.full(51864, -30.0, dtype=np.float32)
    row[a], row[b] = np.log(2.0), 0.0
    keys = [sampling_key(1, step, r) for step in range(400) for r in range(5)]
    draws = _draws(cfg, np.tile(row, (len(keys), 1)), keys, 1.0)
    assert draws == _draws(cfg, np.tile(row, (len(keys), 1)), keys, 1.0), "the same keys draw the same tokens"
    assert set(draws) == {a, b}
    assert abs(draws.count(a) / len(draws) - 2 / 3) < 0.03, "P(a) = 2/3 at temperature 1"
    # A row's draw does not depend on the rows beside it (another window's, in the same step).
    rng = np.random.default_rng(0)
    noisy = rng.normal(0, 2, (6, 51864)).astype(np.float32)
    alone = _draws(cfg, noisy[:1], keys[:1], 0.7)
    assert _draws(cfg, noisy, keys[:6], 0.7)[0] == alone[0]
    assert len(set(_draws(cfg, np.tile(noisy[:1], (50, 1)), keys[:50], 0.7))) > 1, "different keys, different draws"


# --------------------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def stored(models_dir):
    return load_stored_model(models_dir, "tiny.en", "cpu", torch.float32)


def _same_tokens(stored, tokenizer, audio: np.ndarray, beam: int) -> None:
    mels = log_mel_windows([audio], stored.dims.n_mels)
    seconds = len(audio) / SAMPLE_RATE
    old = reference_search.WindowSearch(SearchConfig.for_model(tokenizer, stored.config, beam), seconds)
    runtime = InferenceRuntime(stored, "cpu")
    handle = runtime.encode(mels)[0]
    sequences, feed = runtime.open_sequences(handle, old.rows), old.first_tokens()
    while True:
        tokens, parents = old.advance(runtime.step(sequences, feed))
        if old.done:
            break
        sequences, feed, _ = apply_instruction(runtime, handle, sequences, Continue(tokens, parents, None))
    new = decode_window(InferenceRuntime(stored, "cpu"), mels, WindowSearch(SearchConfig.for_model(
        tokenizer, stored.config, beam), seconds))
    expected = old.result()
    assert new.tokens == expected.tokens, (tokenizer.decode(new.tokens), tokenizer.decode(expected.tokens))
    np.testing.assert_allclose(new.token_logprobs, expected.token_logprobs, atol=1e-3)
    assert new.avg_logprob == pytest.approx(expected.avg_logprob, abs=1e-4)
    assert new.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-5)


@pytest.mark.parametrize("beam", [1, 5])
def test_a_search_fed_only_candidates_chooses_what_whole_rows_chose_on_speech(stored, tokenizer, beam):
    audio = speak_at("The quarterly numbers are in, and sales rose nine percent in March.", SAMPLE_RATE)
    _same_tokens(stored, tokenizer, audio, beam)


def test_the_same_on_recorded_speech(stored, tokenizer, eval_dir):
    for clip in sorted(eval_dir.glob("*/*.wav"))[:3]:
        audio = decode_audio(str(clip))[: 30 * SAMPLE_RATE]
        _same_tokens(stored, tokenizer, audio, 5)
