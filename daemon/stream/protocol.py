"""The v3 protocol's JSON messages, as AssemblyAI's SDK reads and writes them, and its close codes.

The codes are AssemblyAI's (the SDK maps each to its message, assemblyai.streaming.v3.RealTimeErrorCodes),
so a client sees the same error for the same fault here as there.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from engine.text.format import TextOptions, format_words

if TYPE_CHECKING:
    from engine.streaming.turns import TurnUpdate

NORMAL = 1000
SERVER_ERROR = 3005
INVALID_INPUT = 3006
CHUNK_TOO_LONG = 3007
SESSION_TOO_LONG = 3008
TOO_MANY_STREAMS = 3009
NOT_AUTHORIZED = 4001
TOO_FAST = 4029
IDLE = 4031
INVALID_JSON = 4100
INVALID_SCHEMA = 4101
UNAVAILABLE = 1013  # the server is not ready, or is shutting down: try again (later, or elsewhere)

# AssemblyAI's unformatted transcript: the spoken words, lower case, no marks
UNFORMATTED = TextOptions(written=False, punctuation=False, casing=False)


def begin(session_id: str, expires_in_seconds: float) -> str:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=expires_in_seconds)
    return json.dumps({"type": "Begin", "id": session_id, "expires_at": int(expires.timestamp())})


def turn(update: "TurnUpdate", formatted: TextOptions | None) -> str:
    """A Turn message: the words as spoken (lower case, unpunctuated), or `formatted` (format_turns' final one)."""
    options = formatted or UNFORMATTED
    shaped = format_words(update.words, options)
    final = len(shaped) if update.end_of_turn else _final_count(update, shaped)
    words = [{"start": w.start_ms, "end": w.end_ms, "confidence": w.confidence, "text": w.text,
              "word_is_final": i < final} for i, w in enumerate(shaped)]
    return json.dumps({
        "type": "Turn", "turn_order": update.turn, "turn_is_formatted": formatted is not None,
        "end_of_turn": update.end_of_turn, "transcript": " ".join(w.text for w in shaped),
        "end_of_turn_confidence": update.end_of_turn_confidence, "words": words,
    })


def _final_count(update: "TurnUpdate", shaped: list) -> int:
    """Shaped words wholly inside the final raw words' time are final (shaping can join or split words)."""
    if update.final_words == 0:
        return 0
    until = update.words[update.final_words - 1].end_ms
    return sum(1 for w in shaped if w.end_ms <= until)


def termination(audio_seconds: float, session_seconds: float) -> str:
    return json.dumps({"type": "Termination", "audio_duration_seconds": int(audio_seconds),
                       "session_duration_seconds": int(session_seconds)})


def error(code: int, message: str) -> str:
    return json.dumps({"type": "Error", "error_code": code, "error": message})


def close_reason(reason: str) -> str:
    """A close frame's reason holds at most 123 bytes."""
    return reason.encode()[:123].decode(errors="ignore")


class BadMessage(ValueError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


CLIENT_TYPES = ("Terminate", "ForceEndpoint", "UpdateConfiguration", "KeepAlive")


def client_message(text: str) -> dict:
    """A text frame from the client, checked: a JSON object whose `type` is one of CLIENT_TYPES."""
    try:
        message = json.loads(text)
    except ValueError:
        raise BadMessage(INVALID_JSON, "a text frame must be a JSON message; audio goes in binary frames") from None
    if not isinstance(message, dict) or message.get("type") not in CLIENT_TYPES:
        raise BadMessage(INVALID_SCHEMA, f"a message's type must be one of {', '.join(CLIENT_TYPES)}")
    return message
