"""WER scoring the way Whisper papers do it, so numbers compare with published ones.

Both sides go through Whisper's English normaliser (case, punctuation, numbers,
British/American spellings), then jiwer counts errors over the whole corpus:
corpus WER = total errors / total reference words, not a mean of per-clip WERs,
which would over-weight short clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

_NORMALISER = EnglishTextNormalizer()


def normalise(text: str) -> str:
    """Whisper-normalise one transcript (lower case, no punctuation, spelled numbers unified)."""
    return " ".join(_NORMALISER(text).split())


@dataclass
class WerCount:
    """Error and word counts that add up across clips and sources."""

    errors: int = 0
    words: int = 0
    insertions: int = 0  # of the errors: hypothesis words the reference does not have

    @property
    def wer(self) -> float:
        """Word error rate as a fraction (0.1181 for 11.81 %)."""
        return self.errors / self.words if self.words else 0.0

    def add(self, other: WerCount) -> None:
        self.errors += other.errors
        self.words += other.words
        self.insertions += other.insertions


@dataclass
class WerReport:
    """Corpus WER plus a breakdown by source folder (first path component)."""

    overall: WerCount
    per_source: dict[str, WerCount] = field(default_factory=dict)


def count_errors(reference: str, hypothesis: str) -> WerCount:
    """Errors (S + D + I) and reference words of one clip after normalisation.

    jiwer refuses an empty reference, so a clip whose reference normalises to
    nothing counts every hypothesis word as an insertion.
    """
    ref = normalise(reference)
    hyp = normalise(hypothesis)
    if not ref:
        return WerCount(errors=len(hyp.split()), words=0, insertions=len(hyp.split()))
    out = jiwer.process_words(ref, hyp)
    return WerCount(errors=out.substitutions + out.deletions + out.insertions, words=len(ref.split()),
                    insertions=out.insertions)


def score(references: list[str], hypotheses: list[str], sources: list[str] | None = None) -> WerReport:
    """Corpus-level WER over aligned lists, grouped by `sources` when given."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    report = WerReport(overall=WerCount())
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        clip = count_errors(ref, hyp)
        report.overall.add(clip)
        if sources is not None:
            report.per_source.setdefault(sources[i], WerCount()).add(clip)
    return report
