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
from daemon.errors import NO_SUCH_TRANSCRIPT, TRANSCRIPT_NOT_COMPLETED, ApiError
from daemon.http.bodies import read_json
from daemon.http.request_models import CaptionQuery, V2ListQuery, V2TranscriptRequest, WordSearchQuery
from daemon.http.validation import parse_json, parse_query
from daemon.jobs.record import Job, Origin, Status
from daemon.jobs.client import Jobs
from daemon.jobs.store import JobStore
from engine.text import exports

_UPLOAD_PATH = re.compile(r"/v2/upload/([0-9a-f]{32})")


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
        options = parse_json(V2TranscriptRequest, read_json(req)).options()
        upload = _upload_token(options.audio_url, self.store)
        job = Job.new(Origin.V2, options, req.context.uid)
        if upload is not None:
            job = job.with_(audio=f"uploads/{upload}")
        resp.media = transcript_body(self.scheduler.enqueue(job))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_query(V2ListQuery, req.params)
        jobs = self.store.page(query.limit, before_id=query.before_id, after_id=query.after_id,
                               created_on=query.created_on, status=Status(query.status) if query.status else None)
        base = f"{req.prefix}/v2/transcript"
        kept = {k: v for k, v in query.model_dump(include={"limit", "status", "created_on"}).items() if v}
        resp.media = {
            "page_details": {
                "limit": query.limit, "result_count": len(jobs),
                "current_url": f"{base}?{req.query_string}".rstrip("?"),
                "prev_url": f"{base}?{urlencode({**kept, 'before_id': jobs[-1].id})}" if jobs else None,
                "next_url": f"{base}?{urlencode({**kept, 'after_id': jobs[0].id})}" if jobs else None,
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
            chars = parse_query(CaptionQuery, req.params).chars_per_caption
            resp.content_type = "text/plain; charset=utf-8"
            resp.text = (exports.srt if view == "srt" else exports.vtt)(result, chars)
        elif view == "sentences":
            resp.media = {"id": job.id, **exports.sentences(result)}
        elif view == "paragraphs":
            resp.media = {"id": job.id, **exports.paragraphs(result)}
        else:
            words = parse_query(WordSearchQuery, req.params).words
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
        "speaker_labels": options.speaker_labels,
        "speakers_expected": options.speakers_expected,
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


def _upload_token(url: str, store: JobStore) -> str | None:
    match = _UPLOAD_PATH.fullmatch(urlsplit(url).path)
    if match is None:
        return None
    if not store.has_upload(match.group(1)):
        raise ApiError(NO_SUCH_TRANSCRIPT, f"the upload {url[:200]!r} is not on this server (or it expired: "
                                           "JOB_RETENTION_HOURS); upload the file again")
    return match.group(1)
