"""The domain benchmark's data (bench/domain_data.py): held-out LM text, boost terms, loaders.

A domain LM only proves something if it never saw the test sentences, so the clinic corpus is
checked for any 6-word window of a test sentence; and word_boost terms the LM never mentions would
make the "LM vs boost" comparison unfair. No transcription here: these checks must stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import domain_data
from bench.domain_data import (CLINIC_DIR, FA_DIR, DomainClip, check_held_out, read_lines, split)
from engine.lm.text import corpus_sentences, normalize_words


def _corpus_text(path: Path) -> str:
    return " " + " ".join(corpus_sentences(path.read_text(encoding="utf-8").splitlines())) + " "


def test_clinic_lm_holds_no_window_of_a_test_sentence():
    tests = read_lines(CLINIC_DIR / "test.txt")
    assert len(tests) == 40
    assert not any(ch.isdigit() for line in tests for ch in line), "numbers are spoken: write them as words"
    assert check_held_out(CLINIC_DIR / "lm.txt", tests) == []


def test_check_held_out_finds_a_leak_across_case_punctuation_and_lines(tmp_path):
    corpus = tmp_path / "lm.txt"
    corpus.write_text("Nothing here.\nPlease START the patient on\nmetoprolol, twenty-five milligrams!\n")
    assert check_held_out(corpus, ["Start the patient on metoprolol twenty five milligrams twice."]) == [
        "start the patient on metoprolol twenty",
        "the patient on metoprolol twenty five",
        "patient on metoprolol twenty five milligrams",
    ]
    assert check_held_out(corpus, ["Stop the patient on metoprolol now."]) == []


@pytest.mark.parametrize("folder", [CLINIC_DIR, FA_DIR], ids=["clinic", "forced_alignment"])
def test_every_boost_term_appears_in_the_domain_lm(folder):
    text = _corpus_text(folder / "lm.txt")
    terms = read_lines(folder / "boost.txt")
    assert terms
    assert [t for t in terms if f" {' '.join(normalize_words(t))} " not in text] == []


@pytest.mark.parametrize("folder,low,high", [(CLINIC_DIR, 400, 600), (FA_DIR, 300, 500)],
                         ids=["clinic", "forced_alignment"])
def test_lm_corpora_are_the_promised_size(folder, low, high):
    assert low <= len(read_lines(folder / "lm.txt")) <= high


def test_every_clinic_test_sentence_uses_a_boost_term():
    terms = [" ".join(normalize_words(t)) for t in read_lines(CLINIC_DIR / "boost.txt")]
    for sentence in read_lines(CLINIC_DIR / "test.txt"):
        padded = f" {' '.join(normalize_words(sentence))} "
        assert any(f" {t} " in padded for t in terms), sentence


def test_split_is_deterministic_disjoint_and_complete():
    clips = [DomainClip(name=f"c{i:02d}", audio=np.zeros(1, np.float32), reference="x") for i in range(7)]
    dev, test = split(list(reversed(clips)), "dev"), split(clips, "test")
    assert [c.name for c in dev] == ["c00", "c02", "c04", "c06"]
    assert [c.name for c in test] == ["c01", "c03", "c05"]
    with pytest.raises(ValueError):
        split(clips, "train")


def test_loaders_fail_clearly_without_the_eval_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        domain_data.forced_alignment(tmp_path)
    with pytest.raises(FileNotFoundError):
        domain_data.general(tmp_path)


def test_forced_alignment_and_general_split_the_dev_set(eval_dir):
    domain = domain_data.forced_alignment(eval_dir)
    assert 46 <= len(domain.clips) <= 47
    assert all(isinstance(c.audio, Path) and c.audio.is_file() and c.reference for c in domain.clips)
    assert "Montreal Forced Aligner" in domain.boost_terms
    others = domain_data.general(eval_dir)
    assert others and not any("mfa_selfrecorded" in c.name for c in others)
    names = {c.audio.name for c in domain.clips}
    assert not names & {c.audio.name for c in others if c.audio.parent.name == "mfa_selfrecorded"}
