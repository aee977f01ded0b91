"""The OpenAPI 3.1 document served at GET /openapi.json; docs/API.md is its prose companion.

Schemas and query parameters come from the models that validate requests (request_models.py) and
describe answers (response_models.py). Written here is what no model says: the paths, their summaries,
the errors each answers and the configured limits; tests/test_openapi.py holds real answers to it.
"""

from __future__ import annotations

from typing import Iterable

from pydantic.json_schema import models_json_schema

from daemon.config import DaemonConfig
from daemon.errors import ERROR_TABLE
from daemon.http.bodies import MAX_BODY_BYTES, MULTIPART_OVERHEAD_BYTES
from daemon.http.request_models import (CaptionQuery, Query, TranscribeRequest, V1TranscriptionForm, V2ListQuery,
                                        V2TranscriptRequest, WordSearchQuery)
from daemon.http.response_models import ANSWERS, TranscriptDone
from daemon.http.server import MAX_HEADER_BYTES
from daemon.http.v1 import ALIAS

Cause = tuple[int, str, str]  # HTTP status, the error's name in daemon/errors.py, when
_CODES = {kind.name: kind.code for kind in ERROR_TABLE}
_ERROR_OF_TAG = {"AssemblyAI v2": "AssemblyAIError", "OpenAI v1": "OpenAIError"}
_REQUESTS = (TranscribeRequest, V2TranscriptRequest, V1TranscriptionForm)
_JSON_BODY: list[Cause] = [(400, "malformed_request", "the body is not a JSON object"),
                           (415, "unsupported_content_type", "Content-Type is not application/json")]
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "the transcript's id, as POST /v2/transcript answered it"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict | str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": _ref(schema) if isinstance(schema, str) else schema}}}


def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _body(model: type, media: str = "application/json", **more) -> dict:
    return {"requestBody": {"required": True, "content": {media: {"schema": _ref(model.__name__), **more}}}}


def _parameters(model: type[Query]) -> list[dict]:
    """A query model's fields as OpenAPI parameters; a list is comma-separated (style form, not exploded)."""
    schema = _untitled(model.model_json_schema())
    return [{"name": name, "in": "query", "required": name in schema.get("required", ()),
             "description": field.pop("description"), "schema": field,
             **({"style": "form", "explode": False} if field.get("type") == "array" else {})}
            for name, field in schema["properties"].items()]


def _op(tag: str, operation_id: str, summary: str, success: dict, causes: Iterable[Cause], **more) -> dict:
    """One operation: its 200, and per status the error codes it answers and when, as its surface's SDK reads them."""
    by_status: dict[int, list[str]] = {}
    for status, name, when in causes:
        by_status.setdefault(status, []).append(f"code {_CODES[name]} ({name}): {when}")
    errors = {str(status): {"$ref": f"#/components/responses/{_ERROR_OF_TAG.get(tag, 'Error')}",
                            "description": "; ".join(whens)} for status, whens in sorted(by_status.items())}
    return {"tags": [tag], "operationId": operation_id, "summary": summary, **more,
            "responses": {"200": success, **errors}}


def _anywhere(config: DaemonConfig, secured: bool = True, upload: bool = False) -> list[Cause]:
    """The HTTP layer's refusals, the API key, a server fault. An upload path has its own 413 (code 6)."""
    return [(400, "malformed_request", "the request is not well-formed HTTP"),
            *([] if upload else [(413, "malformed_request", f"the body is larger than {MAX_BODY_BYTES} bytes")]),
            (431, "malformed_request", f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"),
            (500, "internal_failure", "an unexpected server fault; report the uid"),
            (501, "malformed_request", "a transfer coding the server does not support"),
            (503, "service_not_ready", f"all {config.http.max_connections} connections (HTTP_MAX_CONNECTIONS) serve "
                                     "requests; retry after Retry-After"),
            *([(401, "unauthorized", "no Authorization header, or a wrong key")] if secured and config.api_key else [])]


def _synchronous(c: DaemonConfig, busy_status: int) -> list[Cause]:
    """A request that takes a slot and waits for its transcript: /transcribe/url, /v1/audio/transcriptions."""
    return [*([(busy_status, "over_capacity", f"{c.max_transcripts_parallel} files are being transcribed "
                                            "(MAX_TRANSCRIPTS_PARALLEL); retry after Retry-After")]
              if c.reject_over_parallel else []),
            (422, "undecodable_audio", "the file is not audio, or is corrupted or truncated"),
            (422, "audio_too_long", f"more than {c.max_audio_seconds} s of audio to transcribe (MAX_AUDIO_SECONDS)"),
            (422, "empty_audio", "the file holds no audio samples"),
            (503, "worker_failure", "a worker failed while transcribing, and so did the retry"),
            (503, "service_not_ready", "models loading, a worker restarting or the server shutting down"),
            (504, "request_timed_out", f"waiting and transcribing took over {c.request_timeout_seconds} s "
                                     "(REQUEST_TIMEOUT_SECONDS)")]


def _admission(c: DaemonConfig) -> str:
    over = "answers at once (see its status) with Retry-After" if c.reject_over_parallel else \
        f"waits for a slot, within REQUEST_TIMEOUT_SECONDS ({c.request_timeout_seconds} s)"
    return (f"At most {c.max_transcripts_parallel} files are transcribed at once, by every surface together "
            f"(MAX_TRANSCRIPTS_PARALLEL); a request over it {over} (REJECT_OVER_PARALLEL). Up to {c.max_audio_seconds} "
            f"s of audio (MAX_AUDIO_SECONDS) and files up to {c.download.max_bytes} bytes (DOWNLOAD_MAX_BYTES) are "
            f"transcribed; the request may wait and run {c.request_timeout_seconds} s (REQUEST_TIMEOUT_SECONDS).")


def _paths(config: DaemonConfig) -> dict:
    anywhere, max_bytes, hours = _anywhere(config), config.download.max_bytes, f"{config.job_retention_hours:g}"
    stored = [(503, "store_unreachable", "shared mode: Redis (REDIS_URL) cannot be reached from this node; retry "
                                         "after Retry-After")] if config.redis_url else []
    too_large = (413, "audio_too_large", f"the file is larger than {max_bytes} bytes (DOWNLOAD_MAX_BYTES)")
    no_such = (404, "no_such_transcript", f"no transcript has this id; it may have expired: transcripts are removed "
                                          f"{hours} hours after they end (JOB_RETENTION_HOURS)")
    invalid = (400, "invalid_parameter", "a field is missing, unknown, of the wrong type or out of range (the "
                                         "description names it)")
    v2, v1, server, open_errors = "AssemblyAI v2", "OpenAI v1", "server", _anywhere(config, secured=False)
    health = _op(server, "health", "readiness of the server and each worker process", _json(
        "Health", "every inference and decoder process is up, answered a probe and keeps its pulse"), open_errors,
        description="Needs no API key, and answers at once even while every transcription thread is busy.", security=[])
    health["responses"]["501"] = _json({"oneOf": [_ref("Health"), _ref("Error")]}, (
        "Health: models loading, a worker down or restarting, a worker or the supervisor unresponsive for 3 s, or the "
        "server draining; Error: " + health["responses"]["501"]["description"]))

    def export(operation_id: str, what: str, success: dict, query: type[Query] | None = None) -> dict:
        return {"get": _op(v2, operation_id, f"{what} of a completed transcript", success, [
            (400, "transcript_not_completed", "the transcript is queued, processing, in error or deleted"), no_such,
            *([invalid] if query else []), *anywhere, *stored],
            parameters=[_JOB_ID, *(_parameters(query) if query else [])])}

    return {
        "/health": {"get": health},
        "/metrics": {"get": _op(
            server, "metrics", "Prometheus metrics of this node (text exposition format)", _text("the metrics"),
            open_errors, security=[], description="Needs no API key. Requests and jobs by endpoint, status and error "
            "code, queue depth, capacity, audio seconds, latency and real-time-factor histograms, worker restarts, "
            "worker nodes alive (docs/DAEMON.md lists them).")},
        "/openapi.json": {"get": _op(server, "openapi", "this document", _json({"type": "object"}, "it"), anywhere)},
        "/transcribe/url": {"post": _op(
            "transcribe", "transcribeUrl", "download an audio file and transcribe it (synchronous)",
            _json("Transcript", "the transcript"), [
                invalid, too_large, *_JSON_BODY,
                (403, "address_not_allowed", "audio_url or a redirect leads to an address the server may not "
                                             "download from (DOWNLOAD_DENY / DOWNLOAD_ALLOW)"),
                (422, "invalid_parameter", "audio_start_from or audio_end_at is past the end of the audio"),
                (422, "mono_with_dual_channel", "dual_channel and a file of one channel"),
                (502, "download_failed", "audio_url could not be downloaded (DNS, refused connection, an HTTP error "
                                         "from the origin, too many redirects)"),
                (504, "download_timed_out", "the origin did not connect, stopped sending, or did not finish in time "
                                            "(DOWNLOAD_CONNECT_TIMEOUT, DOWNLOAD_READ_TIMEOUT)"),
                *_synchronous(config, 423), *stored, *anywhere],
            description=_admission(config), **_body(TranscribeRequest))},
        "/v2/upload": {"post": _op(
            v2, "uploadFile", "store an audio file for POST /v2/transcript", _json("V2Upload", "the file is stored"),
            [too_large, *_anywhere(config, upload=True), *stored], requestBody={"required": False, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "contentMediaType": "application/octet-stream"}}}},
            description=f"The body is the file, at most {max_bytes} bytes (DOWNLOAD_MAX_BYTES), kept {hours} hours "
                        "(JOB_RETENTION_HOURS); an empty one is kept too, and its transcript ends in error 12.")},
        "/v2/transcript": {
            "post": _op(v2, "createTranscript", "queue a transcript (asynchronous)", _json(
                "V2Transcript", "the queued transcript"), [
                invalid, *_JSON_BODY, (404, "no_such_transcript", "audio_url is an upload_url this server does not "
                                                                    "have"),
                (429, "queue_full", f"{config.max_queued_jobs} transcripts already wait (MAX_QUEUED_JOBS); retry "
                                    "after Retry-After"), *anywhere, *stored], **_body(V2TranscriptRequest),
                description=f"Answers at once; poll GET /v2/transcript/{{job_id}} or pass webhook_url. At most "
                            f"{config.max_queued_jobs} transcripts wait (MAX_QUEUED_JOBS), then run in order of "
                            f"arrival. {_admission(config)} A failure then ends it with status error and the "
                            f"description in `error`. It is removed {hours} hours after it ends "
                            "(JOB_RETENTION_HOURS); a restart runs unfinished ones again."),
            "get": _op(v2, "listTranscripts", "list transcripts, newest first", _json("V2TranscriptList", "one page"),
                       [invalid, *anywhere, *stored], parameters=_parameters(V2ListQuery),
                       description="Every surface's transcripts, by the order they arrived.")},
        "/v2/transcript/{job_id}": {
            "parameters": [_JOB_ID],
            "get": _op(v2, "getTranscript", "a transcript in any status", _json("V2Transcript", "the transcript"),
                       [no_such, *anywhere, *stored]),
            "delete": _op(v2, "deleteTranscript", "remove a transcript's text and audio", _json(
                "V2Transcript", "the deleted transcript"), [
                (400, "transcript_not_completed", "the transcript is being transcribed (processing)"), no_such,
                *anywhere, *stored], description="The record stays, as AssemblyAI's does: text 'Deleted by user.', "
                "audio_url http://deleted_by_user, no words, exports 400 (code 21). A queued transcript leaves the "
                "queue (status error, no webhook call); one being transcribed cannot be deleted until it ends.")},
        "/v2/transcript/{job_id}/srt": export("getSubtitlesSrt", "SubRip subtitles", _text("SubRip"), CaptionQuery),
        "/v2/transcript/{job_id}/vtt": export("getSubtitlesVtt", "WebVTT subtitles", _text("WebVTT"), CaptionQuery),
        "/v2/transcript/{job_id}/sentences": export("getSentences", "the sentences", _json("V2Sentences", "them")),
        "/v2/transcript/{job_id}/paragraphs": export("getParagraphs", "the paragraphs", _json("V2Paragraphs", "them")),
        "/v2/transcript/{job_id}/word-search": export("wordSearch", "terms found in", _json(
            "V2WordSearch", "the matches of each term"), WordSearchQuery),
        "/v1/audio/transcriptions": {"post": _op(
            v1, "createTranscription", "transcribe an audio file (synchronous)", {
                "description": "the transcript in the response_format asked for", "content": {
                    "application/json": {"schema": {"anyOf": [_ref("V1Transcription"), _ref("V1TranscriptionVerbose"),
                                                              _ref("V1TranscriptionDiarized")]}},
                    "text/plain": {"schema": {"type": "string", "description": "text, srt or vtt"}},
                    "text/event-stream": {"schema": {"type": "string", "description": (
                        "stream=true: `data: {json}` events, transcript.text.delta ({type, delta}) then "
                        "transcript.text.done ({type, text})")}}}}, [
                (400, "invalid_parameter", "a form field is missing, unknown or invalid; error.param names it"),
                (413, "audio_too_large", f"the file is larger than {max_bytes} bytes (DOWNLOAD_MAX_BYTES), or the "
                                         f"whole form than {max_bytes + MULTIPART_OVERHEAD_BYTES} bytes"),
                (415, "unsupported_content_type", "Content-Type is not multipart/form-data"),
                *_synchronous(config, 429), *stored, *_anywhere(config, upload=True)],
            description=f"OpenAI's clients work unchanged with their base_url here. {_admission(config)}",
            **_body(V1TranscriptionForm, "multipart/form-data", encoding={"file": {
                "contentType": "application/octet-stream"}}))},
        "/v1/models": {"get": _op(v1, "listModels", "the models served",
                                  _json("V1ModelList", f"{config.engine.model} and its alias {ALIAS}"), anywhere)},
        "/v1/models/{model}": {"get": _op(
            v1, "getModel", "one model", _json("V1Model", "the model"),
            [(404, "invalid_parameter", "the model is not served here"), *anywhere],
            parameters=[{**_JOB_ID, "name": "model", "description": "its id"}])},
    }


def _schemas(config: DaemonConfig) -> dict:
    """Every model's JSON Schema by its class name, and what only this configuration knows: the model served."""
    _, top = models_json_schema([(model, "validation") for model in (*_REQUESTS, *ANSWERS)],
                                by_alias=True, ref_template="#/components/schemas/{model}")
    schemas = _untitled(top["$defs"])
    schemas["V1TranscriptionForm"]["properties"]["model"]["enum"] = [config.engine.model, ALIAS]
    return schemas


def _untitled(schema: object) -> object:
    """Without the generator's titles (the names again); descriptions on one line (docstrings wrap)."""
    if isinstance(schema, dict):
        return {k: " ".join(v.split()) if k == "description" and isinstance(v, str) else _untitled(v)
                for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    return [_untitled(v) for v in schema] if isinstance(schema, list) else schema


def _error_response(name: str, schema: dict) -> dict:
    return {"description": schema["description"], "content": {"application/json": {"schema": _ref(name)}},
            "headers": {"Retry-After": {"description": "seconds to wait before retrying; with 423, 429 and code 14",
                                        "schema": {"type": "integer"}},
                        "WWW-Authenticate": {"description": "with 401", "schema": {"type": "string"}}}}


def openapi_document(config: DaemonConfig) -> dict:
    """The document for this server's configuration (limits appear in the descriptions)."""
    error_table = "\n".join(f"| {k.code} | {k.status} | {k.name} | {k.meaning} |" for k in ERROR_TABLE)
    key = ("Every endpoint but /health and /metrics needs the API key (ASYNC_ENGINE_API_KEY), as `Authorization: "
           "Bearer <key>` (OpenAI's clients) or `Authorization: <key>` (AssemblyAI's SDKs); else 401, code 16."
           if config.api_key else "This server needs no API key (ASYNC_ENGINE_API_KEY is not set).")
    schemas = _schemas(config)
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Async Engine", "version": "0.1.0", "description": (
            "Self-hosted English speech-to-text: the old engine's POST /transcribe/url, AssemblyAI's v2 API (/v2/..., "
            "for its SDKs) and OpenAI's transcription API (/v1/..., for its clients). " + key + "\n\nEvery error "
            "answers the Error schema (on /v2/ and /v1/ paths with the `error` field their SDKs read); `code` is "
            "stable, and each operation lists the codes it may answer:\n\n| code | HTTP | name | meaning |\n"
            "|---|---|---|---|\n" + error_table)},
        "paths": _paths(config),
        "webhooks": {"transcriptDone": {"post": {
            "summary": "a v2 transcript with webhook_url ended", **_body(TranscriptDone),
            "description": "Sent when the transcript completes or fails, with webhook_auth_header_name: "
                           "webhook_auth_header_value when given; retried for about twenty minutes until a 2xx.",
            "responses": {"200": {"description": "any 2xx ends the deliveries"}}}}},
        "components": {"schemas": schemas, "responses": {
            name: _error_response(name, schemas[name]) for name in ("Error", *_ERROR_OF_TAG.values())}},
    }
    if config.api_key:  # both spellings of the key that the server accepts, as alternatives
        document["security"] = [{"apiKey": []}, {"bearer": []}]
        document["components"]["securitySchemes"] = {  # `Authorization: <key>` as AssemblyAI's SDKs send it
            "apiKey": {"type": "apiKey", "in": "header", "name": "Authorization"},
            "bearer": {"type": "http", "scheme": "bearer"}}
    return document
