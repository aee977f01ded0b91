"""Decoding real encoded files produced by libsndfile from synthesised speech."""

import io
import math
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from engine.audio.files import SAMPLE_RATE, decode_audio, read_span
from engine.errors import (
    AudioDecodeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidParameterError,
    MonoWithDualChannelError,
)
from synth import silence, speak, tone, white_noise, write_wav

MB = 1 << 20


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


def _write(path, samples: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16"):
    sf.write(str(path), samples, sr, format=fmt, subtype=subtype)
    return path


def _steady(frames: int, levels: list[float]) -> np.ndarray:
    """(frames, channels) with channel k held at levels[k]: easy to recognise after resampling."""
    return np.tile(np.asarray(levels, dtype=np.float32), (frames, 1))


def _peak_bytes(call):
    """(result, peak bytes numpy and Python allocated during call)."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _whole_then_trim(path, dual_channel: bool, start_ms: int | None, end_ms: int | None) -> np.ndarray:
    """What transcription decoded before read_span: every sample at 16 kHz, then the span cut out."""
    whole = decode_audio(path, keep_channels=True)[:2] if dual_channel else decode_audio(path)[None]
    return whole[:, (start_ms or 0) * 16: None if end_ms is None else end_ms * 16]


# Measured: at most 3.9e-7 apart in these tests, 6.6e-7 over randomised spans and rates (float32
# rounding where soxr is fed blocks of different sizes).
SPAN_TOLERANCE = 2e-6


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize(("fmt", "subtype"), [
    ("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III"),
    ("OGG", "VORBIS"),  # read up to the span rather than seeked: libsndfile's Vorbis seek is inexact
])
def test_span_matches_decoding_the_whole_file_then_trimming(tmp_path, rate, fmt, subtype):
    seconds = 4
    left = tone(440, seconds, rate, amplitude=0.4) + white_noise(seconds, rate, seed=1, amplitude=0.1)
    right = white_noise(seconds, rate, seed=2)
    path = _write(tmp_path / f"call.{fmt.lower()}", np.stack([left, right], axis=1), rate, fmt, subtype)

    for dual_channel in (False, True):
        for start_ms, end_ms in [(None, None), (None, 1234), (123, 2000), (1777, 3333), (2501, None), (3990, None)]:
            expected = _whole_then_trim(path, dual_channel, start_ms, end_ms)
            audio, offset_ms = read_span(path, dual_channel=dual_channel, start_ms=start_ms, end_ms=end_ms)
            assert offset_ms == (start_ms or 0)
            assert audio.dtype == np.float32 and audio.shape == expected.shape and audio.flags.c_contiguous
            np.testing.assert_allclose(audio, expected, rtol=0, atol=SPAN_TOLERANCE)


@pytest.mark.parametrize("rate", [1, 7, 99])
def test_span_matches_the_whole_file_below_100_hz(tmp_path, rate):
    """These rates are upsampled in two stages; seeking must land on the same 16 kHz grid."""
    frames = 600
    path = _write(tmp_path / "slow.wav", white_noise(frames / rate, rate)[:, None], rate, subtype="FLOAT")
    length_ms = frames * 1000 // rate
    for start_ms, end_ms in [(length_ms // 2, None), (length_ms // 3, length_ms // 2 + 7)]:
        audio, _ = read_span(path, start_ms=start_ms, end_ms=end_ms)
        expected = _whole_then_trim(path, False, start_ms, end_ms)
        assert audio.shape == expected.shape
        np.testing.assert_allclose(audio, expected, rtol=0, atol=SPAN_TOLERANCE)


def test_span_cuts_by_milliseconds_and_reports_the_offset(tmp_path):
    ramp = np.arange(32000, dtype=np.float32) / 32000
    path = _write(tmp_path / "ramp.wav", ramp, SAMPLE_RATE, subtype="FLOAT")

    part, offset = read_span(path, start_ms=500, end_ms=1500)
    assert offset == 500 and part.shape == (1, 16000) and part[0, 0] == ramp[8000]
    whole, offset = read_span(path)
    assert offset == 0 and np.array_equal(whole[0], ramp)


@pytest.mark.parametrize(("start", "end", "message"), [
    (2000, None, "audio_start_from (2000 ms) is at or past the end of the audio (2000 ms)"),
    (0, 2001, "audio_end_at (2001 ms) is past the end of the audio (2000 ms)"),
    (1000, 1000, "audio_start_from (1000 ms) must be less than audio_end_at (1000 ms)"),
    (3000, 100, "audio_start_from (3000 ms) is at or past the end of the audio (2000 ms)"),
])
def test_span_out_of_range_is_an_invalid_parameter(tmp_path, start, end, message):
    path = write_wav(tmp_path / "two-seconds.wav", tone(440, 2, 44100), 44100)
    with pytest.raises(InvalidParameterError) as info:
        read_span(path, start_ms=start, end_ms=end)
    assert info.value.message.startswith(message)


def test_span_bounds_use_the_audio_decoded_not_the_mp3_header(tmp_path):
    """A truncated MP3's header still claims the whole length; seeking can land past the real end."""
    path = _write(tmp_path / "whole.mp3", tone(440, 4, 22050), 22050, "MP3", "MPEG_LAYER_III")
    truncated = path.read_bytes()[: path.stat().st_size // 2]
    assert sf.info(io.BytesIO(truncated)).duration == pytest.approx(4)
    length_ms = math.ceil(decode_audio(truncated).size / 16)
    assert 1500 < length_ms < 2500

    with pytest.raises(InvalidParameterError, match=rf"\(3000 ms\) is at or past the end of the audio \({length_ms} ms\)"):
        read_span(truncated, start_ms=3000)
    with pytest.raises(InvalidParameterError, match=rf"\(3000 ms\) is past the end of the audio \({length_ms} ms\)"):
        read_span(truncated, start_ms=1000, end_ms=3000)
    assert read_span(truncated, start_ms=1000)[0].shape[1] == decode_audio(truncated).size - 16000


def test_dual_channel_keeps_the_first_two_of_four(tmp_path):
    path = _write(tmp_path / "four.wav", _steady(8000, [0.1, 0.2, 0.3, 0.4]), 8000)
    audio, _ = read_span(path, dual_channel=True)
    assert audio.shape == (2, 16000)
    np.testing.assert_allclose(audio[:, 4000:12000].mean(axis=1), [0.1, 0.2], atol=1e-3)


def test_mono_with_dual_channel_is_refused_from_the_header(tmp_path):
    """A header with no samples after it: decoding would say empty, the channel count says it first."""
    header = _wav_bytes(tone(440, 1, 8000), 8000)[:44]
    with pytest.raises(MonoWithDualChannelError) as info:
        read_span(header, dual_channel=True)
    assert info.value.code == "mono_with_dual_channel"
    with pytest.raises(EmptyAudioError):
        read_span(header)


def test_buffers_are_read_in_place(tmp_path):
    data = _wav_bytes(white_noise(300, SAMPLE_RATE), SAMPLE_RATE)  # 9.6 MB
    expected, _ = read_span(data, start_ms=150_000, end_ms=150_100)
    for buffer in (bytearray(data), memoryview(data)):
        (audio, _), peak = _peak_bytes(lambda: read_span(buffer, start_ms=150_000, end_ms=150_100))
        assert np.array_equal(audio, expected)
        assert peak < 2 * MB  # a copy of the buffer would be 9.6 MB


def test_a_second_at_1_hz_costs_a_second_not_the_file(tmp_path):
    """28 KB claiming ~4 h at 1 Hz: decoding it all to 16 kHz first took 3.1 GB."""
    path = _write(tmp_path / "1hz.wav", np.zeros(14000, dtype=np.float32), 1)
    (audio, _), peak = _peak_bytes(lambda: read_span(path, end_ms=1000))
    assert audio.shape == (1, 16000)
    assert peak < 4 * MB


@pytest.mark.parametrize(("dual_channel", "levels"), [(True, [0.0, 0.1]), (False, [0.35])])
def test_only_the_channels_transcribed_are_resampled(tmp_path, dual_channel, levels):
    """8 channels of 10 min at 1 Hz (10 KB): resampling all 8 before dropping 6 took 8 outputs' worth."""
    path = _write(tmp_path / "eight.wav", _steady(600, [k / 10 for k in range(8)]), 1)
    assert path.stat().st_size < 16 * 1024
    (audio, _), peak = _peak_bytes(lambda: read_span(path, dual_channel=dual_channel))
    assert audio.shape == (len(levels), 600 * SAMPLE_RATE)
    np.testing.assert_allclose(audio[:, audio.shape[1] // 2], levels, atol=1e-3)
    assert peak < audio.nbytes + 6 * MB


def test_64_channels_at_1_hz_are_refused_or_bounded(tmp_path):
    """1.9 MB whose header once made decoding allocate 61 GB for all 64 channels at 16 kHz."""
    path = _write(tmp_path / "sixty-four.wav", np.zeros((15000, 64), dtype=np.float32), 1)
    _, peak = _peak_bytes(lambda: pytest.raises(AudioTooLongError, read_span, path, max_seconds=14400))
    assert peak < 1 * MB
    (audio, _), peak = _peak_bytes(
        lambda: read_span(path, start_ms=3_600_000, end_ms=3_601_000, max_seconds=14400))
    assert audio.shape == (1, 16000)
    assert peak < 4 * MB


def test_max_seconds_is_checked_from_the_header(tmp_path):
    path = write_wav(tmp_path / "long.wav", silence(25, 8000), 8000)
    with pytest.raises(AudioTooLongError) as info:
        read_span(path, max_seconds=20)
    assert info.value.code == "audio_too_long"
    assert info.value.message == "the audio is 25 s long, more than the 20 s allowed"
    assert read_span(path, start_ms=5000, max_seconds=20)[0].shape == (1, 20 * SAMPLE_RATE)
    assert read_span(path, start_ms=1000, end_ms=21000, max_seconds=20)[0].shape == (1, 20 * SAMPLE_RATE)


def _flac_claiming(path, total_samples: int) -> bytearray:
    """The FLAC file with STREAMINFO's 36-bit total sample count (after "fLaC", the block header
    and 10 bytes) rewritten; 0 means unknown, as a streaming encoder writes it."""
    data = bytearray(path.read_bytes())
    fields = int.from_bytes(data[18:26], "big")
    data[18:26] = (fields & ~((1 << 36) - 1) | total_samples).to_bytes(8, "big")
    return data


def test_max_seconds_is_checked_while_decoding_when_the_header_gives_no_length(tmp_path):
    data = _flac_claiming(_write(tmp_path / "streamed.flac", tone(440, 30, 8000), 8000, "FLAC"), 0)
    assert sf.info(io.BytesIO(data)).frames >= 2**62  # libsndfile's "no length"

    with pytest.raises(AudioTooLongError, match="longer than the 10 s allowed"):
        read_span(data, max_seconds=10)
    assert read_span(data, end_ms=5000, max_seconds=10)[0].shape == (1, 5 * SAMPLE_RATE)


def test_a_header_claiming_more_than_memory_is_not_allocated(tmp_path):
    """A 1 s FLAC claiming 2**36 samples (550 GB at 16 kHz): libsndfile's error, not a MemoryError."""
    data = _flac_claiming(_write(tmp_path / "liar.flac", tone(440, 1, 8000), 8000, "FLAC"), 2**36 - 1)
    with pytest.raises(AudioTooLongError):
        read_span(data, max_seconds=14400)
    with pytest.raises(AudioDecodeError):  # libsndfile fails where the samples run out
        read_span(data)
