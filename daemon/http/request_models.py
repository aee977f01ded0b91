"""The request bodies of every surface, declared once: field, type, default, limits, description.

Each model validates its body (daemon/http/validation.py runs it and turns its errors into the API's
400s) and emits the JSON Schema that daemon/http/openapi.py publishes, so a field is added with one
line here plus its test. JSON bodies are strict: no "1" for 1, no 1 for true, no unknown field.
OpenAI's form is text by nature, so its numbers are read from their text.

`Accepts` gives a field the words an error uses for what it takes, where the type's own words
(validation.py derives them from the schema) would say less.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation,
                      ValidationInfo, WithJsonSchema, model_validator)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from daemon.errors import ApiError
from daemon.jobs.download import check_url
from daemon.jobs.record import Options, Status
from engine.audio.files import MAX_SPAN_MS, SAMPLE_RATE, decode_data_url
from engine.errors import EngineError
from engine.decoding.options import BOOST_PARAMS, MAX_BOOST_CHARS, MAX_BOOST_PHRASES, MAX_BOOST_WORDS, check_word_boost
from engine.speakers.options import MAX_SPEAKERS
from engine.text.exports import DEFAULT_CHARS_PER_CAPTION

DEFAULT_PAGE = 10
MAX_PAGE = 200
MAX_CHARS_PER_CAPTION = 10_000


@dataclass(frozen=True)
class Accepts:
    """What a field takes, in an error's words: '<field> must be <this>; got ...'."""

    words: str


def refused(message: str, param: str | None = None) -> PydanticCustomError:
    """A check of ours failed: validation.py answers `message` as it is (param: the field at fault)."""
    return PydanticCustomError("refused", "{message}", {"message": message, "param": param})


def _http_url(url: str, info: ValidationInfo) -> str:
    if not url.strip():
        raise PydanticCustomError("blank", "blank")
    try:
        check_url(url, info.field_name)
    except ApiError as exc:
        raise refused(exc.description) from None
    return url


def _phrases(value: object) -> tuple[str, ...]:
    return check_word_boost([] if value is None else value)  # its ValueError names the rule broken


def _english(codes: tuple[str, ...], name: str, shown: str, blank: bool = False) -> object:
    """A language field that takes English only, under any of `codes` in any case (and "" where `blank`)."""
    def check(value: object) -> object:
        if value is not None and not (blank and value == "") and (
                not isinstance(value, str) or value.lower() not in codes):
            raise refused(f"{name} {str(value)[:20]!r} is not supported: this server transcribes English ({shown})")
        return value
    any_case = "|".join("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in code) for code in codes)
    return Annotated[str, Field(pattern=f"^({any_case}){'?' if blank else ''}$"), BeforeValidator(check)]


def _blank_is_none(value: object) -> object:
    return None if value == "" else value


HttpUrl = Annotated[str, AfterValidator(_http_url), Accepts("a non-empty string"),
                    Field(json_schema_extra={"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"})]
Milliseconds = Annotated[int, Field(ge=0, le=MAX_SPAN_MS),
                         Accepts(f"a whole number of milliseconds >= 0 (at most {MAX_SPAN_MS})")]
Temperature = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Speakers = Annotated[int, Field(ge=1, le=MAX_SPEAKERS)]
WordBoost = Annotated[tuple[Annotated[str, Field(max_length=MAX_BOOST_CHARS)], ...], BeforeValidator(_phrases),
                      Field(max_length=MAX_BOOST_PHRASES)]
WORD_BOOST = (f"words or phrases to favour (AssemblyAI's word_boost): at most {MAX_BOOST_PHRASES}, each at most "
              f"{MAX_BOOST_WORDS} words and {MAX_BOOST_CHARS} characters with a letter or a digit (else 400, code 4); "
              "they lead Whisper's prompt and the search rewards hypotheses that spell them")
BoostParam = Literal[BOOST_PARAMS]
AssemblyAILanguage = _english(("en", "en_us", "en_uk", "en_au"), "language_code", "en, en_us, en_uk, en_au")
OpenAILanguage = _english(("en", "english", "en-us", "en-gb", "en_us", "en_gb"), "language", "en", blank=True)


def _null_where_absent(schema: dict, model: type) -> None:
    """Where null means 'not given', every optional field's schema takes null too."""
    if model.null_is_absent:
        for name, field in schema["properties"].items():
            if name not in schema.get("required", ()) and "anyOf" not in field:
                outer = {k: field.pop(k) for k in ("description", "default") if k in field}
                schema["properties"][name] = {"anyOf": [field, {"type": "null"}], **outer}


class Body(BaseModel):
    """A JSON request body: strict types, no unknown field.

    `unsupported` names options a compatible API defines and this server does not do: asking for one
    (a value other than null, false, 0 or empty) is a 400 naming it. Where `null_is_absent`, null
    means 'not given' and the field keeps its default, as AssemblyAI's SDKs send it.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, json_schema_extra=_null_where_absent)
    unsupported: ClassVar[frozenset[str]] = frozenset()
    null_is_absent: ClassVar[bool] = False


class SpeakerBounds(Body):
    """AssemblyAI's speaker_options: bounds on the number of speakers found."""

    min_speakers_expected: Speakers = Field(1, description="at least this many speakers")
    max_speakers_expected: Speakers = Field(MAX_SPEAKERS, description="at most this many speakers")


class TranscriptOptions(Body):
    """How to transcribe: the options /transcribe/url and POST /v2/transcript share."""

    dual_channel: bool = Field(False, description="transcribe the first two channels separately: words carry "
                               "their channel and utterances are filled; a mono file is error 11")
    format_text: bool = Field(True, description="written form: numbers, amounts, times as digits and symbols, "
                              "cased; false: spoken form, lower case")
    punctuate: bool = Field(True, description="false: no punctuation marks")
    audio_start_from: Milliseconds | None = Field(None, description="ms: transcribe from here (default: the start)")
    audio_end_at: Milliseconds | None = Field(None, description="ms: stop here (default: the end); more than "
                                              "audio_start_from and at most the audio's length (else 422, code 4)")
    word_boost: WordBoost | None = Field((), description=WORD_BOOST)
    boost_param: BoostParam | None = Field(None, description="how strongly word_boost favours its phrases; null is "
                                                             "default")
    speaker_labels: bool = Field(False, description="label every word with its speaker (A, B, ... in order of "
                                 "first speech) and fill utterances: runs of one speaker's words; mono audio (with "
                                 "dual_channel, each channel is a speaker already: a 400)")
    speakers_expected: Speakers | None = Field(None, description="how many speakers there are, when known; with "
                                                                 "speaker_labels")
    speaker_options: Annotated[SpeakerBounds, Accepts(
        "an object of min_speakers_expected and max_speakers_expected, whole numbers from 1 to "
        f"{MAX_SPEAKERS}")] | None = Field(None, description="bounds on the number of speakers found; with "
                                                             "speaker_labels")

    @model_validator(mode="after")
    def _span_forward(self):
        start, end = self.audio_start_from or 0, self.audio_end_at
        if end is not None and start >= end:
            raise refused(f"audio_start_from ({start} ms) must be less than audio_end_at ({end} ms)")
        return self

    @model_validator(mode="after")
    def _speakers_consistent(self):
        bounds = self.speaker_options or SpeakerBounds()
        if not self.speaker_labels:
            for name in ("speakers_expected", "speaker_options"):
                if getattr(self, name) is not None:
                    raise refused(f"{name} needs speaker_labels: true", name)
        elif self.dual_channel:
            raise refused("speaker_labels and dual_channel do not go together: with dual_channel each channel is "
                          "one speaker already", "speaker_labels")
        if bounds.min_speakers_expected > bounds.max_speakers_expected:
            raise refused(f"speaker_options.min_speakers_expected ({bounds.min_speakers_expected}) must be at most "
                          f"max_speakers_expected ({bounds.max_speakers_expected})", "speaker_options")
        expected = self.speakers_expected
        if expected is not None and not bounds.min_speakers_expected <= expected <= bounds.max_speakers_expected:
            raise refused(f"speakers_expected ({expected}) must lie within speaker_options' bounds "
                          f"({bounds.min_speakers_expected} to {bounds.max_speakers_expected})", "speakers_expected")
        return self

    def options(self, **more: object) -> Options:
        """The job's options: these fields, and a surface's own."""
        bounds = self.speaker_options or SpeakerBounds()
        return Options(dual_channel=self.dual_channel, format_text=self.format_text, punctuate=self.punctuate,
                       audio_start_from=self.audio_start_from, audio_end_at=self.audio_end_at,
                       word_boost=self.word_boost or (), boost_param=self.boost_param,
                       speaker_labels=self.speaker_labels, speakers_expected=self.speakers_expected,
                       min_speakers=bounds.min_speakers_expected, max_speakers=bounds.max_speakers_expected, **more)


class TranscribeRequest(TranscriptOptions):
    """POST /transcribe/url. Strict: an unknown field or a wrong JSON type ("true" is not a boolean) is a 400,
    code 4."""

    audio_url: HttpUrl = Field(description="http or https URL of the audio file (wav, flac, ogg/opus, mp3)")

    def options(self) -> Options:
        return super().options(audio_url=self.audio_url)


class V2TranscriptRequest(TranscriptOptions):
    """AssemblyAI's TranscriptRequest, the fields this server supports; null means 'not given'. AssemblyAI's
    other options (speaker_labels, redact_pii, summarization, custom_spelling, language_detection, speech_model,
    ...) are not supported: one that asks for something (true, a value, a non-empty list) is a 400 naming it,
    while null, false, 0 and empty values pass, so the SDKs' defaults work. Any other field is a 400."""

    null_is_absent = True
    # TranscriptRequest's other options (assemblyai 1.8): understood, not supported.
    unsupported = frozenset({
        "language_codes", "multichannel", "audio_channels", "filter_profanity", "redact_pii", "redact_pii_audio",
        "redact_pii_audio_quality", "redact_pii_audio_options", "redact_pii_policies", "redact_pii_sub",
        "redact_pii_return_unredacted", "content_safety",
        "content_safety_confidence", "iab_categories", "custom_spelling", "disfluencies", "sentiment_analysis",
        "auto_chapters", "entity_detection", "summarization", "summary_model", "summary_type", "auto_highlights",
        "language_detection", "language_confidence_threshold", "language_detection_options", "language_confidence",
        "language_detection_results", "speech_threshold", "speech_model", "speech_models", "remove_audio_tags",
        "keyterms_prompt", "keyterms_prompt_options", "speech_understanding", "domain", "custom_topics", "topics",
        "webhook_auth"})

    audio_url: HttpUrl = Field(description="http(s) URL of the audio file, downloaded when the job runs (a download "
                               "failure ends the job in error), or an upload_url from POST /v2/upload (read from this "
                               "server's store, whatever host it names)")
    language_code: AssemblyAILanguage | None = Field(None, description="English only: en, en_us, en_uk, en_au (any "
                                                                       "case); transcripts report en_us")
    prompt: str | None = Field(None, description="Whisper's initial prompt: vocabulary and style to prefer")
    temperature: Temperature | None = Field(None, description="decoding temperature; null or 0 keeps Whisper's "
                                            "fallback schedule (0 first, higher when a window fails its checks)")
    webhook_url: HttpUrl | None = Field(None, description="http(s) URL POSTed {\"transcript_id\", \"status\"} when "
                                        "the job completes or fails; retried for about twenty minutes until it "
                                        "answers 2xx; redirects are not followed, and the address rules of downloads "
                                        "apply")
    webhook_auth_header_name: Annotated[
        str, Field(pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$"),
        Accepts("an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")] | None = Field(
        None, description="a header sent with each webhook call; with webhook_auth_header_value")
    webhook_auth_header_value: Annotated[
        str, Field(pattern=r"^[\t\x20-\x7e\x80-\xff]{0,8192}$"),
        Accepts("printable text without line breaks, at most 8192 characters")] | None = Field(
        None, description="that header's value; with webhook_auth_header_name")

    @model_validator(mode="after")
    def _header_in_pairs(self):
        if (self.webhook_auth_header_name is None) != (self.webhook_auth_header_value is None):
            raise refused("webhook_auth_header_name and webhook_auth_header_value go together")
        return self

    def options(self) -> Options:
        return super().options(audio_url=self.audio_url, prompt=self.prompt, temperature=self.temperature,
                               webhook_url=self.webhook_url, webhook_auth_header_name=self.webhook_auth_header_name,
                               webhook_auth_header_value=self.webhook_auth_header_value)


FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
Granularities = list[Literal["word", "segment"]]


MAX_KNOWN_SPEAKERS = 4  # as OpenAI's
MIN_SAMPLE_S, MAX_SAMPLE_S = 2.0, 10.0


def _sample(url: str) -> str:
    """A known speaker's sample: a data: URL of 2-10 s of audio (decoded here to be checked, and again where the
    job runs)."""
    name = "known_speaker_references[]"
    try:
        seconds = len(decode_data_url(url)) / SAMPLE_RATE
    except ValueError as exc:
        raise refused(f"{name}: {exc}", name) from None
    except EngineError as exc:
        raise refused(f"{name}: it is not audio the server can decode ({exc.message})", name) from None
    if not MIN_SAMPLE_S <= seconds <= MAX_SAMPLE_S:
        raise refused(f"{name}: a sample must be {MIN_SAMPLE_S:g} to {MAX_SAMPLE_S:g} s of audio; got {seconds:.1f} s",
                      name)
    return url


def _served(model: str, info: ValidationInfo) -> str:
    served = info.context["models"]
    if model not in served:
        raise refused(f"model must be one of {', '.join(served)}; got {model[:60]!r}")
    return model


class V1TranscriptionForm(Body):
    """OpenAI's CreateTranscriptionRequest, a multipart form. Another field is a 400. OpenAI's include[] and
    chunking_strategy are not supported: a 400 unless empty, false, 0 or null."""

    model_config = ConfigDict(strict=False, extra="forbid", frozen=True, arbitrary_types_allowed=True)
    unsupported = frozenset({"include[]", "include", "chunking_strategy"})

    file: Annotated[bytearray, SkipValidation, Accepts("the audio, as a file field of the form"),
                    WithJsonSchema({"type": "string", "contentMediaType": "application/octet-stream"})] = Field(
        description="the audio file (wav, flac, ogg/opus, mp3), at most DOWNLOAD_MAX_BYTES")
    model: Annotated[str, AfterValidator(_served), Accepts("the served model's name or whisper-1")] = Field(
        description="the served model, or whisper-1, its alias")
    language: OpenAILanguage | None = Field(None, description="English only: en, english, en-us, en-gb, en_us, en_gb "
                                                              "(any case); empty or absent: English")
    prompt: str | None = Field(None, description="Whisper's initial prompt: vocabulary and style to prefer")
    response_format: Literal[FORMATS] = Field("json", description="json, verbose_json and diarized_json (segments "
                                                                  "labelled with their speaker, A, B, ...) answer "
                                                                  "JSON; text, srt and vtt text/plain")
    stream: bool = Field(False, description="true: the text as server-sent events, transcript.text.delta for each "
                                            "turn as soon as it and those before it are transcribed, then "
                                            "transcript.text.done (response_format json or text)")
    temperature: Annotated[Temperature | None, BeforeValidator(_blank_is_none)] = Field(
        None, description="0 keeps Whisper's fallback schedule; another value samples at it alone")
    timestamp_granularities: Annotated[Granularities, Accepts("word or segment")] = Field(
        [], alias="timestamp_granularities[]", description="verbose_json only (else a 400): word adds `words`; "
                                                           "segments come unless only word is asked")
    timestamp_granularities_unbracketed: SkipJsonSchema[Annotated[Granularities, Accepts("word or segment")]] = \
        Field([], alias="timestamp_granularities")
    word_boost_list: WordBoost = Field((), alias="word_boost[]", description="ours, not OpenAI's (the SDK sends it "
                                       "with extra_body={\"word_boost\": [...]}): " + WORD_BOOST)
    word_boost: list[Annotated[str, Field(max_length=MAX_BOOST_CHARS)]] = Field(
        [], description="one phrase to favour, as a plain form field (may repeat); as word_boost[]")
    boost_param: BoostParam | None = Field(None, description="how strongly word_boost[] favours its phrases; "
                                                             "default when absent")
    known_speaker_names: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        [], alias="known_speaker_names[]", max_length=MAX_KNOWN_SPEAKERS, description=(
            "diarized_json: the names of the speakers of known_speaker_references[], in the same order; a speaker "
            "whose voice matches one is labelled with its name, the others A, B, ..."))
    known_speaker_references: list[Annotated[str, AfterValidator(_sample)]] = Field(
        [], alias="known_speaker_references[]", max_length=MAX_KNOWN_SPEAKERS, description=(
            f"diarized_json: a sample of each known speaker's voice, {MIN_SAMPLE_S:g} to {MAX_SAMPLE_S:g} s of "
            "audio as a data: URL (data:audio/wav;base64,...)"))

    @model_validator(mode="before")
    @classmethod
    def _one_word_boost(cls, fields: dict) -> dict:
        """word_boost[] and plain word_boost fields are one list, checked once."""
        if "word_boost" in fields:
            fields = {**fields, "word_boost[]": [*fields.get("word_boost[]", []), *fields["word_boost"]],
                      "word_boost": []}
        return fields

    @model_validator(mode="after")
    def _stream_is_text(self):
        if self.stream and self.response_format not in ("json", "text"):
            raise refused(f"stream=true sends the text as events: response_format must be json or text; got "
                          f"{self.response_format}", "stream")
        return self

    @model_validator(mode="after")
    def _granularities_need_verbose_json(self):
        if self.granularities and self.response_format != "verbose_json":
            raise refused("timestamp_granularities[] needs response_format verbose_json", "timestamp_granularities[]")
        return self

    @model_validator(mode="after")
    def _known_speakers_in_pairs(self):
        names, samples = self.known_speaker_names, self.known_speaker_references
        if (names or samples) and self.response_format != "diarized_json":
            raise refused("known_speaker_names[] and known_speaker_references[] need response_format diarized_json",
                          "known_speaker_names[]")
        if len(names) != len(samples):
            raise refused(f"known_speaker_names[] ({len(names)}) and known_speaker_references[] ({len(samples)}) "
                          "go in pairs: a name for each sample", "known_speaker_references[]")
        if len(set(names)) != len(names):
            raise refused("known_speaker_names[] must be different names", "known_speaker_names[]")
        return self

    @property
    def granularities(self) -> set[str]:
        return {*self.timestamp_granularities, *self.timestamp_granularities_unbracketed}

    def options(self) -> Options:
        return Options(prompt=self.prompt, temperature=self.temperature, word_boost=self.word_boost_list,
                       boost_param=self.boost_param, speaker_labels=self.response_format == "diarized_json",
                       known_speakers=tuple(zip(self.known_speaker_names, self.known_speaker_references)))



# --- query strings: text like a form's values; a parameter the server does not use is ignored -------------

class Query(Body):
    model_config = ConfigDict(strict=False, extra="ignore", frozen=True)


def _date(day: str) -> str:
    try:
        dt.datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise refused(f"created_on must be a date, YYYY-MM-DD; got {day[:40]!r}") from None
    return day


def _terms(values: list[str]) -> list[str]:
    """Every value of the parameter (it may repeat), each a comma-separated list of terms."""
    terms = [term for text in values for term in str(text).split(",") if term.strip()]
    if not terms:
        raise refused("words is required: a comma-separated list of words or phrases")
    return terms


class V2ListQuery(Query):
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="transcripts per page")
    status: Literal[tuple(status.value for status in Status)] | None = Field(
        None, description="only transcripts in this status")
    created_on: Annotated[str, AfterValidator(_date), Field(json_schema_extra={"format": "date"})] | None = Field(
        None, description="only transcripts created on this UTC day, YYYY-MM-DD")
    before_id: str | None = Field(None, description="only transcripts older than this one (prev_url)")
    after_id: str | None = Field(None, description="only transcripts newer than this one (next_url)")


class CaptionQuery(Query):
    chars_per_caption: int = Field(DEFAULT_CHARS_PER_CAPTION, ge=1, le=MAX_CHARS_PER_CAPTION, description=(
        "the longest caption, in characters; a caption also ends with its sentence, at a pause of 1 s and at a "
        "change of channel"))


class WordSearchQuery(Query):
    words: Annotated[list[Annotated[str, Field(pattern=r"^[^,]*[^\s,][^,]*$")]], BeforeValidator(_terms),
                     Field(min_length=1), Accepts("a comma-separated list of words or phrases")] = Field(
        description="the terms to find, comma-separated; a term may be several words")
