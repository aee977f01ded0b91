"""Generated test audio, so the suite never ships recorded speech.

Speech comes from eSpeak NG, loaded from the ``espeakng-loader`` wheel through
ctypes: no system espeak binary is needed. Every call synthesises in a fresh process, which
makes the output repeatable (see speak).
"""

import ctypes
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

import espeakng_loader

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# Two different speakers (US and British English), so tests can build a two-party stereo call.
# Both male: eSpeak NG's female variants (+f1..+f5) add random breath noise, so their audio, and
# what Whisper hears in it, changes from run to run.
VOICE_A = "en-us"
VOICE_B = "en"

# eSpeak NG names British English "en"; accept the BCP-47 tag callers expect.
_VOICE_ALIASES = {"en-gb": "en"}


def _espeak_voice_name(voice: str) -> str:
    base, plus, variant = voice.partition("+")
    return _VOICE_ALIASES.get(base, base) + plus + variant


class _Espeak:
    """Process-wide eSpeak NG handle; the C library keeps global state."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed when garbage-collected.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, wav, num_samples, _events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synth(self, text: str, voice: str, rate_wpm: int) -> np.ndarray:
        with self._lock:
            if self._lib.espeak_SetVoiceByName(_espeak_voice_name(voice).encode()) != _EE_OK:
                raise ValueError(f"unknown eSpeak voice {voice!r}")
            self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data)
            status = self._lib.espeak_Synth(
                buf, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
            )
            if status != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            self._lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            self._chunks = []
        return pcm.astype(np.float32) / 32768.0


def speak(text: str, voice: str = VOICE_A, rate_wpm: int = 160) -> tuple[np.ndarray, int]:
    """Synthesise ``text`` and return (mono float32 samples, sample rate).

    Each call runs in a fresh interpreter: eSpeak NG's output depends on what the same process
    synthesised before (even the same sentence twice comes out a few samples apart), while a fresh
    process gives the same samples every time, so tests that hinge on a transcript are repeatable.
    """
    done = subprocess.run([sys.executable, "-c", _CHILD, text, voice, str(rate_wpm)],
                          cwd=Path(__file__).parent, capture_output=True, check=True)
    rate = int.from_bytes(done.stdout[:4], "little")
    return np.frombuffer(done.stdout[4:], dtype=np.float32).copy(), rate


def speak_at(text: str, sr: int, voice: str = VOICE_A) -> np.ndarray:
    """``speak`` resampled to ``sr``: the rate a test's file or the model wants, not eSpeak's 22.05 kHz."""
    samples, rate = speak(text, voice)
    return soxr.resample(samples, rate, sr).astype(np.float32)


_CHILD = """
import sys
from synth import _Espeak
engine = _Espeak()
samples = engine.synth(sys.argv[1], sys.argv[2], int(sys.argv[3]))
sys.stdout.buffer.write(engine.sample_rate.to_bytes(4, "little") + samples.tobytes())
"""


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    """A pure sine: sustained energy that a VAD must not mistake for speech."""
    t = np.arange(int(round(seconds * sr)), dtype=np.float64) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float, sr: int) -> np.ndarray:
    """Digital silence of the given length."""
    return np.zeros(int(round(seconds * sr)), dtype=np.float32)


def white_noise(seconds: float, sr: int, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """Seeded uniform white noise, reproducible across runs."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    return rng.uniform(-amplitude, amplitude, n).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sr: int) -> Path:
    """Write 16-bit PCM WAV; (samples,) or (samples, channels) as soundfile expects."""
    sf.write(str(path), samples, sr, subtype="PCM_16")
    return Path(path)


# A sentence that transcribes at once, and a passage said twice (about 40 s) that is long enough to be
# caught mid-decode: the files of the tests that kill, stop or drain a server under a request.
SHORT_SENTENCE = "please send the weekly report to the finance team before friday"
LONG_PASSAGE = ("the meeting started late because the projector in the main room would not turn on and the team had "
                "to move next door where the chairs were stacked against the wall and nobody could find the remote "
                "control for the screen so the first slides were shown on a laptop passed around the table")


def write_short_and_long(root: Path, sr: int = 16000) -> Path:
    """root/short.wav (SHORT_SENTENCE between short silences) and root/long.wav (LONG_PASSAGE twice)."""
    write_wav(root / "short.wav", np.concatenate([silence(0.3, sr), speak_at(SHORT_SENTENCE, sr), silence(0.3, sr)]), sr)
    write_wav(root / "long.wav", np.concatenate([speak_at(LONG_PASSAGE, sr), silence(0.5, sr),
                                                 speak_at(LONG_PASSAGE, sr)]), sr)
    return root


def two_party_call(turns: list[tuple[int, str]], gap_s: float = 0.8,
                   sr: int = 16000) -> tuple[np.ndarray, list[float]]:
    """A stereo call: each (channel 1 or 2, text) turn spoken in order by that channel's voice.

    Channel 1 speaks with VOICE_A and channel 2 with VOICE_B, the other channel silent meanwhile,
    turns `gap_s` apart. Returns (samples, 2) float32 audio and each turn's true start in seconds,
    measured where its voice first rises above the silence rather than where the clip was placed.
    """
    import soxr

    clips = []
    for channel, text in turns:
        samples, rate = speak(text, VOICE_A if channel == 1 else VOICE_B)
        clips.append((channel, soxr.resample(samples, rate, sr).astype(np.float32)))
    gap = int(gap_s * sr)
    total = gap + sum(len(clip) + gap for _, clip in clips)
    call = np.zeros((total, 2), dtype=np.float32)
    starts = []
    at = gap
    for channel, clip in clips:
        call[at: at + len(clip), channel - 1] = clip
        voiced = np.flatnonzero(np.abs(clip) > 0.02)
        starts.append((at + (voiced[0] if len(voiced) else 0)) / sr)
        at += len(clip) + gap
    return call, starts
