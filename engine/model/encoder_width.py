"""How many mel frames of a window the encoder sees: the runtime and the decode loop ask the same rule.

On the CPU a window shorter than 30 s is encoded at its own length plus at least 8 s of the silence
padding Whisper was trained on, rounded up to 2 s so that windows of similar length share a batch.
With 1 s of padding tiny.en loops on short clips (WER 11.90 -> 21.36 % on the dev set); from about
6 s on, WER is that of whole windows or better, and the dev set runs 1.4-1.6x faster in-process
(`python -m bench encoder-width`, docs/DESIGN.md "Encoder width"). On a card the encoder is a small
part of the time (the decoder step's kernel launches dominate) and the one measurement there,
float16 on an H100, lost 0.8 WER points with it: cards keep whole windows.

The shortened window has one failure of its own: now and then a short clip comes back with its
sentence said twice. The decode loop (engine/decoding/window.py) then decodes that window again whole,
which is why it needs to know whether a window was shortened.
"""

from __future__ import annotations

from engine.audio.features import HOP_LENGTH, N_FRAMES

PADDING_FRAMES = 800
WIDTH_STEP_FRAMES = 200


def shortens_windows(device: str) -> bool:
    """Whether a runtime on `device` ("cpu", "cuda:1") encodes short windows short."""
    return device == "cpu"


def encoder_width(samples: int, n_frames: int = N_FRAMES) -> int:
    """Mel frames of a window to encode: its audio and the padding above, at most the model's window."""
    frames = samples // HOP_LENGTH + PADDING_FRAMES
    return min(n_frames, -(-frames // WIDTH_STEP_FRAMES) * WIDTH_STEP_FRAMES)
