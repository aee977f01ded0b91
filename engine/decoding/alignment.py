"""Word timings from cross-attention: dynamic time warping of text tokens against audio frames.

The inference side returns raw attention scores of the model's alignment heads over a finished
token sequence; everything from there (normalisation, median filter, DTW, splitting tokens into
words, confidences) is CPU work that belongs in the decoder processes. The method is openai/whisper
timing.py's; the DTW runs along anti-diagonals so numpy can vectorise it without numba.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from engine.text.tokenizer import WhisperTokenizer

FRAMES_PER_SECOND = 50  # encoder frames: one per 20 ms
MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".。!！?？"
SPEECH_EDGE_S = 0.1  # how far a word may reach past the edge of the speech the VAD found


@dataclass
class WordTiming:
    text: str  # with its leading space, as the tokenizer produced it
    start: float  # seconds from the start of the window
    end: float
    probability: float


# A sorting network for 7 values (16 compare-exchanges; it sorts every 0-1 input, so every input):
# the median filter as elementwise minima and maxima of 7 shifted views. np.partition over sliding
# windows took 5x as long, on the decoder process's critical path for every finished window.
_SORT_7 = ((0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5), (3, 4), (1, 2), (4, 6), (2, 3), (4, 5),
           (1, 2), (3, 4), (5, 6))


def _median_filter(x: np.ndarray) -> np.ndarray:
    """Median over MEDIAN_FILTER_WIDTH frames along the last axis, edges reflected (openai/whisper's filter)."""
    pad = MEDIAN_FILTER_WIDTH // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    n = x.shape[-1]
    values = [padded[..., i : i + n] for i in range(MEDIAN_FILTER_WIDTH)]
    for i, j in _SORT_7:
        values[i], values[j] = np.minimum(values[i], values[j]), np.maximum(values[i], values[j])
    return values[pad]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment path through an [N, M] cost matrix: (row indices, column indices)."""
    n, m = cost.shape
    # Diagonal-major layout: acc[d, i] is the accumulated cost of cell (i, d - i), 1-based, so each
    # anti-diagonal depends only on the two before it and is computed with slices; the cost matrix
    # is laid out the same way once, so a diagonal's costs are a slice too.
    acc = np.full((n + m + 1, n + 1), np.inf, dtype=np.float32)
    trace = np.full((n + m + 1, n + 1), -1, dtype=np.int8)
    rows = np.arange(1, n + 1)
    diagonals = rows[None, :] + np.arange(1, m + 1)[:, None]  # [M, N]: the diagonal of cell (i, j)
    by_diagonal = np.zeros((n + m + 1, n + 1), dtype=cost.dtype)
    by_diagonal[diagonals, rows[None, :]] = cost.T
    acc[0, 0] = 0.0
    for d in range(2, n + m + 1):
        lo, hi = max(1, d - m), min(n, d - 1)
        if lo > hi:
            continue
        diag, up, left = acc[d - 2, lo - 1 : hi], acc[d - 1, lo - 1 : hi], acc[d - 1, lo : hi + 1]
        # openai/whisper's rule, ties included: the diagonal if strictly best, else up if strictly best, else left
        take_diag = (diag < up) & (diag < left)
        take_up = (up < diag) & (up < left)
        acc[d, lo : hi + 1] = by_diagonal[d, lo : hi + 1] + np.where(take_diag, diag, np.where(take_up, up, left))
        trace[d, lo : hi + 1] = np.where(take_diag, 0, np.where(take_up, 1, 2))
    i, j = n, m
    path: list[tuple[int, int]] = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = 2 if i == 0 else 1 if j == 0 else trace[i + j, i]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    rows, cols = np.array(path[::-1]).T
    return rows, cols


def split_words(tokenizer: WhisperTokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Group tokens into words: a word starts at a space, a punctuation mark or a special token.

    Tokens are first grouped so that each group decodes to whole UTF-8 characters.
    """
    pieces: list[str] = []
    piece_tokens: list[list[int]] = []
    pending: list[int] = []
    full = tokenizer.decode_piece(tokens)
    offset = 0
    for token in tokens:
        pending.append(token)
        decoded = tokenizer.decode_piece(pending)
        if "\ufffd" not in decoded or full[offset + decoded.index("\ufffd")] == "\ufffd":
            pieces.append(decoded)
            piece_tokens.append(pending)
            pending = []
            offset += len(decoded)
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, group in zip(pieces, piece_tokens):
        starts_word = group[0] >= tokenizer.eot or piece.startswith(" ") or piece.strip() in string.punctuation
        if starts_word or not words:
            words.append(piece)
            word_tokens.append(list(group))
        else:
            words[-1] += piece
            word_tokens[-1].extend(group)
    return words, word_tokens


def _merge_punctuation(words: list[WordTiming]) -> list[WordTiming]:
    """Attach opening marks to the next word and closing marks to the previous one."""
    merged: list[WordTiming] = []
    carry = ""
    for word in words:
        stripped = word.text.strip()
        if stripped and all(c in PREPEND_PUNCTUATION for c in stripped) and word.text.startswith(" "):
            carry += word.text
            continue
        if merged and stripped and all(c in APPEND_PUNCTUATION for c in stripped) and not word.text.startswith(" "):
            merged[-1].text += word.text
            continue
        if carry:
            word.text = carry + word.text.lstrip() if not carry.endswith(" ") else carry + word.text
            carry = ""
        merged.append(word)
    return merged


def word_timings(
    tokenizer: WhisperTokenizer,
    scores: np.ndarray,
    text_tokens: list[int],
    token_probs: list[float],
    num_samples: int,
) -> list[WordTiming]:
    """Words of one window with start/end in seconds and a confidence in [0, 1].

    scores: [heads, len(sot_sequence) + 1 + len(text_tokens) + 1, 1500], the alignment pass over
    sot_sequence, <|notimestamps|>, the text tokens and <|endoftext|>.
    """
    if not text_tokens:
        return []
    frames = max(1, num_samples // 320)
    weights = scores[:, :, :frames].astype(np.float32)
    weights = np.exp(weights - weights.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    mean = weights.mean(axis=-2, keepdims=True)
    std = weights.std(axis=-2, keepdims=True)
    weights = (weights - mean) / np.maximum(std, 1e-8)
    matrix = _median_filter(weights).mean(axis=0)
    matrix = matrix[len(tokenizer.sot_sequence) : -1]
    text_idx, time_idx = dtw(-matrix)

    words, word_tokens = split_words(tokenizer, text_tokens + [tokenizer.eot])
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / FRAMES_PER_SECOND
    starts = jump_times[boundaries[:-1]]
    ends = jump_times[boundaries[1:]]
    probs = np.exp(np.asarray(token_probs, dtype=np.float64))
    timings = [
        WordTiming(word, float(s), float(e), float(np.mean(probs[b0:b1])))
        for word, s, e, b0, b1 in zip(words[:-1], starts, ends, boundaries[:-1], boundaries[1:])
    ]
    timings = _join_continuations(_merge_punctuation(timings))
    _clip_long_words(timings)
    return timings


def _join_continuations(words: list[WordTiming]) -> list[WordTiming]:
    """Make words space-delimited: a piece without a leading space ("-love") joins the word before.

    The joined word spans both and is only as confident as its least confident part.
    """
    joined: list[WordTiming] = []
    for word in words:
        if joined and not word.text.startswith(" "):
            last = joined[-1]
            last.text += word.text
            last.end = word.end
            last.probability = min(last.probability, word.probability)
        else:
            joined.append(word)
    return joined


def _clip_long_words(words: list[WordTiming]) -> None:
    """Bound words that absorbed a pause, as openai/whisper does around sentence ends."""
    durations = np.array([w.end - w.start for w in words])
    durations = durations[durations.nonzero()]
    if not len(durations):
        return
    max_duration = min(0.7, float(np.median(durations))) * 2
    for i, word in enumerate(words):
        if word.end - word.start <= max_duration:
            continue
        if i == 0 or word.text.strip()[-1:] in SENTENCE_END:
            word.start = max(word.start, word.end - max_duration) if i == 0 else word.start
            word.end = min(word.end, word.start + max_duration) if i else word.end
        elif words[i - 1].text.strip()[-1:] in SENTENCE_END:
            word.start = word.end - max_duration


def fit_to_speech(words: list[WordTiming], speech: list[tuple[float, float]]) -> None:
    """Keep word edges inside the speech the VAD found (seconds from the window start).

    DTW has to put every token somewhere, so the last word before a pause often stretches across
    it, or lands in it. In a call that moves one side's words into the other side's turn and breaks
    the utterances apart. A word wholly inside a pause moves to the nearer edge of the speech around it.
    """
    if not speech:
        return
    regions = [(s - SPEECH_EDGE_S, e + SPEECH_EDGE_S) for s, e in speech]
    previous_start = 0.0
    for word in words:
        overlapping = [(s, e) for s, e in regions if s < word.end and e > word.start]
        if overlapping:
            word.start, word.end = max(word.start, overlapping[0][0]), min(word.end, overlapping[-1][1])
        else:
            before = [e for _, e in regions if e <= word.start]
            after = [s for s, _ in regions if s >= word.end]
            if before and (not after or word.start - before[-1] <= after[0] - word.end):
                word.start = word.end = before[-1]
            else:
                word.start = word.end = after[0]
        word.start = max(word.start, previous_start)
        word.end = max(word.end, word.start)
        previous_start = word.start
