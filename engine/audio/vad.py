"""Voice-activity windows: where to point Whisper, in chunks it can take.

Whisper hallucinates on silence and noise and only accepts 30 s at a time, so
the engine first finds speech with Silero VAD and then packs neighbouring
speech segments into windows of at most ``max_window_s``. Silero runs through
its torch-free batched ONNX front end, which scores blocks of ~16 s per ONNX
call inside GIL-releasing kernels, so a 1-hour file takes seconds and memory
beyond the input is one block plus one float per 32 ms frame.
"""

from dataclasses import replace
from importlib import resources

import numpy as np
import torch

# Importing silero_vad runs torch.set_num_threads(1) (silero_vad/model.py), which would leave the
# Whisper encoder on one core; keep whatever the process had.
_threads = torch.get_num_threads()
from silero_vad.sequence_vad import SileroVADSequence  # noqa: E402
from silero_vad.utils_vad import get_speech_timestamps_from_probs  # noqa: E402

torch.set_num_threads(_threads)

from engine.audio.files import SAMPLE_RATE
from engine.audio.speech_window import SpeechWindow

_MODEL_FILE = "silero_vad_16k_sequence.onnx"


class VoiceActivityDetector:
    """Loads the Silero ONNX session once; ``windows`` is safe to call from many threads.

    ``min_speech_ms`` of 250 ms and a 0.25 threshold (Silero's stock one is 0.5) already reject
    silence, white noise and pure tones; blips shorter than that are almost
    never words Whisper could transcribe. ``keep_file_edges`` False trims a
    file's head and tail to its speech and pads as well (the rule before;
    ``python -m bench vad-edges`` measures the two).
    """

    def __init__(
        self,
        threshold: float = 0.25,
        max_window_s: float = 30.0,
        pad_s: float = 0.5,
        min_speech_ms: int = 250,
        min_silence_ms: int = 100,
        keep_file_edges: bool = True,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if max_window_s <= 2 * pad_s + 1.0:
            raise ValueError("max_window_s must exceed 2 * pad_s by at least 1 s")
        self.threshold = threshold
        self.max_window = int(max_window_s * SAMPLE_RATE)
        self.pad = int(pad_s * SAMPLE_RATE)
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self.keep_file_edges = keep_file_edges
        model_path = resources.files("silero_vad.data").joinpath(_MODEL_FILE)
        with resources.as_file(model_path) as path:
            self._model = SileroVADSequence(str(path), sampling_rate=SAMPLE_RATE)

    def windows(self, audio: np.ndarray, call_channel: bool = False) -> list[SpeechWindow]:
        """Speech windows of 16 kHz mono ``audio`` in time order, each at most ``max_window_s`` long.

        ``call_channel``: the audio is one side of a dual-channel call, whose head and tail are the
        other side's turns, not the edges of an utterance: they are trimmed like any silence inside
        it (``python -m bench calls``: kept, they cost the generated calls 8 more errors in 555 words).
        """
        if audio.ndim != 1:
            raise ValueError(f"expected 1-D mono audio, got shape {audio.shape}")
        if audio.size == 0:
            return []
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        probs = self._model.audio_forward(audio, sampling_rate=SAMPLE_RATE)
        # Leave room for the padding so one padded segment always fits a window.
        budget = self.max_window - 2 * self.pad
        segments = get_speech_timestamps_from_probs(
            probs,
            sampling_rate=SAMPLE_RATE,
            threshold=self.threshold,
            min_speech_duration_ms=self.min_speech_ms,
            max_speech_duration_s=budget / SAMPLE_RATE,
            min_silence_duration_ms=self.min_silence_ms,
            audio_length_samples=audio.size,
        )
        spans = _split_long([(s["start"], s["end"]) for s in segments], budget)
        windows = _pack(spans, self.pad, self.max_window, audio.size)
        if not self.keep_file_edges or call_channel:
            return windows
        return _with_file_edges(windows, self.max_window, audio.size)


def _with_file_edges(windows: list[SpeechWindow], max_window: int, length: int) -> list[SpeechWindow]:
    """The file's head joined to its first window and its tail to its last, where the window still fits.

    Silero hears less than Whisper does: creaky, breathy and whispered voices score under the
    threshold (a creaky "Montreal" at 0.14 at most, so "Montreal forced aligner" came back as
    "Forest Aligner"), and the words so lost sit at the edges of an utterance, which on a short
    clip are the edges of the file. Whisper and faster-whisper are given a short file whole; kept
    this way, a domain's terms given as a prompt came out as often as with faster-whisper's
    initial_prompt (docs/LANGUAGE_MODEL.md). Silences inside the file are still cut to two pads,
    and a file without speech still has no window, so silence and noise still transcribe to nothing.
    The speech spans stay the VAD's: a word heard only in the head is kept, its timing fitted
    to the nearest speech.
    """
    if not windows:
        return windows
    first = windows[0]
    if first.start and first.samples + first.start <= max_window:
        windows[0] = replace(first, pieces=((0, first.pieces[0][1]), *first.pieces[1:]))
    last = windows[-1]
    if last.end < length and last.samples + length - last.end <= max_window:
        windows[-1] = replace(last, pieces=(*last.pieces[:-1], (last.pieces[-1][0], length)))
    return windows


def _split_long(spans: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Hard-cut any span over ``limit``; Silero's own cut is best-effort at frame granularity."""
    out = []
    for start, end in spans:
        while end - start > limit:
            out.append((start, start + limit))
            start += limit
        out.append((start, end))
    return out


def _pack(spans: list[tuple[int, int]], pad: int, max_window: int, length: int) -> list[SpeechWindow]:
    """Speech segments, each with up to ``pad`` around it, joined into windows of at most ``max_window``.

    A segment closer than two pads to the one before extends that piece (the silence between them
    is kept); a farther one starts a new piece. Every span fits a window on its own, because
    _split_long cut them to ``max_window`` less two pads.
    """
    windows: list[SpeechWindow] = []
    pieces: list[list[int]] = []
    speech: list[tuple[int, int]] = []
    reached = 0  # end of the last piece: pieces never overlap, within or across windows
    for start, end in spans:
        lo, hi = max(start - pad, reached), min(end + pad, length)
        joins = bool(pieces) and lo == reached
        if pieces and sum(e - s for s, e in pieces) + (hi - reached if joins else hi - lo) > max_window:
            if joins:  # closer than two pads: the windows meet in the middle of the silence
                lo = pieces[-1][1] = (speech[-1][1] + start) // 2
            windows.append(SpeechWindow(tuple(map(tuple, pieces)), tuple(speech)))
            pieces, speech, joins = [], [], False
        if joins:
            pieces[-1][1] = hi
        else:
            pieces.append([lo, hi])
        speech.append((start, end))
        reached = hi
    if pieces:
        windows.append(SpeechWindow(tuple(map(tuple, pieces)), tuple(speech)))
    return windows
