"""A transcription as a record: what to transcribe and how, where it stands, and what came of it.

Every entry point makes one before any work starts (the synchronous /transcribe/url and
/v1/audio/transcriptions, which then wait for it, and /v2/transcript, which answers at once), so a
job is the same thing whichever API created it, and every API can show any of them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from engine.result import new_uid


class Status(str, Enum):
    """AssemblyAI's four states (their SDK's TranscriptStatus), which every surface uses."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"


class Origin(str, Enum):
    """The surface that created the job. A client waits on a synchronous job's connection, so after a
    restart nobody is there for it: only asynchronous (v2) jobs run again."""

    TRANSCRIBE_URL = "transcribe_url"
    V2 = "v2"
    V1 = "v1"

    @property
    def resumable(self) -> bool:
        return self is Origin.V2


@dataclass(frozen=True)
class Options:
    """What to transcribe and how: the union of every surface's options, in their API.md names."""

    audio_url: str | None = None  # the caller's http(s) URL or this server's upload URL; None: sent inline
    dual_channel: bool = False
    format_text: bool = True
    punctuate: bool = True
    audio_start_from: int | None = None  # ms
    audio_end_at: int | None = None  # ms
    prompt: str | None = None  # Whisper's initial prompt (OpenAI's `prompt`)
    temperature: float | None = None  # OpenAI's `temperature`: None or 0 keeps the fallback schedule
    word_boost: tuple[str, ...] = ()  # AssemblyAI's word_boost: words and phrases the search is drawn toward
    boost_param: str | None = None  # low, default or high; None is default
    webhook_url: str | None = None
    webhook_auth_header_name: str | None = None
    webhook_auth_header_value: str | None = None
    speaker_labels: bool = False  # AssemblyAI's: a speaker per word and utterances per speaker (mono)
    speakers_expected: int | None = None  # the number of speakers, when the caller knows it
    min_speakers: int = 1  # speaker_options' bounds on the number found
    max_speakers: int = 10
    known_speakers: tuple[tuple[str, str], ...] = ()  # OpenAI's (name, data: URL of a sample of their voice)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Options":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["word_boost"] = tuple(fields.get("word_boost") or ())  # a JSON list when stored
        fields["known_speakers"] = tuple(tuple(pair) for pair in fields.get("known_speakers") or ())
        return cls(**fields)


@dataclass(frozen=True)
class JobError:
    """Why a job ended in error: the API's stable code and its plain-words description."""

    code: int
    description: str


@dataclass(frozen=True)
class Job:
    id: str
    origin: Origin
    options: Options
    status: Status = Status.QUEUED
    created: float = field(default_factory=time.time)  # epoch seconds
    started: float | None = None
    completed: float | None = None
    attempts: int = 0  # times it started processing; a second interrupted start is its last
    audio: str | None = None  # the stored encoded file, relative to the store; None: not stored (yet)
    result: dict | None = None  # the transcript, as /transcribe/url answers it
    error: JobError | None = None
    webhook_status_code: int | None = None  # the last answer of webhook_url (None: none yet)
    webhook_pending: bool = False  # a delivery is owed (survives restarts)
    deleted: bool = False  # DELETE removed its text and audio; the record stays, as AssemblyAI's does
    # Windows the run that finished it decoded again whole (their shortened encoding repeated itself): for that
    # run's log line and metrics only, so no store keeps it.
    redecoded: int = 0

    @classmethod
    def new(cls, origin: Origin, options: Options, job_id: str | None = None) -> "Job":
        return cls(job_id or new_uid(), origin, options)

    def with_(self, **changes) -> "Job":
        return replace(self, **changes)

    @property
    def finished(self) -> bool:
        return self.status in (Status.COMPLETED, Status.ERROR)
