"""The body of POST /transcribe/url: its fields, API.md's defaults, and their validation."""

from __future__ import annotations

import json
from dataclasses import dataclass

from daemon.errors import INVALID_PARAMETER, MALFORMED_REQUEST, ApiError
from engine.audio.files import MAX_SPAN_MS
from engine.decoding.options import BOOST_PARAMS, check_word_boost


@dataclass(frozen=True)
class TranscribeRequest:
    """The body of POST /transcribe/url with API.md's defaults."""

    audio_url: str
    dual_channel: bool = False
    format_text: bool = True
    punctuate: bool = True
    audio_start_from: int | None = None  # ms
    audio_end_at: int | None = None  # ms
    word_boost: tuple[str, ...] = ()
    boost_param: str | None = None  # None: "default"


_FIELD_TYPES = {"audio_url": str, "dual_channel": bool, "format_text": bool, "punctuate": bool,
                "audio_start_from": int, "audio_end_at": int, "word_boost": list, "boost_param": str}


def parse_request(body: object) -> TranscribeRequest:
    """Validate the decoded JSON body strictly: a typo in a field name must not be silently ignored."""
    if not isinstance(body, dict):
        raise ApiError(MALFORMED_REQUEST, f"the request body must be a JSON object; got a JSON {_json_type(body)}")
    for name in body:
        if name not in _FIELD_TYPES:
            shown = repr(name) if len(name) <= 80 else repr(name[:80]) + "..."
            raise ApiError(INVALID_PARAMETER, f"unknown field {shown}; the fields are {', '.join(_FIELD_TYPES)}")
    if "audio_url" not in body:
        raise ApiError(INVALID_PARAMETER, "audio_url is required: the http(s) URL of the audio file")
    for name, value in body.items():
        if name not in ("word_boost", "boost_param"):
            _check_type(name, value)
    fields = {k: v for k, v in body.items() if v is not None}
    fields["word_boost"], fields["boost_param"] = word_boost_fields(body.get("word_boost"), body.get("boost_param"))
    request = TranscribeRequest(**fields)
    start, end = request.audio_start_from or 0, request.audio_end_at
    if end is not None and start >= end:
        raise ApiError(INVALID_PARAMETER, f"audio_start_from ({start} ms) must be less than audio_end_at ({end} ms)")
    return request


def _check_type(name: str, value: object) -> None:
    expected = _FIELD_TYPES[name]
    if expected is str:
        if not isinstance(value, str) or not value.strip():
            raise ApiError(INVALID_PARAMETER, f"{name} must be a non-empty string; got a JSON {_json_type(value)}")
    elif expected is bool:
        if not isinstance(value, bool):
            raise ApiError(INVALID_PARAMETER, f"{name} must be true or false (a JSON boolean); got {_shown(value)}")
    else:
        milliseconds(name, value)


def word_boost_fields(word_boost: object, boost_param: object) -> tuple[tuple[str, ...], str | None]:
    """word_boost and boost_param as every API takes them (AssemblyAI's names); a 400 naming the field."""
    if word_boost is None:
        word_boost = []
    try:
        phrases = check_word_boost(word_boost)
    except ValueError as exc:
        raise ApiError(INVALID_PARAMETER, str(exc), param="word_boost") from None
    if boost_param is not None and boost_param not in BOOST_PARAMS:
        raise ApiError(INVALID_PARAMETER, f"boost_param must be one of {', '.join(BOOST_PARAMS)}; got "
                                          f"{_shown(boost_param)}", param="boost_param")
    return phrases, boost_param


def milliseconds(name: str, value: object) -> int | None:
    """A span bound as the APIs take it: null, or whole milliseconds from 0 to MAX_SPAN_MS."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPAN_MS):
        raise ApiError(INVALID_PARAMETER, f"{name} must be a whole number of milliseconds >= 0 (at most "
                                          f"{MAX_SPAN_MS}); got {_shown(value)}")
    return value


def _shown(value: object, limit: int = 80) -> str:
    """A client's value as an error quotes it: short, and never a failure of its own (deep nesting)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {_json_type(value)}"
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


