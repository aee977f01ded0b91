"""A language model's rare terms (engine/domain_terms.py): what `lm build` keeps, and which texts
nearly spell a term, so that only those windows are decoded again with it boosted.

The recheck's effect on real speech, through the in-process engine and the daemon, is in
tests/test_fusion.py; its WER on the domain sets and on general speech in bench/RESULTS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.domain_terms import DomainTerms, corpus_terms, load_domain_terms, terms_path, write_terms
from engine.lm_text import corpus_sentences
from engine.tokenizer import WhisperTokenizer

RAW = """The Montreal Forced Aligner aligns speech. We ran the Montreal Forced Aligner again.
The Montreal Forced Aligner wrote a TextGrid. The patient takes lisinopril daily.
Lisinopril lowers blood pressure; lisinopril is an inhibitor. The weather was pleasant.
"""


@pytest.fixture(scope="module")
def tokenizer(installed_model: Path) -> WhisperTokenizer:
    config = json.loads((installed_model / "config.json").read_text())
    return WhisperTokenizer(installed_model / "tokenizer.json", config["dims"]["n_vocab"])


def test_corpus_terms_are_long_words_and_their_frequent_phrases_as_written():
    terms = dict(corpus_terms(corpus_sentences(RAW.splitlines()), RAW.splitlines()))
    assert terms["Montreal Forced Aligner"] == 3 and terms["Forced Aligner"] == 3 and terms["Aligner"] == 3
    assert terms["lisinopril"] == 3  # the spelling used most (twice lower case, once at a sentence start)
    assert "The Montreal Forced" not in terms and "Aligner again" not in terms  # short edge words, rare phrases
    assert "weather" in terms and "pleasant" in terms  # long words: kept here, filtered by the tokenizer on load
    assert all(len(term.replace(" ", "")) >= 7 or " " in term for term in terms)


def test_ordinary_words_are_dropped_on_load(tokenizer, tmp_path):
    model = tmp_path / "domain.klm"
    assert load_domain_terms(model, tokenizer) is None  # a model built elsewhere has no terms
    write_terms(corpus_sentences(RAW.splitlines()), RAW.splitlines(), terms_path(model))
    terms = load_domain_terms(model, tokenizer)
    assert terms is not None and "lisinopril" in terms.terms and "Montreal Forced Aligner" in terms.terms
    assert "weather" not in terms.terms and "pleasant" not in terms.terms  # one token each for Whisper


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I used the Montreal forced a liner on my corpus.", {"Aligner", "Forced Aligner", "Montreal Forced Aligner"}),
        ("She takes lysinopril every morning.", {"lisinopril"}),
        ("The Montreal Forced Aligner wrote a TextGrid.", set()),  # spelled: nothing to recheck
        ("The weather was pleasant and the dog slept all day.", set()),  # ordinary speech
        ("Set the type in lower case.", set()),  # an ending of the same stem is not a mishearing
    ],
)
def test_near_misses(tokenizer, text, expected):
    terms = DomainTerms(["Aligner", "Forced Aligner", "Montreal Forced Aligner", "lisinopril", "lowercased"],
                        tokenizer)
    assert set(terms.near_misses(text)) == expected
