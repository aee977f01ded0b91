"""word_boost on real domain speech: the Montreal Forced Aligner recordings (../shared/eval/mfa_selfrecorded).

Spontaneous, disfluent speech that keeps saying "Montreal Forced Aligner", which tiny.en hears as
"Montreal Forest Collider" and worse. The dev half of the clips (bench/domain_data.split, the half the
settings were tuned on) is decoded plain and with the domain's six terms boosted at the default
boost_param: 11.48 % WER, against 29.51 % plain and 12.02-12.57 % for faster-whisper's hotwords (three machines)
(bench/RESULTS.md). Before issue 30 word_boost gave 18.03 % there (a reward at every spelling,
normalised by length, and no unboost or recheck), so the bound, 14 %, fails on a return to that level.

The clinic's generated speech (bench/domain_data.clinic: drug names spoken by eSpeak NG) checks the
prompt the same way: its dev half decoded with the domain's terms as prompt text gives 13.41-14.13 % WER (two machines),
faster-whisper's initial_prompt 14.13 %, and 16.67 % before a window nearly spelling one of the prompt's
rare words was rechecked with it (engine/lm/domain_terms.prompt_terms); the bound, 15.5 %, fails on a
return to that.
"""

from __future__ import annotations

import pytest

from bench import domain_data
from bench.domain_lm import terms_text
from bench.wer import normalise, score
from engine.decoding.options import DecodeOptions

BOUND_WER = 0.14  # measured 0.1148 (0.1202 before a restart kept its credit); before issue 30 0.1803
# The recordings' dev half with the terms as prompt: measured 0.1148 (faster-whisper's initial_prompt 0.1257);
# 0.1366 while the VAD trimmed a file's head and tail (engine/audio/vad.py _with_file_edges).
FA_PROMPT_BOUND_WER = 0.13
# The clinic's dev half with the terms as word_boost: measured 0.1159 (faster-whisper's hotwords 0.1413); 0.1268
# while a term glued to the next word earned its reward and a restarted term lost it; 0.1486 before issue 30.
CLINIC_BOUND_WER = 0.13
PROMPT_BOUND_WER = 0.155  # clinic dev with the terms as prompt: measured 0.1341 and 0.1413; without the prompt's recheck 0.1667


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
    restarted = boosted[[c.name for c in clips].index("mfa_registershift.flac")]
    # the speaker starts the term again; paid for the fluent spelling only, the reward wrote "Montreal forced aligner"
    assert "forced forced aligner" in normalise(restarted), restarted


def test_the_terms_as_prompt_on_real_recordings(transcriber, recordings):
    terms, clips, audio = recordings
    prompted = [t.text for t in transcriber.transcribe_many(audio, options=DecodeOptions(prompt=terms_text(terms)))]
    prompted_wer = score([c.reference for c in clips], prompted).overall.wer
    assert prompted_wer <= FA_PROMPT_BOUND_WER, prompted_wer


def test_a_creaky_voice_the_vad_misses_at_the_file_s_head_is_transcribed(transcriber, recordings, eval_dir):
    """mfa_creaky: Silero scores the creaky "Montreal" under 0.15 and hears speech from 2.8 s only."""
    from engine.audio.vad import VoiceActivityDetector

    terms, clips, _ = recordings
    (clip,) = [c for c in clips if c.name == "mfa_creaky.flac"]
    audio = domain_data.load_clip_audio(clip.audio)
    options = DecodeOptions(prompt=terms_text(terms))
    (window,) = transcriber.vad.windows(audio)
    assert window.start == 0 and window.speech[0][0] > 2 * 16000
    kept = transcriber.transcribe(audio, options=options)
    assert "montreal forced aligner" in kept.text.lower(), kept.text
    assert [w.start_ms for w in kept.words] == sorted(w.start_ms for w in kept.words)
    shipped = transcriber.vad
    try:
        transcriber.vad = VoiceActivityDetector(keep_file_edges=False)
        trimmed = transcriber.transcribe(audio, options=options).text
    finally:
        transcriber.vad = shipped
    assert "montreal" not in trimmed.lower(), trimmed


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    domain = domain_data.clinic(tmp_path_factory.mktemp("clinic"))
    clips = domain_data.split(domain.clips, "dev")
    return domain, clips, [domain_data.load_clip_audio(c.audio) for c in clips]


def test_word_boost_spells_the_clinic_s_drug_names(transcriber, clinic):
    domain, clips, audio = clinic
    boosted = [t.text for t in transcriber.transcribe_many(audio, options=DecodeOptions(word_boost=tuple(domain.boost_terms)))]
    assert score([c.reference for c in clips], boosted).overall.wer <= CLINIC_BOUND_WER, boosted
    glued = boosted[[c.name for c in clips].index("clinic_36_en-us")]
    # rewarded for "albuterol" inside "albuterolast", the window spelled no term and was decoded without the list
    assert "albuterol as needed" in normalise(glued), glued


def test_the_terms_as_prompt_spell_the_clinic_s_drug_names(transcriber, clinic):
    domain, clips, audio = clinic
    references = [c.reference for c in clips]
    prompted = [t.text for t in transcriber.transcribe_many(audio, options=DecodeOptions(prompt=terms_text(domain.boost_terms)))]
    prompted_wer = score(references, prompted).overall.wer
    assert prompted_wer <= PROMPT_BOUND_WER, prompted_wer
    said, spoken = " ".join(prompted).lower(), " ".join(references).lower()
    terms = [t.lower() for t in domain.boost_terms if t.lower() in spoken]
    spelled = [t for t in terms if t in said]
    assert len(spelled) >= 0.65 * len(terms), (spelled, terms)  # measured 18 of 23
