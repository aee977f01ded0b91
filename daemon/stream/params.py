"""A stream's query parameters (AssemblyAI's Universal-Streaming v3), read and checked before audio flows.

Every parameter is declared once in _PARAMETERS with its reader; UpdateConfiguration messages take the
same readers for the parameters a live session may change. An unknown parameter is refused by name
rather than ignored, so a client never believes a feature is on when this server does not have it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from engine.decoding.options import check_word_boost
from engine.settings import SettingsError, parse_float, parse_int
from engine.streaming.settings import ENCODINGS, MAX_RATE, MIN_RATE, TurnSettings

MIN_INACTIVITY_SECONDS, MAX_INACTIVITY_SECONDS = 5, 3600
DEFAULT_INACTIVITY_SECONDS = 30  # no audio frame this long closes the stream (4031)
# AssemblyAI's own speech model names: accepted so its examples run unchanged; this server's model transcribes.
SPEECH_MODELS = ("universal-streaming-english", "universal-streaming-multilingual", "whisper-rt")


class BadParameter(ValueError):
    """A parameter this server cannot take; the message names it and what it takes."""


@dataclass(frozen=True)
class StreamParams:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    format_turns: bool = False
    turns: TurnSettings = TurnSettings()
    keyterms: tuple[str, ...] = ()  # keyterms_prompt: word_boost for the stream's decodes
    inactivity_seconds: int = DEFAULT_INACTIVITY_SECONDS
    token: str | None = None  # a `token` query parameter authenticates like the Authorization header


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        return parse_int(name, text, low, high)
    except SettingsError as exc:  # the same words as a bad environment variable's
        raise BadParameter(str(exc)) from None


def _float(name: str, text: str, low: float, high: float) -> float:
    try:
        return parse_float(name, text, low, high)
    except SettingsError as exc:
        raise BadParameter(str(exc)) from None


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise BadParameter(f"{name} must be true or false; got {text[:40]!r}")
    return lowered == "true"


def _keyterms(text: str) -> tuple[str, ...]:
    try:
        terms = json.loads(text)
    except ValueError:
        raise BadParameter("keyterms_prompt must be a JSON list of words or phrases") from None
    try:
        return check_word_boost(terms)
    except ValueError as exc:
        raise BadParameter(f"keyterms_prompt: {exc}") from None


def _choice(name: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise BadParameter(f"{name} must be one of {', '.join(choices)}; got {text[:40]!r}")
    return text


def _turns(params: StreamParams, **change) -> StreamParams:
    return replace(params, turns=replace(params.turns, **change))


_Reader = Callable[[StreamParams, str], StreamParams]
# name -> reader; the first set are the ones UpdateConfiguration may change too
_SESSION: dict[str, _Reader] = {
    "end_of_turn_confidence_threshold": lambda p, v: _turns(p, end_of_turn_confidence_threshold=_float(
        "end_of_turn_confidence_threshold", v, 0.0, 1.0)),
    "min_end_of_turn_silence_when_confident": lambda p, v: _turns(p, min_turn_silence_ms=_int(
        "min_end_of_turn_silence_when_confident", v, 0, 60_000)),
    "min_turn_silence": lambda p, v: _turns(p, min_turn_silence_ms=_int("min_turn_silence", v, 0, 60_000)),
    "max_turn_silence": lambda p, v: _turns(p, max_turn_silence_ms=_int("max_turn_silence", v, 0, 60_000)),
    "vad_threshold": lambda p, v: _turns(p, vad_threshold=_float("vad_threshold", v, 0.01, 0.99)),
    "format_turns": lambda p, v: replace(p, format_turns=_bool("format_turns", v)),
    "keyterms_prompt": lambda p, v: replace(p, keyterms=_keyterms(v)),
}
_PARAMETERS: dict[str, _Reader] = {
    **_SESSION,
    "sample_rate": lambda p, v: replace(p, sample_rate=_int("sample_rate", v, MIN_RATE, MAX_RATE)),
    "encoding": lambda p, v: replace(p, encoding=_choice("encoding", v, ENCODINGS)),
    "inactivity_timeout": lambda p, v: replace(p, inactivity_seconds=_int(
        "inactivity_timeout", v, MIN_INACTIVITY_SECONDS, MAX_INACTIVITY_SECONDS)),
    "speech_model": lambda p, v: (_choice("speech_model", v, SPEECH_MODELS), p)[1],
    "token": lambda p, v: replace(p, token=v),
}


def read_query(query: Mapping[str, list[str]]) -> StreamParams:
    """The stream's parameters from its parsed query string (urllib's parse_qs, blank values kept)."""
    params = StreamParams()
    for name, values in query.items():
        reader = _PARAMETERS.get(name)
        if reader is None:
            raise BadParameter(f"unknown or unsupported parameter {name[:40]!r}; this server takes "
                               f"{', '.join(sorted(_PARAMETERS))}")
        if len(values) != 1:
            raise BadParameter(f"{name} is given {len(values)} times")
        params = reader(params, values[0])
    _check(params)
    return params


def update(params: StreamParams, message: Mapping[str, object]) -> StreamParams:
    """An UpdateConfiguration message's changes (JSON values, not text)."""
    for name, value in message.items():
        if name == "type":
            continue
        reader = _SESSION.get(name)
        if reader is None:
            raise BadParameter(f"UpdateConfiguration cannot change {name[:40]!r}; it changes "
                               f"{', '.join(sorted(_SESSION))}")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        elif isinstance(value, list) and name == "keyterms_prompt":
            text = json.dumps(value)
        else:
            raise BadParameter(f"{name} has the wrong type in UpdateConfiguration")
        params = reader(params, text)
    _check(params)
    return params


def _check(params: StreamParams) -> None:
    turns = params.turns
    if turns.min_turn_silence_ms > turns.max_turn_silence_ms:
        raise BadParameter(f"min_turn_silence ({turns.min_turn_silence_ms} ms) must not exceed max_turn_silence "
                           f"({turns.max_turn_silence_ms} ms)")
