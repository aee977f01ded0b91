"""Decode uploaded audio into the 16 kHz float32 form every model expects.

Decoding is streamed block by block through libsndfile (via soundfile) and a
streaming soxr resampler, so a long recording never exists in memory at its
native rate or as float64: peak memory is the 16 kHz output plus one block.
"""

import io
import math
import os

import numpy as np
import soundfile as sf
import soxr

from engine.errors import AudioDecodeError, EmptyAudioError, InvalidParameterError, MonoWithDualChannelError

SAMPLE_RATE = 16000

# ~1 min at 16 kHz per block: large enough that per-call overhead vanishes,
# small enough that the native-rate block stays a few MB.
_BLOCK_FRAMES = 1 << 20
_RESAMPLE_QUALITY = "HQ"


class _Growable:
    """A (channels, n) float32 buffer sized from the header, grown if the header lied.

    Frame counts from headers (and libsndfile's MP3 estimate) can be off, so
    the buffer doubles on overflow instead of trusting them blindly.
    """

    def __init__(self, channels: int, capacity: int) -> None:
        self.data = np.empty((channels, max(capacity, 1)), dtype=np.float32)
        self.size = 0

    def append(self, block: np.ndarray) -> None:
        """Append a (frames, channels) block, transposing into place."""
        n = block.shape[0]
        if self.size + n > self.data.shape[1]:
            grown = np.empty((self.data.shape[0], max(2 * self.data.shape[1], self.size + n)),
                             dtype=np.float32)
            grown[:, : self.size] = self.data[:, : self.size]
            self.data = grown
        self.data[:, self.size: self.size + n] = block.T
        self.size += n

    def result(self) -> np.ndarray:
        """Trim to the filled part, copying only when the estimate was off."""
        if self.size == self.data.shape[1]:
            return self.data
        return self.data[:, : self.size].copy()


def _open(source: bytes | bytearray | memoryview | str | os.PathLike) -> sf.SoundFile:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise EmptyAudioError("audio input is empty (0 bytes)")
        stream = io.BytesIO(source)
    else:
        try:
            if os.path.getsize(source) == 0:
                raise EmptyAudioError(f"audio file {os.fspath(source)!r} is empty (0 bytes)")
        except OSError as exc:
            raise AudioDecodeError(f"cannot read audio file: {exc.strerror or exc}") from exc
        stream = source
    try:
        return sf.SoundFile(stream)
    except (sf.SoundFileError, TypeError, ValueError) as exc:
        raise AudioDecodeError(f"not a decodable audio file: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "error_string", None) or str(exc)
    if "not a regular file" in reason:  # libsndfile's words when no format matches a stream's content
        return "the content is not in a format libsndfile recognises (wav, flac, ogg/vorbis, opus, mp3)"
    return reason


def decode_audio(
    source: bytes | str | os.PathLike, keep_channels: bool = False
) -> np.ndarray:
    """Decode any libsndfile-supported file (wav, flac, ogg/vorbis/opus, mp3) to 16 kHz float32.

    Returns shape (samples,) mono (channel mean) by default, or
    (channels, samples) with ``keep_channels`` so callers can transcribe each
    side of a stereo call separately.
    """
    with _open(source) as f:
        rate, channels = f.samplerate, f.channels
        out_channels = channels if keep_channels else 1
        ratio = SAMPLE_RATE / rate
        expected = math.ceil(f.frames * ratio) if f.frames > 0 else 0
        resampler = (
            None if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, out_channels, dtype="float32",
                                     quality=_RESAMPLE_QUALITY)
        )
        out = _Growable(out_channels, expected)
        frames_read = 0
        try:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                frames_read += block.shape[0]
                last = block.shape[0] < _BLOCK_FRAMES
                if not keep_channels and channels > 1:
                    block = block.mean(axis=1, dtype=np.float32, keepdims=True)
                if resampler is not None:
                    block = resampler.resample_chunk(block, last=last)
                out.append(block)
                if last:
                    break
        except sf.SoundFileError as exc:
            raise AudioDecodeError(f"audio stream is corrupted: {_reason(exc)}") from exc
    if frames_read == 0 or out.size == 0:
        raise EmptyAudioError("audio contains no samples")
    result = out.result()
    return result[0] if not keep_channels else result


def call_channels(audio: np.ndarray) -> np.ndarray:
    """The two sides of a call, (2, samples), from decode_audio(keep_channels=True)'s output.

    A mono file is refused rather than transcribed once: the caller asked for two speakers.
    Channels past the second are ignored, as telephony recorders put silence or mixes there.
    """
    if audio.ndim == 1 or audio.shape[0] < 2:
        raise MonoWithDualChannelError("dual_channel is true but the file has one channel; "
                                       "send a stereo file or set dual_channel to false")
    return audio[:2]


def audio_span(audio: np.ndarray, start_ms: int | None, end_ms: int | None) -> tuple[np.ndarray, int]:
    """The part of (channels, samples) audio from start_ms to end_ms, and its offset in ms.

    Only this part is transcribed; the offset turns its word times back into file times.
    """
    samples_per_ms = SAMPLE_RATE // 1000
    length_ms = -(-audio.shape[-1] // samples_per_ms)
    start = start_ms or 0
    end = length_ms if end_ms is None else end_ms
    if start >= length_ms:
        raise InvalidParameterError(f"audio_start_from ({start} ms) is at or past the end of the audio "
                                    f"({length_ms} ms)")
    if end > length_ms:
        raise InvalidParameterError(f"audio_end_at ({end} ms) is past the end of the audio ({length_ms} ms); "
                                    "leave it out to transcribe to the end")
    if start >= end:
        raise InvalidParameterError(f"audio_start_from ({start} ms) must be less than audio_end_at ({end} ms)")
    return audio[..., start * samples_per_ms: end * samples_per_ms], start
