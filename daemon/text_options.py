"""How format_text / punctuate / ENABLE_AUTO_PUNCTUATION shape the words of a transcript.

One hook so the text options have a single home. For now only the removal half is done:
punctuate=false strips punctuation, and ENABLE_AUTO_PUNCTUATION=False also lower-cases.
format_text (digits, proper-noun casing) is accepted and comes in a later change.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

from engine.result import Word

# Apostrophes belong to words ("students'"), and "%" is part of a number, not punctuation.
_KEEP = {"'", "\u2019", "%"}


def shape_words(words: list[Word], format_text: bool, punctuate: bool, enable_punctuation: bool) -> list[Word]:
    """The words as the request asked for them; words that were only punctuation are dropped."""
    if enable_punctuation and punctuate:
        return words
    shaped = []
    for word in words:
        text = _strip_punctuation(word.text)
        if not enable_punctuation:
            text = text.lower()
        if text:
            shaped.append(replace(word, text=text))
    return shaped


def _strip_punctuation(text: str) -> str:
    """Drops punctuation marks but not a mark inside a word or number ("3.5", "10:30", "well-known")."""
    return "".join(
        c for i, c in enumerate(text)
        if c in _KEEP or not unicodedata.category(c).startswith("P") or _inside(text, i)
    )


def _inside(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
