"""GET /openapi.json against the app it describes, in process (no daemon, stand-in workers).

Every route of the Falcon app is documented with every method it answers; the document is valid
OpenAPI 3.1; it names every error code; the request fields it lists are the ones the parsers take;
and real answers of every operation (successes and errors) match the schema of their status.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Iterator

import falcon
import numpy as np
import pytest
import soundfile as sf
from falcon import testing
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from urllib3.filepost import encode_multipart_formdata

from daemon.config import DaemonConfig
from daemon.errors import ERROR_TABLE, NO_SUCH_ENDPOINT
from daemon.http import request_models, v1
from daemon.http.app import create_app
from daemon.http.openapi import openapi_document
from daemon.http.validation import names
from daemon.jobs.client import Transcribed
from daemon.jobs.scheduler import Scheduler
from daemon.jobs.sqlite_store import SqliteJobStore
from daemon_support import audio_server
from engine.result import Word

KEY = "k3y-0123456789abcdef"
RATE = 16000
_PARAMETER = re.compile(r"\{[^/}]+\}")


class Workers:
    """Stand-in workers: each channel says "Hello, world." (as much as the file has channels)."""

    def submit(self, uid: str, pcm: np.ndarray, timeout: float, options=None) -> Transcribed:
        return Transcribed([[Word("Hello,", 0, 440, 0.9), Word("world.", 500, 900, 0.8)] for _ in range(pcm.shape[0])])

    def health(self) -> tuple[bool, dict]:
        return True, {"status": "ok", "workers": [{"name": "inference-0", "kind": "inference", "state": "ready",
                                                   "pid": 1, "windows": 0, "heartbeat_age_s": 0.1}]}


def _config(tmp_path: Path, **env: str) -> DaemonConfig:
    return DaemonConfig.from_env({"ASYNC_ENGINE_DEVICES": "cpu", "ASYNC_ENGINE_DATA_DIR": str(tmp_path), **env})


@pytest.fixture()
def served(tmp_path) -> Iterator[tuple[falcon.App, DaemonConfig]]:
    """The app over a job store of its own, and its configuration."""
    config = _config(tmp_path)
    store = SqliteJobStore(config.data_dir)
    workers = Workers()
    yield create_app(config, Scheduler(config, store, workers), store, workers), config
    store.close()


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("openapi-audio")
    tone = (0.1 * np.sin(np.arange(2 * RATE) * 2 * np.pi * 440 / RATE)).astype(np.float32)
    sf.write(root / "stereo.wav", np.stack([tone, tone * 0.5], axis=1), RATE)
    with audio_server(root) as url:
        yield url


def _routes(app: falcon.App) -> dict[str, set[str]]:
    """The app's URI templates and the methods each resource answers (Falcon's default OPTIONS left out)."""
    routes: dict[str, set[str]] = {}
    pending = list(app._router._roots)
    while pending:
        node = pending.pop()
        pending += node.children
        if node.resource is not None:
            routes[node.uri_template] = {method for method in falcon.COMBINED_METHODS
                                         if hasattr(node.resource, f"on_{method.lower()}")}
    return routes


def _operations(document: dict) -> dict[str, set[str]]:
    return {path: {key.upper() for key in item if key != "parameters"} for path, item in document["paths"].items()}


def _route_of(path: str, routes: dict[str, set[str]]) -> str:
    """The one Falcon template that serves a documented path (/v2/transcript/{job_id}/srt: .../{job_id}/{view})."""
    matching = [t for t in routes if re.fullmatch(_PARAMETER.sub("[^/]+", t), path)]
    assert len(matching) == 1, f"{path} is served by {matching or 'no route'}"
    return matching[0]


def test_every_route_is_documented_with_every_method(served):
    app, config = served
    routes = _routes(app)
    operations = _operations(openapi_document(config))
    documented: set[str] = set()
    for path, methods in operations.items():
        route = _route_of(path, routes)
        documented.add(route)
        assert methods == routes[route], f"{path} documents {sorted(methods)}; {route} answers {sorted(routes[route])}"
    assert documented == set(routes), f"routes without documentation: {sorted(set(routes) - documented)}"


def test_every_documented_operation_exists(served):
    """Each documented path, its parameters filled in, reaches a handler: never 'no such endpoint'."""
    app, config = served
    client = testing.TestClient(app)
    for path, methods in _operations(openapi_document(config)).items():
        for method in methods:
            result = client.simulate_request(method, _PARAMETER.sub("x", path), body=b"")
            assert result.status_code not in (404, 405) or result.json["code"] != NO_SUCH_ENDPOINT, (method, path)


@pytest.mark.parametrize("env", [{}, {"ASYNC_ENGINE_API_KEY": KEY, "REJECT_OVER_PARALLEL": "False"}],
                         ids=["defaults", "key-and-waiting"])
def test_the_document_is_valid_openapi_3_1(tmp_path, env):
    document = openapi_document(_config(tmp_path, **env))
    assert document["openapi"] == "3.1.0"
    validate(document)  # the OpenAPI 3.1 schema, and every $ref resolves
    json.dumps(document)  # served as JSON


def test_every_error_code_is_documented(tmp_path):
    """With every optional part on: an API key, and shared mode (its Redis outage answer, code 22)."""
    document = openapi_document(_config(tmp_path, ASYNC_ENGINE_API_KEY=KEY, REDIS_URL="redis://127.0.0.1:6379/0"))
    error = document["components"]["schemas"]["Error"]["properties"]["code"]
    assert error["enum"] == [kind.code for kind in ERROR_TABLE]
    operations = json.dumps(document["paths"])
    for kind in ERROR_TABLE:
        assert f"| {kind.code} | {kind.status} | {kind.name} |" in document["info"]["description"], kind
        if kind.code != NO_SUCH_ENDPOINT:  # answered for paths and methods that are not in the document
            assert f"code {kind.code} ({kind.name})" in operations, f"no operation answers code {kind.code}"


@pytest.mark.parametrize("model", [request_models.TranscribeRequest, request_models.V2TranscriptRequest,
                                   request_models.V1TranscriptionForm], ids=lambda model: model.__name__)
def test_request_schemas_are_the_validating_models(tmp_path, model):
    """The document lists exactly the fields the parser takes (the form's bracketless
    timestamp_granularities is taken, not advertised) and refuses any other."""
    schema = openapi_document(_config(tmp_path))["components"]["schemas"][model.__name__]
    assert set(schema["properties"]) == names(model) - model.unsupported - {"timestamp_granularities"}
    assert schema["additionalProperties"] is False


def test_security_takes_both_spellings_of_the_key(tmp_path):
    open_document = openapi_document(_config(tmp_path))
    assert "security" not in open_document and "securitySchemes" not in open_document["components"]
    assert "401" not in open_document["paths"]["/v2/transcript"]["post"]["responses"]
    document = openapi_document(_config(tmp_path, ASYNC_ENGINE_API_KEY=KEY))
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "Authorization"}
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"apiKey": []}, {"bearer": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "401" not in document["paths"]["/health"]["get"]["responses"]
    assert "401" in document["paths"]["/v2/transcript"]["post"]["responses"]


@pytest.mark.parametrize(("variable", "value", "path", "method"), [
    ("MAX_TRANSCRIPTS_PARALLEL", "13", "/transcribe/url", "post"),
    ("REQUEST_TIMEOUT_SECONDS", "1234", "/v1/audio/transcriptions", "post"),
    ("MAX_AUDIO_SECONDS", "4321", "/v2/transcript", "post"),
    ("DOWNLOAD_MAX_BYTES", "987654", "/v2/upload", "post"),
    ("MAX_QUEUED_JOBS", "77", "/v2/transcript", "post"),
    ("JOB_RETENTION_HOURS", "36", "/v2/transcript/{job_id}", "get"),
])
def test_limits_appear_where_they_apply(tmp_path, variable, value, path, method):
    operation = json.dumps(openapi_document(_config(tmp_path, **{variable: value}))["paths"][path][method])
    assert value in operation and variable in operation


def test_over_capacity_follows_reject_over_parallel(tmp_path):
    rejecting = openapi_document(_config(tmp_path))["paths"]
    waiting = openapi_document(_config(tmp_path, REJECT_OVER_PARALLEL="False"))["paths"]
    assert "423" in rejecting["/transcribe/url"]["post"]["responses"]
    assert "429" in rejecting["/v1/audio/transcriptions"]["post"]["responses"]
    assert "423" not in waiting["/transcribe/url"]["post"]["responses"]
    assert "429" not in waiting["/v1/audio/transcriptions"]["post"]["responses"]


# --- real answers against the document --------------------------------------------------------------------------

class Checked:
    """A test client whose every answer must be documented: its status, its content type, its body's schema."""

    def __init__(self, app: falcon.App, document: dict) -> None:
        self.client = testing.TestClient(app)
        self.document = document

    def __call__(self, method: str, template: str, status: int, fill: dict | None = None,
                 **kwargs) -> testing.Result:
        """Request the template with its path parameters filled in; kwargs go to Falcon (params: the query)."""
        path = template.format(**fill) if fill else template
        result = self.client.simulate_request(method, path, **kwargs)
        assert result.status_code == status, (method, path, result.text)
        responses = self.document["paths"][template][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, which it does not document"
        response = self._resolve(responses[str(status)])
        media = result.headers["content-type"].split(";")[0].strip()
        assert media in response["content"], f"{method} {template} {status} answered {media}"
        if media == "application/json":
            schema = {**response["content"][media]["schema"], "components": self.document["components"]}
            errors = [e.message for e in OAS31Validator(schema).iter_errors(result.json)]
            assert not errors, (method, path, status, errors, result.json)
        return result

    def _resolve(self, item: dict) -> dict:
        if "$ref" not in item:
            return item
        *_, kind, name = item["$ref"].split("/")
        return self.document["components"][kind][name]


def _wav(channels: int) -> bytes:
    tone = (0.1 * np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE)).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, np.stack([tone] * channels, axis=1), RATE, format="WAV")
    return out.getvalue()


def _form(fields: list[tuple[str, object]]) -> dict:
    body, content_type = encode_multipart_formdata(fields)
    return {"body": body, "headers": {"Content-Type": content_type}}


def test_answers_match_the_document(served, origin):
    app, config = served
    call = Checked(app, openapi_document(config))
    call("GET", "/health", 200)
    call("GET", "/openapi.json", 200)

    legacy = call("POST", "/transcribe/url", 200, json={"audio_url": f"{origin}/stereo.wav", "dual_channel": True})
    call("POST", "/transcribe/url", 400, json={"audio_url": "ftp://x/a.wav"})
    call("POST", "/transcribe/url", 415, body="{}", headers={"Content-Type": "text/plain"})

    audio = ("file", ("a.wav", _wav(1), "audio/wav"))
    for response_format in request_models.FORMATS:
        call("POST", "/v1/audio/transcriptions", 200, **_form([
            audio, ("model", v1.ALIAS), ("response_format", response_format),
            *([("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]
              if response_format == "verbose_json" else [])]))
    call("POST", "/v1/audio/transcriptions", 400, **_form([audio, ("model", "whisper-9")]))
    call("POST", "/v1/audio/transcriptions", 415, json={"model": v1.ALIAS})
    call("GET", "/v1/models", 200)
    call("GET", "/v1/models/{model}", 200, {"model": config.engine.model})
    call("GET", "/v1/models/{model}", 404, {"model": "gpt-9"})

    page = call("GET", "/v2/transcript", 200, params={"limit": "10"}).json
    assert len(page["transcripts"]) == 1 + len(request_models.FORMATS)  # every surface's jobs, v1's without an audio_url
    call("GET", "/v2/transcript", 400, params={"limit": "0"})
    done = {"job_id": legacy.json["uid"]}
    call("GET", "/v2/transcript/{job_id}", 200, done)
    for view in ("srt", "vtt", "sentences", "paragraphs"):
        call("GET", f"/v2/transcript/{{job_id}}/{view}", 200, done)
    call("GET", "/v2/transcript/{job_id}/srt", 400, done, params={"chars_per_caption": "0"})
    call("GET", "/v2/transcript/{job_id}/word-search", 200, done, params={"words": "hello,world,absent"})
    call("GET", "/v2/transcript/{job_id}/word-search", 400, done)
    call("GET", "/v2/transcript/{job_id}/paragraphs", 404, {"job_id": "t_nope"})

    upload_url = call("POST", "/v2/upload", 200, body=_wav(2),
                      headers={"Content-Type": "application/octet-stream"}).json["upload_url"]
    queued = call("POST", "/v2/transcript", 200, json={"audio_url": upload_url, "dual_channel": True,
                                                       "speaker_labels": False}).json
    assert queued["status"] == "queued"  # the scheduler is not started here: it stays queued
    call("POST", "/v2/transcript", 400, json={"audio_url": upload_url, "redact_pii": True})
    call("POST", "/v2/transcript", 404, json={"audio_url": "http://h/v2/upload/" + "0" * 32})
    call("GET", "/v2/transcript/{job_id}/sentences", 400, {"job_id": queued["id"]})
    call("DELETE", "/v2/transcript/{job_id}", 200, {"job_id": queued["id"]})
    call("DELETE", "/v2/transcript/{job_id}", 200, done)
    call("GET", "/v2/transcript/{job_id}", 200, done)


def test_unauthorized_answers_match_the_document(tmp_path):
    config = _config(tmp_path, ASYNC_ENGINE_API_KEY=KEY)
    store = SqliteJobStore(config.data_dir)
    call = Checked(create_app(config, Scheduler(config, store, Workers()), store, Workers()), openapi_document(config))
    try:
        for method, path in (("GET", "/openapi.json"), ("POST", "/transcribe/url"), ("GET", "/v2/transcript"),
                             ("GET", "/v1/models")):
            call(method, path, 401)
        call("GET", "/v1/models", 200, headers={"Authorization": f"Bearer {KEY}"})
        call("GET", "/v2/transcript", 200, headers={"Authorization": KEY})
        call("GET", "/health", 200)
    finally:
        store.close()
