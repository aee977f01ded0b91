"""AssemblyAI's v2 API: uploads, asynchronous transcripts, their exports, list and delete.

The official SDKs (PyPI and npm `assemblyai`) are the contract: they post what their
TranscriptRequest model holds and parse what their TranscriptResponse, SentencesResponse, ...
models expect, so field names, types and status values here are theirs. An option this server
does not support is a 400 naming it whenever it asks for something (true, a value, a non-empty
list); false and null ask for nothing and pass. Errors carry AssemblyAI's `error` string besides
{code, description, uid}, since the SDK shows that field.

Audio sent to POST /v2/upload is stored, and its upload URL (this server's address and a random
token) names it: a transcript whose audio_url is such a URL reads the stored file, never the
network, whatever host the URL names.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from urllib.parse import urlencode, urlsplit

import falcon

from daemon.config import DaemonConfig
from daemon.errors import (INVALID_PARAMETER, MALFORMED_REQUEST, NO_SUCH_TRANSCRIPT,
                           TRANSCRIPT_NOT_COMPLETED, ApiError)
from daemon.http.bodies import read_json
from daemon.http.request import milliseconds, word_boost_fields
from daemon.jobs.download import check_url
from daemon.jobs.record import Job, Options, Origin, Status
from daemon.jobs.client import Jobs
from daemon.jobs.store import JobStore
from engine.text import exports

_UPLOAD_PATH = re.compile(r"/v2/upload/([0-9a-f]{32})")
_ENGLISH = ("en", "en_us", "en_uk", "en_au")
_SUPPORTED = {"audio_url", "punctuate", "format_text", "dual_channel", "audio_start_from", "audio_end_at",
              "webhook_url", "webhook_auth_header_name", "webhook_auth_header_value", "language_code", "prompt",
              "temperature", "word_boost", "boost_param"}
# TranscriptRequest's other options (assemblyai 1.8): understood, not supported; asking for one is a 400.
_UNSUPPORTED = {
    "language_codes", "multichannel", "audio_channels", "filter_profanity", "redact_pii",
    "redact_pii_audio", "redact_pii_audio_quality", "redact_pii_audio_options", "redact_pii_policies",
    "redact_pii_sub", "redact_pii_return_unredacted", "speaker_labels", "speakers_expected", "speaker_options",
    "content_safety", "content_safety_confidence", "iab_categories", "custom_spelling", "disfluencies",
    "sentiment_analysis", "auto_chapters", "entity_detection", "summarization", "summary_model", "summary_type",
    "auto_highlights", "language_detection", "language_confidence_threshold", "language_detection_options",
    "language_confidence", "language_detection_results", "speech_threshold", "speech_model", "speech_models",
    "remove_audio_tags", "keyterms_prompt", "keyterms_prompt_options", "speech_understanding", "domain",
    "custom_topics", "topics", "webhook_auth",
}
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]{0,8192}")
DEFAULT_PAGE = 10
MAX_PAGE = 200
MAX_CHARS_PER_CAPTION = 10_000


def error_fields(error: ApiError) -> dict:
    """AssemblyAI's error body is {"error": "<message>"}; the SDK raises with that message."""
    return {"error": error.description}


def add_routes(app: falcon.App, config: DaemonConfig, scheduler: Jobs, store: JobStore) -> None:
    app.add_route("/v2/upload", _Upload(config, store))
    app.add_route("/v2/transcript", _Transcripts(scheduler, store))
    app.add_route("/v2/transcript/{job_id}", _Transcript(store))
    app.add_route("/v2/transcript/{job_id}/{view}", _View(store))


class _Upload:
    def __init__(self, config: DaemonConfig, store: JobStore) -> None:
        self.max_bytes = config.download.max_bytes
        self.store = store

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A body declared or sent past the limit never gets here (the HTTP server answers 413 code 6 for
        this path); the store's own bound covers a body that arrives some other way."""
        token = self.store.save_upload(req.bounded_stream, self.max_bytes)
        resp.media = {"upload_url": f"{req.prefix}/v2/upload/{token}"}


class _Transcripts:
    def __init__(self, scheduler: Jobs, store: JobStore) -> None:
        self.scheduler = scheduler
        self.store = store

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        options, upload = _parse_request(read_json(req), self.store)
        job = Job.new(Origin.V2, options, req.context.uid)
        if upload is not None:
            job = job.with_(audio=f"uploads/{upload}")
        resp.media = transcript_body(self.scheduler.enqueue(job))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = _int_param(req, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        status = req.get_param("status")
        if status is not None and status not in {s.value for s in Status}:
            raise ApiError(INVALID_PARAMETER, f"status must be one of {', '.join(s.value for s in Status)}; "
                                              f"got {status!r}")
        created_on = req.get_param("created_on")
        if created_on is not None:
            try:
                dt.datetime.strptime(created_on, "%Y-%m-%d")
            except ValueError:
                raise ApiError(INVALID_PARAMETER, f"created_on must be a date, YYYY-MM-DD; got {created_on[:40]!r}") \
                    from None
        before, after = req.get_param("before_id"), req.get_param("after_id")
        jobs = self.store.page(limit, before_id=before, after_id=after, created_on=created_on,
                               status=Status(status) if status else None)
        base = f"{req.prefix}/v2/transcript"
        query = {k: v for k, v in {"limit": limit, "status": status, "created_on": created_on}.items() if v}
        resp.media = {
            "page_details": {
                "limit": limit, "result_count": len(jobs), "current_url": f"{base}?{req.query_string}".rstrip("?"),
                "prev_url": f"{base}?{urlencode({**query, 'before_id': jobs[-1].id})}" if jobs else None,
                "next_url": f"{base}?{urlencode({**query, 'after_id': jobs[0].id})}" if jobs else None,
            },
            "transcripts": [_list_item(job, base) for job in jobs],
        }


class _Transcript:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = transcript_body(_job(self.store, job_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """A finished transcript loses its text and audio; a queued one is taken off the queue as well. One
        being transcribed cannot be: its words would land after the deletion."""
        if _job(self.store, job_id).status is Status.PROCESSING:
            raise ApiError(TRANSCRIPT_NOT_COMPLETED, f"transcript {job_id} is being transcribed; delete it when it "
                                                     "has completed or failed")
        deleted = self.store.delete(job_id)
        if deleted is None:
            raise ApiError(TRANSCRIPT_NOT_COMPLETED, f"transcript {job_id} started being transcribed meanwhile; "
                                                     "delete it when it has completed or failed")
        resp.media = transcript_body(deleted)


class _View:
    """GET /v2/transcript/{id}/srt | vtt | sentences | paragraphs | word-search of a completed transcript."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str, view: str) -> None:
        if view not in ("srt", "vtt", "sentences", "paragraphs", "word-search"):
            raise falcon.HTTPNotFound()
        job = _job(self.store, job_id)
        if job.status is not Status.COMPLETED or job.deleted:
            state = "deleted" if job.deleted else job.status.value
            raise ApiError(TRANSCRIPT_NOT_COMPLETED, f"transcript {job_id} is {state}, so it has no {view} yet")
        result = job.result
        if view in ("srt", "vtt"):
            chars = _int_param(req, "chars_per_caption", None, 1, MAX_CHARS_PER_CAPTION)
            resp.content_type = "text/plain; charset=utf-8"
            resp.text = (exports.srt if view == "srt" else exports.vtt)(result, chars)
        elif view == "sentences":
            resp.media = {"id": job.id, **exports.sentences(result)}
        elif view == "paragraphs":
            resp.media = {"id": job.id, **exports.paragraphs(result)}
        else:
            words = [w for w in (req.get_param("words") or "").split(",") if w.strip()]
            if not words:
                raise ApiError(INVALID_PARAMETER, "words is required: a comma-separated list of words or phrases")
            resp.media = {"id": job.id, **exports.word_search(result, words)}


def transcript_body(job: Job) -> dict:
    """The TranscriptResponse of a job, in every state."""
    options, result = job.options, job.result or {}
    words = result.get("words") if job.status is Status.COMPLETED else None
    return {
        "id": job.id,
        "status": job.status.value,
        "error": job.error.description if job.error else None,
        "audio_url": _audio_url(job),
        "text": "Deleted by user." if job.deleted else result.get("blob"),
        "words": words,
        "utterances": result.get("utterances") if words is not None else None,
        "confidence": _confidence(words) if words is not None else None,
        "audio_duration": math.ceil(result["duration"]) if "duration" in result else None,
        "language_code": "en_us",
        "punctuate": options.punctuate,
        "format_text": options.format_text,
        "dual_channel": options.dual_channel,
        "audio_start_from": options.audio_start_from,
        "audio_end_at": options.audio_end_at,
        "prompt": options.prompt,
        "temperature": options.temperature,
        "word_boost": list(options.word_boost),
        "boost_param": options.boost_param,
        "webhook_url": options.webhook_url,
        "webhook_auth_header_name": options.webhook_auth_header_name,
        "webhook_auth": options.webhook_auth_header_name is not None,
        "webhook_status_code": job.webhook_status_code,
    }


def _audio_url(job: Job) -> str:
    """AssemblyAI's SDK requires a string: a file sent inline (OpenAI's form) has no URL, so ""."""
    return "http://deleted_by_user" if job.deleted else job.options.audio_url or ""


def _confidence(words: list[dict]) -> float:
    return round(sum(w["confidence"] for w in words) / len(words), 4) if words else 0.0


def _list_item(job: Job, base: str) -> dict:
    return {"id": job.id, "resource_url": f"{base}/{job.id}", "status": job.status.value,
            "created": _iso(job.created), "completed": _iso(job.completed) if job.completed else None,
            "audio_url": _audio_url(job),
            "error": job.error.description if job.error else None}


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "")


def _job(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    if job is None:
        raise ApiError(NO_SUCH_TRANSCRIPT, f"there is no transcript {job_id[:80]!r} on this server (or it expired: "
                                           "JOB_RETENTION_HOURS)")
    return job


def _int_param(req: falcon.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = req.get_param(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(INVALID_PARAMETER, f"{name} must be a whole number from {low} to {high}; got {raw[:40]!r}")
    return int(raw)


# --- POST /v2/transcript ------------------------------------------------------------------------------

def _parse_request(body: object, store: JobStore) -> tuple[Options, str | None]:
    """The request's options, and the upload token when audio_url names one of this server's uploads."""
    if not isinstance(body, dict):
        raise ApiError(MALFORMED_REQUEST, "the request body must be a JSON object")
    for name, value in body.items():
        if name in _UNSUPPORTED:
            if _asks(value):
                raise ApiError(INVALID_PARAMETER, f"{name} is not supported by this server; leave it out (supported: "
                                                  f"{', '.join(sorted(_SUPPORTED))})")
        elif name not in _SUPPORTED:
            shown = name if len(name) <= 80 else name[:80] + "..."
            raise ApiError(INVALID_PARAMETER, f"unknown field {shown!r}; the fields are {', '.join(sorted(_SUPPORTED))}")
    audio_url = body.get("audio_url")
    if not isinstance(audio_url, str) or not audio_url.strip():
        raise ApiError(INVALID_PARAMETER, "audio_url is required: an http(s) URL, or an upload_url from POST /v2/upload")
    language = body.get("language_code")
    if language is not None and str(language).lower() not in _ENGLISH:
        raise ApiError(INVALID_PARAMETER, f"language_code {str(language)[:20]!r} is not supported: this server "
                                          f"transcribes English ({', '.join(_ENGLISH)})")
    word_boost, boost_param = word_boost_fields(body.get("word_boost"), body.get("boost_param"))
    options = Options(
        word_boost=word_boost,
        boost_param=boost_param,
        audio_url=audio_url,
        dual_channel=_bool(body, "dual_channel", False),
        format_text=_bool(body, "format_text", True),
        punctuate=_bool(body, "punctuate", True),
        audio_start_from=milliseconds("audio_start_from", body.get("audio_start_from")),
        audio_end_at=milliseconds("audio_end_at", body.get("audio_end_at")),
        prompt=_text(body, "prompt"),
        temperature=_temperature(body),
        webhook_url=_text(body, "webhook_url"),
        webhook_auth_header_name=_text(body, "webhook_auth_header_name"),
        webhook_auth_header_value=_text(body, "webhook_auth_header_value"),
    )
    start, end = options.audio_start_from or 0, options.audio_end_at
    if end is not None and start >= end:
        raise ApiError(INVALID_PARAMETER, f"audio_start_from ({start} ms) must be less than audio_end_at ({end} ms)")
    if options.webhook_url is not None:
        check_url(options.webhook_url, "webhook_url")
    if (options.webhook_auth_header_name is None) != (options.webhook_auth_header_value is None):
        raise ApiError(INVALID_PARAMETER, "webhook_auth_header_name and webhook_auth_header_value go together")
    if options.webhook_auth_header_name is not None and not _HEADER_NAME.fullmatch(options.webhook_auth_header_name):
        raise ApiError(INVALID_PARAMETER, "webhook_auth_header_name must be an HTTP header name (letters, digits and "
                                          "!#$%&'*+-.^_`|~)")
    if options.webhook_auth_header_value is not None and not _HEADER_VALUE.fullmatch(options.webhook_auth_header_value):
        raise ApiError(INVALID_PARAMETER, "webhook_auth_header_value must be printable text without line breaks")
    check_url(audio_url)
    return options, _upload_token(audio_url, store)


def _upload_token(url: str, store: JobStore) -> str | None:
    match = _UPLOAD_PATH.fullmatch(urlsplit(url).path)
    if match is None:
        return None
    if not store.has_upload(match.group(1)):
        raise ApiError(NO_SUCH_TRANSCRIPT, f"the upload {url[:200]!r} is not on this server (or it expired: "
                                           "JOB_RETENTION_HOURS); upload the file again")
    return match.group(1)


def _asks(value: object) -> bool:
    """An option asks for something unless it is null, false, zero or empty."""
    return value not in (None, False, 0, "", [], {})


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(INVALID_PARAMETER, f"{name} must be true or false (a JSON boolean)")
    return value


def _text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(INVALID_PARAMETER, f"{name} must be a string")
    return value


def _temperature(body: dict) -> float | None:
    value = body.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ApiError(INVALID_PARAMETER, "temperature must be a number from 0 to 1")
    return float(value)
