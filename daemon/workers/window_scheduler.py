"""Scheduling inside the tree: jobs planned into windows, windows spread over the workers, words gathered.

A job's channels go to the least-loaded decoders for voice-activity planning; each planned window goes
to the least-loaded decoder and inference process; a window's words (and any part to decode again)
come back until the job has none outstanding, and the job's answer goes to the front.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing.queues import Queue

from daemon.errors import WORKER_FAILURE_CODE
from daemon.workers import messages as m
from daemon.workers.generation import Generation
from engine.decoding.options import DecodeOptions
from engine.result import Word
from engine.audio.speech_window import SpeechWindow

log = logging.getLogger("async_engine.supervisor")


@dataclass
class _Job:
    uid: str
    pcm: m.ArrayRef
    options: DecodeOptions
    words: list[list[Word]]
    speech: list[list[tuple[int, int]]]  # per channel: where the VAD heard speech, ms (the speaker labels' input)
    unplanned: int
    outstanding: int = 0
    attempts: int = 1
    plan_sent: bool = False
    redecoded: int = 0
    priority: int = m.FILE


class WindowScheduler:
    def __init__(self, results: Queue) -> None:
        self.results = results
        self.jobs: dict[str, _Job] = {}
        self.windows: dict[int, tuple[str, int, int]] = {}  # wid -> uid, decoder, inference
        self.wids = itertools.count()

    def submit(self, message: m.Submit, generation: Generation | None) -> None:
        channels = message.pcm.shape[0]
        job = _Job(message.uid, message.pcm, message.options, [[] for _ in range(channels)],
                   [[] for _ in range(channels)], channels, priority=message.priority)
        self.jobs[message.uid] = job
        if generation is not None and generation.ready:
            self._plan(job, generation)

    def plan_waiting(self, generation: Generation) -> None:
        """Plan every job that arrived while no generation was ready."""
        for job in self.jobs.values():
            if not job.plan_sent:
                self._plan(job, generation)

    def cancel(self, uid: str, generation: Generation | None) -> None:
        if self.jobs.pop(uid, None) is not None:
            self._forget_windows(uid, generation)

    def fail(self, uid: str, code: int, message: str, generation: Generation | None) -> None:
        """End a job with an error; its decoders (if `generation`) drop its windows."""
        if self.jobs.pop(uid, None) is not None:
            self._forget_windows(uid, generation)
            self.results.put(m.JobFailed(uid, code, message))

    def generation_lost(self) -> None:
        """The workers died with these jobs in flight: run each again once, fail it the second time."""
        self.windows.clear()
        for uid, job in list(self.jobs.items()):
            if job.attempts >= 2:
                self.fail(uid, WORKER_FAILURE_CODE, "a worker process died twice while transcribing this file", None)
            else:
                job.attempts += 1
                job.words = [[] for _ in job.words]
                job.speech = [[] for _ in job.words]
                job.unplanned, job.outstanding, job.plan_sent, job.redecoded = len(job.words), 0, False, 0

    def fail_all(self, message: str) -> None:
        for uid in list(self.jobs):
            self.fail(uid, WORKER_FAILURE_CODE, message, None)

    def planned(self, message: m.Planned, generation: Generation) -> None:
        job = self.jobs.get(message.uid)
        if job is None:
            return
        job.unplanned -= 1
        log.debug("uid=%s channel %d: %d window(s)", job.uid, message.channel, len(message.spans))
        for span in message.spans:
            job.speech[message.channel] += span.speech_ms()
            self._dispatch(job, message.channel, span, generation)
        self._maybe_done(job)

    def window_done(self, message: m.WindowDone, generation: Generation | None) -> None:
        self.windows.pop(message.wid, None)
        job = self.jobs.get(message.uid)
        if job is None:
            return
        job.outstanding -= 1
        job.words[message.channel].extend(message.words)
        if message.redo is not None and generation is not None:
            job.redecoded += message.redo.encode_whole
            self._dispatch(job, message.channel, message.redo, generation)
        self._maybe_done(job)

    def _least_loaded(self, count: int, slot: int) -> int:
        load: dict[int, int] = defaultdict(int)
        for entry in self.windows.values():
            load[entry[slot]] += 1
        return min(range(count), key=lambda i: load[i])

    def _plan(self, job: _Job, generation: Generation) -> None:
        log.debug("uid=%s planning %d channel(s), attempt %d", job.uid, len(job.words), job.attempts)
        job.plan_sent = True
        for channel in range(len(job.words)):
            decoder = self._least_loaded(len(generation.decoders), 1)
            generation.decoders[decoder].inbox.put(m.Plan(job.uid, channel, job.pcm))

    def _dispatch(self, job: _Job, channel: int, span: SpeechWindow, generation: Generation) -> None:
        wid = next(self.wids)
        decoder = self._least_loaded(len(generation.decoders), 1)
        inference = self._least_loaded(len(generation.inference), 2)
        self.windows[wid] = (job.uid, decoder, inference)
        generation.decoders[decoder].windows += 1
        generation.inference[inference].windows += 1
        job.outstanding += 1
        generation.decoders[decoder].inbox.put(m.Window(wid, job.uid, channel, job.pcm, span, inference, job.options,
                                                               job.priority))

    def _maybe_done(self, job: _Job) -> None:
        if job.unplanned == 0 and job.outstanding == 0:
            del self.jobs[job.uid]
            log.debug("uid=%s done", job.uid)
            channels = [sorted(words, key=lambda w: (w.start_ms, w.end_ms)) for words in job.words]
            self.results.put(m.JobDone(job.uid, channels, job.redecoded, job.speech))

    def _forget_windows(self, uid: str, generation: Generation | None) -> None:
        decoders = set()
        for wid, (owner, decoder, _) in list(self.windows.items()):
            if owner == uid:
                del self.windows[wid]
                decoders.add(decoder)
        if generation is not None:
            for decoder in decoders:
                generation.decoders[decoder].inbox.put(m.Cancel(uid))
