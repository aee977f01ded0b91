"""The WSGI application: every API surface on one Falcon app, with one request log and one error shape.

Each surface has its module (legacy.py: the old engine's /transcribe/url; v2.py: AssemblyAI's API;
v1.py: OpenAI's); this one adds what they share. Every request gets a uid that appears in its
answer and its one log line (a job it creates takes the same id). Every failure, whatever raised it
(our checks, Falcon's routing, a bug), answers {"code", "description", "uid"} JSON, plus the error
field each surface's official SDK reads: AssemblyAI's `error` string, OpenAI's `error` object.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Callable, Protocol

import falcon

from daemon import logs, metrics
from daemon.config import DaemonConfig
from daemon.errors import (INTERNAL_FAILURE, MALFORMED_REQUEST, NO_SUCH_ENDPOINT, UNSUPPORTED_CONTENT_TYPE,
                           ApiError)
from daemon.http import legacy, v1, v2
from daemon.http.auth import ApiKey
from daemon.http.openapi import openapi_document
from daemon.http.server import ARRIVED_KEY
from daemon.jobs.client import Jobs, WorkerPool
from daemon.jobs.store import JobStore
from engine.result import new_uid

log = logging.getLogger("async_engine.front")

_ENDPOINTS = "GET /openapi.json lists the endpoints"
# Extra fields an error body carries on a surface, for the SDK that reads it; keyed by path prefix.
_SURFACE_ERRORS: dict[str, Callable[[ApiError], dict]] = {"/v2/": v2.error_fields, "/v1/": v1.error_fields}


def create_app(config: DaemonConfig, scheduler: Jobs, store: JobStore, workers: HealthSource,
               live: WorkerPool | None = None) -> falcon.App:
    """The WSGI application; waitress serves it, tests drive it through falcon.testing.

    `scheduler` is the embedded Scheduler on one host, or an API node's SharedScheduler in shared mode;
    `workers` answers /health (the local process tree, or the worker nodes seen in Redis); `live`: the local
    process tree on one host, which OpenAI's stream=true reads a file's turns with."""
    app = falcon.App(middleware=[_RequestLog(), ApiKey(config.api_key)])
    app.req_options.strip_url_path_trailing_slash = True
    app.add_route("/health", _Health(workers))
    app.add_route("/metrics", metrics.MetricsResource(scheduler))
    app.add_route("/openapi.json", _OpenApi(openapi_document(config)))
    legacy.add_routes(app, config, scheduler)
    v2.add_routes(app, config, scheduler, store)
    v1.add_routes(app, config, scheduler, live)
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
        req.context.redecoded = 0  # windows decoded again whole (engine/decoding/window.py), set by transcribing routes
        req.context.error = None  # (code, description): never the exception, whose traceback holds the request

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        code, description = req.context.error or (None, None)
        seconds = time.monotonic() - req.context.started
        logs.request_line(req.context.uid, req.method, req.path, resp.status_code, code, req.context.audio_seconds,
                          seconds, description, req.context.redecoded)
        metrics.request_answered(req.uri_template, req.method, resp.status_code, code, seconds)


class HealthSource(Protocol):
    def health(self) -> tuple[bool, dict]:
        """(ready, body): 200 with body when ready, else 501."""


class _Health:
    def __init__(self, workers: HealthSource) -> None:
        self.workers = workers

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, body = self.workers.health()
        resp.status = 200 if ready else 501
        resp.media = body


class _OpenApi:
    def __init__(self, document: dict) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


def error_body(path: str, error: ApiError, uid: str) -> dict:
    """The JSON of an error on `path`: {code, description, uid} and the field its surface's SDK reads.

    The HTTP server uses it too, for the requests it answers before the app sees them."""
    extra = next((fields for prefix, fields in _SURFACE_ERRORS.items() if path.startswith(prefix)), None)
    return {**error.body(uid), **(extra(error) if extra else {})}


def _answer(req: falcon.Request, resp: falcon.Response, error: ApiError) -> None:
    uid = getattr(req.context, "uid", None) or new_uid()
    req.context.uid = uid
    req.context.error = (error.code, error.description)
    resp.status = error.status
    resp.media = error_body(req.path, error, uid)
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
