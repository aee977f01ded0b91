"""The request models and the one mapping of their errors to the API's (in process, no daemon).

The daemon tests (test_bad_input, test_jobs_bad_input, test_hostile) hold the answers over real HTTP;
these hold the rules themselves, for every field the models declare, so that a field added to a
model is checked here without a new row: strict JSON types, null where null means 'not given', the
order in which faults are answered, and messages that name the field and what it takes.
"""

from __future__ import annotations

import pytest

from daemon.errors import INVALID_PARAMETER, MALFORMED_REQUEST, ApiError
from daemon.http.request_models import (CaptionQuery, TranscribeRequest, V1TranscriptionForm, V2ListQuery,
                                        V2TranscriptRequest, WordSearchQuery)
from daemon.http.validation import names, parse_form, parse_json, parse_query
from daemon.jobs.record import Options

URL = "http://127.0.0.1:9/a.wav"
MODELS = {"models": ("tiny.en", "whisper-1")}
# A value of each JSON type; a field takes values of one type (or null), so the others must be refused.
SAMPLES = {"string": "x", "boolean": True, "integer": 7, "number": 0.5, "array": ["x"], "object": {"a": 1}}


def _refused(call, *mentions: str, param: object = ...) -> ApiError:
    with pytest.raises(ApiError) as raised:
        call()
    error = raised.value
    assert (error.code, error.status) == (INVALID_PARAMETER, 400), error.description
    for mention in mentions:
        assert mention in error.description, (mention, error.description)
    if param is not ...:
        assert error.param == param
    return error


def _types(field: dict) -> set[str]:
    """The JSON types a field's schema takes (number takes integers too)."""
    options = field.get("anyOf", [field])
    kinds = {option["type"] for option in options if "type" in option}
    return kinds | ({"integer"} if "number" in kinds else set())


@pytest.mark.parametrize("model", [TranscribeRequest, V2TranscriptRequest], ids=lambda m: m.__name__)
def test_every_field_refuses_every_other_json_type(model):
    """No "1" for 1, no 1 for true, no "true" for true: the schema's type is the only one accepted."""
    for name, field in model.model_json_schema()["properties"].items():
        for kind, value in SAMPLES.items():
            if kind in _types(field):
                continue
            error = _refused(lambda: parse_json(model, {"audio_url": URL, name: value}), name)
            assert error.param == name or name in error.description, (name, kind, error.description)


def test_a_full_body_becomes_the_jobs_options():
    body = {"audio_url": URL, "dual_channel": True, "format_text": False, "punctuate": False,
            "audio_start_from": 1000, "audio_end_at": 2000, "word_boost": [" invoice  number ", "", "SKU"],
            "boost_param": "high"}
    assert parse_json(TranscribeRequest, body).options() == Options(
        audio_url=URL, dual_channel=True, format_text=False, punctuate=False, audio_start_from=1000,
        audio_end_at=2000, word_boost=("invoice number", "SKU"), boost_param="high")
    v2 = {**body, "language_code": "EN_us", "prompt": "Acme", "temperature": 0, "webhook_url": URL,
          "webhook_auth_header_name": "X-Key", "webhook_auth_header_value": "s3cret"}
    assert parse_json(V2TranscriptRequest, v2).options() == Options(
        audio_url=URL, dual_channel=True, format_text=False, punctuate=False, audio_start_from=1000,
        audio_end_at=2000, word_boost=("invoice number", "SKU"), boost_param="high", prompt="Acme",
        temperature=0.0, webhook_url=URL, webhook_auth_header_name="X-Key", webhook_auth_header_value="s3cret")


def test_null_is_not_given_on_v2_only():
    """AssemblyAI's SDKs send null for every option not set: each keeps its default. The old API refuses
    null for its booleans, as it always has."""
    optional = set(V2TranscriptRequest.model_fields) - {"audio_url"}
    assert parse_json(V2TranscriptRequest, {"audio_url": URL, **dict.fromkeys(optional)}).options() == \
        Options(audio_url=URL)
    for name in ("dual_channel", "format_text", "punctuate"):
        _refused(lambda: parse_json(TranscribeRequest, {"audio_url": URL, name: None}),
                 f"{name} must be true or false (a JSON boolean); got a JSON null", param=name)
    assert parse_json(TranscribeRequest, {"audio_url": URL, "audio_start_from": None, "word_boost": None,
                                          "boost_param": None}).options() == Options(audio_url=URL)


def test_unsupported_options_are_refused_only_when_they_ask_for_something():
    for name in sorted(V2TranscriptRequest.unsupported):
        for nothing in (None, False, 0, "", [], {}):
            assert parse_json(V2TranscriptRequest, {"audio_url": URL, name: nothing}).options() == Options(
                audio_url=URL)
        _refused(lambda: parse_json(V2TranscriptRequest, {"audio_url": URL, name: True}),
                 f"{name} is not supported by this server; leave it out (supported: audio_end_at, ", param=name)


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"dual_chanel": True, "punctuate": "no"}, "dual_chanel",
     "unknown field 'dual_chanel'; the fields are audio_end_at, audio_start_from, audio_url, boost_param, "
     "dual_channel, format_text, punctuate, speaker_labels, speaker_options, speakers_expected, word_boost"),
    ({"punctuate": "no"}, "audio_url", "audio_url is required: a non-empty string"),
    ({"audio_url": URL, "punctuate": "no", "audio_end_at": -1}, "punctuate",
     "punctuate must be true or false (a JSON boolean); got a JSON string"),
    ({"audio_url": URL, "audio_end_at": 10 ** 12}, "audio_end_at",
     "audio_end_at must be a whole number of milliseconds >= 0 (at most 2147483647); got 1000000000000"),
    ({"audio_url": URL, "audio_start_from": 5, "audio_end_at": 5}, None,
     "audio_start_from (5 ms) must be less than audio_end_at (5 ms)"),
    ({"audio_url": "ftp://h/a.wav"}, "audio_url", "audio_url must be an http or https URL; 'ftp://h/a.wav' has "
                                                  "scheme 'ftp'"),
    ({"audio_url": URL, "boost_param": "max"}, "boost_param", 'boost_param must be one of low, default, high; '
                                                              'got "max"'),
    ({"audio_url": URL, "word_boost": ["!!"]}, "word_boost",
     "each word_boost entry needs a letter or a digit; got '!!'"),
    ({"audio_url": URL, "x" * 100: 1}, "x" * 100, "unknown field '" + "x" * 80 + "'...; the fields are audio_end_at, "
     "audio_start_from, audio_url, boost_param, dual_channel, format_text, punctuate, speaker_labels, "
     "speaker_options, speakers_expected, word_boost"),
], ids=["unknown-before-the-rest", "missing-before-types", "first-declared-first", "range", "span", "url",
        "enum", "engine-rule", "long-name-cut"])
def test_the_first_fault_is_answered_in_words(body, param, message):
    assert _refused(lambda: parse_json(TranscribeRequest, body), param=param).description == message


def test_a_body_that_is_not_an_object():
    with pytest.raises(ApiError) as raised:
        parse_json(TranscribeRequest, ["http://h/a.wav"])
    assert (raised.value.code, raised.value.description) == (
        MALFORMED_REQUEST, "the request body must be a JSON object; got a JSON array")


def test_webhook_fields():
    body = {"audio_url": URL, "webhook_url": URL}
    _refused(lambda: parse_json(V2TranscriptRequest, {**body, "webhook_auth_header_name": "X-Key"}),
             "webhook_auth_header_name and webhook_auth_header_value go together")
    _refused(lambda: parse_json(V2TranscriptRequest, {**body, "webhook_auth_header_name": "X Key",
                                                      "webhook_auth_header_value": "v"}),
             "webhook_auth_header_name must be an HTTP header name", param="webhook_auth_header_name")
    _refused(lambda: parse_json(V2TranscriptRequest, {**body, "webhook_auth_header_name": "X-Key",
                                                      "webhook_auth_header_value": "a\r\nb"}),
             "webhook_auth_header_value must be printable text without line breaks")
    _refused(lambda: parse_json(V2TranscriptRequest, {"audio_url": URL, "language_code": "de"}),
             "language_code 'de' is not supported: this server transcribes English")


# --- OpenAI's form and the query strings: text values --------------------------------------------------------

def _form(**fields: list) -> dict:
    return {"file": [bytearray(b"RIFF")], "model": ["whisper-1"], **fields}


def test_a_form_takes_the_last_of_a_field_and_every_value_of_a_list():
    form = parse_form(V1TranscriptionForm, _form(
        prompt=["first", "last"], temperature=["0.25"], language=["EN-us"], response_format=["verbose_json"],
        **{"timestamp_granularities[]": ["word"], "timestamp_granularities": ["segment"],
           "word_boost[]": ["Acme"], "word_boost": ["SKU", "Acme"], "boost_param": ["low"], "stream": ["false"]}),
        **MODELS)
    assert form.options() == Options(prompt="last", temperature=0.25, word_boost=("Acme", "SKU"), boost_param="low")
    assert (form.response_format, form.granularities, bytes(form.file)) == ("verbose_json", {"word", "segment"},
                                                                           b"RIFF")
    assert parse_form(V1TranscriptionForm, _form(temperature=[""], language=[""]), **MODELS).temperature is None


@pytest.mark.parametrize(("fields", "param", "message"), [
    ({"model": ["gpt-4o"]}, "model", "model must be one of tiny.en, whisper-1; got 'gpt-4o'"),
    ({"temperature": ["1.5"]}, "temperature", "temperature must be a number from 0 to 1; got '1.5'"),
    ({"temperature": ["inf"]}, "temperature", "temperature must be a number from 0 to 1; got 'inf'"),
    ({"response_format": ["xml"]}, "response_format",
     "response_format must be one of json, text, srt, vtt, verbose_json, diarized_json; got 'xml'"),
    ({"response_format": ["x" * 10_000]}, "response_format",
     f"response_format must be one of json, text, srt, vtt, verbose_json, diarized_json; got '{'x' * 80}'..."),
    ({"timestamp_granularities[]": ["word"]}, "timestamp_granularities[]",
     "timestamp_granularities[] needs response_format verbose_json"),
    ({"include[]": ["logprobs"]}, "include[]", "include[] is not supported by this server; leave it out"),
    ({"speaker": ["1"]}, "speaker", "unknown form field 'speaker'; the fields are boost_param, file, "
                                    "known_speaker_names[], known_speaker_references[], language, model, prompt, "
                                    "response_format, stream, temperature, timestamp_granularities[], word_boost, "
                                    "word_boost[]"),
], ids=["model", "temperature-range", "temperature-inf", "format", "format-long", "granularities", "unsupported",
        "unknown"])
def test_form_refusals(fields, param, message):
    error = _refused(lambda: parse_form(V1TranscriptionForm, _form(**fields), **MODELS), param=param)
    assert error.description.startswith(message), error.description


def test_the_form_knows_its_names():
    """v1.py stops reading a form at the first name outside these, before reading what that part holds."""
    assert {"file", "model", "word_boost[]", "timestamp_granularities", "stream"} <= names(V1TranscriptionForm)
    assert "speaker" not in names(V1TranscriptionForm)


def test_query_strings():
    query = parse_query(V2ListQuery, {"limit": "25", "status": "completed", "created_on": "2026-12-06", "x": "1"})
    assert (query.limit, query.status, query.created_on, query.before_id) == (25, "completed", "2026-12-06", None)
    assert parse_query(V2ListQuery, {}).limit == 10
    assert parse_query(CaptionQuery, {}).chars_per_caption == 32
    assert parse_query(WordSearchQuery, {"words": ["a,b", " c d ,"]}).words == ["a", "b", " c d "]
    _refused(lambda: parse_query(V2ListQuery, {"limit": "201"}), "limit must be a whole number from 1 to 200; got "
                                                                 "'201'")
    _refused(lambda: parse_query(V2ListQuery, {"limit": "²"}), "limit must be a whole number from 1 to 200")
    _refused(lambda: parse_query(V2ListQuery, {"created_on": "06/12/2026"}), "created_on must be a date, YYYY-MM-DD")
    _refused(lambda: parse_query(WordSearchQuery, {"words": ", ,"}), "words is required: a comma-separated list")
    _refused(lambda: parse_query(WordSearchQuery, {}), "words is required: a comma-separated list")


@pytest.mark.parametrize("model", [TranscribeRequest, V2TranscriptRequest, V1TranscriptionForm, V2ListQuery,
                                   CaptionQuery, WordSearchQuery], ids=lambda m: m.__name__)
def test_every_field_is_described(model):
    """The models read like the API reference: every field says what it is."""
    for name, field in model.model_json_schema(by_alias=True)["properties"].items():
        assert field.get("description"), f"{model.__name__}.{name} has no description"
