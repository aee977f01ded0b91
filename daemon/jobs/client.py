"""The seams between the HTTP front, the jobs and the process tree that transcribes.

WorkerPool: what a runner needs of the workers (daemon/workers/dispatcher.py; unit tests of the
HTTP layer use a stand-in). Jobs: what the HTTP surfaces need to create jobs, implemented by the
embedded Scheduler (one host) and by an API node's SharedScheduler (Redis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.decoding.options import DecodeOptions
from daemon.jobs.record import Job
from daemon.metrics import Load
from engine.result import Word


@dataclass(frozen=True)
class Transcribed:
    """What the workers made of a job's audio."""

    channels: list[list[Word]]  # one word list per channel, times in ms from the start of the audio
    redecoded: int = 0  # windows decoded again whole after their shortened encoding repeated itself
    # per channel: where the VAD heard speech, ms; a pool that leaves it empty has the words' runs stand in
    speech: list[list[tuple[int, int]]] = field(default_factory=list)


class WorkerPool(Protocol):
    def submit(self, uid: str, pcm: np.ndarray, timeout: float, options: DecodeOptions = DecodeOptions()
               ) -> Transcribed:
        """pcm: float32 [channels, samples] at 16 kHz (1 channel, or 2 for dual_channel). Blocks until done.
        Raises ApiError on failure."""

    def health(self) -> tuple[bool, dict]:
        """(ready, body): body has at least "status" and "workers", a list of {"name","kind","state","pid"}."""


class Jobs(Protocol):
    def enqueue(self, job: Job, audio: bytes | bytearray | None = None) -> Job:
        """Accept an asynchronous job: durable when this returns. Raises ApiError (429 queue full)."""

    def run_now(self, job: Job, deadline: float, audio: bytes | bytearray | None = None,
                busy_status: int = 423) -> Job:
        """Run a synchronous job and wait for it; returns it completed, or raises its ApiError
        (`busy_status` when every slot is taken and REJECT_OVER_PARALLEL is set)."""

    def load(self) -> Load:
        """Levels for /metrics: queued, in flight, capacity, worker nodes alive."""
