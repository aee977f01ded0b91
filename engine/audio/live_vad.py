"""Silero VAD over a live stream: a speech probability for every 32 ms as the audio arrives.

The file path scores a whole recording at once (engine/audio/vad.py). A stream is scored frame by
frame with the same ONNX model, carrying its LSTM state and the 64 samples of context each frame
is prefixed with, so the probabilities are those the whole recording would get.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort

from engine.audio.files import SAMPLE_RATE

FRAME_SAMPLES = 512  # 32 ms at 16 kHz: Silero's frame
_CONTEXT_SAMPLES = 64
_MODEL_FILE = "silero_vad_16k_sequence.onnx"


def _session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    model = resources.files("silero_vad.data").joinpath(_MODEL_FILE)
    with resources.as_file(model) as path:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class LiveVad:
    """One stream's VAD state; the ONNX session may be shared by many streams (pass `session`)."""

    FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE

    def __init__(self, session: ort.InferenceSession | None = None) -> None:
        self.session = session or _session()
        self._hidden = np.zeros((1, 1, 128), np.float32)
        self._cell = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, np.float32)
        self._pending = np.zeros(0, np.float32)

    @staticmethod
    def shared_session() -> ort.InferenceSession:
        return _session()

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Speech probabilities of the whole frames completed by `audio` (16 kHz mono float32)."""
        data = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        count = data.size // FRAME_SAMPLES
        self._pending = data[count * FRAME_SAMPLES:].copy()
        if count == 0:
            return np.zeros(0, np.float32)
        frames = data[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        contexts = np.empty((count, _CONTEXT_SAMPLES), np.float32)
        contexts[0] = self._context
        contexts[1:] = frames[:-1, -_CONTEXT_SAMPLES:]
        self._context = frames[-1, -_CONTEXT_SAMPLES:].copy()
        values, self._hidden, self._cell = self.session.run(
            ["speech_probs", "hn", "cn"],
            {"input": np.concatenate([contexts, frames], axis=1), "h": self._hidden, "c": self._cell},
        )
        return np.asarray(values, np.float32).reshape(-1)
