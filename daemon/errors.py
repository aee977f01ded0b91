"""The API's error codes: one stable number per cause, with its HTTP status and meaning.

Customers branch on `code`, never on the wording of `description`, so numbers are only ever
added. ERROR_TABLE is the single source for the front's answers, the OpenAPI document and
docs/API.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.redact import redact
from engine.errors import EngineError


@dataclass(frozen=True)
class ErrorKind:
    code: int
    status: int  # the usual HTTP status; a raise site may pick the other one documented
    name: str
    meaning: str


ERROR_TABLE: tuple[ErrorKind, ...] = (
    ErrorKind(1, 502, "download_failed",
              "audio_url could not be downloaded (DNS, refused connection, HTTP error from the origin, "
              "too many redirects). Check that the URL is reachable from the server."),
    ErrorKind(2, 504, "download_timed_out",
              "the origin of audio_url did not connect or stopped sending in time (DOWNLOAD_*_TIMEOUT)."),
    ErrorKind(3, 422, "undecodable_audio", "the downloaded file is not audio, or is corrupted or truncated."),
    ErrorKind(4, 400, "invalid_parameter",
              "a request field is missing, unknown, of the wrong type or out of range (422 when it is "
              "out of range only for this audio, e.g. audio_start_from past its end)."),
    ErrorKind(5, 422, "audio_too_long",
              "the audio to transcribe (after audio_start_from / audio_end_at) is longer than MAX_AUDIO_SECONDS."),
    ErrorKind(6, 413, "audio_too_large", "the file is larger than DOWNLOAD_MAX_BYTES."),
    ErrorKind(7, 423, "over_capacity",
              "MAX_TRANSCRIPTS_PARALLEL files are already being transcribed; retry after Retry-After seconds "
              "(429 on /v1/audio/transcriptions, which OpenAI's clients retry)."),
    ErrorKind(8, 500, "internal_failure", "an unexpected server fault; the uid identifies it in the logs."),
    ErrorKind(9, 400, "malformed_request",
              "the request is not well-formed HTTP (400; 501 for a transfer coding the server does not support), "
              "its headers are over 32 KiB (431), its body is over 64 KiB (413), or the body is not a JSON "
              "object (nested too deeply included)."),
    ErrorKind(10, 415, "unsupported_content_type",
              "the request's Content-Type is not application/json (multipart/form-data for "
              "/v1/audio/transcriptions)."),
    ErrorKind(11, 422, "mono_with_dual_channel", "dual_channel is true but the file has one channel."),
    ErrorKind(12, 422, "empty_audio", "the file holds no audio samples."),
    ErrorKind(13, 503, "worker_failure",
              "a worker process failed while transcribing and the retry failed too; retry the request."),
    ErrorKind(14, 503, "service_not_ready", "the models are loading, a worker is restarting, or the server is "
              "shutting down; retry shortly."),
    ErrorKind(15, 504, "request_timed_out", "the request waited and ran longer than REQUEST_TIMEOUT_SECONDS."),
    ErrorKind(16, 401, "unauthorized",
              "ASYNC_ENGINE_API_KEY is set and the request has neither `Authorization: Bearer <key>` nor "
              "`Authorization: <key>` with that key."),
    ErrorKind(17, 404, "no_such_endpoint", "no such path, or the method is not allowed on it (404 / 405)."),
    ErrorKind(18, 403, "address_not_allowed",
              "audio_url (or a redirect) leads to an address the server may not download from: link-local "
              "and cloud-metadata addresses by default, or per DOWNLOAD_DENY / DOWNLOAD_ALLOW."),
    ErrorKind(19, 429, "queue_full",
              "MAX_QUEUED_JOBS asynchronous jobs already wait for a slot; retry after Retry-After seconds."),
    ErrorKind(20, 404, "no_such_transcript", "no transcript (or upload) has this id on this server; it may have "
              "expired (JOB_RETENTION_HOURS)."),
    ErrorKind(21, 400, "transcript_not_completed",
              "the transcript is queued, processing, in error or deleted, so it has no export (srt, vtt, "
              "sentences, paragraphs, word search) yet."),
    ErrorKind(22, 503, "store_unreachable",
              "shared mode: Redis (REDIS_URL), which holds the jobs and their queue, cannot be reached from this "
              "node; retry after Retry-After seconds. Jobs it had accepted are kept (with Redis's appendonly)."),
)
_BY_CODE = {kind.code: kind for kind in ERROR_TABLE}

DOWNLOAD_FAILED = 1
DOWNLOAD_TIMED_OUT = 2
UNDECODABLE_AUDIO = 3
INVALID_PARAMETER = 4
AUDIO_TOO_LONG = 5
AUDIO_TOO_LARGE = 6
OVER_CAPACITY = 7
INTERNAL_FAILURE = 8
MALFORMED_REQUEST = 9
UNSUPPORTED_CONTENT_TYPE = 10
MONO_WITH_DUAL_CHANNEL = 11
EMPTY_AUDIO = 12
WORKER_FAILURE_CODE = 13
SERVICE_NOT_READY = 14
REQUEST_TIMED_OUT = 15
UNAUTHORIZED = 16
NO_SUCH_ENDPOINT = 17
ADDRESS_NOT_ALLOWED = 18
QUEUE_FULL = 19
NO_SUCH_TRANSCRIPT = 20
TRANSCRIPT_NOT_COMPLETED = 21
STORE_UNREACHABLE = 22


class ApiError(Exception):
    """A failure the client sees as {"code", "description", "uid"} with a fitting HTTP status.

    The description is redacted here, once for every raise site: it is both answered and logged.
    """

    def __init__(self, code: int, description: str, *, status: int | None = None,
                 retry_after: int | None = None, param: str | None = None) -> None:
        description = redact(description)
        super().__init__(description)
        self.code = code
        self.status = status or _BY_CODE[code].status
        self.description = description
        self.retry_after = retry_after  # seconds, sent as Retry-After (423, 429, 503)
        self.param = param  # the request field at fault, when one is (OpenAI's error names it)

    @property
    def name(self) -> str:
        return _BY_CODE[self.code].name

    def body(self, uid: str) -> dict:
        return {"code": self.code, "description": self.description, "uid": uid}


def over_capacity(limit: int, retry_after: int, status: int = 423) -> ApiError:
    """423 is the old engine's answer; OpenAI's clients retry a 429 by themselves."""
    return ApiError(
        OVER_CAPACITY,
        f"the server is already transcribing {limit} files (MAX_TRANSCRIPTS_PARALLEL); "
        f"retry in {retry_after} s or lower your concurrency",
        status=status, retry_after=retry_after,
    )


def queue_full(limit: int, retry_after: int) -> ApiError:
    return ApiError(QUEUE_FULL, f"{limit} transcripts already wait in the queue (MAX_QUEUED_JOBS); retry in "
                                f"{retry_after} s or submit fewer at once", retry_after=retry_after)


def worker_failed(reason: str) -> ApiError:
    return ApiError(WORKER_FAILURE_CODE, f"transcription failed because {reason}; retry the request")


def service_not_ready(description: str = "the server is starting or restarting a worker; retry shortly") -> ApiError:
    return ApiError(SERVICE_NOT_READY, description, retry_after=5)


def store_unreachable(reason: str) -> ApiError:
    return ApiError(STORE_UNREACHABLE, f"the job store (Redis, REDIS_URL) cannot be reached: {reason}; retry shortly",
                    retry_after=5)


def request_timed_out(timeout: float) -> ApiError:
    return ApiError(
        REQUEST_TIMED_OUT,
        f"the request did not finish within {timeout:.0f} s (REQUEST_TIMEOUT_SECONDS); "
        "send a shorter file or retry when the server is less busy",
    )


_ENGINE_CODES = {
    "audio_too_long": AUDIO_TOO_LONG,
    "undecodable_audio": UNDECODABLE_AUDIO,
    "empty_audio": EMPTY_AUDIO,
    "invalid_parameter": INVALID_PARAMETER,
    "mono_with_dual_channel": MONO_WITH_DUAL_CHANNEL,
}


def from_engine_error(exc: EngineError) -> ApiError:
    """The API error for an engine error, chosen by its stable `.code`; unknown codes are server faults."""
    code = _ENGINE_CODES.get(exc.code, INTERNAL_FAILURE)
    if code == UNDECODABLE_AUDIO:
        return ApiError(code, f"the file is not audio the server can decode: {exc.message}")
    if code == EMPTY_AUDIO:
        return ApiError(code, f"the file holds no audio: {exc.message}")
    if code == AUDIO_TOO_LONG:
        return ApiError(code, f"{exc.message} (MAX_AUDIO_SECONDS); send a shorter file, or transcribe part of it "
                              "with audio_start_from / audio_end_at")
    if code in (INVALID_PARAMETER, MONO_WITH_DUAL_CHANNEL):
        return ApiError(code, exc.message, status=422)
    return ApiError(code, f"the server could not transcribe this file: {exc.message}")
