"""The HTTP front: validates requests, downloads and decodes audio, and hands PCM to the job client.

Everything the customer's contract (../shared/API.md) fixes happens here: field names and
defaults, the response shapes, and errors that are always {"code", "description", "uid"} JSON,
whatever failed (our checks, Falcon's routing, or a bug). Each request gets a uid that appears
in its answer and its one log line.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import traceback

import falcon

from daemon import logs
from daemon.config import DaemonConfig
from daemon.jobs.download import fetch
from daemon.http.server import ARRIVED_KEY
from daemon.errors import (INTERNAL_FAILURE, MALFORMED_REQUEST, NO_SUCH_ENDPOINT, UNAUTHORIZED,
                           UNSUPPORTED_CONTENT_TYPE, ApiError, from_engine_error, over_capacity,
                           request_timed_out)
from daemon.jobs.client import JobClient
from daemon.http.openapi import openapi_document
from daemon.http.request import TranscribeRequest, parse_request
from engine.audio import SAMPLE_RATE, read_span
from engine.errors import EngineError
from engine.response import response_body
from engine.result import new_uid
from engine.text_format import TextOptions

log = logging.getLogger("async_engine.front")

RETRY_AFTER_SECONDS = 5  # a hint for 423: about the time a short file takes
MAX_BODY_BYTES = 64 * 1024  # the JSON body carries a URL and a few flags
_ENDPOINTS = "the endpoints are GET /health, POST /transcribe/url and GET /openapi.json"


def create_app(config: DaemonConfig, jobs: JobClient) -> falcon.App:
    """The WSGI application; waitress serves it, tests drive it through falcon.testing."""
    app = falcon.App(middleware=[_RequestLog(), _ApiKey(config.api_key)])
    app.add_route("/health", _Health(jobs))
    app.add_route("/transcribe/url", _Transcribe(config, jobs))
    app.add_route("/openapi.json", _OpenApi(openapi_document(config)))
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(falcon.HTTPError, _falcon_error)
    app.add_error_handler(ApiError, _api_error)
    return app


class _RequestLog:
    """Gives each request its uid and logs one line when it ends: uid, audio and wall seconds, outcome."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.uid = new_uid()
        arrived = req.env.get(ARRIVED_KEY)  # the server queued it until a thread was free: that counts
        req.context.started = time.monotonic() - (max(0.0, time.time() - arrived) if arrived else 0.0)
        req.context.audio_seconds = None
        req.context.error = None  # (code, description): never the exception, whose traceback holds the request

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        code, description = req.context.error or (None, None)
        logs.request_line(req.context.uid, req.method, req.path, resp.status_code, code, req.context.audio_seconds,
                          time.monotonic() - req.context.started, description)


class _ApiKey:
    """With ASYNC_ENGINE_API_KEY set, every endpoint but /health needs `Authorization: Bearer <key>`.

    /health stays open so load balancers and container runtimes can probe without the secret.
    """

    def __init__(self, key: str | None) -> None:
        self.key = key.encode() if key else None

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.key is None or req.path == "/health":
            return
        scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.key):
            return
        resp.set_header("WWW-Authenticate", 'Bearer realm="async-engine"')
        reason = "has no Authorization header" if not req.get_header("Authorization") else "has a wrong API key"
        raise ApiError(UNAUTHORIZED, f"this server needs an API key: send `Authorization: Bearer <key>`; "
                                     f"the request {reason}")


class _Health:
    def __init__(self, jobs: JobClient) -> None:
        self.jobs = jobs

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, body = self.jobs.health()
        resp.status = 200 if ready else 501
        resp.media = body


class _OpenApi:
    def __init__(self, document: dict) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


class _Transcribe:
    def __init__(self, config: DaemonConfig, jobs: JobClient) -> None:
        self.config = config
        self.jobs = jobs
        self.slots = threading.BoundedSemaphore(config.max_transcripts_parallel)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        request = parse_request(_read_json(req))
        deadline = req.context.started + self.config.request_timeout_seconds
        self._admit(deadline)
        try:
            resp.media = self._transcribe(req.context, request, deadline)
        finally:
            self.slots.release()

    def _admit(self, deadline: float) -> None:
        """MAX_TRANSCRIPTS_PARALLEL slots: refuse at once (423) or wait, as REJECT_OVER_PARALLEL says."""
        if self.config.reject_over_parallel:
            if not self.slots.acquire(blocking=False):
                raise over_capacity(self.config.max_transcripts_parallel, RETRY_AFTER_SECONDS)
        elif not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise request_timed_out(self.config.request_timeout_seconds)

    def _transcribe(self, context: falcon.Context, request: TranscribeRequest, deadline: float) -> dict:
        data = fetch(request.audio_url, self.config.download, deadline)
        try:
            # Memory follows what is transcribed: only the span asked for, only the channels kept, and
            # never more than MAX_AUDIO_SECONDS of it, whatever the file's header claims. The CLI
            # decodes the same way, so a file transcribes the same over HTTP as in-process.
            pcm, offset_ms = read_span(data, dual_channel=request.dual_channel, start_ms=request.audio_start_from,
                                       end_ms=request.audio_end_at, max_seconds=self.config.max_audio_seconds)
        except EngineError as exc:
            raise from_engine_error(exc) from None
        finally:
            del data
        duration = pcm.shape[1] / SAMPLE_RATE
        context.audio_seconds = duration
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise request_timed_out(self.config.request_timeout_seconds)
        channels = self.jobs.submit(context.uid, pcm, remaining)
        del pcm
        enabled = self.config.enable_auto_punctuation
        options = TextOptions(written=request.format_text, punctuation=request.punctuate and enabled,
                              casing=enabled)
        return response_body(channels, duration, offset_ms, options, request.dual_channel, context.uid)


def _read_json(req: falcon.Request) -> object:
    media_type = (req.content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(UNSUPPORTED_CONTENT_TYPE, f"Content-Type must be application/json; got {req.content_type!r}")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(MALFORMED_REQUEST, f"the request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(MALFORMED_REQUEST, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(MALFORMED_REQUEST, "the request body is not valid JSON: it is nested too deeply") from None


def _answer(req: falcon.Request, resp: falcon.Response, error: ApiError) -> None:
    uid = getattr(req.context, "uid", None) or new_uid()
    req.context.uid = uid
    req.context.error = (error.code, error.description)
    resp.status = error.status
    resp.media = error.body(uid)
    if error.retry_after is not None:
        resp.set_header("Retry-After", str(error.retry_after))


def _release(error: BaseException) -> None:
    """Let go of what the failed request's frames hold (a downloaded file, decoded audio) now.

    An exception raised inside an `except ... as exc:` block forms a cycle (frame -> exc ->
    traceback -> frame) that only the cyclic garbage collector frees, whenever it next runs:
    a refused 500 MB download stayed in memory until then. Clearing the finished frames of the
    whole exception chain frees their locals at once.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]


def _api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict) -> None:
    _answer(req, resp, ex)
    _release(ex)


def _falcon_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict) -> None:
    """Falcon's own errors (unknown path, wrong method, ...) in our JSON shape, keeping headers like Allow."""
    status = ex.status_code
    if status == 404:
        code, description = NO_SUCH_ENDPOINT, f"there is no {req.path}; {_ENDPOINTS}"
    elif status == 405:
        code, description = NO_SUCH_ENDPOINT, f"{req.path} does not accept {req.method}; {_ENDPOINTS}"
    elif status == 415:
        code, description = UNSUPPORTED_CONTENT_TYPE, ex.description or ex.title
    elif status < 500:
        code, description = MALFORMED_REQUEST, ex.description or ex.title
    else:
        code, description = INTERNAL_FAILURE, ex.description or ex.title
    _answer(req, resp, ApiError(code, description, status=status))
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)
    _release(ex)


def _unexpected_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    uid = getattr(req.context, "uid", None) or new_uid()
    req.context.uid = uid
    log.error("uid=%s internal failure on %s %s", uid, req.method, req.path, exc_info=ex)
    _answer(req, resp, ApiError(INTERNAL_FAILURE, f"an unexpected server error occurred; report uid {uid} "
                                                  "to the server's operator"))
    _release(ex)
