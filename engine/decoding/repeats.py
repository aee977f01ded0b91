"""Repeated phrases: a run of words said twice back to back, the mark of Whisper's doubled sentence.

A short window encoded with too little padding can come back with its sentence twice ("Press 4 for
the previous message. Press 4 for the previous message."), the second copy squeezed by the
alignment into the window's last instant. People do repeat a word ("no, no") and, rarely, a short
phrase; a phrase of three words or more said twice in a row is almost always the decoder's. The
window's decode loop (engine/decoding/window.py) and the benchmarks ask the same question here, so a
benchmark's count of repeats is the count of what the decode loop reacts to.
"""

from __future__ import annotations

import re

MIN_PHRASE_WORDS = 3

_EDGE = re.compile(r"^[^\w']+|[^\w']+$")


def phrase_words(text: str) -> list[str]:
    """The words of a text as a repeat is judged: lower case, punctuation at their edges dropped."""
    words = (_EDGE.sub("", w).lower() for w in text.split())
    return [w for w in words if w]


def repeated_phrase(text: str, min_words: int = MIN_PHRASE_WORDS) -> str | None:
    """The longest phrase of at least `min_words` words that the text says twice back to back, or None.

    For each shift n, positions where a word equals the word n later form runs; a run of n or more
    is a phrase of n words followed by itself. Quadratic in the words, which is nothing for a
    window's text (at most 224 tokens) and under a second for a long file's.
    """
    words = phrase_words(text)
    best: tuple[int, int] | None = None  # (start, length)
    for n in range(len(words) // 2, min_words - 1, -1):
        run = 0
        for i in range(len(words) - n):
            run = run + 1 if words[i] == words[i + n] else 0
            if run >= n:
                best = (i - run + 1, n)
                break
        if best is not None:
            break
    if best is None:
        return None
    start, n = best
    return " ".join(words[start : start + n])


def adds_repeat(reference: str, hypothesis: str, min_words: int = MIN_PHRASE_WORDS) -> bool:
    """True when the hypothesis repeats a phrase back to back and the reference repeats none."""
    return repeated_phrase(hypothesis, min_words) is not None and repeated_phrase(reference, min_words) is None
