"""Short clips cut from the dev recordings: single sentences of 1.5-5 s, at 16 kHz and at 8 kHz.

Short, clean, one-sentence clips are where a short encoder window made tiny.en say its sentence
twice (IVR prompts, "yes, that's right"), and the dev set has too few of them to count such a
failure. This cuts them from real speech instead of generating it:

- every dev clip is transcribed once by the engine with whole 30 s windows (no shortened encoder,
  so the cut points do not depend on the behaviour under test), giving timed words;
- the reference's words are matched to those words (difflib on lower-case words without
  punctuation); a cut may fall only between two reference words that both matched, consecutively,
  and only at a sentence's end (".", "?", "!", ";" in references that have punctuation) or at a
  pause of at least PAUSE_SECONDS between them (references without punctuation);
- the cut is placed at the quietest 10 ms of the gap between the two words, so no word is split;
- from each clip's cut points (its start and end among them), consecutive pieces of
  MIN_SECONDS..MAX_SECONDS are taken greedily, the shortest that reaches MIN_SECONDS each time;
- each piece is written three times as 16-bit WAV: at 16 kHz; resampled (soxr) to 8 kHz, the rate of
  telephone audio, which the engine resamples back up as it would a caller's file; and at 8 kHz
  20 dB quieter, the level of a quiet telephone line (with 16-bit samples, the quantisation noise
  of one).

The set lives in bench/cache/short-clips/ (gitignored), with a manifest.tsv of
`<file>\\t<reference>\\t<source>`; it is made once and reused while SET_VERSION is unchanged.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import dataset

SET_VERSION = "2"
MIN_SECONDS = 1.5
MAX_SECONDS = 5.0
PAUSE_SECONDS = 0.25
# (name, sample rate, gain)
VARIANTS = (("16k", 16_000, 1.0), ("8k", 8_000, 1.0), ("8k-quiet", 8_000, 0.1))
CACHE = Path(__file__).resolve().parent / "cache" / "short-clips"
_SENTENCE_END = re.compile(r"[.?!;][\"')\]]*$")
_NON_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True)
class TimedWord:
    text: str
    start: float  # seconds
    end: float


def _norm(word: str) -> str:
    return _NON_WORD.sub("", word.lower())


def _quietest(audio: np.ndarray, start: float, end: float) -> int:
    """The sample at the middle of the quietest 10 ms frame in [start, end] seconds."""
    frame = dataset.SAMPLE_RATE // 100
    first, last = int(start * dataset.SAMPLE_RATE), int(end * dataset.SAMPLE_RATE)
    if last - first < 2 * frame:
        return (first + last) // 2
    span = audio[first:last]
    frames = len(span) // frame
    energy = (span[: frames * frame].reshape(frames, frame) ** 2).mean(axis=1)
    return first + int(np.argmin(energy)) * frame + frame // 2


def cut_points(reference: str, words: list[TimedWord], audio: np.ndarray) -> list[tuple[int, int]]:
    """(sample, reference words before it) of every allowed cut inside the clip, in order."""
    ref = reference.split()
    ref_norm = [_norm(w) for w in ref]
    hyp_norm = [_norm(w.text) for w in words]
    match: dict[int, int] = {}
    for block in difflib.SequenceMatcher(None, ref_norm, hyp_norm, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            match[block.a + k] = block.b + k
    punctuated = bool(re.search(r"[.,?!;]", reference))
    cuts = []
    for j in range(len(ref) - 1):
        k = match.get(j)
        if k is None or match.get(j + 1) != k + 1:
            continue
        before, after = words[k], words[k + 1]
        gap = after.start - before.end
        if punctuated and not _SENTENCE_END.search(ref[j]):
            continue
        if not punctuated and gap < PAUSE_SECONDS:
            continue
        margin = 0.05
        cuts.append((_quietest(audio, before.end - margin, after.start + margin), j + 1))
    return cuts


def pieces(reference: str, words: list[TimedWord], audio: np.ndarray) -> list[tuple[int, int, str]]:
    """(first sample, end sample, reference) of each 1.5-5 s piece of one clip."""
    ref = reference.split()
    points = [(0, 0), *cut_points(reference, words, audio), (len(audio), len(ref))]
    out = []
    current = 0
    while current < len(points) - 1:
        start, first_word = points[current]
        nxt = next((i for i in range(current + 1, len(points))
                    if points[i][0] - start >= MIN_SECONDS * dataset.SAMPLE_RATE), None)
        if nxt is None:
            break
        end, last_word = points[nxt]
        if end - start <= MAX_SECONDS * dataset.SAMPLE_RATE and last_word > first_word:
            out.append((start, end, " ".join(ref[first_word:last_word])))
        current = nxt
    return out


def _timed_words(transcriber, audio: np.ndarray) -> list[TimedWord]:
    transcript = transcriber.transcribe(audio)
    return [TimedWord(w.text, w.start_ms / 1000, w.end_ms / 1000) for w in transcript.words]


def build(eval_dir: Path, model: str = "tiny.en", beam: int = 5) -> Path:
    """Make the set (if missing or out of date) and return its manifest's path."""
    manifest = CACHE / "manifest.tsv"
    stamp = CACHE / "version"
    if manifest.exists() and stamp.exists() and stamp.read_text() == f"{SET_VERSION} {eval_dir.resolve()}":
        return manifest
    import soundfile as sf
    import soxr
    from tqdm import tqdm

    import engine.model.encoder_width
    from engine.transcriber import Transcriber

    clips = dataset.load_manifest(eval_dir)
    transcriber = Transcriber.load(model, beam_size=beam)
    kept = engine.model.encoder_width.PADDING_FRAMES
    engine.model.encoder_width.PADDING_FRAMES = engine.model.encoder_width.N_FRAMES  # whole windows: cuts must not depend on the rule
    CACHE.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for clip in tqdm(clips, desc="cutting short clips", unit="clip"):
            audio = dataset.load_audio(clip)
            for n, (start, end, text) in enumerate(pieces(clip.reference, _timed_words(transcriber, audio), audio)):
                piece = audio[start:end]
                stem = f"{clip.source}-{clip.path.stem}-{n}"
                for variant, rate, gain in VARIANTS:
                    data = piece if rate == dataset.SAMPLE_RATE else soxr.resample(piece, dataset.SAMPLE_RATE, rate)
                    name = f"{stem}-{variant}.wav"
                    sf.write(str(CACHE / name), data * gain, rate, subtype="PCM_16")
                    rows.append(f"{name}\t{text}\t{clip.source}@{variant}")
    finally:
        engine.model.encoder_width.PADDING_FRAMES = kept
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    stamp.write_text(f"{SET_VERSION} {eval_dir.resolve()}")
    return manifest


def load(eval_dir: Path, model: str = "tiny.en", beam: int = 5) -> list[dataset.Clip]:
    """The short-clip set as dev-style clips (built first when needed)."""
    manifest = build(eval_dir, model, beam)
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        name, reference, source = line.split("\t")
        clips.append(dataset.Clip(path=manifest.parent / name, reference=reference, source=source))
    return clips


def with_dev(eval_dir: Path, model: str = "tiny.en", beam: int = 5) -> tuple[
        dict[str, list[dataset.Clip]], dict[str, list[np.ndarray]], dict[str, float]]:
    """The dev set and this set, each as its clips, their decoded audio and its seconds: what the
    in-process benchmarks of short windows (repeats, vad-edges) run on."""
    from tqdm import tqdm

    sets = {"dev": dataset.load_manifest(eval_dir), "short clips": load(eval_dir, model, beam)}
    audios = {name: [dataset.load_audio(c) for c in tqdm(clips, desc=f"decoding {name}", unit="clip")]
              for name, clips in sets.items()}
    audio_s = {name: sum(len(a) for a in auds) / dataset.SAMPLE_RATE for name, auds in audios.items()}
    return sets, audios, audio_s
