"""End-to-end transcription in one process with the real tiny.en model."""

import os

import numpy as np
import pytest
import soxr

from engine.audio.files import SAMPLE_RATE
from synth import VOICE_B, silence, speak, tone, white_noise

SENTENCE = "the quick brown fox jumps over the lazy dog"
# The pangram is borderline for tiny.en: on an AVX2-only CPU its int8 path hears "the quick round-fark
# stump" at 120 and 160 words a minute. This sentence's key words were heard at every rate from 120 to 175.
CLEAR = "please send the weekly report to the finance team before friday"


def _speech(text: str, voice: str = "en-us") -> np.ndarray:
    samples, rate = speak(text, voice=voice)
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def _assert_well_formed(transcript, audio_seconds: float) -> None:
    starts = [w.start_ms for w in transcript.words]
    assert starts == sorted(starts)
    for word in transcript.words:
        assert 0 <= word.start_ms < word.end_ms <= audio_seconds * 1000 + 50
        assert 0.0 <= word.confidence <= 1.0
        assert word.text.strip() == word.text and word.text


def test_generated_speech_is_transcribed_with_timed_words(transcriber):
    audio = np.concatenate([silence(1.0, SAMPLE_RATE), _speech(CLEAR), silence(1.0, SAMPLE_RATE)])
    transcript = transcriber.transcribe(audio)
    text = transcript.text.lower()
    heard = [word for word in ("weekly", "report", "finance", "team", "friday") if word in text]
    assert len(heard) >= 4, f"only {heard} in {text!r}"  # synthetic speech: one slip is ASR, not a bug
    _assert_well_formed(transcript, len(audio) / SAMPLE_RATE)
    assert transcript.words[0].start_ms >= 500, "the first word starts within 0.5 s of the speech, after 1 s of silence"
    assert transcript.duration == pytest.approx(len(audio) / SAMPLE_RATE)


@pytest.mark.parametrize("compute_type", ["int8", "bfloat16", "float32"])
def test_every_cpu_compute_type_hears_the_sentence(models_dir, compute_type):
    """The default follows the CPU (bfloat16 with AMX, int8 without), so the suite on one machine
    would exercise only one of them through the transcriber; each is checked here on any CPU."""
    from engine.settings import EngineSettings
    from engine.transcriber import Transcriber

    settings = EngineSettings.from_env({**os.environ, "ASYNC_ENGINE_COMPUTE_TYPE": compute_type})
    transcriber = Transcriber.load("tiny.en", settings=settings)
    assert transcriber.runtime.net.bf16 is (compute_type == "bfloat16")
    text = transcriber.transcribe(_speech(CLEAR)).text.lower()
    heard = [word for word in ("weekly", "report", "finance", "team", "friday") if word in text]
    assert len(heard) >= 4, f"{compute_type}: only {heard} in {text!r}"


def test_word_times_follow_the_speech_offset(transcriber):
    speech = _speech("hello there")
    late = np.concatenate([silence(20.0, SAMPLE_RATE), speech])
    words = transcriber.transcribe(late).words
    assert words, "speech after 20 s of silence is found"
    assert 19_500 <= words[0].start_ms <= 20_000 + len(speech) * 1000 // SAMPLE_RATE


@pytest.mark.parametrize(
    "make",
    [
        lambda: silence(10.0, SAMPLE_RATE),
        lambda: white_noise(10.0, SAMPLE_RATE, seed=3),
        lambda: np.concatenate([tone(440.0, 3.0, SAMPLE_RATE), tone(660.0, 3.0, SAMPLE_RATE)]),
    ],
    ids=["silence", "white-noise", "tones"],
)
def test_non_speech_gives_no_words(transcriber, make):
    transcript = transcriber.transcribe(make().astype(np.float32))
    assert transcript.words == []
    assert transcript.text == ""


def test_five_minute_file_is_windowed_and_stitched_in_order(transcriber):
    sentences = [
        "the weather today is sunny and warm",
        "please call me back after lunch",
        "our meeting moved to the afternoon",
        "the train leaves from platform nine",
        "thank you for your patience",
    ]
    parts, marks = [], []
    elapsed = 0.0
    i = 0
    while elapsed < 300.0 or i % len(sentences):
        speech = _speech(sentences[i % len(sentences)])
        gap = silence(8.0 + (i % 3), SAMPLE_RATE)
        marks.append(elapsed)
        parts += [speech, gap]
        elapsed += (len(speech) + len(gap)) / SAMPLE_RATE
        i += 1
    audio = np.concatenate(parts)
    rounds = i // len(sentences)
    assert 300 <= len(audio) / SAMPLE_RATE <= 400
    progress = []
    transcript = transcriber.transcribe(audio, lambda done, total: progress.append((done, total)))
    _assert_well_formed(transcript, len(audio) / SAMPLE_RATE)
    windows = transcriber.vad.windows(audio)
    # Over 2 min of speech once the 8-10 s pauses shrink to 1 s: at least 4 windows of 30 s.
    assert len(windows) >= 4 and sum(w.samples for w in windows) < 0.6 * len(audio)
    assert progress and progress[-1][0] == progress[-1][1] >= len(windows)
    text = transcript.text.lower()
    assert text.count("patience") == rounds
    assert text.count("platform") == rounds
    assert transcript.words[-1].start_ms >= marks[-1] * 1000 - 500


def test_batched_files_match_one_by_one(transcriber):
    audios = [_speech(SENTENCE), _speech("please call me back after lunch", voice=VOICE_B)]
    together = transcriber.transcribe_many(audios)
    alone = [transcriber.transcribe(a) for a in audios]
    assert [t.text for t in together] == [t.text for t in alone]


def test_windows_of_different_encoder_widths_share_a_batch(transcriber):
    """A 2 s, an 8 s and a 25 s window are encoded at three widths and decoded in one step loop; the
    cross-attention must keep each row to its own window's frames (text and word times as alone)."""
    short = _speech("call me")
    middle = _speech("please call me back after lunch, the quick brown fox jumps over the lazy dog", voice=VOICE_B)
    long = np.concatenate([middle, silence(1.0, SAMPLE_RATE), _speech(SENTENCE), silence(1.0, SAMPLE_RATE), middle])[: 25 * SAMPLE_RATE]
    audios = [short, middle, long]
    from engine.audio.features import N_FRAMES
    from engine.model.encoder_width import encoder_width

    widths = {encoder_width(len(a), N_FRAMES) for a in audios}
    assert len(widths) == 3 and max(widths) <= N_FRAMES
    together = transcriber.transcribe_many(audios)
    alone = [transcriber.transcribe(a) for a in audios]
    assert [t.text for t in together] == [t.text for t in alone]
    assert [[(w.start_ms, w.end_ms) for w in t.words] for t in together] == \
        [[(w.start_ms, w.end_ms) for w in t.words] for t in alone]
    assert all(t.words for t in together)


def test_encoder_width_keeps_eight_seconds_of_padding_within_the_window():
    from engine.audio.features import HOP_LENGTH, N_FRAMES
    from engine.model.encoder_width import PADDING_FRAMES, WIDTH_STEP_FRAMES, encoder_width

    for seconds in (0.1, 1.0, 3.3, 7.9, 12.0, 21.9, 22.1, 29.99, 30.0):
        samples = int(seconds * SAMPLE_RATE)
        width = encoder_width(samples, N_FRAMES)
        assert width % WIDTH_STEP_FRAMES == 0 and width <= N_FRAMES
        assert width == N_FRAMES or width - samples // HOP_LENGTH >= PADDING_FRAMES
    assert encoder_width(SAMPLE_RATE, N_FRAMES) == 1000
    assert encoder_width(25 * SAMPLE_RATE, N_FRAMES) == N_FRAMES
