"""Who spoke each word of a mono recording: voice embeddings over the speech, clustered into speakers.

Speech is where the transcript has words, which the search found with Whisper's timestamps, so no
second voice-activity pass runs. The words' runs (merged across pauses under RUN_GAP_MS) are covered
by windows of WINDOW_MS every HOP_MS (a shorter run gets one window, centred on it, that borrows
audio around it), each embedded by the GE2E encoder. The words are then cut into segments that one
speaker is assumed to hold (at pauses of SEGMENT_GAP_MS, and at most SEGMENT_MS long); a segment's
voice is the mean of the windows centred in it, steadier than any one window. Average-linkage
clustering on cosine distance (scipy) groups the segments: cut at the number of speakers when it is
given, else at DISTANCE, where groups holding under MIN_SHARE of the speech join the nearest other
group; always within the bounds asked. The constants were chosen on `python -m bench speakers`
(docs/DESIGN.md "Speaker labels").
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from engine.result import Word
from engine.speakers.encoder import SAMPLE_RATE, SpeakerEncoder, normalize_volume
from engine.speakers.options import SpeakerOptions

WINDOW_MS = 1500
HOP_MS = 750
RUN_GAP_MS = 500
SEGMENT_GAP_MS = 250
SEGMENT_MS = 3000
DISTANCE = 0.35  # cosine distance at which two groups of segments stop being one speaker
MIN_SHARE = 0.1  # of the speech: a group below it is not a speaker of its own (its words join the nearest)


_encoders: dict[Path, SpeakerEncoder] = {}
_lock = threading.Lock()


def encoder_for(weights: Path) -> SpeakerEncoder:
    """One encoder per weights file and process, loaded on first use (a server that never labels speakers
    never pays for it)."""
    with _lock:
        if weights not in _encoders:
            _encoders[weights] = SpeakerEncoder.load(weights)
        return _encoders[weights]


def speaker_of_words(audio: np.ndarray, words: list[Word], options: SpeakerOptions,
                     encoder: SpeakerEncoder) -> list[int]:
    """A speaker number per word (0, 1, ... in order of first appearance) for 16 kHz mono `audio`."""
    if not words:
        return []
    spans = _windows(words, len(audio) * 1000 // SAMPLE_RATE)
    audio = normalize_volume(audio)
    size = WINDOW_MS * SAMPLE_RATE // 1000
    chunks = np.zeros((len(spans), size), np.float32)
    for row, (start, _) in enumerate(spans):
        piece = audio[start * SAMPLE_RATE // 1000:][:size]
        chunks[row, :len(piece)] = piece
    windows = encoder.embed(chunks)
    centres = np.array([(start + end) / 2 for start, end in spans])
    segments = _segments(words)
    voices = np.stack([_voice(windows, centres, words[first].start_ms, words[last].end_ms)
                       for first, last in segments])
    lengths = np.array([max(words[last].end_ms - words[first].start_ms, 1) for first, last in segments], float)
    clusters = _clusters(voices, lengths, options)
    labels = [int(clusters[index]) for index, (first, last) in enumerate(segments) for _ in range(first, last + 1)]
    order = {label: index for index, label in enumerate(dict.fromkeys(labels))}
    return [order[label] for label in labels]


def _windows(words: list[Word], length_ms: int) -> list[tuple[int, int]]:
    """(start, end) ms of every embedding window over the words' speech runs."""
    runs: list[list[int]] = []
    for word in words:
        if runs and word.start_ms - runs[-1][1] < RUN_GAP_MS:
            runs[-1][1] = max(runs[-1][1], word.end_ms)
        else:
            runs.append([word.start_ms, word.end_ms])
    spans = []
    for start, end in runs:
        if end - start <= WINDOW_MS:
            first = min(max(0, (start + end - WINDOW_MS) // 2), max(0, length_ms - WINDOW_MS))
            spans.append((first, first + WINDOW_MS))
            continue
        starts = list(range(start, end - WINDOW_MS + 1, HOP_MS))
        if starts[-1] + WINDOW_MS < end:
            starts.append(end - WINDOW_MS)
        spans += [(s, s + WINDOW_MS) for s in starts]
    return spans


def _segments(words: list[Word]) -> list[tuple[int, int]]:
    """(first, last) word index of each stretch one speaker is assumed to hold."""
    segments: list[list[int]] = []
    for index, word in enumerate(words):
        if segments and word.start_ms - words[index - 1].end_ms < SEGMENT_GAP_MS \
                and word.end_ms - words[segments[-1][0]].start_ms <= SEGMENT_MS:
            segments[-1][1] = index
        else:
            segments.append([index, index])
    return [(first, last) for first, last in segments]


def _voice(windows: np.ndarray, centres: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """The unit mean of the windows centred in [start, end]; the nearest window's when none is."""
    inside = (centres >= start_ms) & (centres <= end_ms)
    if not inside.any():
        inside = np.zeros(len(centres), bool)
        inside[int(np.argmin(np.abs(centres - (start_ms + end_ms) / 2)))] = True
    mean = windows[inside].mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _clusters(voices: np.ndarray, lengths: np.ndarray, options: SpeakerOptions) -> np.ndarray:
    """A cluster number per segment."""
    if len(voices) == 1:
        return np.zeros(1, int)
    tree = linkage(voices, method="average", metric="cosine")
    if options.expected is not None:
        count = options.expected
    else:
        found = fcluster(tree, DISTANCE, criterion="distance")
        share = np.bincount(found, weights=lengths)[1:] / lengths.sum()
        count = int((share >= MIN_SHARE).sum())
        if options.min_speakers <= count <= options.max_speakers:
            return _merged_small(voices, found, share)
    return fcluster(tree, min(max(count, options.min_speakers), options.max_speakers, len(voices)),
                    criterion="maxclust")


def _merged_small(voices: np.ndarray, clusters: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Segments of groups under MIN_SHARE of the speech go to the nearest group that is not."""
    kept = [label for label in range(1, len(share) + 1) if share[label - 1] >= MIN_SHARE]
    centroids = np.stack([voices[clusters == label].mean(axis=0) for label in kept])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = clusters.copy()
    for index, label in enumerate(clusters):
        if label not in kept:
            out[index] = kept[int(np.argmax(centroids @ voices[index]))]
    return out
