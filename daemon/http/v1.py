"""OpenAI's transcription API: POST /v1/audio/transcriptions and GET /v1/models.

The official `openai` client with base_url pointed here works unchanged: a multipart form in, the
transcript in the response_format asked for (json, text, srt, vtt, verbose_json with word and
segment timestamps) out. The call is synchronous, a job like /transcribe/url's; over capacity it
answers 429 with Retry-After, which OpenAI's clients retry by themselves. Errors carry OpenAI's
{"error": {message, type, param, code}} besides {code, description, uid}.
"""

from __future__ import annotations

import time

import falcon

from daemon.config import DaemonConfig
from daemon.errors import AUDIO_TOO_LARGE, INVALID_PARAMETER, UNSUPPORTED_CONTENT_TYPE, ApiError
from daemon.jobs.record import Job, Options, Origin
from daemon.jobs.client import Jobs
from daemon.http.request import word_boost_fields
from engine.text import exports

ALIAS = "whisper-1"  # the name OpenAI's examples and most clients send
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
_ENGLISH = ("en", "english", "en-us", "en-gb", "en_us", "en_gb")
# word_boost[] and boost_param are ours (the OpenAI SDK sends them with extra_body={"word_boost": [...]}).
_FIELDS = {"file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
           "timestamp_granularities", "word_boost[]", "word_boost", "boost_param"}
_UNSUPPORTED = {"stream", "include[]", "include", "chunking_strategy", "known_speaker_names[]",
                "known_speaker_references[]"}
_CHUNK = 1 << 20


def error_fields(error: ApiError) -> dict:
    """OpenAI's error body; its client raises BadRequestError, RateLimitError, ... with the message."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    if error.status == 401:
        kind = "authentication_error"
    elif error.status == 429:
        kind = "rate_limit_error"
    return {"error": {"message": error.description, "type": kind, "param": error.param, "code": error.name}}


def add_routes(app: falcon.App, config: DaemonConfig, scheduler: Jobs) -> None:
    app.add_route("/v1/audio/transcriptions", _Transcriptions(config, scheduler))
    app.add_route("/v1/models", _Models(config.engine.model))
    app.add_route("/v1/models/{model}", _Models(config.engine.model))


class _Models:
    def __init__(self, served: str) -> None:
        now = int(time.time())
        self.models = {name: {"id": name, "object": "model", "created": now, "owned_by": "async-engine"}
                       for name in (served, ALIAS)}

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str | None = None) -> None:
        if model is None:
            resp.media = {"object": "list", "data": list(self.models.values())}
        elif model in self.models:
            resp.media = self.models[model]
        else:
            raise _invalid("model", f"the model {model[:60]!r} is not served here; the models are "
                                    f"{', '.join(self.models)}", status=404)


class _Transcriptions:
    def __init__(self, config: DaemonConfig, scheduler: Jobs) -> None:
        self.config = config
        self.scheduler = scheduler
        self.models = (config.engine.model, ALIAS)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if (req.content_type or "").split(";")[0].strip().lower() != "multipart/form-data":
            raise ApiError(UNSUPPORTED_CONTENT_TYPE, "Content-Type must be multipart/form-data (a form with the "
                                                     f"audio as `file`); got {req.content_type!r}")
        fields, audio = self._read_form(req)
        response_format = fields.get("response_format", ["json"])[-1]
        if response_format not in FORMATS:
            raise _invalid("response_format", f"response_format must be one of {', '.join(FORMATS)}; "
                                              f"got {response_format[:40]!r}")
        granularities = set(fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", []))
        if granularities - {"word", "segment"}:
            raise _invalid("timestamp_granularities[]", "timestamp_granularities[] takes word and segment")
        if granularities and response_format != "verbose_json":
            raise _invalid("timestamp_granularities[]", "timestamp_granularities[] needs response_format verbose_json")
        word_boost, boost_param = word_boost_fields(fields.get("word_boost[]", []) + fields.get("word_boost", []),
                                                    fields.get("boost_param", [None])[-1])
        options = Options(prompt=fields.get("prompt", [None])[-1], temperature=self._temperature(fields),
                          word_boost=word_boost, boost_param=boost_param)
        deadline = req.context.started + self.config.request_timeout_seconds
        job = self.scheduler.run_now(Job.new(Origin.V1, options, req.context.uid), deadline, audio, busy_status=429)
        del audio
        result = job.result
        req.context.audio_seconds = result["duration"]
        req.context.redecoded = job.redecoded
        if response_format == "json":
            resp.media = exports.openai_json(result)
        elif response_format == "verbose_json":
            resp.media = exports.openai_verbose(result, words="word" in granularities,
                                                segments="segment" in granularities or not granularities)
        else:
            resp.content_type = "text/plain; charset=utf-8"
            resp.text = exports.openai_text(result) if response_format == "text" else \
                (exports.srt if response_format == "srt" else exports.vtt)(result, per_segment=True)

    def _read_form(self, req: falcon.Request) -> tuple[dict[str, list[str]], bytearray]:
        """The form's text fields (every value of each) and the audio file, checked as they come."""
        fields: dict[str, list[str]] = {}
        audio: bytearray | None = None
        for part in req.get_media():
            name = part.name or ""
            if name in _UNSUPPORTED:
                if (part.get_text() or "").strip().lower() in ("", "false", "0", "null", "none"):
                    continue  # it asks for nothing (the SDK sends stream=false when a caller passes stream=False)
                raise _invalid(name, f"{name} is not supported by this server; leave it out")
            if name not in _FIELDS:
                raise _invalid(name, f"unknown form field {name[:60]!r}; the fields are file, model, language, "
                                     "prompt, response_format, temperature, timestamp_granularities[], "
                                     "word_boost[], boost_param")
            if name == "file":
                audio = self._read_file(part.stream)
            else:
                fields.setdefault(name, []).append(part.get_text() or "")
        if audio is None:
            raise _invalid("file", "file is required: the audio, as a file field of the form")
        model = fields.get("model", [""])[-1]
        if model not in self.models:
            raise _invalid("model", f"model must be one of {', '.join(self.models)}; got {model[:60]!r}")
        language = fields.get("language", [None])[-1]
        if language and language.lower() not in _ENGLISH:
            raise _invalid("language", f"language {language[:20]!r} is not supported: this server transcribes "
                                       "English (en)")
        return fields, audio

    def _read_file(self, stream) -> bytearray:
        limit = self.config.download.max_bytes
        data = bytearray()
        while chunk := stream.read(_CHUNK):
            if len(data) + len(chunk) > limit:
                raise ApiError(AUDIO_TOO_LARGE, f"the file is larger than the {limit} bytes allowed "
                                                "(DOWNLOAD_MAX_BYTES)")
            data += chunk
        return data

    @staticmethod
    def _temperature(fields: dict[str, list[str]]) -> float | None:
        raw = fields.get("temperature", [None])[-1]
        if raw is None or raw == "":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise _invalid("temperature", f"temperature must be a number from 0 to 1; got {raw[:20]!r}") from None
        if not 0 <= value <= 1:
            raise _invalid("temperature", f"temperature must be a number from 0 to 1; got {raw[:20]!r}")
        return value


def _invalid(param: str, description: str, status: int | None = None) -> ApiError:
    return ApiError(INVALID_PARAMETER, description, status=status, param=param)
