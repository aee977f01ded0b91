"""A domain's rare terms, and the test that a window's text nearly spelled one of them.

Shallow fusion can only rerank what the model proposes, and a term the model has never heard is
misheard from its first token ("Montreal forced a liner"), so the LM never gets to score it
(docs/LANGUAGE_MODEL.md). word_boost fixes such terms by naming them in Whisper's prompt and
rewarding their spelling; a custom LM brings its terms along and uses them only where a window
asks for them: a window
whose unbiased text comes within a few edits of spelling it (NEAR below; "a liner" for
"aligner", "lysinopril" for "lisinopril"), without spelling it, is decoded once more with the
terms it nearly spelled boosted (engine/decoding/fallback.py). Ordinary speech rarely comes that close to a
drug name, so it is rarely decoded twice and almost never changed. A request's word_boost list is
tested the same way (boosted_terms): its near misses are rechecked with them alone, and a boosted
window that neither spells nor nearly spells one is decoded as without the list.

`lm build` writes the terms beside the model (MODEL.terms, "count<TAB>term" per line): the
corpus's long words and the phrases of two or three words that hold one, at least three times, and
neither start nor end with a short word.
Loading keeps those the model finds rare: a word that Whisper's tokenizer spells as one token,
in lower case or capitalised, is ordinary English and neither triggers nor is boosted.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from engine.lm.text import spaced, normalize_words

if TYPE_CHECKING:
    from engine.text.tokenizer import WhisperTokenizer

TERMS_SUFFIX = ".terms"
MIN_WORD_LETTERS = 7  # shorter words are too often one edit away from ordinary ones
MIN_PHRASE_COUNT = 3
MIN_EDGE_LETTERS = 4  # a phrase neither starts nor ends with a short function word ("the aligner", "aligner is")
MAX_PHRASE_WORDS = 3
# A near miss edits at most this share of the term's letters: 2 edits for 7 to 9 letters ("a liner" for
# "aligner"), 3 for 10 to 13 ("lysinopril"). Tuned on the dev halves (docs/LANGUAGE_MODEL.md): 0.25 found
# too few of the clinic's misheard drug names, 0.35 let ordinary speech trigger.
NEAR = 0.3
SAME_STEM_TAIL = 2  # a near miss that differs only in the term's last letters is the same stem inflected
MAX_TERMS_PER_WINDOW = 20  # a window's recheck boosts at most this many terms (its prompt stays short)
_NOT_LETTER = re.compile(r"[^a-z]")
_RAW_WORD = re.compile(r"[A-Za-z]+")
_PROMPT_PARTS = re.compile(r"[,.;:!?\n]+")


def terms_path(model: Path) -> Path:
    return model.with_name(model.name + TERMS_SUFFIX)


def corpus_terms(sentences: Iterable[str], raw_lines: Iterable[str] = ()) -> list[tuple[str, int]]:
    """Candidate terms of normalised sentences with their counts, most frequent first.

    Each word takes its most frequent spelling in `raw_lines` (the corpus as written), so a boosted
    term reads "Montreal Forced Aligner" in Whisper's prompt, and in the transcript it steers.
    """
    sentences = [s.split() for s in sentences]
    spellings: dict[str, Counter] = {}
    for line in raw_lines:
        for word in _RAW_WORD.findall(line):
            spellings.setdefault(word.lower(), Counter())[word] += 1
    cased = lambda term: " ".join(spellings[w].most_common(1)[0][0] if w in spellings else w  # noqa: E731
                                  for w in term.split())
    counts = Counter(w for words in sentences for w in words)
    long_words = {w for w in counts if w.isalpha() and len(w) >= MIN_WORD_LETTERS}
    terms = Counter({w: counts[w] for w in long_words})
    phrases = Counter(
        tuple(words[i : i + n])
        for words in sentences for n in range(2, MAX_PHRASE_WORDS + 1) for i in range(len(words) - n + 1)
    )
    for phrase, count in phrases.items():
        if (count >= MIN_PHRASE_COUNT and all(w.isalpha() for w in phrase) and any(w in long_words for w in phrase)
                and min(len(phrase[0]), len(phrase[-1])) >= MIN_EDGE_LETTERS):
            terms[" ".join(phrase)] = count
    return sorted(((cased(term), count) for term, count in terms.items()), key=lambda item: (-item[1], item[0]))


def write_terms(sentences: Iterable[str], raw_lines: Iterable[str], out: Path) -> int:
    """Write corpus_terms to `out` (atomically, like the model); returns how many."""
    terms = corpus_terms(sentences, raw_lines)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(f"{count}\t{term}\n" for term, count in terms), encoding="utf-8")
    partial.replace(out)
    return len(terms)


class DomainTerms:
    """The rare terms of a domain and near_misses(), the test for a window's text."""

    def __init__(self, terms: Sequence[str], tokenizer: "WhisperTokenizer") -> None:
        self._tokenizer = tokenizer
        self._one_token: dict[str, bool] = {}
        kept = [t for t in terms if any(not self._common(w) for w in normalize_words(t))]
        self.terms = tuple(kept)
        self._spelled = [spaced(normalize_words(t)) for t in kept]
        self._rare_words = [frozenset(w for w in normalize_words(t) if not self._common(w)) for t in kept]
        self._term_letters = [_NOT_LETTER.sub("", t.lower()) for t in kept]
        self._limits = np.array([int(NEAR * len(t)) for t in self._term_letters], dtype=np.int32)

    def _common(self, word: str) -> bool:
        """True for a word Whisper's tokenizer spells as one token (lower case or capitalised)."""
        if word not in self._one_token:
            encode = self._tokenizer.encode
            self._one_token[word] = min(len(encode(" " + word)), len(encode(" " + word.capitalize()))) == 1
        return self._one_token[word]

    def near_misses(self, text: str) -> tuple[str, ...]:
        """Terms that one to four consecutive words of `text` nearly spell, but that `text` does not hold.

        A single word spelled as one token is ordinary English, not a mishearing, and is not compared;
        nor a term whose closest likeness differs from it only in its last letters (_differs_early), nor
        a phrase whose rare words `text` already spells ("forty milligrams" is no near miss of "five
        milligrams": the model heard the jargon, and the rest is ordinary speech).
        """
        words = normalize_words(text)
        if not words or not self.terms:
            return ()
        letters = [_NOT_LETTER.sub("", w) for w in words]
        candidates = {
            "".join(letters[i : i + n])
            for n in range(1, MAX_PHRASE_WORDS + 2) for i in range(len(words) - n + 1)
            if not (n == 1 and self._common(words[i]))
        }
        candidates.discard("")
        if not candidates:
            return ()
        candidates = sorted(candidates)
        distances = cdist(candidates, self._term_letters, scorer=Levenshtein.distance,
                          score_cutoff=int(self._limits.max()), dtype=np.int32)
        near = (distances > 0) & (distances <= self._limits[None, :])
        spelled = spaced(words)
        heard = set(words)
        found = []
        for j in np.flatnonzero(near.any(axis=0)):
            closest = np.flatnonzero(distances[:, j] == distances[near[:, j], j].min())
            if self._spelled[j] not in spelled and not self._rare_words[j] <= heard and all(_differs_early(candidates[i], self._term_letters[j]) for i in closest):
                found.append(self.terms[j])
        return tuple(found[:MAX_TERMS_PER_WINDOW])



def _differs_early(candidate: str, term: str) -> bool:
    """False for an ending of the same stem ("lower case" for "lowercased", "forgery" for "forgets"):
    ordinary inflections and compounds, not a term misheard."""
    shared = len(os.path.commonprefix([candidate, term]))
    return shared < len(term) - SAME_STEM_TAIL


@lru_cache(maxsize=64)
def boosted_terms(phrases: tuple[str, ...], tokenizer: "WhisperTokenizer") -> DomainTerms:
    """A request's word_boost as DomainTerms, built once per distinct list in each process."""
    return DomainTerms(phrases, tokenizer)


@lru_cache(maxsize=64)
def prompt_terms(prompt: str, tokenizer: "WhisperTokenizer") -> DomainTerms:
    """The rare words of a request's prompt, and its short listed phrases, as DomainTerms (once per prompt).

    OpenAI's guide gives the prompt to fix "specific words or acronyms that the model often misrecognizes";
    read only as preceding text, a long prompt still lets a rare word through misspelled ("lisinoprel"
    with "lisinopril" in it). A window that nearly spells one of them is rechecked with it boosted, as a
    word_boost term would be (engine/decoding/fallback.py). A phrase is a part of the prompt between
    commas or stops of at most MAX_PHRASE_WORDS words ("Montreal Forced Aligner" in a list of terms):
    misheard, a phrase's rare word can become an ordinary one ("forced liner"), no near miss alone.
    """
    words = [w for w in _RAW_WORD.findall(prompt) if len(w) >= MIN_WORD_LETTERS]
    phrases = [" ".join(part.split()) for part in _PROMPT_PARTS.split(prompt)]
    unique: dict[str, str] = {}
    for term in words + [p for p in phrases if 1 < len(p.split()) <= MAX_PHRASE_WORDS]:
        unique.setdefault(term.lower(), term)  # each term once, as first written
    return DomainTerms(tuple(unique.values()), tokenizer)


def load_domain_terms(model: Path, tokenizer: "WhisperTokenizer") -> DomainTerms | None:
    """The terms `lm build` wrote beside `model`; None when there are none (a model built elsewhere)."""
    path = terms_path(model)
    if not path.is_file():
        return None
    terms = [line.split("\t", 1)[1].strip() for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    found = DomainTerms([t for t in terms if t], tokenizer)
    return found if found.terms else None
