"""The OpenAPI 3.1 document served at GET /openapi.json.

Built from the same sources the server answers from (the error table, the configured limits), so
the published contract cannot drift from the behaviour. docs/API.md is its prose companion.
"""

from __future__ import annotations

from daemon.config import DaemonConfig
from daemon.errors import ERROR_TABLE

_WORD = {
    "type": "object",
    "required": ["confidence", "end", "start", "text"],
    "properties": {
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "end": {"type": "integer", "description": "ms from the start of the original file"},
        "start": {"type": "integer", "description": "ms from the start of the original file"},
        "text": {"type": "string"},
        "channel": {"type": "string", "enum": ["1", "2"], "description": "dual_channel only"},
    },
}

_UTTERANCE = {
    "type": "object",
    "required": ["channel", "start", "end", "confidence", "text", "words"],
    "description": "A run of one channel's words, ended by the other channel speaking or a pause over 1.5 s.",
    "properties": {
        "channel": {"type": "string", "enum": ["1", "2"]},
        "start": {"type": "integer"},
        "end": {"type": "integer"},
        "confidence": {"type": "number", "description": "mean of its words' confidences"},
        "text": {"type": "string"},
        "words": {"type": "array", "items": {"$ref": "#/components/schemas/Word"}},
    },
}

_TRANSCRIPT = {
    "type": "object",
    "required": ["blob", "duration", "stereo_decode", "uid", "utterances", "words"],
    "properties": {
        "blob": {"type": "string", "description": "the whole transcript; empty for silence"},
        "duration": {"type": "number", "description": "seconds transcribed, after audio_start_from / audio_end_at"},
        "stereo_decode": {"type": "boolean"},
        "uid": {"type": "string", "pattern": "^t_[0-9a-f-]{36}$"},
        "utterances": {
            "oneOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/components/schemas/Utterance"}}],
            "description": "null unless dual_channel",
        },
        "words": {"type": "array", "items": {"$ref": "#/components/schemas/Word"}},
    },
}

_REQUEST = {
    "type": "object",
    "required": ["audio_url"],
    "additionalProperties": False,
    "properties": {
        "audio_url": {"type": "string", "format": "uri", "description": "http or https URL of the audio file"},
        "dual_channel": {"type": "boolean", "default": False,
                         "description": "transcribe the two channels separately; a mono file is error 11"},
        "format_text": {"type": "boolean", "default": True,
                        "description": "cased proper nouns and digits; false: spoken form, lower case"},
        "punctuate": {"type": "boolean", "default": True, "description": "false: no punctuation marks"},
        "audio_start_from": {"type": "integer", "minimum": 0, "description": "ms: start here"},
        "audio_end_at": {"type": "integer", "minimum": 1,
                         "description": "ms: stop here; more than audio_start_from, at most the audio's length"},
    },
}


def openapi_document(config: DaemonConfig) -> dict:
    """The document for this server's configuration (limits appear in the descriptions)."""
    statuses = sorted({kind.status for kind in ERROR_TABLE} | {405, 415, 422, 431, 501, 502, 504})
    error_table = "\n".join(f"| {k.code} | {k.status} | {k.name} | {k.meaning} |" for k in ERROR_TABLE)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Async Engine",
            "version": "0.1.0",
            "description": "Self-hosted English speech-to-text. Every error answers the Error schema; `code` is "
                           "stable:\n\n| code | HTTP | name | meaning |\n|---|---|---|---|\n" + error_table,
        },
        "paths": {
            "/health": {"get": {
                "summary": "readiness of the server and each worker process",
                "responses": {
                    "200": {"description": "every inference and decoder process is up, answered a probe and keeps "
                                           "its pulse",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                    "501": {"description": "models loading, a worker down or restarting, a worker or the supervisor "
                                           "unresponsive for 3 s, or the server draining",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                },
            }},
            "/transcribe/url": {"post": {
                "summary": "download an audio file and transcribe it (synchronous)",
                "description": (
                    f"At most {config.max_transcripts_parallel} files at once (MAX_TRANSCRIPTS_PARALLEL); over it "
                    + ("423 with Retry-After." if config.reject_over_parallel else "the request waits for a slot.")
                    + f" Files up to {config.download.max_bytes} bytes; up to {config.max_audio_seconds} s of audio "
                    f"transcribed (after audio_start_from / audio_end_at); the request may wait and run "
                    f"{config.request_timeout_seconds} s."
                ),
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/TranscribeRequest"}}}},
                "responses": {
                    "200": {"description": "the transcript", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Transcript"}}}},
                    **{str(status): {"$ref": "#/components/responses/Error"} for status in statuses},
                },
            }},
            "/openapi.json": {"get": {
                "summary": "this document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }},
        },
        "components": {
            "schemas": {
                "TranscribeRequest": _REQUEST,
                "Transcript": _TRANSCRIPT,
                "Word": _WORD,
                "Utterance": _UTTERANCE,
                "Health": {
                    "type": "object",
                    "required": ["status", "workers"],
                    "properties": {
                        "status": {"type": "string",
                                   "enum": ["ok", "loading", "restarting", "unresponsive", "draining"]},
                        "detail": {"type": "string"},
                        "workers": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                           "state": {"type": "string", "enum": ["starting", "ready", "unresponsive"]},
                                           "pid": {"oneOf": [{"type": "integer"}, {"type": "null"}]},
                                           "windows": {"type": "integer"},
                                           "heartbeat_age_s": {"type": "number",
                                                               "description": "seconds since its last pulse"}},
                        }},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["code", "description", "uid"],
                    "properties": {
                        "code": {"type": "integer", "enum": [k.code for k in ERROR_TABLE]},
                        "description": {"type": "string", "description": "what went wrong and what to do"},
                        "uid": {"type": "string"},
                    },
                },
            },
            "responses": {
                "Error": {
                    "description": "a failure; see the code table in info.description",
                    "headers": {"Retry-After": {"description": "seconds; with 423 and 503",
                                                "schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
    }
    if config.api_key:
        document["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"apiKey": []}]
        document["paths"]["/health"]["get"]["security"] = []
    return document
