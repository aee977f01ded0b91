"""The speaker encoder: 40-band mel frames of 16 kHz audio in, 256-dimension unit voice embeddings out.

It is the GE2E network that PyPI's `Resemblyzer` 0.1.4 ships (Apache-2.0): three LSTM layers of 256,
a linear layer, ReLU, L2 norm, run here in torch from weights engine/speakers/store.py installed.
The front end is the package's (librosa's power mel spectrogram: 25 ms Hann windows every 10 ms,
Slaney mel filters, no log), written here in torch so that neither librosa nor webrtcvad is needed
at run time; tests/test_speakers.py holds both against the package's own on real speech.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
HIDDEN = 256
LAYERS = 3
TARGET_DBFS = -30.0  # the package's volume normalisation: quiet audio is raised to this, loud left alone


def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-style mel filters (librosa.filters.mel's defaults), [n_mels, n_fft // 2 + 1]."""
    def to_mel(hz: np.ndarray) -> np.ndarray:
        mel = hz / (200.0 / 3)
        log = hz >= 1000.0
        return np.where(log, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (math.log(6.4) / 27.0), mel)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        hz = mel * (200.0 / 3)
        return np.where(mel >= 15.0, 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0)), hz)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sample_rate / 2)), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def volume_gain(audio: np.ndarray, block: int = 1 << 20) -> float:
    """The factor that raises quiet audio to TARGET_DBFS, as the package does before embedding (1 for louder
    audio); summed a block at a time, so an hours-long file is never copied."""
    if not audio.size:
        return 1.0
    energy = sum(float(np.dot(part, part)) for part in (audio[i:i + block].astype(np.float64)
                                                       for i in range(0, audio.size, block)))
    rms = math.sqrt(energy / audio.size)
    if rms <= 1e-9:
        return 1.0
    return max(1.0, 10 ** ((TARGET_DBFS - 20 * math.log10(rms)) / 20))


class SpeakerEncoder(nn.Module):
    """GE2E: mel frames [batch, frames, 40] -> embeddings [batch, 256], unit length."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        self.register_buffer("filters", torch.from_numpy(mel_filters()), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)

    @classmethod
    def load(cls, weights: Path, device: str = "cpu") -> "SpeakerEncoder":
        encoder = cls()
        encoder.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return encoder.to(device).eval()

    def mels(self, audio: torch.Tensor) -> torch.Tensor:
        """Power mel frames of [batch, samples] audio: [batch, samples // HOP + 1, 40]."""
        spectrum = torch.stft(audio, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="constant",
                              return_complex=True)
        return (self.filters @ spectrum.abs().square()).transpose(1, 2)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.inference_mode()
    def embed(self, windows: np.ndarray, batch: int = 64) -> np.ndarray:
        """Embeddings of equal-length 16 kHz windows [n, samples], float32 [n, 256]."""
        out = []
        for start in range(0, len(windows), batch):
            audio = torch.from_numpy(np.ascontiguousarray(windows[start:start + batch], dtype=np.float32))
            out.append(self(self.mels(audio.to(self.window.device))).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, HIDDEN), np.float32)
