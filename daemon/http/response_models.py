"""The objects the API answers, declared once: their JSON Schemas are the OpenAPI document's components.

The handlers build these answers as plain dicts (a long transcript has thousands of words, and the
exports in engine/text/ build them); tests/test_openapi.py holds every real answer to these schemas,
and no model takes a field it does not declare, so a field answered but not declared fails there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.errors import ERROR_TABLE
from daemon.jobs.record import Status
from engine.decoding.options import BOOST_PARAMS

Uid = str
_UID = {"pattern": "^t_[0-9a-f-]{36}$"}
_ISO = {"pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$"}
StatusName = Literal[tuple(status.value for status in Status)]
Channel = Literal["1", "2"]


def _no_defaults(schema: dict) -> None:
    """An answer has no defaults: a field declared with one (None) is simply absent when it does not apply."""
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


class Answer(BaseModel):
    """An answer object: exactly its declared fields."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)


# --- POST /transcribe/url ----------------------------------------------------------------------------------

class Word(Answer):
    confidence: float = Field(ge=0, le=1)
    end: int = Field(description="ms from the start of the original file")
    start: int = Field(description="ms from the start of the original file")
    text: str
    channel: Channel = Field(None, description="dual_channel only: the channel that said it")
    speaker: str | None = Field(None, description="speaker_labels only: who said it, A, B, ... (null in the v2 "
                                                  "exports)")


class Utterance(Answer):
    """A run of one channel's (dual_channel) or one speaker's (speaker_labels) words, ended by another speaking or
    a pause over 1.5 s."""

    channel: Channel = Field(None, description="dual_channel: the channel")
    speaker: str = Field(None, description="speaker_labels: the speaker, A, B, ... in order of first speech")
    start: int
    end: int
    confidence: float = Field(description="mean of its words' confidences")
    text: str
    words: list[Word]


class Transcript(Answer):
    blob: str = Field(description="the whole transcript; empty for silence")
    duration: float = Field(description="seconds transcribed, after audio_start_from / audio_end_at")
    stereo_decode: bool = Field(description="dual_channel was asked")
    uid: Uid = Field(json_schema_extra=_UID, description="the request's uid (t_ and a UUID4), also in the log line")
    utterances: list[Utterance] | None = Field(description="null unless dual_channel or speaker_labels")
    words: list[Word] = Field(description="by start time; both channels merged for dual_channel")


# --- AssemblyAI's v2 API ----------------------------------------------------------------------------------

class V2Upload(Answer):
    upload_url: str = Field(description="this server's URL of the file: pass it as audio_url")


class V2Transcript(Answer):
    """AssemblyAI's TranscriptResponse: the options as given and, once completed, the transcript."""

    id: Uid = Field(json_schema_extra=_UID, description="the transcript's id (t_ and a UUID4)")
    status: StatusName
    error: str | None = Field(description="why it failed (status error): the description /transcribe/url would "
                              "answer, e.g. a download error")
    audio_url: str = Field(description="as given; http://deleted_by_user once deleted; an empty string for a "
                           "transcript of /v1/audio/transcriptions, whose audio was sent inline")
    text: str | None = Field(description="the whole transcript once completed; 'Deleted by user.' once deleted")
    words: list[Word] | None = Field(description="once completed")
    utterances: list[Utterance] | None = Field(description="once completed, for dual_channel or speaker_labels")
    confidence: float | None = Field(ge=0, le=1, description="mean of the words' confidences, once completed")
    audio_duration: int | None = Field(description="seconds transcribed, rounded up, once completed")
    language_code: Literal["en_us"]
    punctuate: bool
    format_text: bool
    dual_channel: bool
    audio_start_from: int | None
    audio_end_at: int | None
    prompt: str | None
    temperature: float | None
    word_boost: list[str] = Field(description="as given (empty when not given)")
    boost_param: Literal[BOOST_PARAMS] | None
    speaker_labels: bool
    speakers_expected: int | None
    webhook_url: str | None
    webhook_auth_header_name: str | None
    webhook_auth: bool = Field(description="a webhook auth header was given (its value is never shown)")
    webhook_status_code: int | None = Field(description="the webhook's last HTTP status; null before any answer")


class PageDetails(Answer):
    limit: int
    result_count: int
    current_url: str = Field(description="this page")
    prev_url: str | None = Field(description="the page of older transcripts (before_id: this page's last); null "
                                 "when this page is empty")
    next_url: str | None = Field(description="the page of newer transcripts (after_id: this page's first); null "
                                 "when this page is empty")


class V2ListedTranscript(Answer):
    id: Uid = Field(json_schema_extra=_UID)
    resource_url: str = Field(description="its GET /v2/transcript/{job_id} URL")
    status: StatusName
    created: str = Field(json_schema_extra=_ISO, description="UTC, ISO 8601 without an offset, as AssemblyAI "
                                                             "writes it")
    completed: str | None = Field(json_schema_extra=_ISO, description="UTC, when it completed or failed")
    audio_url: str = Field(description="as in the transcript")
    error: str | None


class V2TranscriptList(Answer):
    """AssemblyAI's ListTranscriptResponse: every surface's transcripts, newest first."""

    page_details: PageDetails
    transcripts: list[V2ListedTranscript] = Field(description="newest first")


class Span(Answer):
    """One sentence or paragraph; never spans two channels."""

    text: str
    start: int = Field(description="ms")
    end: int = Field(description="ms")
    confidence: float = Field(description="mean of its words' confidences")
    words: list[Word]
    speaker: None = Field(description="no speaker labels here")
    channel: Channel = Field(None, description="dual_channel only")


class _Export(Answer):
    id: Uid = Field(json_schema_extra=_UID, description="the transcript's id")
    confidence: float = Field(description="mean of every word's confidence")
    audio_duration: float = Field(description="seconds transcribed")


class V2Sentences(_Export):
    """AssemblyAI's SentencesResponse and the transcript's id."""

    sentences: list[Span]


class V2Paragraphs(_Export):
    """AssemblyAI's ParagraphsResponse and the transcript's id: whole sentences, broken at a pause of 2 s."""

    paragraphs: list[Span]


class WordSearchMatch(Answer):
    text: str = Field(description="the term as asked")
    count: int
    timestamps: list[tuple[int, int]] = Field(description="[start, end] ms of each match")
    indexes: list[int] = Field(description="index in the transcript's words of each match's first word")


class V2WordSearch(Answer):
    """AssemblyAI's WordSearchMatchResponse and the transcript's id. Case and edge punctuation are ignored; a $ or %
    is optional in a term ("49" finds "$49"); a term of several words matches consecutive words of one channel."""

    id: Uid = Field(json_schema_extra=_UID, description="the transcript's id")
    total_count: int = Field(description="matches of every term")
    matches: list[WordSearchMatch] = Field(description="one per distinct term, count 0 when absent")


class TranscriptDone(Answer):
    """The body of a webhook call."""

    transcript_id: Uid = Field(json_schema_extra=_UID)
    status: Literal["completed", "error"]


# --- OpenAI's transcription API ------------------------------------------------------------------------------

class V1Transcription(Answer):
    """response_format json: OpenAI's Transcription."""

    text: str


class V1Word(Answer):
    word: str = Field(description="without edge punctuation")
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")


class V1Segment(Answer):
    id: int
    seek: int
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    text: str = Field(description="one sentence, after a space")
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class V1TranscriptionVerbose(Answer):
    """response_format verbose_json: OpenAI's TranscriptionVerbose."""

    task: Literal["transcribe"]
    language: Literal["english"]
    duration: float = Field(description="seconds transcribed")
    text: str
    words: list[V1Word] = Field(None, description="with timestamp_granularities[] word")
    segments: list[V1Segment] = Field(None, description="one per sentence; unless only timestamp_granularities[] "
                                                        "word is asked")


class V1DiarizedSegment(Answer):
    id: str
    type: Literal["transcript.text.segment"]
    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    text: str
    speaker: str = Field(description="A, B, ... in order of first speech")


class V1TranscriptionDiarized(Answer):
    """response_format diarized_json: OpenAI's TranscriptionDiarized, one segment per utterance of one speaker."""

    task: Literal["transcribe"]
    duration: float = Field(description="seconds transcribed")
    text: str
    segments: list[V1DiarizedSegment]


class V1Model(Answer):
    id: str
    object: Literal["model"]
    created: int = Field(description="epoch seconds (the server's start)")
    owned_by: str


class V1ModelList(Answer):
    object: Literal["list"]
    data: list[V1Model]


# --- the server ------------------------------------------------------------------------------------------

class WorkerState(Answer):
    name: str
    kind: str
    state: Literal["starting", "ready", "unresponsive"]
    pid: int | None
    windows: int
    heartbeat_age_s: float = Field(description="seconds since its last pulse")


class NodeState(Answer):
    node: str
    host: str
    pid: int
    capacity: int = Field(description="its MAX_TRANSCRIPTS_PARALLEL")
    running: int = Field(description="jobs it transcribes now")
    ready: bool = Field(description="its workers are up and answered a probe")
    heartbeat_age_s: float


class Health(Answer):
    status: Literal["ok", "loading", "restarting", "unresponsive", "draining", "no_worker_nodes",
                    "store_unreachable"] = Field(description="the last two only on an API node (shared mode)")
    detail: str = Field(None)
    workers: list[WorkerState]
    nodes: list[NodeState] = Field(None, description="shared mode (API node): the live worker nodes")


_SDK_FIELD = ("Missing only where the server answers before it has read the request's path, with the bare Error: a "
              "request line that does not parse, and the 503 of the connection limit.")


class Error(Answer):
    """A failure; the code table is in info.description."""

    code: Literal[tuple(kind.code for kind in ERROR_TABLE)] = Field(
        description="stable: branch on it (the table in info.description)")
    description: str = Field(description="what went wrong and what to do")
    uid: Uid = Field(json_schema_extra=_UID, description="the request's uid; the server's log line has it")


class AssemblyAIError(Error):
    """The Error, as /v2/ paths answer it, with AssemblyAI's `error` string."""

    error: str = Field(None, description="the description again, which AssemblyAI's SDKs show. " + _SDK_FIELD)


class OpenAIErrorObject(Answer):
    """OpenAI's error object, from which its clients raise BadRequestError, RateLimitError, ..."""

    message: str = Field(description="the description again")
    type: Literal["invalid_request_error", "authentication_error", "rate_limit_error", "server_error"]
    param: str | None = Field(description="the form field at fault, when one is")
    code: Literal[tuple(kind.name for kind in ERROR_TABLE)] = Field(description="the code's name")


class OpenAIError(Error):
    """The Error, as /v1/ paths answer it, with OpenAI's `error` object."""

    error: OpenAIErrorObject = Field(None, description=_SDK_FIELD)


ANSWERS: tuple[type[Answer], ...] = (
    Transcript, V2Upload, V2Transcript, V2TranscriptList, V2Sentences, V2Paragraphs, V2WordSearch, TranscriptDone,
    V1Transcription, V1TranscriptionVerbose, V1TranscriptionDiarized, V1Model, V1ModelList, Health, Error,
    AssemblyAIError, OpenAIError)
