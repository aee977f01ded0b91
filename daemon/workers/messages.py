"""The small descriptors that travel on the daemon's queues; arrays stay in shared memory.

Data flows one way round: front -> supervisor -> decoders <-> inference -> decoders ->
supervisor -> front. Windows are named by a daemon-wide integer id given by the supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.workers.shm import ArrayRef
from engine.decoding.options import DecodeOptions
from engine.result import Word
from engine.audio.speech_window import SpeechWindow

if TYPE_CHECKING:  # the front imports these messages and must not import the engine's torch-side modules
    from engine.decoding.loop import Instruction
    from engine.decoding.reduce import RowRules


# How a job's windows are served (daemon/workers/inference.py): files' windows fill the files' slots;
# a live stream's growing turn goes ahead of them in slots of its own; the decode a turn's end waits for
# (the pause's, the final) holds back everything else while it runs.
FILE, TURN, TURN_END = 0, 1, 2


# front -> supervisor
@dataclass(frozen=True)
class Submit:
    uid: str
    pcm: ArrayRef  # float32 [channels, samples] at 16 kHz, owned by the front
    options: DecodeOptions  # the prompt and temperatures every window of the job is decoded with
    priority: int = FILE  # FILE, TURN or TURN_END (docs/STREAMING.md)


@dataclass(frozen=True)
class Cancel:
    uid: str
    reason: str = ""


@dataclass(frozen=True)
class Stop:
    pass


# supervisor -> front
@dataclass(frozen=True)
class JobDone:
    uid: str
    channels: list[list[Word]]
    redecoded: int = 0  # windows decoded again whole after their shortened encoding repeated itself
    speech: list[list[tuple[int, int]]] = field(default_factory=list)  # per channel: the VAD's speech, ms


@dataclass(frozen=True)
class JobFailed:
    uid: str
    code: int
    message: str


@dataclass(frozen=True)
class HealthUpdate:
    ready: bool
    status: str  # ok, loading, restarting, unresponsive
    workers: list[dict]


# supervisor -> decoder
@dataclass(frozen=True)
class Plan:
    uid: str
    channel: int
    pcm: ArrayRef


@dataclass(frozen=True)
class Window:
    wid: int
    uid: str
    channel: int
    pcm: ArrayRef
    span: SpeechWindow
    inference: int
    options: DecodeOptions
    priority: int = FILE


# decoder -> inference
@dataclass(frozen=True)
class Open:
    wid: int
    decoder: int
    pcm: ArrayRef  # one channel of the file
    span: SpeechWindow
    tokens: list[int]  # first token of every row
    rules: "RowRules"  # what the first step is reduced with
    priority: int = FILE


@dataclass(frozen=True)
class Step:
    """What the window's search decided after its last logits (engine.decoding.loop), for the inference
    process to apply to the window's rows."""

    wid: int
    instruction: Instruction


@dataclass(frozen=True)
class Release:
    wid: int


@dataclass(frozen=True)
class Batch:
    """Several messages for one recipient, sent as one queue item."""

    items: list = field(default_factory=list)


# inference -> decoder
@dataclass(frozen=True)
class Reduced:
    """A step's rows of one window, reduced to their best candidates (engine/decoding/reduce.py)."""

    wid: int
    rows: ArrayRef  # float32 [rows, reduce.step_width(K, requested)]


@dataclass(frozen=True)
class Scores:
    wid: int
    scores: ArrayRef  # float32 [heads, tokens, frames]


@dataclass(frozen=True)
class WindowError:
    wid: int
    message: str


# workers -> supervisor
@dataclass(frozen=True)
class Probe:
    nonce: int


@dataclass(frozen=True)
class Ready:
    kind: str
    index: int
    nonce: int
    pid: int


@dataclass(frozen=True)
class Planned:
    uid: str
    channel: int
    spans: list[SpeechWindow]


@dataclass(frozen=True)
class WindowDone:
    wid: int
    uid: str
    channel: int
    words: list[Word]
    redo: SpeechWindow | None  # the unfinished tail to decode again, or the whole window (redo.encode_whole)


@dataclass(frozen=True)
class WorkerFailure:
    uid: str
    message: str
