"""Words as a language model sees them: one normaliser for `lm build` and for fusion in the search.

A KenLM model only helps when the words it was built from are spelled exactly as the decoder's
words are looked up, so the corpus and the hypotheses go through this same code: lower case,
curly apostrophes made straight, everything but letters, digits and inner apostrophes a word break.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Sequence

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_NOT_WORD = re.compile(r"[^a-z0-9']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def normalize_words(text: str) -> list[str]:
    """The words of `text` as LM tokens ("Montreal Forced-Aligner's." -> montreal forced aligner's)."""
    words = _NOT_WORD.split(text.lower().translate(_APOSTROPHES))
    return [w for w in (word.strip("'") for word in words) if w]


def spells_any(text: str, terms: Sequence[str]) -> bool:
    """True when `text` spells one of `terms` as whole words, compared as normalize_words sees them
    ("the forced aligner, again" spells "Forced Aligner"; "lysinopril" does not spell "lisinopril")."""
    spelled = spaced(normalize_words(text))
    return any(spaced(normalize_words(t)) in spelled for t in terms)


def spaced(words: Sequence[str]) -> str:
    """Words joined with a space at each end, so that `in` matches whole words only."""
    return " " + " ".join(words) + " "


def corpus_sentences(lines: Iterable[str]) -> Iterator[str]:
    """One normalised sentence per yielded line, as KenLM's lmplz reads its corpus.

    A corpus line may hold a paragraph: it is split after . ! or ? so that sentence starts and
    ends (<s>, </s>) mean what they say.
    """
    for line in lines:
        for sentence in _SENTENCE_END.split(line.strip()):
            words = normalize_words(sentence)
            if words:
                yield " ".join(words)
