"""Write a short generated English utterance as a 16-bit mono WAV (for packaging/ci-check).

eSpeak NG from the espeakng-loader wheel, through ctypes, standard library otherwise (the same
approach as tests/synth.py, without numpy so the build virtualenv stays small).
Usage: python speech_wav.py OUT.wav "text to say"
"""

import ctypes
import sys
import wave

import espeakng_loader

_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _ESPEAK_CHARS_UTF8, _ESPEAK_RATE = 2, 1, 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def speak(text: str, voice: str = "en-us", rate_wpm: int = 150) -> tuple[bytes, int]:
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed")
    chunks: list[bytes] = []

    def collect(wav, n, _events):
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, n * 2))
        return 0

    callback = _CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise RuntimeError(f"unknown voice {voice}")
    lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
    data = text.encode() + b"\0"
    if lib.espeak_Synth(ctypes.create_string_buffer(data), len(data), 0, _POS_CHARACTER, 0,
                        _ESPEAK_CHARS_UTF8, None, None) != 0:
        raise RuntimeError("espeak_Synth failed")
    lib.espeak_Synchronize()
    return b"".join(chunks), rate


def main() -> None:
    out, text = sys.argv[1], sys.argv[2]
    pcm, rate = speak(text)
    silence = b"\0\0" * (rate // 2)
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(silence + pcm + silence)
    print(f"{out}: {len(pcm) / 2 / rate:.1f} s of speech at {rate} Hz")


if __name__ == "__main__":
    main()
