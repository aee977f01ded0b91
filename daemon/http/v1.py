"""OpenAI's transcription API: POST /v1/audio/transcriptions and GET /v1/models.

The official `openai` client with base_url pointed here works unchanged: a multipart form in, the
transcript in the response_format asked for (json, text, srt, vtt, verbose_json with word and
segment timestamps) out. The call is synchronous, a job like /transcribe/url's; over capacity it
answers 429 with Retry-After, which OpenAI's clients retry by themselves. Errors carry OpenAI's
{"error": {message, type, param, code}} besides {code, description, uid}.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Iterator

import falcon

from daemon.config import DaemonConfig
from daemon.errors import AUDIO_TOO_LARGE, INVALID_PARAMETER, UNSUPPORTED_CONTENT_TYPE, ApiError, from_engine_error
from daemon.jobs.client import Jobs, WorkerPool
from daemon.jobs.record import Job, Options, Origin
from engine.audio.files import SAMPLE_RATE, read_span
from daemon.jobs.runner import decode_options
from engine.errors import EngineError
from daemon.http.request_models import V1TranscriptionForm
from daemon.http.validation import names, parse_form
from engine.text import exports
from engine.text.format import TextOptions, format_words

ALIAS = "whisper-1"  # the name OpenAI's examples and most clients send
_CHUNK = 1 << 20
_NAMES = names(V1TranscriptionForm)


def error_fields(error: ApiError) -> dict:
    """OpenAI's error body; its client raises BadRequestError, RateLimitError, ... with the message."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    if error.status == 401:
        kind = "authentication_error"
    elif error.status == 429:
        kind = "rate_limit_error"
    return {"error": {"message": error.description, "type": kind, "param": error.param, "code": error.name}}


def add_routes(app: falcon.App, config: DaemonConfig, scheduler: Jobs, live: WorkerPool | None = None) -> None:
    """`live`: this host's workers, where the front has them (one host), for stream=true's turns as they are
    decoded; without them (an API node) the events come from the finished job."""
    app.add_route("/v1/audio/transcriptions", _Transcriptions(config, scheduler, live))
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
    def __init__(self, config: DaemonConfig, scheduler: Jobs, live: WorkerPool | None) -> None:
        """`live` is given only on one host, where `scheduler` is the embedded Scheduler (its take_slot)."""
        self.config = config
        self.scheduler = scheduler
        self.live = live
        self.models = (config.engine.model, ALIAS)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if (req.content_type or "").split(";")[0].strip().lower() != "multipart/form-data":
            raise ApiError(UNSUPPORTED_CONTENT_TYPE, "Content-Type must be multipart/form-data (a form with the "
                                                     f"audio as `file`); got {req.content_type!r}")
        form = parse_form(V1TranscriptionForm, self._read_form(req), models=self.models)
        options, response_format, granularities, audio = form.options(), form.response_format, form.granularities, \
            form.file
        stream = form.stream
        del form  # the audio is released as soon as the job has it
        deadline = req.context.started + self.config.request_timeout_seconds
        if stream and self.live is not None:  # one host: `scheduler` is the embedded Scheduler
            self._stream_turns(req, resp, options, audio, deadline)
            return
        job = self.scheduler.run_now(Job.new(Origin.V1, options, req.context.uid), deadline, audio, busy_status=429)
        del audio
        result = job.result
        req.context.audio_seconds = result["duration"]
        req.context.redecoded = job.redecoded
        if stream:  # an API node: the events of the finished transcript, a delta per segment
            segments = exports.openai_verbose(result, words=False, segments=True)["segments"]
            _events(resp, iter([f"{' ' if i else ''}{s['text'].strip()}" for i, s in enumerate(segments)]))
        elif response_format == "json":
            resp.media = exports.openai_json(result)
        elif response_format == "diarized_json":
            resp.media = exports.openai_diarized(result)
        elif response_format == "verbose_json":
            resp.media = exports.openai_verbose(result, words="word" in granularities,
                                                segments="segment" in granularities or not granularities)
        else:
            resp.content_type = "text/plain; charset=utf-8"
            resp.text = exports.openai_text(result) if response_format == "text" else \
                (exports.srt if response_format == "srt" else exports.vtt)(result, per_segment=True)

    def _stream_turns(self, req: falcon.Request, resp: falcon.Response, options: Options, audio: bytearray,
                      deadline: float) -> None:
        """stream=true on a host with workers: the file read as a live stream's turns (engine/streaming/turns.py),
        decoded four at a time by the same workers, each turn's text an event as soon as it and those before it
        are done. Not a job: nothing of it is stored, and it lives as long as its connection."""
        from engine.streaming.turns import recording_turns

        try:
            pcm, _ = read_span(audio, max_seconds=self.config.max_audio_seconds)
        except EngineError as exc:
            raise from_engine_error(exc) from None
        del audio
        req.context.audio_seconds = pcm.shape[1] / SAMPLE_RATE
        release = self.scheduler.take_slot(deadline, busy_status=429)
        how = decode_options(options)
        uid, live, counter = req.context.uid, self.live, itertools.count()
        text = TextOptions(punctuation=self.config.enable_auto_punctuation, casing=self.config.enable_auto_punctuation)

        def decode(turn_audio):
            remaining = max(1.0, deadline - time.monotonic())
            return live.submit(f"{uid}-{next(counter)}", turn_audio[None, :], remaining, how).channels[0]

        def texts():
            try:
                first = True
                for turn in recording_turns(pcm[0], decode):
                    words = format_words(turn.words, text)
                    if words:
                        yield ("" if first else " ") + " ".join(w.text for w in words)
                        first = False
            finally:
                release()

        _events(resp, texts())

    def _read_form(self, req: falcon.Request) -> dict[str, list]:
        """The form's fields, every value of each in order; the audio file read (and bounded) as it comes."""
        fields: dict[str, list] = {}
        for part in req.get_media():
            name = part.name or ""
            if name not in _NAMES:
                return {**fields, name: [""]}  # refused as unknown, before reading what it holds
            value = self._read_file(part.stream) if name == "file" else part.get_text() or ""
            fields.setdefault(name, []).append(value)
        return fields

    def _read_file(self, stream) -> bytearray:
        limit = self.config.download.max_bytes
        data = bytearray()
        while chunk := stream.read(_CHUNK):
            if len(data) + len(chunk) > limit:
                raise ApiError(AUDIO_TOO_LARGE, f"the file is larger than the {limit} bytes allowed "
                                                "(DOWNLOAD_MAX_BYTES)")
            data += chunk
        return data


def _events(resp: falcon.Response, deltas: Iterator[str]) -> None:
    """OpenAI's transcription events, as its SDK reads them with stream=True: a transcript.text.delta per piece
    of text, then transcript.text.done with the whole. A failure after the first event can no longer change the
    status: it ends the events with an `error` event (the SDK raises APIError on it)."""

    def events() -> Iterator[bytes]:
        whole = []
        try:
            for delta in deltas:
                whole.append(delta)
                yield _event({"type": "transcript.text.delta", "delta": delta})
        except ApiError as error:
            yield _event({"error": error_fields(error)["error"]})
            return
        yield _event({"type": "transcript.text.done", "text": "".join(whole)})

    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-cache")
    resp.stream = events()


def _event(body: dict) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


def _invalid(param: str, description: str, status: int | None = None) -> ApiError:
    return ApiError(INVALID_PARAMETER, description, status=status, param=param)
