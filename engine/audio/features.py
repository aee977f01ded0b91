"""Whisper's log-mel front end, batched over 30 s windows with torch.stft.

The filterbank is the Slaney-style mel bank Whisper was trained with (librosa's default); it is
computed once here rather than pulling librosa and numba into the serving image.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
WINDOW_SECONDS = 30
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS
N_FRAMES = WINDOW_SAMPLES // HOP_LENGTH
MIN_COMPUTED_FRAMES = 200


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    linear = freq / (200.0 / 3)
    log_region = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(freq >= 1000.0, log_region, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = (200.0 / 3) * mels
    log_region = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels - 15.0))
    return np.where(mels >= 15.0, log_region, linear)


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """[n_mels, N_FFT // 2 + 1] Slaney-normalised triangular filters."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(mel_edges)
    ramps = mel_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_edges[2 : n_mels + 2] - mel_edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


def log_mel_windows(windows: list[np.ndarray], n_mels: int) -> torch.Tensor:
    """Log-mel spectrograms [N, n_mels, 3000] of up-to-30 s windows, each zero-padded to 30 s.

    The STFT runs only over the longest window plus one FFT's worth of zeros: every frame after
    that sees nothing but the padding, so its value is the one a frame of zeros gets, filled in
    directly. A 3 s clip's features cost a tenth of a full window's, with the same values, which
    matters because the inference process computes them between decoder steps.
    """
    longest = max((min(len(samples), WINDOW_SAMPLES) for samples in windows), default=0)
    # frames up to `computed` may touch a sample; the reflected edge past the buffer is zeros too.
    # At least MIN_COMPUTED_FRAMES: the mel product over a handful of frames takes another GEMM
    # path (10 frames or fewer here), one that rounds differently.
    computed = min(N_FRAMES, max(MIN_COMPUTED_FRAMES, -(-(longest + N_FFT) // HOP_LENGTH)))
    length = min(WINDOW_SAMPLES, computed * HOP_LENGTH + N_FFT)
    batch = torch.zeros(len(windows), length, dtype=torch.float32)
    for i, samples in enumerate(windows):
        n = min(len(samples), WINDOW_SAMPLES)
        batch[i, :n] = torch.from_numpy(np.ascontiguousarray(samples[:n], dtype=np.float32))
    stft = torch.stft(batch, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :computed].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    floor = torch.tensor(1e-10, dtype=torch.float32).log10()  # what a frame of zeros gets, as above
    peak = torch.maximum(log_spec.amax(dim=(1, 2), keepdim=True), floor)
    log_spec = torch.cat([log_spec, floor.expand(len(windows), n_mels, N_FRAMES - computed)], dim=2)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
