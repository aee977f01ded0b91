"""Decoding real encoded files produced by libsndfile from synthesised speech."""

import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from engine.audio import SAMPLE_RATE, decode_audio
from engine.errors import AudioDecodeError, EmptyAudioError
from synth import silence, speak, tone, write_wav


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    return speak("The quick brown fox jumps over the lazy dog.")


@pytest.fixture(scope="module")
def speech_16k(speech) -> np.ndarray:
    samples, sr = speech
    return soxr.resample(samples, sr, SAMPLE_RATE)


def _encode(samples: np.ndarray, sr: int, fmt: str, subtype: str | None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _wav_bytes(samples: np.ndarray, sr: int) -> bytes:
    return _encode(samples, sr, "WAV", "PCM_16")


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "lossy"),
    [
        ("WAV", "PCM_16", None, False),
        ("FLAC", "PCM_16", None, False),
        ("OGG", "VORBIS", None, True),
        ("OGG", "OPUS", 48000, True),  # libsndfile's Opus encoder rejects 22.05 kHz
        ("MP3", "MPEG_LAYER_III", None, True),
    ],
)
def test_decodes_formats_to_16k_mono(speech, speech_16k, fmt, subtype, rate, lossy):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile build cannot write {fmt}/{subtype}")
    samples, sr = speech
    if rate is not None:
        samples, sr = soxr.resample(samples, sr, rate), rate

    decoded = decode_audio(_encode(samples, sr, fmt, subtype))

    assert decoded.dtype == np.float32 and decoded.ndim == 1
    tolerance = int(0.1 * SAMPLE_RATE) if lossy else 1
    assert abs(decoded.size - speech_16k.size) <= tolerance
    n = min(decoded.size, speech_16k.size)
    assert np.corrcoef(decoded[:n], speech_16k[:n])[0, 1] > 0.95


def test_decodes_from_path(tmp_path, speech, speech_16k):
    samples, sr = speech
    path = write_wav(tmp_path / "speech.wav", samples, sr)

    from_path = decode_audio(path)

    assert np.array_equal(from_path, decode_audio(str(path)))
    assert np.array_equal(from_path, decode_audio(path.read_bytes()))
    assert from_path.size == speech_16k.size


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resamples_to_16k_with_right_length_and_pitch(rate):
    seconds = 3
    decoded = decode_audio(_wav_bytes(tone(440, seconds, rate), rate))

    assert abs(decoded.size - seconds * SAMPLE_RATE) <= 1
    assert abs(_peak_hz(decoded) - 440) < 1


def test_16k_float_input_passes_through_unchanged():
    samples = tone(300, 1.5, SAMPLE_RATE)
    decoded = decode_audio(_encode(samples, SAMPLE_RATE, "WAV", "FLOAT"))
    assert np.array_equal(decoded, samples)


def test_stereo_kept_or_downmixed_by_mean():
    left = tone(440, 2, 44100, amplitude=0.8)
    right = silence(2, 44100)
    data = _wav_bytes(np.stack([left, right], axis=1), 44100)

    kept = decode_audio(data, keep_channels=True)
    mono = decode_audio(data)

    assert kept.shape == (2, 2 * SAMPLE_RATE) and kept.dtype == np.float32
    assert np.abs(kept[0]).max() == pytest.approx(0.8, abs=0.02)
    assert np.abs(kept[1]).max() < 1e-3
    assert mono.shape == (2 * SAMPLE_RATE,)
    np.testing.assert_allclose(mono, kept.mean(axis=0), atol=1e-4)


def test_mono_with_keep_channels_has_a_channel_axis(speech):
    samples, sr = speech
    assert decode_audio(_wav_bytes(samples, sr), keep_channels=True).shape[0] == 1


@pytest.mark.parametrize(
    ("payload", "cause"),
    [
        (np.random.default_rng(7).bytes(8192), "Format not recognised"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>\n" * 20,
         "Format not recognised"),
    ],
    ids=["random-bytes", "html"],
)
def test_non_audio_is_undecodable_with_cause(payload, cause):
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(payload)
    assert info.value.code == "undecodable_audio"
    assert cause in info.value.message


def test_truncated_header_is_undecodable(speech):
    samples, sr = speech
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(_wav_bytes(samples, sr)[:20])
    assert info.value.code == "undecodable_audio"
    assert "WAV" in info.value.message


def test_header_without_samples_is_empty(speech):
    samples, sr = speech
    with pytest.raises(EmptyAudioError) as info:
        decode_audio(_wav_bytes(samples, sr)[:44])
    assert info.value.code == "empty_audio"


def test_truncated_data_keeps_what_arrived(speech, speech_16k):
    samples, sr = speech
    data = _wav_bytes(samples, sr)
    decoded = decode_audio(data[: 44 + (len(data) - 44) // 2])
    assert abs(decoded.size - speech_16k.size / 2) <= SAMPLE_RATE * 0.01


def test_zero_bytes_is_empty():
    with pytest.raises(EmptyAudioError) as info:
        decode_audio(b"")
    assert info.value.code == "empty_audio"


def test_zero_byte_file_is_empty(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError):
        decode_audio(path)


def test_missing_file_is_undecodable(tmp_path):
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(tmp_path / "nope.wav")
    assert "No such file" in info.value.message


def test_audio_span_cuts_by_milliseconds_and_reports_the_offset():
    from engine.audio import audio_span

    audio = np.arange(2 * 32000, dtype=np.float32).reshape(2, 32000)
    part, offset = audio_span(audio, 500, 1500)
    assert offset == 500 and part.shape == (2, 16000) and part[0, 0] == 8000
    whole, offset = audio_span(audio, None, None)
    assert offset == 0 and whole.shape == (2, 32000)


@pytest.mark.parametrize(("start", "end", "mentions"), [
    (2000, None, "audio_start_from"), (0, 2001, "audio_end_at"), (1000, 1000, "less than")])
def test_audio_span_out_of_range_is_an_invalid_parameter(start, end, mentions):
    from engine.audio import audio_span
    from engine.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=mentions):
        audio_span(np.zeros((1, 32000), dtype=np.float32), start, end)


def test_call_channels_refuses_mono_and_keeps_the_first_two():
    from engine.audio import call_channels
    from engine.errors import MonoWithDualChannelError

    with pytest.raises(MonoWithDualChannelError):
        call_channels(np.zeros((1, 100), dtype=np.float32))
    assert call_channels(np.zeros((4, 100), dtype=np.float32)).shape == (2, 100)
