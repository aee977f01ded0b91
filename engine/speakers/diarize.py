"""Who spoke each word of a mono recording: voice embeddings over the speech, clustered into speakers.

Speech is where the transcript has words, which the search found with Whisper's timestamps, so no
second voice-activity pass runs. The words' runs (merged across pauses under RUN_GAP_MS) are covered
by windows of WINDOW_MS every HOP_MS (a shorter run gets one window, centred on it, that borrows
audio around it), each embedded by the GE2E encoder. The words are then cut into segments that one
speaker is assumed to hold (at pauses of SEGMENT_GAP_MS, and at most SEGMENT_MS long); a segment's
voice is the mean of the windows centred in it, steadier than any one window. Average-linkage
clustering on cosine distance (scipy) groups the segments, cut at DISTANCE or into the number of
speakers given; groups holding under MIN_SHARE of the speech join the nearest other group; always
within the bounds asked. The constants were chosen on `python -m bench speakers`
(docs/DESIGN.md "Speaker labels").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from engine.result import Word
from engine.speakers.encoder import HIDDEN, SAMPLE_RATE, SpeakerEncoder, volume_gain
from engine.speakers.options import MAX_SPEAKERS, SpeakerOptions, speaker_name

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


@dataclass(frozen=True)
class Speakers:
    """Who said each word, and each speaker's voice (to name them after known samples)."""

    of_words: list[int]  # a speaker number per word: 0, 1, ... in order of first speech
    voices: np.ndarray  # [speakers, 256]: each speaker's unit mean voice


def speaker_of_words(audio: np.ndarray, words: list[Word], options: SpeakerOptions,
                     encoder: SpeakerEncoder) -> Speakers:
    """Who said each of the transcript's words in 16 kHz mono `audio`."""
    if not words:
        return Speakers([], np.zeros((0, HIDDEN), np.float32))
    spans = _windows(words, len(audio) * 1000 // SAMPLE_RATE)
    windows = _embedded(audio, spans, encoder)
    centres = np.array([(start + end) / 2 for start, end in spans])
    segments = _segments(words)
    voices = np.stack([_voice(windows, centres, words[first].start_ms, words[last].end_ms)
                       for first, last in segments])
    lengths = np.array([max(words[last].end_ms - words[first].start_ms, 1) for first, last in segments], float)
    clusters = _clusters(voices, lengths, options)
    order = {int(label): index for index, label in enumerate(dict.fromkeys(clusters.tolist()))}
    of_segments = np.array([order[int(label)] for label in clusters])
    of_words = [int(of_segments[index]) for index, (first, last) in enumerate(segments) for _ in range(first, last + 1)]
    means = np.stack([voices[of_segments == speaker].mean(axis=0) for speaker in range(len(order))])
    return Speakers(of_words, means / np.linalg.norm(means, axis=1, keepdims=True))


def sample_voice(audio: np.ndarray, encoder: SpeakerEncoder) -> np.ndarray:
    """The unit mean voice of a sample of one speaker (OpenAI's known_speaker_references[]), 16 kHz mono."""
    length = len(audio) * 1000 // SAMPLE_RATE
    starts = range(0, max(length - WINDOW_MS, 0) + 1, HOP_MS)
    mean = _embedded(audio, [(start, start + WINDOW_MS) for start in starts], encoder).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def names_of(voices: np.ndarray, known: list[tuple[str, np.ndarray]]) -> list[str]:
    """A label per speaker: the name of the known sample whose voice is nearest, when within DISTANCE (each name
    at most once, nearest pairs first), else A, B, ... in order of first speech."""
    names: dict[int, str] = {}
    pairs = sorted(((float(voices[s] @ voice), s, name) for s in range(len(voices)) for name, voice in known),
                   reverse=True)
    for similarity, speaker, name in pairs:
        if similarity >= 1 - DISTANCE and speaker not in names and name not in names.values():
            names[speaker] = name
    letters = iter(speaker_name(i) for i in range(MAX_SPEAKERS))
    return [names[s] if s in names else next(letters) for s in range(len(voices))]


def _embedded(audio: np.ndarray, spans: list[tuple[int, int]], encoder: SpeakerEncoder,
              batch: int = 64) -> np.ndarray:
    """The embeddings of `spans` (ms, WINDOW_MS long) of `audio`, past its end silence; a batch of windows at a
    time, so a 4-hour file holds its embeddings (1 kB a window), never all its windows' audio."""
    gain = np.float32(volume_gain(audio))
    size = WINDOW_MS * SAMPLE_RATE // 1000
    out = [np.zeros((0, HIDDEN), np.float32)]
    for first in range(0, len(spans), batch):
        chunks = np.zeros((len(spans[first:first + batch]), size), np.float32)
        for row, (start, _) in enumerate(spans[first:first + batch]):
            piece = audio[start * SAMPLE_RATE // 1000:][:size]
            chunks[row, :len(piece)] = piece * gain
        out.append(encoder.embed(chunks, batch))
    return np.concatenate(out)


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
    """A cluster number per segment.

    Without a count, the tree is cut at DISTANCE and the small groups join their nearest. With one, the
    tree is cut into the fewest groups that leave that many once the small ones have joined theirs (so an
    odd segment or two do not take the place of a speaker), or else exactly into that many.
    """
    if len(voices) == 1:
        return np.zeros(1, int)
    tree = linkage(voices, method="average", metric="cosine")
    if options.expected is None:
        found = _merged_small(voices, fcluster(tree, DISTANCE, criterion="distance"), lengths)
        count = len(set(found.tolist()))
        if options.min_speakers <= count <= options.max_speakers:
            return found
        wanted = min(max(count, options.min_speakers), options.max_speakers)
    else:
        wanted = options.expected
    wanted = min(wanted, len(voices))
    for cut in range(wanted, min(wanted + 6, len(voices)) + 1):
        found = _merged_small(voices, fcluster(tree, cut, criterion="maxclust"), lengths)
        if len(set(found.tolist())) == wanted:
            return found
    return fcluster(tree, wanted, criterion="maxclust")


def _merged_small(voices: np.ndarray, clusters: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Segments of groups holding under MIN_SHARE of the speech go to the nearest group that does not."""
    labels = sorted(set(clusters.tolist()))
    share = {label: lengths[clusters == label].sum() / lengths.sum() for label in labels}
    kept = [label for label in labels if share[label] >= MIN_SHARE] or [max(labels, key=share.get)]
    centroids = np.stack([voices[clusters == label].mean(axis=0) for label in kept])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = clusters.copy()
    for index, label in enumerate(clusters):
        if label not in kept:
            out[index] = kept[int(np.argmax(centroids @ voices[index]))]
    return out
