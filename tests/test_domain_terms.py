"""A language model's rare terms (engine/lm/domain_terms.py): what `lm build` keeps, and which texts
nearly spell a term, so that only those windows are decoded again with it boosted.

The recheck's effect on real speech, through the in-process engine and the daemon, is in
tests/test_fusion.py; its WER on the domain sets and on general speech in bench/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from drive import advance
from engine.lm.domain_terms import DomainTerms, corpus_terms, load_domain_terms, prompt_terms, terms_path, write_terms
from engine.lm.text import corpus_sentences, spells_any
from engine.text.tokenizer import WhisperTokenizer

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


def test_a_phrase_whose_rare_word_was_heard_is_no_near_miss(tokenizer):
    """"forty milligrams" is one edit from "five milligrams" in letters, but the jargon was heard: no recheck."""
    terms = DomainTerms(["five milligrams", "milligrams", "furosemide"], tokenizer)
    assert terms.near_misses("Give forty milligrams by mouth.") == ()
    assert terms.near_misses("Give forty miligrams by mouth.") == ("milligrams",)


def test_a_prompt_s_terms_are_its_rare_words_and_short_listed_phrases(tokenizer):
    listed = prompt_terms("Montreal Forced Aligner, forced aligner, aligner, MFA, TextGrid.", tokenizer)
    assert listed.terms == ("Aligner", "TextGrid", "Montreal Forced Aligner", "forced aligner")
    assert listed.near_misses("the Montreal forced liner") == ("Montreal Forced Aligner", "forced aligner")
    visit = prompt_terms("Follow-up visit. She takes lisinopril and metoprolol every morning, and feels well.", tokenizer)
    assert visit.terms == ("lisinopril", "metoprolol")  # a clause is no phrase, "morning" is one token
    ordinary = "Yesterday the committee discussed the quarterly transcripts, and everybody agreed."
    assert prompt_terms(ordinary, tokenizer).terms == ()


def test_spells_any_compares_normalised_words():
    assert spells_any("She takes Lisinopril.", ("lisinopril",))
    assert spells_any("the forced aligner, again", ("Forced Aligner",))
    assert not spells_any("She takes lysinopril.", ("lisinopril",))
    assert not spells_any("the forced aligners", ("forced aligner",))


# --- the recheck's decision, on constructed logits (engine/decoding/fallback.py) -----------------------------------

def _finish(search, vocab: int, tokens: list[int], eot: int) -> None:
    """Drive a greedy search through `tokens` and then end-of-text, each chosen with certainty."""
    for token in [*tokens, eot]:
        row = np.zeros((search.rows, vocab), dtype=np.float32)
        row[:, token] = 50.0
        advance(search, row)
    assert search.done


@pytest.mark.parametrize(("recheck_says", "kept"), [
    (" She takes lisinopril daily.", " She takes lisinopril daily."),  # the term came back: the recheck wins
    (" She takes lemons daily.", " She takes lysinopril daily."),  # it did not: the decided text stays
    # the term came, said twice: the model copied its prompt's list, not the audio
    (" She takes lisinopril, takes lisinopril daily.", " She takes lysinopril daily."),
])
def test_the_recheck_wins_only_when_it_spells_a_term(tokenizer, installed_model, recheck_says, kept):
    from engine.decoding.fallback import WindowDecode
    from engine.decoding.search import SearchConfig

    config = json.loads((installed_model / "config.json").read_text())
    vocab = config["dims"]["n_vocab"]
    search_config = SearchConfig.for_model(tokenizer, config, beam_size=1)
    search_config = dataclasses.replace(search_config, domain_terms=DomainTerms(["lisinopril"], tokenizer))
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    window = WindowDecode(search_config, tokenizer, 5.0)
    _finish(window.search, vocab, [tb, *tokenizer.encode(" She takes lysinopril daily."), tb + 100], eot)
    recheck = window.retry()
    assert recheck is not None and recheck is window.search  # a near miss: decoded once more
    _finish(recheck, vocab, [tb, *tokenizer.encode(recheck_says), tb + 100], eot)
    assert window.retry() is None
    assert tokenizer.decode([t for t in window.result().tokens if t < eot]) == kept


# --- word_boost's own decision: a boosted decode that spells none of its terms is decoded again without them -------

@pytest.mark.parametrize(("boosted_says", "unboosted"), [
    (" She takes lisinopril daily.", False),  # a boosted term came: the boosted text stands
    (" She takes lemons daily.", True),  # none did: the window is decoded as if the list were empty
])
def test_a_boosted_window_that_spells_no_term_is_decoded_as_without_the_list(tokenizer, installed_model,
                                                                               boosted_says, unboosted):
    from engine.decoding.fallback import WindowDecode
    from engine.decoding.options import DecodeOptions
    from engine.decoding.search import SearchConfig

    config = json.loads((installed_model / "config.json").read_text())
    vocab = config["dims"]["n_vocab"]
    search_config = SearchConfig.for_model(tokenizer, config, beam_size=1)
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    options = DecodeOptions(prompt="Cardiology clinic.", word_boost=("lisinopril", "metoprolol"))
    window = WindowDecode(search_config, tokenizer, 5.0, options)
    assert window.search.first_tokens() == [(*options.prompt_tokens(tokenizer), tokenizer.sot)]
    _finish(window.search, vocab, [tb, *tokenizer.encode(boosted_says), tb + 100], eot)
    again = window.retry()
    if not unboosted:
        assert again is None
        assert tokenizer.decode([t for t in window.result().tokens if t < eot]) == boosted_says
        return
    plain = DecodeOptions(prompt="Cardiology clinic.")
    assert again is window.search and again.first_tokens() == [(*plain.prompt_tokens(tokenizer), tokenizer.sot)]
    assert again.scorers == ()
    _finish(again, vocab, [tb, *tokenizer.encode(" She takes lemons every day."), tb + 100], eot)
    assert window.retry() is None
    assert tokenizer.decode([t for t in window.result().tokens if t < eot]) == " She takes lemons every day."


def test_a_window_nearly_spelling_a_prompt_s_rare_word_is_rechecked_with_it(tokenizer, installed_model):
    """OpenAI's prompt carries the spellings of uncommon words; a near miss of one is decoded again with it boosted."""
    from engine.decoding.fallback import WindowDecode
    from engine.decoding.options import DecodeOptions
    from engine.decoding.search import SearchConfig

    config = json.loads((installed_model / "config.json").read_text())
    vocab = config["dims"]["n_vocab"]
    search_config = SearchConfig.for_model(tokenizer, config, beam_size=1)
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    options = DecodeOptions(prompt="Medications: lisinopril, metoprolol.")
    window = WindowDecode(search_config, tokenizer, 5.0, options)
    _finish(window.search, vocab, [tb, *tokenizer.encode(" She takes lysinopril daily."), tb + 100], eot)
    recheck = window.retry()
    boosted = DecodeOptions(prompt=options.prompt, word_boost=("lisinopril",))
    assert recheck is window.search and recheck.first_tokens() == [(*boosted.prompt_tokens(tokenizer), tokenizer.sot)]
    assert recheck.scorers  # the word is rewarded as well as named
    _finish(recheck, vocab, [tb, *tokenizer.encode(" She takes lisinopril daily."), tb + 100], eot)
    assert window.retry() is None
    assert tokenizer.decode([t for t in window.result().tokens if t < eot]) == " She takes lisinopril daily."


def test_an_unboosted_window_is_still_rechecked_for_the_request_s_terms(tokenizer, installed_model):
    """Boosted, the window said nothing like a term, so it was decoded as without the list; that text can
    still nearly spell one, and is rechecked with it."""
    from engine.decoding.fallback import WindowDecode
    from engine.decoding.options import DecodeOptions
    from engine.decoding.search import SearchConfig

    config = json.loads((installed_model / "config.json").read_text())
    vocab = config["dims"]["n_vocab"]
    search_config = SearchConfig.for_model(tokenizer, config, beam_size=1)
    tb, eot = tokenizer.timestamp_begin, tokenizer.eot
    window = WindowDecode(search_config, tokenizer, 5.0, DecodeOptions(word_boost=("lisinopril", "metoprolol")))
    _finish(window.search, vocab, [tb, *tokenizer.encode(" She takes lemons daily."), tb + 100], eot)
    unboosted = window.retry()
    assert unboosted is window.search and unboosted.scorers == ()
    _finish(unboosted, vocab, [tb, *tokenizer.encode(" She takes lysinopril daily."), tb + 100], eot)
    recheck = window.retry()
    assert recheck is window.search and recheck.first_tokens() == [
        (*DecodeOptions(word_boost=("lisinopril",)).prompt_tokens(tokenizer), tokenizer.sot)]
    _finish(recheck, vocab, [tb, *tokenizer.encode(" She takes lisinopril daily."), tb + 100], eot)
    assert window.retry() is None
    assert tokenizer.decode([t for t in window.result().tokens if t < eot]) == " She takes lisinopril daily."
