"""Who spoke when in a mono recording: voice embeddings over the speech, clustered into speakers.

Speech is where the transcription's Silero VAD heard it (engine/audio/vad.py; its segments come with
the transcript, so no second pass runs), not where the transcript has words: Whisper's word timings
are loose and it skips stretches it cannot read, and both left speech unlabelled (docs/DESIGN.md
"Speaker labels"). The segments are covered by windows of WINDOW_MS side by side (a shorter segment
gets one window, centred on it, that borrows audio around it), each embedded by the GE2E encoder.
Segments longer than SEGMENT_MS are cut into equal pieces no longer than that, each assumed to hold
one speaker; a piece's voice is the mean of the windows centred in it, steadier than any one window.
Average-linkage clustering on cosine distance (scipy) groups the pieces, cut at DISTANCE or into the
number of speakers given; groups holding under MIN_SHARE of the speech join the nearest other group;
always within the bounds asked. Neighbouring pieces of one speaker make a turn, and each word goes to
the turn that holds most of it. The constants were chosen on `python -m bench speakers`.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from engine.result import Word
from engine.speakers.encoder import HIDDEN, SAMPLE_RATE, SpeakerEncoder, volume_gain
from engine.speakers.options import MAX_SPEAKERS, SpeakerOptions, speaker_name

WINDOW_MS = 1500
HOP_MS = 1500  # windows side by side: overlapping them (750) doubled the work and bettered no DER (DESIGN)
SEGMENT_MS = 3000
DISTANCE = 0.35  # cosine distance at which two groups of pieces stop being one speaker
MIN_SHARE = 0.1  # of the speech: a group below it is not a speaker of its own (its pieces join the nearest)
# Pieces clustered at most (2 hours of unbroken speech): a longer file's are sampled evenly for the tree and
# the rest join the nearest group, so the distances held stay under 25 MB however long the file.
MAX_CLUSTERED = 2400


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
class Turn:
    start_ms: int
    end_ms: int
    speaker: int


@dataclass(frozen=True)
class Speakers:
    """Who speaks when, and each speaker's voice (to name them after known samples)."""

    turns: list[Turn]  # in time order, disjoint; speakers numbered 0, 1, ... in order of first speech
    voices: np.ndarray  # [speakers, 256]: each speaker's unit mean voice

    def of_words(self, words: list[Word]) -> list[int]:
        """A speaker per word: that of the turn holding most of it, else of the nearest turn (Whisper
        sometimes times a word where the detector heard none)."""
        if not self.turns:
            return [0] * len(words)
        starts = [turn.start_ms for turn in self.turns]
        labels = []
        for word in words:
            index = bisect.bisect_right(starts, word.start_ms)
            near = self.turns[max(0, index - 1):index + 2]
            held = max(near, key=lambda t: (min(word.end_ms, t.end_ms) - max(word.start_ms, t.start_ms)))
            if min(word.end_ms, held.end_ms) <= max(word.start_ms, held.start_ms):
                held = min(near, key=lambda t: max(t.start_ms - word.end_ms, word.start_ms - t.end_ms))
            labels.append(held.speaker)
        return labels


def who_spoke_when(audio: np.ndarray, speech: list[tuple[int, int]], options: SpeakerOptions,
                   encoder: SpeakerEncoder, words: list[Word] = ()) -> Speakers:
    """The speaker turns of 16 kHz mono `audio`, whose `speech` ([start, end) ms, in order) is the transcript's
    (Transcript.speech). `words` stand in where the detector heard none (a whisper, a voice under noise) but
    the transcript has words."""
    length_ms = len(audio) * 1000 // SAMPLE_RATE
    regions = list(speech) or _runs(words)
    if not regions:
        return Speakers([], np.zeros((0, HIDDEN), np.float32))
    spans = _windows(regions, length_ms)
    windows = _embedded(audio, spans, encoder)
    centres = np.array([(start + end) / 2 for start, end in spans])
    pieces = _pieces(regions)
    voices = np.stack([_voice(windows, centres, start, end) for start, end in pieces])
    lengths = np.array([max(end - start, 1) for start, end in pieces], float)
    clusters = _clusters(voices, lengths, options)
    order = {int(label): index for index, label in enumerate(dict.fromkeys(clusters.tolist()))}
    of_pieces = np.array([order[int(label)] for label in clusters])
    turns: list[Turn] = []
    for (start, end), speaker in zip(pieces, of_pieces.tolist()):
        if turns and turns[-1].speaker == speaker and turns[-1].end_ms == start:
            turns[-1] = Turn(turns[-1].start_ms, end, speaker)
        else:
            turns.append(Turn(start, end, speaker))
    means = np.stack([voices[of_pieces == speaker].mean(axis=0) for speaker in range(len(order))])
    return Speakers(turns, means / np.linalg.norm(means, axis=1, keepdims=True))


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


def _runs(words: list[Word], gap_ms: int = 500) -> list[tuple[int, int]]:
    """(start, end) ms of the words' runs, merged across pauses under gap_ms."""
    runs: list[list[int]] = []
    for word in words:
        if runs and word.start_ms - runs[-1][1] < gap_ms:
            runs[-1][1] = max(runs[-1][1], word.end_ms)
        else:
            runs.append([word.start_ms, word.end_ms])
    return [(start, end) for start, end in runs]


def _windows(regions: list[tuple[int, int]], length_ms: int) -> list[tuple[int, int]]:
    """(start, end) ms of every embedding window over the speech."""
    spans = []
    for start, end in regions:
        if end - start <= WINDOW_MS:
            first = min(max(0, (start + end - WINDOW_MS) // 2), max(0, length_ms - WINDOW_MS))
            spans.append((first, first + WINDOW_MS))
            continue
        starts = list(range(start, end - WINDOW_MS + 1, HOP_MS))
        if starts[-1] + WINDOW_MS < end:
            starts.append(end - WINDOW_MS)
        spans += [(s, s + WINDOW_MS) for s in starts]
    return spans


def _pieces(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) ms of the stretches one speaker is assumed to hold: each region, or its equal parts of at
    most SEGMENT_MS; they meet where a region is cut."""
    pieces = []
    for start, end in regions:
        edges = np.linspace(start, end, -(-(end - start) // SEGMENT_MS) + 1).round().astype(int).tolist()
        pieces += list(zip(edges[:-1], edges[1:])) or [(start, end)]
    return pieces


def _voice(windows: np.ndarray, centres: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """The unit mean of the windows centred in [start, end]; the nearest window's when none is."""
    inside = (centres >= start_ms) & (centres <= end_ms)
    if not inside.any():
        inside = np.zeros(len(centres), bool)
        inside[int(np.argmin(np.abs(centres - (start_ms + end_ms) / 2)))] = True
    mean = windows[inside].mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _clusters(voices: np.ndarray, lengths: np.ndarray, options: SpeakerOptions) -> np.ndarray:
    """A cluster number per piece.

    Without a count, the tree is cut at DISTANCE and the small groups join their nearest. With one, the
    tree is cut into the fewest groups that leave that many once the small ones have joined theirs (so an
    odd piece or two do not take the place of a speaker), or else exactly into that many.
    """
    if len(voices) > MAX_CLUSTERED:
        chosen = np.linspace(0, len(voices) - 1, MAX_CLUSTERED).round().astype(int)
        sampled = _clusters(voices[chosen], lengths[chosen], options)
        labels = sorted(set(sampled.tolist()))
        return np.array(labels)[np.argmax(voices @ _centroids(voices[chosen], sampled, labels).T, axis=1)]
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
    """Pieces of groups holding under MIN_SHARE of the speech go to the nearest group that does not."""
    labels = sorted(set(clusters.tolist()))
    share = {label: lengths[clusters == label].sum() / lengths.sum() for label in labels}
    kept = [label for label in labels if share[label] >= MIN_SHARE] or [max(labels, key=share.get)]
    centroids = _centroids(voices, clusters, kept)
    out = clusters.copy()
    for index, label in enumerate(clusters):
        if label not in kept:
            out[index] = kept[int(np.argmax(centroids @ voices[index]))]
    return out


def _centroids(voices: np.ndarray, clusters: np.ndarray, labels: list[int]) -> np.ndarray:
    """The unit mean voice of each of `labels`' groups."""
    centroids = np.stack([voices[clusters == label].mean(axis=0) for label in labels])
    return centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
