"""The OpenAPI 3.1 document served at GET /openapi.json.

Built from the same sources the server answers from (the error table, the configured limits, the
surfaces' own constants), so the published contract cannot drift from the behaviour;
tests/test_openapi.py checks that every route of the app is in it. docs/API.md is its prose companion.

Three surfaces share one server: the old engine's POST /transcribe/url, AssemblyAI's v2 API (/v2/...)
and OpenAI's transcription API (/v1/...). Every error is the Error schema; on /v2/ and /v1/ paths it
also carries the `error` field that surface's official SDK reads.
"""

from __future__ import annotations

from typing import Iterable

from daemon.config import DaemonConfig
from daemon.errors import (ADDRESS_NOT_ALLOWED, AUDIO_TOO_LARGE, AUDIO_TOO_LONG, DOWNLOAD_FAILED, DOWNLOAD_TIMED_OUT,
                           EMPTY_AUDIO, ERROR_TABLE, INTERNAL_FAILURE, INVALID_PARAMETER, MALFORMED_REQUEST,
                           MONO_WITH_DUAL_CHANNEL, NO_SUCH_TRANSCRIPT, OVER_CAPACITY, QUEUE_FULL, REQUEST_TIMED_OUT,
                           SERVICE_NOT_READY, STORE_UNREACHABLE, TRANSCRIPT_NOT_COMPLETED, UNAUTHORIZED,
                           UNDECODABLE_AUDIO,
                           UNSUPPORTED_CONTENT_TYPE, WORKER_FAILURE_CODE)
from daemon.http.bodies import MAX_BODY_BYTES, MULTIPART_OVERHEAD_BYTES
from daemon.http.server import MAX_HEADER_BYTES
from daemon.http.v1 import ALIAS, FORMATS
from daemon.http.v2 import DEFAULT_PAGE, MAX_CHARS_PER_CAPTION, MAX_PAGE
from daemon.jobs.record import Status
from engine.audio.files import MAX_SPAN_MS
from engine.decoding.options import BOOST_PARAMS, MAX_BOOST_CHARS, MAX_BOOST_PHRASES, MAX_BOOST_WORDS
from engine.text.exports import DEFAULT_CHARS_PER_CAPTION

_NAMES = {kind.code: kind.name for kind in ERROR_TABLE}
_STATUSES = [status.value for status in Status]
_CHANNEL = {"type": "string", "enum": ["1", "2"], "description": "dual_channel only: the channel that said it"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, description: str, **keywords) -> dict:
    return {"type": [kind, "null"], "description": description, **keywords}


def _array(items: dict, description: str | None = None) -> dict:
    return {"type": "array", "items": items, **({"description": description} if description else {})}


def _object(required: Iterable[str], properties: dict, description: str | None = None) -> dict:
    schema = {"type": "object", "required": list(required), "properties": properties}
    return {**schema, "description": description} if description else schema


# --- schemas: the transcript of POST /transcribe/url, and its words -----------------------------------------

_WORD = _object(["confidence", "end", "start", "text"], {
    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "end": {"type": "integer", "description": "ms from the start of the original file"},
    "start": {"type": "integer", "description": "ms from the start of the original file"},
    "text": {"type": "string"},
    "channel": _CHANNEL,
    "speaker": {"type": "null", "description": "in the v2 exports only, always null: no speaker labels here"},
})

_UTTERANCE = _object(
    ["channel", "start", "end", "confidence", "text", "words"], {
        "channel": {"type": "string", "enum": ["1", "2"]},
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "confidence": {"type": "number", "description": "mean of its words' confidences"},
        "text": {"type": "string"},
        "words": _array(_ref("Word")),
    },
    "A run of one channel's words, ended by the other channel speaking or a pause over 1.5 s.")

_HTTP_URL = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"  # a scheme the server downloads from, and a host
_UID = {"type": "string", "pattern": "^t_[0-9a-f-]{36}$", "description": "t_ and a UUID4"}

_TRANSCRIPT = _object(["blob", "duration", "stereo_decode", "uid", "utterances", "words"], {
    "blob": {"type": "string", "description": "the whole transcript; empty for silence"},
    "duration": {"type": "number", "description": "seconds transcribed, after audio_start_from / audio_end_at"},
    "stereo_decode": {"type": "boolean", "description": "dual_channel was asked"},
    "uid": {**_UID, "description": "the request's uid, also in the server's log line"},
    "utterances": {"oneOf": [{"type": "null"}, _array(_ref("Utterance"))], "description": "null unless dual_channel"},
    "words": _array(_ref("Word"), "by start time; both channels merged for dual_channel"),
})


def _transcript_fields(nullable: bool) -> dict:
    """The options of /transcribe/url, which the v2 request shares (v2 also takes null for 'not given')."""

    def option(kind: str, description: str, **keywords) -> dict:
        return _nullable(kind, description, **keywords) if nullable else {"type": kind, "description": description,
                                                                          **keywords}

    return {
        "dual_channel": option("boolean", "transcribe the first two channels separately: words carry their channel "
                               "and utterances are filled; a mono file is error 11", default=False),
        "format_text": option("boolean", "written form: numbers, amounts, times as digits and symbols, cased; "
                              "false: spoken form, lower case", default=True),
        "punctuate": option("boolean", "false: no punctuation marks", default=True),
        "audio_start_from": _nullable("integer", "ms: transcribe from here (default: the start)", minimum=0,
                                      maximum=MAX_SPAN_MS),
        "audio_end_at": _nullable("integer", "ms: stop here (default: the end); more than audio_start_from and at "
                                  "most the audio's length (else 422, code 4)", minimum=1, maximum=MAX_SPAN_MS),
        "word_boost": _WORD_BOOST,
        "boost_param": _BOOST_PARAM,
    }


_WORD_BOOST = {
    "type": ["array", "null"], "maxItems": MAX_BOOST_PHRASES,
    "items": {"type": "string", "maxLength": MAX_BOOST_CHARS},
    "description": f"words or phrases to favour (AssemblyAI's word_boost): at most {MAX_BOOST_PHRASES}, each at most "
                   f"{MAX_BOOST_WORDS} words and {MAX_BOOST_CHARS} characters with a letter or a digit (else 400, "
                   "code 4); they lead Whisper's prompt and the search rewards hypotheses that spell them"}
_BOOST_PARAM = {"type": ["string", "null"], "enum": [*BOOST_PARAMS, None],
                "description": "how strongly word_boost favours its phrases; null is default"}


_REQUEST = {
    "type": "object",
    "required": ["audio_url"],
    "additionalProperties": False,
    "description": "Strict: an unknown field or a wrong JSON type (\"true\" is not a boolean) is a 400, code 4.",
    "properties": {
        "audio_url": {"type": "string", "format": "uri", "pattern": _HTTP_URL,
                      "description": "http or https URL of the audio file (wav, flac, ogg/opus, mp3)"},
        **_transcript_fields(nullable=False),
    },
}

# --- schemas: AssemblyAI's v2 API -----------------------------------------------------------------------------

_V2_REQUEST = {
    "type": "object",
    "required": ["audio_url"],
    "additionalProperties": False,
    "description": (
        "AssemblyAI's TranscriptRequest, the fields this server supports; null means 'not given'. AssemblyAI's "
        "other options (speaker_labels, redact_pii, summarization, custom_spelling, language_detection, speech_model, "
        "...) are not supported: one that asks for something (true, a value, a non-empty list) is a 400 naming "
        "it, while null, false, 0 and empty values pass, so the SDKs' defaults work. Any other field is a 400."),
    "properties": {
        "audio_url": {"type": "string", "format": "uri", "pattern": _HTTP_URL,
                      "description": "http(s) URL of the audio file, downloaded when the job runs (a download "
                                     "failure ends the job in error), or an upload_url from POST /v2/upload (read "
                                     "from this server's store, whatever host it names)"},
        **_transcript_fields(nullable=True),
        "language_code": {"type": ["string", "null"], "enum": ["en", "en_us", "en_uk", "en_au", None],
                          "description": "English only (any case); transcripts report en_us"},
        "prompt": _nullable("string", "Whisper's initial prompt: vocabulary and style to prefer"),
        "temperature": _nullable("number", "decoding temperature; null or 0 keeps Whisper's fallback schedule "
                                 "(0 first, higher when a window fails its checks)", minimum=0, maximum=1),
        "webhook_url": _nullable("string", "http(s) URL POSTed {\"transcript_id\", \"status\"} when the job "
                                 "completes or fails; retried for about twenty minutes until it answers 2xx; "
                                 "redirects are not followed, and the address rules of downloads apply",
                                 format="uri", pattern=_HTTP_URL),
        "webhook_auth_header_name": _nullable("string", "a header sent with each webhook call (an HTTP header name: "
                                              "letters, digits and !#$%&'*+-.^_`|~); with webhook_auth_header_value",
                                              minLength=1, maxLength=256),
        "webhook_auth_header_value": _nullable("string", "that header's value: printable text without line breaks; "
                                               "with webhook_auth_header_name", maxLength=8192),
    },
}

_V2_TRANSCRIPT = _object(
    ["id", "status", "error", "audio_url", "text", "words", "utterances", "confidence", "audio_duration",
     "language_code", "punctuate", "format_text", "dual_channel", "audio_start_from", "audio_end_at", "prompt",
     "temperature", "word_boost", "boost_param", "webhook_url", "webhook_auth_header_name", "webhook_auth", "webhook_status_code"], {
        "id": {**_UID, "description": "the transcript's id (t_ and a UUID4)"},
        "status": {"type": "string", "enum": _STATUSES},
        "error": _nullable("string", "why it failed (status error): the description /transcribe/url would "
                           "answer, e.g. a download error"),
        "audio_url": {"type": "string", "description": "as given; http://deleted_by_user once deleted; an empty "
                      "string for a transcript of /v1/audio/transcriptions, whose audio was sent inline"},
        "text": _nullable("string", "the whole transcript once completed; 'Deleted by user.' once deleted"),
        "words": {"oneOf": [{"type": "null"}, _array(_ref("Word"))], "description": "once completed"},
        "utterances": {"oneOf": [{"type": "null"}, _array(_ref("Utterance"))],
                       "description": "once completed, for dual_channel"},
        "confidence": _nullable("number", "mean of the words' confidences, once completed", minimum=0, maximum=1),
        "audio_duration": _nullable("integer", "seconds transcribed, rounded up, once completed"),
        "language_code": {"type": "string", "const": "en_us"},
        "punctuate": {"type": "boolean"},
        "format_text": {"type": "boolean"},
        "dual_channel": {"type": "boolean"},
        "audio_start_from": {"type": ["integer", "null"]},
        "audio_end_at": {"type": ["integer", "null"]},
        "prompt": {"type": ["string", "null"]},
        "temperature": {"type": ["number", "null"]},
        "word_boost": _array({"type": "string"}, "as given (empty when not given)"),
        "boost_param": {"type": ["string", "null"], "enum": [*BOOST_PARAMS, None]},
        "webhook_url": {"type": ["string", "null"]},
        "webhook_auth_header_name": {"type": ["string", "null"]},
        "webhook_auth": {"type": "boolean", "description": "a webhook auth header was given (its value is never "
                                                          "shown)"},
        "webhook_status_code": _nullable("integer", "the webhook's last HTTP status; null before any answer"),
    },
    "AssemblyAI's TranscriptResponse: the options as given and, once completed, the transcript.")

_V2_LIST = _object(["page_details", "transcripts"], {
    "page_details": _object(["limit", "result_count", "current_url", "prev_url", "next_url"], {
        "limit": {"type": "integer"},
        "result_count": {"type": "integer"},
        "current_url": {"type": "string", "description": "this page"},
        "prev_url": _nullable("string", "the page of older transcripts (before_id: this page's last); null when "
                              "this page is empty"),
        "next_url": _nullable("string", "the page of newer transcripts (after_id: this page's first); null when "
                              "this page is empty"),
    }),
    "transcripts": _array(_object(["id", "resource_url", "status", "created", "completed", "audio_url", "error"], {
        "id": _UID,
        "resource_url": {"type": "string", "description": "its GET /v2/transcript/{job_id} URL"},
        "status": {"type": "string", "enum": _STATUSES},
        "created": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$",
                    "description": "UTC, ISO 8601 without an offset, as AssemblyAI writes it"},
        "completed": {"type": ["string", "null"], "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$",
                      "description": "UTC, when it completed or failed"},
        "audio_url": {"type": "string", "description": "as in the transcript"},
        "error": {"type": ["string", "null"]},
    }), "newest first"),
}, "AssemblyAI's ListTranscriptResponse: every surface's transcripts, newest first.")


def _span(kind: str) -> dict:
    return _object(["text", "start", "end", "confidence", "words", "speaker"], {
        "text": {"type": "string"},
        "start": {"type": "integer", "description": "ms"},
        "end": {"type": "integer", "description": "ms"},
        "confidence": {"type": "number", "description": "mean of its words' confidences"},
        "words": _array(_ref("Word")),
        "speaker": {"type": "null", "description": "no speaker labels here"},
        "channel": _CHANNEL,
    }, f"one {kind}; never spans two channels")


def _export(field: str, items: dict, description: str) -> dict:
    return _object(["id", field, "confidence", "audio_duration"], {
        "id": {**_UID, "description": "the transcript's id"},
        field: _array(items),
        "confidence": {"type": "number", "description": "mean of every word's confidence"},
        "audio_duration": {"type": "number", "description": "seconds transcribed"},
    }, description)


_WORD_SEARCH = _object(["id", "total_count", "matches"], {
    "id": {**_UID, "description": "the transcript's id"},
    "total_count": {"type": "integer", "description": "matches of every term"},
    "matches": _array(_object(["text", "count", "timestamps", "indexes"], {
        "text": {"type": "string", "description": "the term as asked"},
        "count": {"type": "integer"},
        "timestamps": _array({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                             "[start, end] ms of each match"),
        "indexes": _array({"type": "integer"}, "index in the transcript's words of each match's first word"),
    }), "one per distinct term, count 0 when absent"),
}, "AssemblyAI's WordSearchMatchResponse and the transcript's id. Case and edge punctuation are ignored; a $ or % "
   "is optional in a term (\"49\" finds \"$49\"); a term of several words matches consecutive words of one channel.")

# --- schemas: OpenAI's transcription API ----------------------------------------------------------------------


def _v1_form(config: DaemonConfig) -> dict:
    models = [config.engine.model, ALIAS]
    return _object(["file", "model"], {
        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                 "description": f"the audio file (wav, flac, ogg/opus, mp3), at most {config.download.max_bytes} "
                                "bytes (DOWNLOAD_MAX_BYTES)"},
        "model": {"type": "string", "enum": models, "description": f"{ALIAS} is the served model's alias"},
        "language": {"type": "string", "description": "English only: en, english, en-us, en-gb, en_us, en_gb (any "
                                                      "case); empty or absent: English"},
        "prompt": {"type": "string", "description": "Whisper's initial prompt: vocabulary and style to prefer"},
        "response_format": {"type": "string", "enum": list(FORMATS), "default": "json",
                            "description": "json and verbose_json answer JSON; text, srt and vtt text/plain"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                        "description": "0 keeps Whisper's fallback schedule; another value samples at it alone"},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]},
                                      "description": "verbose_json only (else a 400): word adds `words`; "
                                                     "segments come unless only word is asked"},
        "word_boost[]": {**_WORD_BOOST, "type": "array",
                         "description": "ours, not OpenAI's (the SDK sends it with extra_body={\"word_boost\": [...]}); "
                                        + _WORD_BOOST["description"]},
        "word_boost": {"type": "string", "maxLength": MAX_BOOST_CHARS,
                       "description": "one phrase to favour, as a plain form field (may repeat); as word_boost[]"},
        "boost_param": {"type": "string", "enum": list(BOOST_PARAMS), "default": "default",
                        "description": "how strongly word_boost[] favours its phrases"},
    }, "Another field is a 400. OpenAI's stream, include[], chunking_strategy and known_speaker_*[] are not "
       "supported: a 400 unless empty, false, 0 or null (the SDK sends stream=false).")


_V1_JSON = _object(["text"], {"text": {"type": "string"}}, "response_format json: OpenAI's Transcription")

_V1_VERBOSE = _object(["task", "language", "duration", "text"], {
    "task": {"type": "string", "const": "transcribe"},
    "language": {"type": "string", "const": "english"},
    "duration": {"type": "number", "description": "seconds transcribed"},
    "text": {"type": "string"},
    "words": _array(_object(["word", "start", "end"], {
        "word": {"type": "string", "description": "without edge punctuation"},
        "start": {"type": "number", "description": "seconds"},
        "end": {"type": "number", "description": "seconds"},
    }), "with timestamp_granularities[] word"),
    "segments": _array(_object(
        ["id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
         "no_speech_prob"], {
            "id": {"type": "integer"},
            "seek": {"type": "integer"},
            "start": {"type": "number", "description": "seconds"},
            "end": {"type": "number", "description": "seconds"},
            "text": {"type": "string", "description": "one sentence, after a space"},
            "tokens": _array({"type": "integer"}),
            "temperature": {"type": "number"},
            "avg_logprob": {"type": "number"},
            "compression_ratio": {"type": "number"},
            "no_speech_prob": {"type": "number"},
        }), "one per sentence; unless only timestamp_granularities[] word is asked"),
}, "response_format verbose_json: OpenAI's TranscriptionVerbose")

_V1_MODEL = _object(["id", "object", "created", "owned_by"], {
    "id": {"type": "string"},
    "object": {"type": "string", "const": "model"},
    "created": {"type": "integer", "description": "epoch seconds (the server's start)"},
    "owned_by": {"type": "string"},
})

_HEALTH = _object(["status", "workers"], {
    "status": {"type": "string", "enum": ["ok", "loading", "restarting", "unresponsive", "draining",
                                          "no_worker_nodes", "store_unreachable"],
               "description": "the last two only on an API node (shared mode)"},
    "detail": {"type": "string"},
    "workers": _array({
        "type": "object",
        "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                       "state": {"type": "string", "enum": ["starting", "ready", "unresponsive"]},
                       "pid": {"type": ["integer", "null"]},
                       "windows": {"type": "integer"},
                       "heartbeat_age_s": {"type": "number", "description": "seconds since its last pulse"}},
    }),
    "nodes": {**_array({
        "type": "object",
        "properties": {"node": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
                       "capacity": {"type": "integer", "description": "its MAX_TRANSCRIPTS_PARALLEL"},
                       "running": {"type": "integer", "description": "jobs it transcribes now"},
                       "ready": {"type": "boolean", "description": "its workers are up and answered a probe"},
                       "heartbeat_age_s": {"type": "number"}},
    }), "description": "shared mode (API node): the live worker nodes"},
})

# --- schemas: errors ------------------------------------------------------------------------------------------

_SDK_FIELD = ("Missing only where the server answers before it has read the request's path, with the bare Error: "
              "a request line that does not parse, and the 503 of the connection limit.")

_ERROR = _object(["code", "description", "uid"], {
    "code": {"type": "integer", "enum": [kind.code for kind in ERROR_TABLE],
             "description": "stable: branch on it (the table in info.description)"},
    "description": {"type": "string", "description": "what went wrong and what to do"},
    "uid": {**_UID, "description": "the request's uid; the server's log line has it"},
})

_V2_ERROR = {"allOf": [_ref("Error"), {"type": "object", "properties": {
    "error": {"type": "string", "description": "the description again, which AssemblyAI's SDKs show. " + _SDK_FIELD},
}}], "description": "The Error, as /v2/ paths answer it."}

_V1_ERROR = {"allOf": [_ref("Error"), {"type": "object", "properties": {
    "error": {**_object(["message", "type", "param", "code"], {
        "message": {"type": "string", "description": "the description again"},
        "type": {"type": "string", "enum": ["invalid_request_error", "authentication_error", "rate_limit_error",
                                           "server_error"]},
        "param": _nullable("string", "the form field at fault, when one is"),
        "code": {"type": "string", "enum": [kind.name for kind in ERROR_TABLE], "description": "the code's name"},
    }), "description": "OpenAI's error object, from which its clients raise BadRequestError, RateLimitError, ... "
                       + _SDK_FIELD},
}}], "description": "The Error, as /v1/ paths answer it."}


def _error_response(schema: str, description: str) -> dict:
    return {
        "description": description,
        "headers": {
            "Retry-After": {"description": "seconds to wait before retrying; with 423, 429 and code 14",
                            "schema": {"type": "integer"}},
            "WWW-Authenticate": {"description": "with 401", "schema": {"type": "string"}},
        },
        "content": {"application/json": {"schema": _ref(schema)}},
    }


# --- operations ----------------------------------------------------------------------------------------------

Cause = tuple[int, int, str]  # HTTP status, error code, when


def _errors(response: str, causes: Iterable[Cause]) -> dict:
    """The error responses of an operation, one per status, each naming its codes and their causes."""
    by_status: dict[int, list[str]] = {}
    for status, code, when in causes:
        by_status.setdefault(status, []).append(f"code {code} ({_NAMES[code]}): {when}")
    return {str(status): {"$ref": f"#/components/responses/{response}", "description": "; ".join(whens)}
            for status, whens in sorted(by_status.items())}


def _anywhere(config: DaemonConfig, secured: bool = True, upload: bool = False) -> list[Cause]:
    """What any path may answer: the HTTP layer's refusals, the API key check, a server fault.

    An upload path lists its own 413 (code 6, at DOWNLOAD_MAX_BYTES); any other takes a body of MAX_BODY_BYTES.
    """
    causes = [
        (400, MALFORMED_REQUEST, "the request is not well-formed HTTP"),
        *([] if upload else [(413, MALFORMED_REQUEST, f"the body is larger than {MAX_BODY_BYTES} bytes")]),
        (431, MALFORMED_REQUEST, f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"),
        (500, INTERNAL_FAILURE, "an unexpected server fault; report the uid"),
        (501, MALFORMED_REQUEST, "a transfer coding the server does not support"),
        (503, SERVICE_NOT_READY, f"all {config.http.max_connections} connections (HTTP_MAX_CONNECTIONS) serve "
                                 "requests; retry after Retry-After"),
    ]
    if secured and config.api_key:
        causes.append((401, UNAUTHORIZED, "no Authorization header, or a wrong key"))
    return causes


def _stored(config: DaemonConfig) -> list[Cause]:
    """What a path that reads or writes the job store answers when that store is Redis and Redis is away."""
    return [(503, STORE_UNREACHABLE, "shared mode: Redis (REDIS_URL) cannot be reached from this node; retry "
                                     "after Retry-After")] if config.redis_url else []


def _synchronous(config: DaemonConfig, busy_status: int) -> list[Cause]:
    """A request that takes a slot and waits for its transcript: /transcribe/url, /v1/audio/transcriptions."""
    busy = [(busy_status, OVER_CAPACITY, f"{config.max_transcripts_parallel} files are being transcribed "
                                         "(MAX_TRANSCRIPTS_PARALLEL); retry after Retry-After")] \
        if config.reject_over_parallel else []
    return [
        *busy,
        *_stored(config),
        (422, UNDECODABLE_AUDIO, "the file is not audio, or is corrupted or truncated"),
        (422, AUDIO_TOO_LONG, f"more than {config.max_audio_seconds} s of audio to transcribe (MAX_AUDIO_SECONDS)"),
        (422, EMPTY_AUDIO, "the file holds no audio samples"),
        (503, WORKER_FAILURE_CODE, "a worker failed while transcribing, and so did the retry"),
        (503, SERVICE_NOT_READY, "models loading, a worker restarting or the server shutting down; retry after "
                                 "Retry-After"),
        (504, REQUEST_TIMED_OUT, f"waiting and transcribing took over {config.request_timeout_seconds} s "
                                 "(REQUEST_TIMEOUT_SECONDS)"),
    ]


def _admission(config: DaemonConfig) -> str:
    over = "answers at once (see its status) with Retry-After" if config.reject_over_parallel else \
        f"waits for a slot, within REQUEST_TIMEOUT_SECONDS ({config.request_timeout_seconds} s)"
    return (f"At most {config.max_transcripts_parallel} files are transcribed at once, by every surface together "
            f"(MAX_TRANSCRIPTS_PARALLEL); a request over it {over} (REJECT_OVER_PARALLEL). Up to "
            f"{config.max_audio_seconds} s of audio (MAX_AUDIO_SECONDS) is transcribed; the request may wait and run "
            f"{config.request_timeout_seconds} s (REQUEST_TIMEOUT_SECONDS).")


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _query(name: str, schema: dict, description: str, required: bool = False, **style) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description,
            **style}


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "the transcript's id, as POST /v2/transcript answered it"}


def _legacy_paths(config: DaemonConfig) -> dict:
    return {"/transcribe/url": {"post": {
        "tags": ["transcribe"],
        "operationId": "transcribeUrl",
        "summary": "download an audio file and transcribe it (synchronous)",
        "description": f"{_admission(config)} Files up to {config.download.max_bytes} bytes (DOWNLOAD_MAX_BYTES).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TranscribeRequest")}}},
        "responses": {
            "200": _json(_ref("Transcript"), "the transcript"),
            **_errors("Error", [
                (400, INVALID_PARAMETER, "a field is missing, unknown, of the wrong type or out of range, or "
                                         "audio_url is not an http(s) URL"),
                (400, MALFORMED_REQUEST, "the body is not a JSON object"),
                (403, ADDRESS_NOT_ALLOWED, "audio_url or a redirect leads to an address the server may not "
                                           "download from (DOWNLOAD_DENY / DOWNLOAD_ALLOW)"),
                (413, AUDIO_TOO_LARGE, f"the file is larger than {config.download.max_bytes} bytes "
                                       "(DOWNLOAD_MAX_BYTES)"),
                (415, UNSUPPORTED_CONTENT_TYPE, "Content-Type is not application/json"),
                (422, INVALID_PARAMETER, "audio_start_from or audio_end_at is past the end of the audio"),
                (422, MONO_WITH_DUAL_CHANNEL, "dual_channel and a file of one channel"),
                (502, DOWNLOAD_FAILED, "audio_url could not be downloaded (DNS, refused connection, an HTTP error "
                                       "from the origin, too many redirects)"),
                (504, DOWNLOAD_TIMED_OUT, "the origin did not connect, stopped sending, or did not finish in time "
                                          "(DOWNLOAD_CONNECT_TIMEOUT, DOWNLOAD_READ_TIMEOUT)"),
                *_synchronous(config, 423),
                *_anywhere(config),
            ]),
        },
    }}}


def _v2_paths(config: DaemonConfig) -> dict:
    no_such = (404, NO_SUCH_TRANSCRIPT, f"no transcript has this id; it may have expired: transcripts are removed "
                                        f"{config.job_retention_hours:g} hours after they end (JOB_RETENTION_HOURS)")
    not_completed = (400, TRANSCRIPT_NOT_COMPLETED, "the transcript is queued, processing, in error or deleted")

    def export(operation_id: str, summary: str, success: dict, parameters: list[dict],
               parameter_causes: list[Cause]) -> dict:
        return {"get": {
            "tags": ["AssemblyAI v2"], "operationId": operation_id, "summary": summary,
            "parameters": [_JOB_ID, *parameters],
            "responses": {"200": success, **_errors("AssemblyAIError", [
                not_completed, no_such, *parameter_causes, *_anywhere(config), *_stored(config)])},
        }}

    chars = _query("chars_per_caption", {"type": "integer", "minimum": 1, "maximum": MAX_CHARS_PER_CAPTION,
                                         "default": DEFAULT_CHARS_PER_CAPTION},
                   "the longest caption, in characters; a caption also ends with its sentence, at a pause of 1 s "
                   "and at a change of channel")
    bad_chars = [(400, INVALID_PARAMETER, f"chars_per_caption is not a whole number from 1 to {MAX_CHARS_PER_CAPTION}")]
    return {
        "/v2/upload": {"post": {
            "tags": ["AssemblyAI v2"], "operationId": "uploadFile",
            "summary": "store an audio file for POST /v2/transcript",
            "description": f"The body is the file itself, at most {config.download.max_bytes} bytes "
                           f"(DOWNLOAD_MAX_BYTES). It is kept {config.job_retention_hours:g} hours "
                           "(JOB_RETENTION_HOURS).",
            "requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
            "responses": {
                "200": _json(_object(["upload_url"], {"upload_url": {
                    "type": "string", "description": "this server's URL of the file: pass it as audio_url"}}),
                    "the file is stored"),
                **_errors("AssemblyAIError", [
                    (413, AUDIO_TOO_LARGE, f"the file is larger than {config.download.max_bytes} bytes "
                                           "(DOWNLOAD_MAX_BYTES)"),
                    *_anywhere(config, upload=True), *_stored(config),
                ]),
            },
        }},
        "/v2/transcript": {
            "post": {
                "tags": ["AssemblyAI v2"], "operationId": "createTranscript",
                "summary": "queue a transcript (asynchronous)",
                "description": (
                    f"Answers at once with the queued transcript; poll GET /v2/transcript/{{job_id}} or pass "
                    f"webhook_url. At most {config.max_queued_jobs} transcripts wait at once (MAX_QUEUED_JOBS); "
                    f"they run in order of arrival as slots come free, at most {config.max_transcripts_parallel} "
                    f"files at once for every surface together (MAX_TRANSCRIPTS_PARALLEL), each within "
                    f"{config.request_timeout_seconds} s (REQUEST_TIMEOUT_SECONDS), up to "
                    f"{config.max_audio_seconds} s of audio (MAX_AUDIO_SECONDS) and files up to "
                    f"{config.download.max_bytes} bytes (DOWNLOAD_MAX_BYTES). A failure then (download, decoding, "
                    f"length) ends the transcript with status error and its description in `error`. Transcripts are "
                    f"removed {config.job_retention_hours:g} hours after they end (JOB_RETENTION_HOURS); a restart "
                    f"runs the unfinished ones again."),
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("V2TranscriptRequest")}}},
                "responses": {"200": _json(_ref("V2Transcript"), "the queued transcript"),
                              **_errors("AssemblyAIError", [
                                  (400, INVALID_PARAMETER, "a field is unknown, unsupported and asking for something, "
                                                           "of the wrong type or out of range; audio_url or "
                                                           "webhook_url is not an http(s) URL; language_code is not "
                                                           "English"),
                                  (400, MALFORMED_REQUEST, "the body is not a JSON object"),
                                  (404, NO_SUCH_TRANSCRIPT, "audio_url is an upload_url this server does not have (or "
                                                            "no longer: JOB_RETENTION_HOURS)"),
                                  (415, UNSUPPORTED_CONTENT_TYPE, "Content-Type is not application/json"),
                                  (429, QUEUE_FULL, f"{config.max_queued_jobs} transcripts already wait "
                                                    "(MAX_QUEUED_JOBS); retry after Retry-After"),
                                  *_anywhere(config), *_stored(config),
                              ])},
            },
            "get": {
                "tags": ["AssemblyAI v2"], "operationId": "listTranscripts",
                "summary": "list transcripts, newest first",
                "description": "Every surface's transcripts, by the order they arrived.",
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                           "transcripts per page"),
                    _query("status", {"type": "string", "enum": _STATUSES}, "only transcripts in this status"),
                    _query("created_on", {"type": "string", "format": "date"},
                           "only transcripts created on this UTC day, YYYY-MM-DD"),
                    _query("before_id", {"type": "string"}, "only transcripts older than this one (prev_url)"),
                    _query("after_id", {"type": "string"}, "only transcripts newer than this one (next_url)"),
                ],
                "responses": {"200": _json(_ref("V2TranscriptList"), "one page"), **_errors("AssemblyAIError", [
                    (400, INVALID_PARAMETER, f"limit is not a whole number from 1 to {MAX_PAGE}, status is not "
                                             "one of the statuses, or created_on is not YYYY-MM-DD"),
                    *_anywhere(config), *_stored(config),
                ])},
            },
        },
        "/v2/transcript/{job_id}": {
            "parameters": [_JOB_ID],
            "get": {
                "tags": ["AssemblyAI v2"], "operationId": "getTranscript",
                "summary": "a transcript in any status",
                "responses": {"200": _json(_ref("V2Transcript"), "the transcript"),
                              **_errors("AssemblyAIError", [no_such, *_anywhere(config), *_stored(config)])},
            },
            "delete": {
                "tags": ["AssemblyAI v2"], "operationId": "deleteTranscript",
                "summary": "remove a transcript's text and audio",
                "description": "The record stays, as AssemblyAI's does: text 'Deleted by user.', audio_url "
                               "http://deleted_by_user, no words; its exports answer 400 (code 21). A queued "
                               "transcript leaves the queue (status error, no webhook call); one being transcribed "
                               "cannot be deleted until it ends.",
                "responses": {"200": _json(_ref("V2Transcript"), "the deleted transcript"),
                              **_errors("AssemblyAIError", [
                                  (400, TRANSCRIPT_NOT_COMPLETED, "the transcript is being transcribed (processing)"),
                                  no_such, *_anywhere(config), *_stored(config)])},
            },
        },
        "/v2/transcript/{job_id}/srt": export(
            "getSubtitlesSrt", "SubRip subtitles of a completed transcript", _text("the SubRip file"), [chars],
            bad_chars),
        "/v2/transcript/{job_id}/vtt": export(
            "getSubtitlesVtt", "WebVTT subtitles of a completed transcript", _text("the WebVTT file"), [chars],
            bad_chars),
        "/v2/transcript/{job_id}/sentences": export(
            "getSentences", "the sentences of a completed transcript", _json(_ref("V2Sentences"), "its sentences"),
            [], []),
        "/v2/transcript/{job_id}/paragraphs": export(
            "getParagraphs", "the paragraphs of a completed transcript", _json(_ref("V2Paragraphs"), "its paragraphs"),
            [], []),
        "/v2/transcript/{job_id}/word-search": export(
            "wordSearch", "find words and phrases in a completed transcript",
            _json(_ref("V2WordSearch"), "the matches of each term"),
            [_query("words", {"type": "array", "items": {"type": "string", "pattern": r"^[^,]*[^\s,][^,]*$"},
                              "minItems": 1},
                    "the terms to find, comma-separated; a term may be several words", required=True,
                    style="form", explode=False)],
            [(400, INVALID_PARAMETER, "words is missing or empty")]),
    }


def _v1_paths(config: DaemonConfig) -> dict:
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}, "description": "its id"}
    form_bytes = config.download.max_bytes + MULTIPART_OVERHEAD_BYTES
    return {
        "/v1/audio/transcriptions": {"post": {
            "tags": ["OpenAI v1"], "operationId": "createTranscription",
            "summary": "transcribe an audio file (synchronous)",
            "description": f"OpenAI's clients work unchanged with their base_url here. {_admission(config)}",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _ref("V1TranscriptionForm"),
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }}},
            "responses": {
                "200": {"description": "the transcript in the response_format asked for", "content": {
                    "application/json": {"schema": {"anyOf": [_ref("V1Transcription"),
                                                              _ref("V1TranscriptionVerbose")]}},
                    "text/plain": {"schema": {"type": "string", "description": "text: the transcript and a "
                                                                               "newline; srt, vtt: one cue per "
                                                                               "segment"}},
                }},
                **_errors("OpenAIError", [
                    (400, INVALID_PARAMETER, "a form field is missing, unknown, unsupported or invalid (model, "
                                             "language, response_format, temperature, timestamp_granularities[]); "
                                             "error.param names it"),
                    (413, AUDIO_TOO_LARGE, f"the file is larger than {config.download.max_bytes} bytes "
                                           f"(DOWNLOAD_MAX_BYTES), or the whole form than {form_bytes} bytes"),
                    (415, UNSUPPORTED_CONTENT_TYPE, "Content-Type is not multipart/form-data"),
                    *_synchronous(config, 429),
                    *_anywhere(config, upload=True),
                ]),
            },
        }},
        "/v1/models": {"get": {
            "tags": ["OpenAI v1"], "operationId": "listModels", "summary": "the models served",
            "responses": {
                "200": _json(_object(["object", "data"], {"object": {"type": "string", "const": "list"},
                                                          "data": _array(_ref("V1Model"))}),
                             f"{config.engine.model} and its alias {ALIAS}"),
                **_errors("OpenAIError", _anywhere(config)),
            },
        }},
        "/v1/models/{model}": {"get": {
            "tags": ["OpenAI v1"], "operationId": "getModel", "summary": "one model", "parameters": [model],
            "responses": {
                "200": _json(_ref("V1Model"), "the model"),
                **_errors("OpenAIError", [(404, INVALID_PARAMETER, "the model is not served here"),
                                          *_anywhere(config)]),
            },
        }},
    }


def _server_paths(config: DaemonConfig) -> dict:
    open_errors = _errors("Error", _anywhere(config, secured=False))
    return {
        "/health": {"get": {
            "tags": ["server"], "operationId": "health",
            "summary": "readiness of the server and each worker process",
            "description": "Needs no API key, and answers at once even while every transcription thread is busy.",
            "security": [],
            "responses": {
                "200": _json(_ref("Health"), "every inference and decoder process is up, answered a probe and keeps "
                                             "its pulse"),
                **open_errors,
                "501": _json({"oneOf": [_ref("Health"), _ref("Error")]},
                             "Health: models loading, a worker down or restarting, a worker or the supervisor "
                             "unresponsive for 3 s, or the server draining; Error: "
                             + open_errors["501"]["description"]),
            },
        }},
        "/metrics": {"get": {
            "tags": ["server"], "operationId": "metrics",
            "summary": "Prometheus metrics of this node (text exposition format)",
            "description": "Needs no API key. Requests and jobs by endpoint, status and error code, queue depth, jobs "
                           "in flight against capacity, audio seconds, latency and real-time-factor histograms, "
                           "worker restarts, worker nodes alive (docs/DAEMON.md lists them).",
            "security": [],
            "responses": {"200": {"description": "the metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}, **open_errors},
        }},
        "/openapi.json": {"get": {
            "tags": ["server"], "operationId": "openapi", "summary": "this document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors("Error", _anywhere(config))},
        }},
    }



def openapi_document(config: DaemonConfig) -> dict:
    """The document for this server's configuration (limits appear in the descriptions)."""
    error_table = "\n".join(f"| {k.code} | {k.status} | {k.name} | {k.meaning} |" for k in ERROR_TABLE)
    key = ("Every endpoint but /health and /metrics needs the API key (ASYNC_ENGINE_API_KEY), as `Authorization: Bearer <key>` "
           "(OpenAI's clients) or `Authorization: <key>` (AssemblyAI's SDKs); else 401, code 16."
           if config.api_key else "This server needs no API key (ASYNC_ENGINE_API_KEY is not set).")
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Async Engine",
            "version": "0.1.0",
            "description": (
                "Self-hosted English speech-to-text: the old engine's POST /transcribe/url, AssemblyAI's v2 API "
                "(/v2/..., for its SDKs) and OpenAI's transcription API (/v1/..., for its clients). " + key + "\n\n"
                "Every error answers the Error schema (on /v2/ and /v1/ paths with the `error` field their SDKs "
                "read); `code` is stable, and each operation lists the codes it may answer:\n\n"
                "| code | HTTP | name | meaning |\n|---|---|---|---|\n" + error_table),
        },
        "paths": {**_server_paths(config), **_legacy_paths(config), **_v2_paths(config), **_v1_paths(config)},
        "webhooks": {"transcriptDone": {"post": {
            "summary": "a v2 transcript with webhook_url ended",
            "description": "Sent when the transcript completes or fails, with webhook_auth_header_name: "
                           "webhook_auth_header_value when given; retried for about twenty minutes until a 2xx.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _object(
                ["transcript_id", "status"], {"transcript_id": _UID,
                                              "status": {"type": "string", "enum": ["completed", "error"]}})}}},
            "responses": {"200": {"description": "any 2xx ends the deliveries"}},
        }}},
        "components": {
            "schemas": {
                "TranscribeRequest": _REQUEST,
                "Transcript": _TRANSCRIPT,
                "Word": _WORD,
                "Utterance": _UTTERANCE,
                "V2TranscriptRequest": _V2_REQUEST,
                "V2Transcript": _V2_TRANSCRIPT,
                "V2TranscriptList": _V2_LIST,
                "V2Sentences": _export("sentences", _span("sentence"), "AssemblyAI's SentencesResponse and the "
                                                                       "transcript's id"),
                "V2Paragraphs": _export("paragraphs", _span("paragraph"), "AssemblyAI's ParagraphsResponse and the "
                                                                          "transcript's id: whole sentences, broken "
                                                                          "at a pause of 2 s"),
                "V2WordSearch": _WORD_SEARCH,
                "V1TranscriptionForm": _v1_form(config),
                "V1Transcription": _V1_JSON,
                "V1TranscriptionVerbose": _V1_VERBOSE,
                "V1Model": _V1_MODEL,
                "Health": _HEALTH,
                "Error": _ERROR,
                "AssemblyAIError": _V2_ERROR,
                "OpenAIError": _V1_ERROR,
            },
            "responses": {
                "Error": _error_response("Error", "a failure; see the code table in info.description"),
                "AssemblyAIError": _error_response("AssemblyAIError", "a failure, with AssemblyAI's `error` string"),
                "OpenAIError": _error_response("OpenAIError", "a failure, with OpenAI's `error` object"),
            },
        },
    }
    if config.api_key:  # both spellings of the key that the server accepts, as alternatives
        document["security"] = [{"apiKey": []}, {"bearer": []}]
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization",
                       "description": "the key alone, `Authorization: <key>`, as AssemblyAI's SDKs send it"},
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "`Authorization: Bearer <key>`, as OpenAI's clients send it"},
        }
    return document
