"""word_boost on real domain speech: the Montreal Forced Aligner recordings (../shared/eval/mfa_selfrecorded).

Spontaneous, disfluent speech that keeps saying "Montreal Forced Aligner", which tiny.en hears as
"Montreal Forest Collider" and worse. The dev half of the clips (bench/domain_data.split, the half the
settings were tuned on) is decoded plain and with the domain's six terms boosted at the default
boost_param: 12.57 % WER, against 29.51 % plain and 12.02 % for faster-whisper's hotwords
(bench/RESULTS.md). Before issue 30 word_boost gave 18.03 % there (a reward at every spelling,
normalised by length, and no unboost or recheck), so the bound, 14 %, fails on a return to that level.
"""

from __future__ import annotations

import pytest

from bench import domain_data
from bench.wer import score
from engine.decoding.options import DecodeOptions

BOUND_WER = 0.14  # measured 0.1257; before issue 30 0.1803


@pytest.fixture(scope="module")
def recordings(eval_dir):
    domain = domain_data.forced_alignment(eval_dir)
    clips = domain_data.split(domain.clips, "dev")
    return domain.boost_terms, clips, [domain_data.load_clip_audio(c.audio) for c in clips]


def test_word_boost_fixes_the_domain_s_terms_on_real_recordings(transcriber, recordings):
    terms, clips, audio = recordings
    references = [c.reference for c in clips]
    plain = [t.text for t in transcriber.transcribe_many(audio)]
    boosted = [t.text for t in transcriber.transcribe_many(audio, options=DecodeOptions(word_boost=tuple(terms)))]
    plain_wer, boosted_wer = score(references, plain).overall.wer, score(references, boosted).overall.wer
    assert plain_wer > 0.25, plain_wer  # the terms are misheard without help
    assert boosted_wer <= BOUND_WER, (boosted_wer, plain_wer)
    said = " ".join(boosted).lower()
    assert said.count("forced aligner") >= len(clips) // 2, said
