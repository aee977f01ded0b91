"""Domain speech for the custom-language-model benchmark (issue 13): clips, LM corpora, boost terms.

A domain LM (or word_boost) is only worth shipping if it lowers WER on the speech of that domain
without costing general speech, so the benchmark needs three kinds of audio:

- ``forced_alignment``: real, spontaneous, disfluent recordings of one speaker who keeps saying
  "Montreal Forced Aligner" (../shared/eval/mfa_selfrecorded). Its LM corpus is text written for
  this project about forced alignment, never the recordings' references, so the gain measured is
  the gain a customer would get from their own domain text.
- ``clinic``: generated, jargon-heavy speech (drug names and clinical terms) spoken by eSpeak NG in
  two voices from ``bench/domains/clinic/test.txt``; its LM corpus uses the same terms in other
  sentences, checked by ``check_held_out`` so that no test sentence leaks into the LM.
- ``general``: the rest of the dev set, to show that the domain LM does not hurt ordinary speech.

Eval audio is read in place from the shared folder at run time (never copied into the project);
generated audio is cached under a caller-chosen folder so reruns do not call eSpeak again.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar, Union

import numpy as np

from bench.dataset import SAMPLE_RATE, REPO_ROOT, Clip, load_manifest
from engine.lm.text import normalize_words

DOMAINS_DIR = Path(__file__).resolve().parent / "domains"
FA_DIR = DOMAINS_DIR / "forced_alignment"
CLINIC_DIR = DOMAINS_DIR / "clinic"
MFA_SOURCE = "mfa_selfrecorded"

# eSpeak's default 160 words a minute garbles long drug names for everyone, listener or model;
# a slightly slower rate keeps the everyday words clear so errors concentrate on the jargon.
CLINIC_RATE_WPM = 150

Audio = Union[Path, np.ndarray]
"""A clip's audio: a file to decode (real recordings) or 16 kHz mono float32 samples (generated)."""


@dataclass(frozen=True)
class DomainClip:
    """One utterance: its name (stable sort key for ``split``), audio and reference text."""

    name: str
    audio: Audio
    reference: str


@dataclass(frozen=True)
class Domain:
    """A domain's test speech plus what a customer would bring: an LM corpus and boost terms."""

    name: str
    clips: list[DomainClip]
    lm_corpus: Path
    boost_terms: list[str]


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file (test sentences, boost terms)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_clip_audio(audio: Audio) -> np.ndarray:
    """16 kHz mono float32 samples of a clip, decoded by the engine itself when it is a file,
    so every system under test sees exactly the same samples."""
    if isinstance(audio, np.ndarray):
        return audio
    from engine.audio.files import decode_audio

    return decode_audio(str(audio))


def forced_alignment(eval_dir: Path) -> Domain:
    """The mfa_selfrecorded clips with their references, read from the eval folder at run time.

    Raises FileNotFoundError when the folder is absent; callers (and tests) skip on that.
    """
    folder = eval_dir / MFA_SOURCE
    refs = folder / "refs.tsv"
    if not refs.is_file():
        raise FileNotFoundError(f"{refs} not found: the shared eval data is absent")
    clips = []
    for line in refs.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, reference = line.split("\t", 1)
        clips.append(DomainClip(name=name, audio=folder / name, reference=reference.strip()))
    return Domain(name="forced_alignment", clips=sorted(clips, key=lambda c: c.name),
                  lm_corpus=FA_DIR / "lm.txt", boost_terms=read_lines(FA_DIR / "boost.txt"))


def _synth_module():
    """tests/synth.py, the project's one eSpeak NG generator (bench imports it, never copies it)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests import synth

    return synth


def synthesise(sentence: str, voice: str, cache_dir: Path, rate_wpm: int = CLINIC_RATE_WPM) -> np.ndarray:
    """16 kHz float32 speech of `sentence`, from cache_dir when it was made before.

    The cache key hashes (sentence, voice, rate), so editing a test sentence or the rate simply
    makes a new file; eSpeak in a fresh process is deterministic, so a cached clip equals a new one.
    """
    key = hashlib.sha256(f"{voice}\0{rate_wpm}\0{sentence}".encode()).hexdigest()[:20]
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    synth = _synth_module()
    import soxr

    samples, rate = synth.speak(sentence, voice, rate_wpm)
    audio = soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, audio)
    tmp.replace(path)
    return audio


def clinic(cache_dir: Path) -> Domain:
    """The clinic test sentences spoken by eSpeak NG, two speakers (VOICE_A and VOICE_B).

    Voices alternate in pairs (A A B B ...), not one by one, so that both halves of ``split``
    (even and odd index) hold both speakers.
    """
    synth = _synth_module()
    voices = (synth.VOICE_A, synth.VOICE_B)
    clips = []
    for i, sentence in enumerate(read_lines(CLINIC_DIR / "test.txt")):
        voice = voices[(i // 2) % 2]
        clips.append(DomainClip(name=f"clinic_{i:02d}_{voice}",
                                audio=synthesise(sentence, voice, cache_dir), reference=sentence))
    return Domain(name="clinic", clips=clips, lm_corpus=CLINIC_DIR / "lm.txt",
                  boost_terms=read_lines(CLINIC_DIR / "boost.txt"))


def general(eval_dir: Path) -> list[DomainClip]:
    """The dev-set clips that are not mfa_selfrecorded: ordinary speech a domain LM must not hurt.

    Named by their dev.tsv path, so ``split`` halves them deterministically too.
    Raises FileNotFoundError when the eval folder is absent.
    """
    if not (eval_dir / "dev.tsv").is_file():
        raise FileNotFoundError(f"{eval_dir / 'dev.tsv'} not found: the shared eval data is absent")
    clips: list[Clip] = [c for c in load_manifest(eval_dir) if c.source != MFA_SOURCE]
    return [DomainClip(name=str(c.path.relative_to(eval_dir)), audio=c.path, reference=c.reference)
            for c in clips]


def check_held_out(lm_corpus: Path, test_sentences: Sequence[str], n: int = 6) -> list[str]:
    """Every n-word window of a test sentence that also occurs in the LM corpus (empty when clean).

    Both sides go through the decoder's own word normaliser, so a leak cannot hide behind case or
    punctuation. Windows are taken over the whole corpus text, across line breaks, so a sentence
    split over two lines is still caught. A test sentence shorter than n words is checked whole.
    """
    corpus = normalize_words(lm_corpus.read_text(encoding="utf-8"))
    sizes = {min(n, len(normalize_words(s))) for s in test_sentences} - {0}
    seen = {size: {tuple(corpus[i:i + size]) for i in range(len(corpus) - size + 1)} for size in sizes}
    offending: list[str] = []
    for sentence in test_sentences:
        words = normalize_words(sentence)
        size = min(n, len(words))
        if not size:
            continue
        for i in range(len(words) - size + 1):
            window = tuple(words[i:i + size])
            if window in seen[size]:
                text = " ".join(window)
                if text not in offending:
                    offending.append(text)
    return offending


T = TypeVar("T", bound=DomainClip)


def split(clips: Sequence[T], part: str) -> list[T]:
    """Deterministic halves: "dev" (even index after sorting by name) to tune fusion weights on,
    "test" (odd index) to report on, so the reported gain is not fitted to the reported clips."""
    if part not in ("dev", "test"):
        raise ValueError(f"part must be 'dev' or 'test', not {part!r}")
    ordered = sorted(clips, key=lambda c: c.name)
    return ordered[0 if part == "dev" else 1::2]
