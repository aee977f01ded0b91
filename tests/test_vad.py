"""Silero VAD windows on generated speech, silence, noise and tones."""

import time

import numpy as np
import pytest
import soxr

from engine.audio.files import SAMPLE_RATE
from engine.audio.vad import SpeechWindow, VoiceActivityDetector
from synth import VOICE_A, VOICE_B, silence, speak, tone, white_noise

SR = SAMPLE_RATE

SENTENCES = [
    "Good morning, thanks for calling the support line.",
    "I would like to ask about my last invoice, it seems far too high.",
    "Let me check that for you, one moment please.",
    "The charge includes the annual maintenance fee for your account.",
]


@pytest.fixture(scope="module")
def vad() -> VoiceActivityDetector:
    return VoiceActivityDetector()


def say(text: str, voice: str = VOICE_A, rate_wpm: int = 160) -> np.ndarray:
    samples, sr = speak(text, voice=voice, rate_wpm=rate_wpm)
    return soxr.resample(samples, sr, SR)


def assert_well_formed(windows: list[SpeechWindow], length: int, max_s: float = 30.0) -> None:
    for w in windows:
        assert 0 <= w.start < w.end <= length
        assert w.samples <= max_s * SR
        assert all(s < e for s, e in w.pieces)
        assert all(a[1] < b[0] for a, b in zip(w.pieces, w.pieces[1:])), "pieces are ordered and disjoint"
        assert all(any(ps <= s and e <= pe for ps, pe in w.pieces) for s, e in w.speech)
    for a, b in zip(windows, windows[1:]):
        assert a.end <= b.start


def covered(windows: list[SpeechWindow], start: int, end: int) -> bool:
    return any(s <= start and end <= e for w in windows for s, e in w.pieces)


def test_synth_speech_has_plausible_duration():
    words = "one two three four five six seven eight nine ten " * 2
    normal = say(words, rate_wpm=160).size / SR
    fast = say(words, rate_wpm=320).size / SR
    assert 4 < normal < 15  # 20 words at 160 wpm is ~7.5 s
    assert fast < 0.75 * normal


@pytest.mark.parametrize(
    "signal",
    [
        pytest.param(lambda: silence(20, SR), id="silence"),
        pytest.param(lambda: white_noise(20, SR, seed=1, amplitude=0.05), id="quiet-noise"),
        pytest.param(lambda: white_noise(20, SR, seed=2, amplitude=0.9), id="loud-noise"),
        pytest.param(lambda: tone(120, 20, SR), id="tone-120"),
        pytest.param(lambda: tone(220, 20, SR), id="tone-220"),
        pytest.param(lambda: tone(1000, 20, SR), id="tone-1k"),
        pytest.param(lambda: tone(5000, 20, SR), id="tone-5k"),
    ],
)
def test_non_speech_yields_no_windows(vad, signal):
    assert vad.windows(signal()) == []


def test_empty_audio_yields_no_windows(vad):
    assert vad.windows(np.zeros(0, dtype=np.float32)) == []


def test_rejects_multichannel_input(vad):
    with pytest.raises(ValueError):
        vad.windows(np.zeros((2, SR), dtype=np.float32))


@pytest.mark.parametrize("voice", [VOICE_A, VOICE_B])
def test_a_short_file_keeps_its_head_and_tail_around_tight_speech(vad, voice):
    speech = say(SENTENCES[1], voice=voice)
    lead = 3 * SR
    audio = np.concatenate([silence(3, SR), speech, silence(3, SR)])

    (w,) = vad.windows(audio)

    assert w.pieces == ((0, audio.size),), "Whisper sees a file that fits one window whole, as faster-whisper does"
    # The speech the VAD heard is still where it was: word timings are fitted to it.
    assert w.speech[0][0] > lead - SR and w.speech[-1][1] < lead + speech.size + SR


@pytest.mark.parametrize("voice", [VOICE_A, VOICE_B])
def test_speech_is_covered_tightly_when_edges_are_trimmed(voice):
    speech = say(SENTENCES[1], voice=voice)
    lead = 3 * SR
    audio = np.concatenate([silence(3, SR), speech, silence(3, SR)])

    windows = VoiceActivityDetector(keep_file_edges=False).windows(audio)

    assert len(windows) == 1
    (w,) = windows
    # eSpeak output starts and ends with a little silence of its own.
    assert covered(windows, lead + int(0.1 * SR), lead + speech.size - int(0.1 * SR))
    assert w.start > lead - SR and w.end < lead + speech.size + SR


def test_a_side_of_a_call_is_trimmed_at_its_edges_too(vad):
    """On a dual_channel side, the head and tail are the other side's turns, not an utterance's edges."""
    speech = say(SENTENCES[1])
    lead = 3 * SR
    audio = np.concatenate([silence(3, SR), speech, silence(3, SR)])

    (w,) = vad.windows(audio, call_channel=True)

    assert w.start > lead - SR and w.end < lead + speech.size + SR


def test_file_edges_join_a_window_only_where_it_still_fits():
    short = VoiceActivityDetector(max_window_s=8.0)
    speech = say(SENTENCES[2])
    audio = np.concatenate([silence(2, SR), speech, silence(6, SR)])

    (w,) = short.windows(audio)

    assert_well_formed([w], audio.size, max_s=8.0)
    assert w.start == 0, "the 2 s head fits the window"
    assert w.end < audio.size - 4 * SR, "the 6 s tail would not, so it stays trimmed to a pad"


def test_silences_inside_a_file_are_still_cut_when_its_edges_are_kept(vad):
    first, second = say(SENTENCES[0]), say(SENTENCES[1])
    audio = np.concatenate([silence(2, SR), first, silence(6.0, SR), second, silence(2, SR)])

    (w,) = vad.windows(audio)

    assert w.start == 0 and w.end == audio.size
    assert len(w.pieces) == 2 and w.samples < audio.size - 4.5 * SR


def test_speech_in_noise_is_found(vad):
    speech = say(SENTENCES[0])
    audio = np.concatenate([silence(2, SR), speech, silence(2, SR)])
    audio += white_noise(audio.size / SR, SR, seed=3, amplitude=0.05)[: audio.size]
    assert len(vad.windows(audio)) == 1


def test_speech_at_edges_is_clipped_to_audio(vad):
    speech = say(SENTENCES[2])
    # eSpeak leaves well under the 0.2 s pad of silence at each end.
    assert [w.pieces for w in vad.windows(speech)] == [((0, speech.size),)]


def test_ninety_second_conversation_is_packed_into_ordered_windows(vad):
    parts, spans, cursor = [], [], 0
    for i in range(16):
        clip = say(SENTENCES[i % 4], voice=(VOICE_A, VOICE_B)[i % 2])
        gap = silence(1.0 + (i % 4), SR)
        spans.append((cursor, cursor + clip.size))
        parts += [clip, gap]
        cursor += clip.size + gap.size
    audio = np.concatenate(parts)
    assert audio.size >= 85 * SR

    windows = vad.windows(audio)

    assert len(windows) >= 3
    assert_well_formed(windows, audio.size)
    for start, end in spans:
        mid = (start + end) // 2
        assert covered(windows, mid - SR // 2, mid + SR // 2)
    speech_total = sum(end - start for start, end in spans)
    assert sum(w.samples for w in windows) >= 0.9 * speech_total
    assert sum(w.samples for w in windows) < audio.size - 16 * SR, "silences over 1 s are cut to 1 s"


def test_continuous_speech_longer_than_max_is_split(vad):
    speech = say(" ".join(SENTENCES * 4), rate_wpm=200)
    assert speech.size > 40 * SR

    windows = vad.windows(speech)

    assert len(windows) >= 2
    assert_well_formed(windows, speech.size)
    assert sum(w.samples for w in windows) >= 0.8 * speech.size


def test_custom_max_window_is_respected():
    short = VoiceActivityDetector(max_window_s=8.0)
    audio = np.concatenate([np.concatenate([say(s), silence(0.5, SR)]) for s in SENTENCES])
    windows = short.windows(audio)
    assert len(windows) >= 3
    assert_well_formed(windows, audio.size, max_s=8.0)


def test_ten_minutes_is_fast(vad):
    clip = say(SENTENCES[0])
    block = np.concatenate([clip, silence(4, SR), white_noise(5, SR, seed=4)])
    audio = np.resize(block, 600 * SR)

    started = time.perf_counter()
    windows = vad.windows(audio)
    elapsed = time.perf_counter() - started

    assert elapsed < 15
    assert_well_formed(windows, audio.size)
    for start in range(0, audio.size - clip.size, block.size):
        mid = start + clip.size // 2
        assert covered(windows, mid - SR // 2, mid + SR // 2)


def test_long_silences_shrink_to_two_pads_and_short_ones_stay(vad):
    first, second, third = say(SENTENCES[0]), say(SENTENCES[1]), say(SENTENCES[2])
    audio = np.concatenate([first, silence(0.6, SR), second, silence(6.0, SR), third])

    (window,) = vad.windows(audio)

    assert len(window.pieces) == 2, "the 0.6 s pause is kept inside a piece, the 6 s one splits pieces"
    gap = window.pieces[1][0] - window.pieces[0][1]
    assert 4.5 * SR < gap < 6.0 * SR
    assert window.samples < audio.size - 4.5 * SR
    assert len(window.speech) >= 3


def test_speech_window_maps_joined_audio_back_to_the_file():
    window = SpeechWindow(((100, 200), (500, 600)), speech=((120, 190), (520, 580)))
    audio = np.arange(1000, dtype=np.float32)
    assert window.samples == 200
    assert np.array_equal(window.gather(audio), np.concatenate([audio[100:200], audio[500:600]]))
    assert window.file_sample(50) == 150 and window.file_sample(150) == 550 and window.file_sample(100) == 200
    assert window.window_offset(150) == 50 and window.window_offset(550) == 150
    assert window.window_offset(300) == 100, "a file position in the cut silence maps to the cut"
    rest = window.after(150)
    assert rest.pieces == ((550, 600),) and rest.speech == ((550, 580),)
    head = window.first(120)
    assert head.pieces == ((100, 200), (500, 520)) and head.speech == ((120, 190),)
    assert window.first(500) is window
