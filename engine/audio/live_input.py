"""A live stream's audio frames as 16 kHz float samples, chunk by chunk.

Telephony sends 8 kHz mu-law and browsers 48 kHz linear PCM; the model wants 16 kHz floats. A
stream cannot be resampled as one array, so soxr's streaming resampler carries its filter state from
one frame to the next: the joined output is what resampling the whole recording would give.
"""

from __future__ import annotations

import numpy as np
import soxr

from engine.audio.files import SAMPLE_RATE
from engine.streaming.settings import ENCODINGS, MAX_RATE, MIN_RATE


def _mulaw_table() -> np.ndarray:
    """G.711 mu-law byte -> linear sample in [-1, 1): the 256 values, computed once."""
    byte = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign != 0, -magnitude, magnitude) / 32768.0).astype(np.float32)


_MULAW = _mulaw_table()


class LiveAudio:
    """Frames of one stream in, 16 kHz mono float32 out; a frame may end in the middle of a sample."""

    def __init__(self, sample_rate: int, encoding: str) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}")
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be between {MIN_RATE} and {MAX_RATE}; got {sample_rate}")
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.bytes_per_sample = 2 if encoding == "pcm_s16le" else 1
        self._carry = b""  # an odd byte of a 16-bit sample split across frames
        self._resampler = (None if sample_rate == SAMPLE_RATE else
                           soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"))
        self.received_samples = 0  # at the stream's own rate

    def seconds(self, frame_bytes: int) -> float:
        """How much audio a frame of this many bytes holds."""
        return frame_bytes / self.bytes_per_sample / self.sample_rate

    def push(self, frame: bytes) -> np.ndarray:
        data = self._carry + frame
        whole = len(data) - len(data) % self.bytes_per_sample
        self._carry = data[whole:]
        if self.encoding == "pcm_s16le":
            samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = _MULAW[np.frombuffer(data[:whole], dtype=np.uint8)]
        self.received_samples += samples.size
        return self._resample(samples, last=False)

    def flush(self) -> np.ndarray:
        """What the resampler still holds, at the end of the stream."""
        return self._resample(np.zeros(0, np.float32), last=True)

    def _resample(self, samples: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last)
