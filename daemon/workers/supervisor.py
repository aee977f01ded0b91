"""Supervisor process: plans jobs into windows, dispatches them, watches and restarts workers.

Workers run as one generation: an inference process per device and a pool of decoder processes,
with fresh queues. A process killed while holding a queue's lock would wedge that queue for
everyone, so when any worker dies the whole generation is stopped and a new one started with
backoff; jobs it held are retried once, then fail with a clear code. The generation's queues keep
names in /dev/shm only until every worker has answered its probe (daemon/workers/ipc.py).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

from daemon import logs, metrics
from daemon.workers import messages as m
from daemon.config import DaemonConfig, usable_cores
from daemon.errors import WORKER_FAILURE_CODE
from daemon.workers.entry import decoder_process, inference_process
from daemon.workers.ipc import TreeContext, release
from daemon.workers.leftovers import remove_tree_names
from daemon.workers.lifeline import UNRESPONSIVE_AFTER_SECONDS, Heartbeat, ignore_stop_signals
from engine.decode_options import DecodeOptions
from engine.result import Word
from engine.speech_window import SpeechWindow

log = logging.getLogger("async_engine.supervisor")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STOP_GRACE_SECONDS = 5.0
HEALTH_REFRESH_SECONDS = 1.0


@dataclass
class _Worker:
    kind: str
    index: int
    process: BaseProcess
    inbox: Queue
    heartbeat: Heartbeat
    state: str = "starting"
    pid: int | None = None
    windows: int = 0  # windows dispatched to it, shown in /health so load sharing is visible

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"

    @property
    def responsive(self) -> bool:
        return self.heartbeat.silence() <= UNRESPONSIVE_AFTER_SECONDS

    def describe(self) -> dict:
        state = "unresponsive" if self.state == "ready" and not self.responsive else self.state
        return {"name": self.name, "kind": self.kind, "state": state, "pid": self.pid or self.process.pid,
                "windows": self.windows, "heartbeat_age_s": round(self.heartbeat.silence(), 1)}


@dataclass
class _Job:
    uid: str
    pcm: m.ArrayRef
    options: DecodeOptions
    words: list[list[Word]]
    unplanned: int
    outstanding: int = 0
    attempts: int = 1
    plan_sent: bool = False


@dataclass
class _Generation:
    events: Queue
    inference: list[_Worker] = field(default_factory=list)
    decoders: list[_Worker] = field(default_factory=list)
    queues_named: bool = True  # until every worker has opened the queues (answered its probe)

    @property
    def workers(self) -> list[_Worker]:
        return self.inference + self.decoders

    @property
    def queues(self) -> list[Queue]:
        return [self.events] + [w.inbox for w in self.workers]


class Supervisor:
    def __init__(self, config: DaemonConfig, jobs: Queue, results: Queue, prefix: str) -> None:
        self.config = config
        self.jobs_in = jobs
        self.results = results
        self.prefix = prefix
        self.ctx = TreeContext(prefix)
        self.jobs: dict[str, _Job] = {}
        self.windows: dict[int, tuple[str, int, int]] = {}  # wid -> uid, decoder, inference
        self.wids = itertools.count()
        self.nonce = itertools.count(1)
        self.failures = 0
        self.generation: _Generation | None = None
        self.restart_at = 0.0
        self.stopping = False
        self.health_published = 0.0
        self._was_started = False

    def run(self) -> None:
        parent = os.getppid()
        self._start_generation()
        while True:
            if os.getppid() != parent:  # the front was killed: nobody will collect results
                log.error("the front process is gone; stopping the workers")
                self._shutdown()
                remove_tree_names(self.prefix)
                return
            if self.generation is None and time.monotonic() >= self.restart_at:
                self._start_generation()
            for message in self._receive():
                if isinstance(message, m.Stop):
                    self._shutdown()
                    return
                self._handle(message)
            if self.generation is not None:
                self._kill_stalled(self.generation)
                if any(not w.process.is_alive() for w in self.generation.workers):
                    self._lose_generation()
            if time.monotonic() - self.health_published > HEALTH_REFRESH_SECONDS:
                self._publish_health()

    def _receive(self) -> list:
        sources = [self.jobs_in._reader]  # type: ignore[attr-defined]
        if self.generation is not None:
            sources.append(self.generation.events._reader)  # type: ignore[attr-defined]
            sources += [w.process.sentinel for w in self.generation.workers]
        wait(sources, timeout=0.5)
        received = []
        for q in [self.jobs_in] + ([self.generation.events] if self.generation is not None else []):
            while True:
                try:
                    received.append(q.get_nowait())
                except queue.Empty:
                    break
        return received

    def _start_generation(self) -> None:
        cfg = self.config
        events = self.ctx.Queue()
        generation = _Generation(events)
        inference_inboxes = [self.ctx.Queue() for _ in cfg.devices]
        decoder_inboxes = [self.ctx.Queue() for _ in range(cfg.decoders)]
        cpu_devices = sum(1 for d in cfg.devices if d == "cpu")
        threads = max(1, usable_cores() // max(1, cpu_devices))
        for index, device in enumerate(cfg.devices):
            heartbeat = Heartbeat(self.ctx)
            process = self.ctx.Process(
                target=inference_process, name=f"async-engine-inference-{index}", daemon=True,
                args=(index, device, cfg.engine, cfg.windows_in_flight, threads, inference_inboxes[index],
                      events, decoder_inboxes, self.prefix, heartbeat, cfg.log_level),
            )
            generation.inference.append(_Worker("inference", index, process, inference_inboxes[index], heartbeat))
        for index in range(cfg.decoders):
            heartbeat = Heartbeat(self.ctx)
            process = self.ctx.Process(
                target=decoder_process, name=f"async-engine-decoder-{index}", daemon=True,
                args=(index, cfg.engine, decoder_inboxes[index], events, inference_inboxes, heartbeat,
                      cfg.log_level),
            )
            generation.decoders.append(_Worker("decoder", index, process, decoder_inboxes[index], heartbeat))
        for worker in generation.workers:
            worker.process.start()
            worker.inbox.put(m.Probe(next(self.nonce)))
        self.generation = generation
        log.info("started %d inference and %d decoder processes", len(generation.inference), len(generation.decoders))
        self._publish_health()

    def _kill_stalled(self, generation: _Generation) -> None:
        """A ready worker without a heartbeat for WORKER_STALL_SECONDS is as good as dead: kill it."""
        for worker in generation.workers:
            age = worker.heartbeat.age()
            if worker.state == "ready" and worker.process.is_alive() and age > self.config.worker_stall_seconds:
                log.error("%s (pid %s) made no progress for %.0f s (WORKER_STALL_SECONDS=%d); killing it",
                          worker.name, worker.pid, age, self.config.worker_stall_seconds)
                worker.process.kill()
                worker.process.join(5.0)

    def _lose_generation(self) -> None:
        """A worker died: stop its generation (its memory goes with its processes), retry or fail its jobs."""
        generation = self.generation
        assert generation is not None
        dead = [w.name for w in generation.workers if not w.process.is_alive()]
        log.error("worker(s) %s died; restarting all workers", ", ".join(dead))
        metrics.workers_restarted()
        self._stop_generation(generation, grace=1.0)
        self.generation = None
        self.failures += 1
        self.restart_at = time.monotonic() + RESTART_BACKOFF[min(self.failures, len(RESTART_BACKOFF)) - 1]
        self.windows.clear()
        for uid, job in list(self.jobs.items()):
            if job.attempts >= 2:
                self._fail(uid, WORKER_FAILURE_CODE, "a worker process died twice while transcribing this file")
            else:
                job.attempts += 1
                job.words = [[] for _ in job.words]
                job.unplanned, job.outstanding, job.plan_sent = len(job.words), 0, False
        self._publish_health()

    def _stop_generation(self, generation: _Generation, grace: float) -> None:
        for worker in generation.workers:
            if worker.process.is_alive():
                worker.inbox.put(m.Stop())
        deadline = time.monotonic() + grace
        for worker in generation.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
        for q in generation.queues:
            q.cancel_join_thread()
            q.close()
        release(*generation.queues)  # names of queues whose workers never all started

    def _shutdown(self) -> None:
        self.stopping = True
        if self.generation is not None:
            self._stop_generation(self.generation, STOP_GRACE_SECONDS)
        for uid in list(self.jobs):
            self._fail(uid, WORKER_FAILURE_CODE, "the server is shutting down")

    def _publish_health(self) -> None:
        """/health's answer, every HEALTH_REFRESH_SECONDS: ready once every worker answered its probe
        and while each keeps its pulse (a stopped or frozen one shows "unresponsive" within seconds)."""
        workers = [w.describe() for w in self.generation.workers] if self.generation else []
        states = {w["state"] for w in workers}
        ready = bool(workers) and states == {"ready"}
        status = ("ok" if ready else "restarting" if self.generation is None and self.failures
                  else "unresponsive" if "unresponsive" in states else "loading")
        started = self._ready()
        was_started = self._was_started
        self._was_started = started
        self.health_published = time.monotonic()
        self.results.put(m.HealthUpdate(ready, status, workers))
        if started and not was_started:
            self.failures = 0
            if self.generation.queues_named:  # every worker has opened every queue of its generation
                release(*self.generation.queues)
                self.generation.queues_named = False
            for job in self.jobs.values():
                if not job.plan_sent:
                    self._plan(job)

    def _handle(self, message) -> None:
        if isinstance(message, m.Submit):
            job = _Job(message.uid, message.pcm, message.options, [[] for _ in range(message.pcm.shape[0])],
                       message.pcm.shape[0])
            self.jobs[message.uid] = job
            if self._ready():
                self._plan(job)
        elif isinstance(message, m.Cancel):
            if self.jobs.pop(message.uid, None) is not None:
                self._forget_windows(message.uid, notify=True)
        elif isinstance(message, m.Ready):
            self._mark_ready(message)
        elif isinstance(message, m.Planned):
            self._planned(message)
        elif isinstance(message, m.WindowDone):
            self._window_done(message)
        elif isinstance(message, m.WorkerFailure):
            self._fail(message.uid, WORKER_FAILURE_CODE, message.message)

    def _ready(self) -> bool:
        return self.generation is not None and all(w.state == "ready" for w in self.generation.workers)

    def _mark_ready(self, message: m.Ready) -> None:
        if self.generation is None:
            return
        group = self.generation.inference if message.kind == "inference" else self.generation.decoders
        if message.index < len(group):
            group[message.index].state, group[message.index].pid = "ready", message.pid
            self._publish_health()

    def _least_loaded(self, count: int, slot: int) -> int:
        load: dict[int, int] = defaultdict(int)
        for entry in self.windows.values():
            load[entry[slot]] += 1
        return min(range(count), key=lambda i: load[i])

    def _plan(self, job: _Job) -> None:
        assert self.generation is not None
        log.debug("uid=%s planning %d channel(s), attempt %d", job.uid, len(job.words), job.attempts)
        job.plan_sent = True
        for channel in range(len(job.words)):
            decoder = self._least_loaded(len(self.generation.decoders), 1)
            self.generation.decoders[decoder].inbox.put(m.Plan(job.uid, channel, job.pcm))

    def _dispatch(self, job: _Job, channel: int, span: SpeechWindow) -> None:
        assert self.generation is not None
        wid = next(self.wids)
        decoder = self._least_loaded(len(self.generation.decoders), 1)
        inference = self._least_loaded(len(self.generation.inference), 2)
        self.windows[wid] = (job.uid, decoder, inference)
        self.generation.decoders[decoder].windows += 1
        self.generation.inference[inference].windows += 1
        job.outstanding += 1
        self.generation.decoders[decoder].inbox.put(m.Window(wid, job.uid, channel, job.pcm, span, inference,
                                                             job.options))

    def _planned(self, message: m.Planned) -> None:
        job = self.jobs.get(message.uid)
        if job is None or self.generation is None:
            return
        job.unplanned -= 1
        log.debug("uid=%s channel %d: %d window(s)", job.uid, message.channel, len(message.spans))
        for span in message.spans:
            self._dispatch(job, message.channel, span)
        self._maybe_done(job)

    def _window_done(self, message: m.WindowDone) -> None:
        self.windows.pop(message.wid, None)
        job = self.jobs.get(message.uid)
        if job is None:
            return
        job.outstanding -= 1
        job.words[message.channel].extend(message.words)
        if message.redo is not None:
            self._dispatch(job, message.channel, message.redo)
        self._maybe_done(job)

    def _maybe_done(self, job: _Job) -> None:
        if job.unplanned == 0 and job.outstanding == 0:
            del self.jobs[job.uid]
            log.debug("uid=%s done", job.uid)
            channels = [sorted(words, key=lambda w: (w.start_ms, w.end_ms)) for words in job.words]
            self.results.put(m.JobDone(job.uid, channels))

    def _fail(self, uid: str, code: int, message: str) -> None:
        if self.jobs.pop(uid, None) is not None:
            self._forget_windows(uid, notify=not self.stopping)
            self.results.put(m.JobFailed(uid, code, message))

    def _forget_windows(self, uid: str, notify: bool) -> None:
        decoders = set()
        for wid, (owner, decoder, _) in list(self.windows.items()):
            if owner == uid:
                del self.windows[wid]
                decoders.add(decoder)
        if notify and self.generation is not None:
            for decoder in decoders:
                self.generation.decoders[decoder].inbox.put(m.Cancel(uid))


def run_supervisor(config: DaemonConfig, jobs: Queue, results: Queue, prefix: str) -> None:
    """Process entry point."""
    ignore_stop_signals()
    logs.configure(config.log_level)
    try:
        Supervisor(config, jobs, results, prefix).run()
    except KeyboardInterrupt:
        pass
