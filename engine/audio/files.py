"""Decode uploaded audio into the 16 kHz float32 form every model expects.

Memory follows the audio actually transcribed, not the file: a span is cut by seeking before
anything is resampled, only the channels the caller needs are resampled, and decoding runs in
blocks bounded in bytes on both the native-rate and the 16 kHz side. A few kilobytes of header
can claim hours of audio at one sample per second, or a thousand channels, so no block size and
no buffer follows the header beyond what the caller's limit allows.
"""

import base64
import binascii
import io
import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr

from engine.errors import (
    AudioDecodeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidParameterError,
    MonoWithDualChannelError,
)

SAMPLE_RATE = 16000
MAX_SPAN_MS = 2**31 - 1  # 24.8 days: past any audio this reads, and inside every integer a seek takes
_SAMPLES_PER_MS = SAMPLE_RATE // 1000
_FLOAT32_BYTES = 4

# Bytes per block on each side of the resampler: large enough that per-call overhead vanishes
# (several seconds of audio at common rates), small enough to be noise next to the output.
_BLOCK_BYTES = 1 << 20
_RESAMPLE_QUALITY = "HQ"
# What libsndfile reports as the length when the header gives none (e.g. a streamed FLAC).
_UNKNOWN_FRAMES = 2**63 - 1
# soxr's memory stays within a few MB when upsampling to 16 kHz from this rate or above.
_MIN_DIRECT_RATE = 100
# libsndfile's Vorbis seek can land thousands of samples off (measured up to 15707 frames with
# libsndfile 1.2.2), so a Vorbis span is reached by reading from the start instead.
_INEXACT_SEEK_SUBTYPES = frozenset({"VORBIS"})

# Turns a (frames, file channels) block into the (frames, channels) block that gets resampled.
_Pick = Callable[[np.ndarray], np.ndarray]


class _BufferReader(io.RawIOBase):
    """A seekable stream over the caller's buffer: io.BytesIO copies a bytearray or memoryview."""

    def __init__(self, buffer: memoryview) -> None:
        super().__init__()
        self._buffer = buffer
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:
        chunk = self._buffer[self._position: self._position + len(target)]
        memoryview(target).cast("B")[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._buffer)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position


class _Output:
    """The kept 16 kHz samples, (channels, n) float32.

    Filled in place when the expected size is known, so nothing is copied at the end; samples past
    it (a header that under-declared) are kept as blocks and joined once at the end.
    """

    def __init__(self, channels: int, capacity: int, limit: int | None) -> None:
        try:
            self.buffer = np.empty((channels, capacity), dtype=np.float32)
        except (MemoryError, ValueError):  # a header claiming more than this machine holds may be lying
            self.buffer = np.empty((channels, 0), dtype=np.float32)
        self.filled = 0
        self.overflow: list[np.ndarray] = []
        self.size = 0
        self.limit = limit

    def append(self, block: np.ndarray) -> None:
        """Keep a (frames, channels) block; refuse it when it takes the total past the limit."""
        if self.limit is not None and self.size + block.shape[0] > self.limit:
            raise AudioTooLongError(f"the audio is longer than the {self.limit / SAMPLE_RATE:g} s allowed")
        fits = min(block.shape[0], self.buffer.shape[1] - self.filled)
        self.buffer[:, self.filled: self.filled + fits] = block[:fits].T
        self.filled += fits
        if fits < block.shape[0]:
            self.overflow.append(block[fits:].T)
        self.size += block.shape[0]

    def result(self) -> np.ndarray:
        if not self.overflow and self.filled == self.buffer.shape[1]:
            return self.buffer
        return np.concatenate([self.buffer[:, : self.filled], *self.overflow], axis=1)


def _open(source: bytes | bytearray | memoryview | str | os.PathLike) -> sf.SoundFile:
    if isinstance(source, (bytes, bytearray, memoryview)):
        buffer = memoryview(source).cast("B")
        if buffer.nbytes == 0:
            raise EmptyAudioError("audio input is empty (0 bytes)")
        stream = _BufferReader(buffer)
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


def _resampled_length(frames: int, rate: int) -> int:
    """How many 16 kHz samples soxr's stream makes of `frames` native frames (rounded half up)."""
    return (2 * frames * SAMPLE_RATE + rate) // (2 * rate)


def _declared_length(f: sf.SoundFile) -> int | None:
    """The 16 kHz length the header claims; an estimate for MP3, a claim for FLAC and Ogg."""
    if f.frames <= 0 or f.frames >= _UNKNOWN_FRAMES:
        return None
    return _resampled_length(f.frames, f.samplerate)


def _margin_frames(rate: int) -> int:
    """Native frames decoded and dropped on each side of a span, so its edges match a whole-file decode.

    soxr's HQ filter settles within ~90 native frames when upsampling and ~80 output samples when
    downsampling; MP3 and Vorbis decoders need up to ~1000 frames after a seek. Half a second,
    and never under 256 frames, covers both with room to spare.
    """
    return max(256, rate // 2)


def _seek_frame(rate: int, first: int) -> int:
    """A frame a margin before 16 kHz sample `first`, whose own 16 kHz position is a whole number.

    Starting the resampler there keeps its output on the same sample grid as a whole-file decode.
    """
    step = rate // math.gcd(rate, SAMPLE_RATE)
    return max(0, (first * rate // SAMPLE_RATE - _margin_frames(rate)) // step * step)


def _frames_for_output(rate: int, channels: int) -> int:
    """Frames at `rate` that resample to at most _BLOCK_BYTES of 16 kHz output."""
    return max(1, _BLOCK_BYTES * rate // (_FLOAT32_BYTES * channels * SAMPLE_RATE))


def _block_frames(rate: int, file_channels: int, channels: int) -> int:
    """Frames per read, within _BLOCK_BYTES both as read (every channel) and once resampled."""
    return max(1, min(_BLOCK_BYTES // (_FLOAT32_BYTES * file_channels), _frames_for_output(rate, channels)))


def _soxr_stream(in_rate: int, out_rate: int, channels: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=_RESAMPLE_QUALITY)


class _Resampler:
    """A stream to 16 kHz whose own memory and output pieces stay within a few MB at any rate.

    soxr works in internal blocks of about a thousand input frames: straight from 1 Hz it holds
    ~200 MB and returns ~50 MB at once. Below _MIN_DIRECT_RATE it therefore first upsamples by a
    whole factor, which leaves every native frame's 16 kHz position, and so span alignment, as is.
    """

    def __init__(self, rate: int, channels: int) -> None:
        factor = -(-_MIN_DIRECT_RATE // rate)
        self.stages: list[soxr.ResampleStream] = []
        if factor > 1:
            self.stages.append(_soxr_stream(rate, rate * factor, channels))
        if rate != SAMPLE_RATE:
            self.stages.append(_soxr_stream(rate * factor, SAMPLE_RATE, channels))
        self.piece_frames = _frames_for_output(rate * factor, channels)

    def resample(self, block: np.ndarray, last: bool) -> Iterator[np.ndarray]:
        """The 16 kHz samples of a (frames, channels) block, in pieces of at most _BLOCK_BYTES."""
        if not self.stages:
            yield block
            return
        *upsample, final = self.stages
        middle = upsample[0].resample_chunk(block, last=last) if upsample else block
        for start in range(0, max(middle.shape[0], 1), self.piece_frames):
            end = start + self.piece_frames
            yield final.resample_chunk(middle[start:end], last=last and end >= middle.shape[0])


def _skip(f: sf.SoundFile, frames: int, block_frames: int) -> int:
    """Read and drop up to `frames` frames; fewer come back when the file ends first."""
    skipped = 0
    while skipped < frames:
        got = f.read(min(block_frames, frames - skipped), dtype="float32", always_2d=True).shape[0]
        if got == 0:
            break
        skipped += got
    return skipped


def _seek(f: sf.SoundFile, frame: int) -> bool:
    """Seek to `frame`; False leaves the file at its start, where libsndfile could not seek there."""
    if frame == 0 or not f.seekable() or f.subtype in _INEXACT_SEEK_SUBTYPES:
        return False
    try:
        f.seek(frame)
    except sf.SoundFileError:  # past the length the header gives, which may be a lie: read up to it instead
        f.seek(0)
        return False
    return True


def _decode(f: sf.SoundFile, pick: _Pick, channels: int, first: int, stop: int | None,
            out: _Output) -> int | None:
    """Decode 16 kHz samples [first, stop) of `f` into `out`.

    Returns the whole file's 16 kHz length when decoding reached the end of the file, else None
    (the file goes on past `stop`).
    """
    rate = f.samplerate
    block_frames = _block_frames(rate, f.channels, channels)
    seek_frame = _seek_frame(rate, first)
    seeked = _seek(f, seek_frame)
    if not seeked:
        skipped = _skip(f, seek_frame, block_frames)
        if skipped < seek_frame:  # the file ends before the span's margin
            return _resampled_length(skipped, rate)
    produced = seek_frame * SAMPLE_RATE // rate  # 16 kHz index of the resampler's next sample
    last_frame = None if stop is None else -(-stop * rate // SAMPLE_RATE) + _margin_frames(rate)
    position = seek_frame
    resampler = _Resampler(rate, channels)
    while True:
        wanted = block_frames if last_frame is None else min(block_frames, last_frame - position)
        block = f.read(wanted, dtype="float32", always_2d=True)
        position += block.shape[0]
        at_end = block.shape[0] < wanted
        last = at_end or position == last_frame
        for piece in resampler.resample(pick(block), last):
            keep_from = max(first - produced, 0)
            keep_to = piece.shape[0] if stop is None else min(piece.shape[0], stop - produced)
            if keep_to > keep_from:
                out.append(piece[keep_from:keep_to])
            produced += piece.shape[0]
        if last:
            break
    if not at_end:
        return None
    if seeked and produced <= first:  # a seek can land past the real end of a truncated MP3
        return _frames_to_end(f, block_frames)
    return produced


def _frames_to_end(f: sf.SoundFile, block_frames: int) -> int:
    """The whole file's 16 kHz length, counted by reading it from the start."""
    f.seek(0)
    return _resampled_length(_skip(f, _UNKNOWN_FRAMES, block_frames), f.samplerate)


def _mixdown(block: np.ndarray) -> np.ndarray:
    """Mono as the mean of every channel, at the native rate so each is resampled once, together."""
    return block if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32, keepdims=True)


def _call_sides(block: np.ndarray) -> np.ndarray:
    """The first two channels: telephony recorders put silence or mixes past the second."""
    return np.ascontiguousarray(block[:, :2])


def _all_channels(block: np.ndarray) -> np.ndarray:
    return block


def _read(f: sf.SoundFile, pick: _Pick, channels: int, first: int, stop: int | None,
          limit: int | None) -> tuple[np.ndarray, int | None]:
    """Decode [first, stop) into a buffer sized from the header, never past `limit` samples."""
    declared = _declared_length(f)
    bounds = [limit, None if declared is None else declared - first, None if stop is None else stop - first]
    known = [bound for bound in bounds if bound is not None]
    out = _Output(channels, max(0, min(known)) if known else 0, limit)
    try:
        length = _decode(f, pick, channels, first, stop, out)
    except sf.SoundFileError as exc:
        raise AudioDecodeError(f"audio stream is corrupted: {_reason(exc)}") from exc
    if length == 0:
        raise EmptyAudioError("audio contains no samples")
    return out.result(), length


def decode_audio(
    source: bytes | bytearray | memoryview | str | os.PathLike, keep_channels: bool = False
) -> np.ndarray:
    """A whole file (wav, flac, ogg/vorbis/opus, mp3) at 16 kHz float32, for tools that need all of it.

    Returns shape (samples,) mono (channel mean) by default, or (channels, samples) with every
    channel with ``keep_channels``. Transcription reads through read_span, which bounds memory.
    """
    with _open(source) as f:
        pick, channels = (_all_channels, f.channels) if keep_channels else (_mixdown, 1)
        audio, _ = _read(f, pick, channels, 0, None, None)
    return audio if keep_channels else audio[0]


def decode_data_url(url: str) -> np.ndarray:
    """Audio sent inline as a base64 data: URL (OpenAI's known_speaker_references[]), mono at 16 kHz.

    ValueError when it is not such a URL; the errors of decode_audio when its bytes are not audio.
    """
    head, comma, payload = url.partition(",")
    if not (head[:5].lower() == "data:" and comma and head.lower().endswith(";base64")):
        raise ValueError("it is not a base64 data: URL (data:audio/wav;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("its base64 does not decode") from None
    return decode_audio(data)


def read_span(
    source: bytes | bytearray | memoryview | str | os.PathLike,
    *,
    dual_channel: bool = False,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """The audio to transcribe, (channels, samples) float32 at 16 kHz, and its offset in ms.

    Only [start_ms, end_ms) is decoded past a short margin, so a small file claiming hours costs
    only what is asked for; the offset turns the span's word times back into file times. Channels
    are the first two with ``dual_channel`` (each side of a call transcribed on its own), else one,
    the mean of all. A span longer than ``max_seconds`` is refused from the header when it gives a
    length, and while decoding in any case, so a header that under-declares cannot get past it.
    """
    start = start_ms or 0
    for name, ms in (("audio_start_from", start), ("audio_end_at", end_ms)):
        if ms is not None and not 0 <= ms <= MAX_SPAN_MS:
            raise InvalidParameterError(f"{name} ({ms} ms) must be from 0 to {MAX_SPAN_MS} ms")
    with _open(source) as f:
        if dual_channel and f.channels < 2:
            raise MonoWithDualChannelError("dual_channel is true but the file has one channel; "
                                           "send a stereo file or set dual_channel to false")
        first = start * _SAMPLES_PER_MS
        stop = None if end_ms is None else end_ms * _SAMPLES_PER_MS
        if max_seconds is not None:
            _check_declared_span(f, first, stop, max_seconds)
        pick, channels = (_call_sides, 2) if dual_channel else (_mixdown, 1)
        limit = None if max_seconds is None else math.floor(max_seconds * SAMPLE_RATE)
        # When start >= end, one sample at the start still tells which of the two errors it is.
        decode_stop = None if stop is None else max(stop, first + 1)
        audio, length = _read(f, pick, channels, first, decode_stop, limit)
    _check_span(length, start, end_ms)
    return audio, start


def _check_declared_span(f: sf.SoundFile, first: int, stop: int | None, max_seconds: float) -> None:
    """Refuse an over-long span from the header, before decoding it costs seconds and memory."""
    declared = _declared_length(f)
    if declared is None:
        return
    seconds = ((declared if stop is None else min(stop, declared)) - first) / SAMPLE_RATE
    if seconds > max_seconds:
        raise AudioTooLongError(f"the audio is {seconds:.0f} s long, more than the {max_seconds:g} s allowed")


def _check_span(length: int | None, start: int, end: int | None) -> None:
    """The span's bounds against the decoded length; None means the file goes on past the span."""
    if length is not None:
        length_ms = -(-length // _SAMPLES_PER_MS)
        if start >= length_ms:
            raise InvalidParameterError(f"audio_start_from ({start} ms) is at or past the end of the audio "
                                        f"({length_ms} ms)")
        if end is not None and end > length_ms:
            raise InvalidParameterError(f"audio_end_at ({end} ms) is past the end of the audio "
                                        f"({length_ms} ms); leave it out to transcribe to the end")
    if end is not None and start >= end:
        raise InvalidParameterError(f"audio_start_from ({start} ms) must be less than audio_end_at ({end} ms)")
