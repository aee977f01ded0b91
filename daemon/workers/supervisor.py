"""Supervisor process: the loop that ties worker lifecycle, health and scheduling together.

Its three jobs each have a home: daemon/workers/generation.py starts, watches and stops a generation
of inference and decoder processes; health.py turns that into /health's answer; window_scheduler.py
plans jobs into windows and spreads them over the workers. When any worker dies the whole generation
is stopped and a new one started with backoff; jobs it held are retried once, then fail with a clear
code.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import time
from multiprocessing.connection import wait
from multiprocessing.queues import Queue

from daemon import logs, metrics
from daemon.config import DaemonConfig
from daemon.errors import WORKER_FAILURE_CODE
from daemon.workers import messages as m
from daemon.workers.generation import Generation
from daemon.workers.health import health_update
from daemon.workers.ipc import TreeContext
from daemon.workers.leftovers import remove_tree_names
from daemon.workers.lifeline import ignore_stop_signals
from daemon.workers.window_scheduler import WindowScheduler

log = logging.getLogger("async_engine.supervisor")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STOP_GRACE_SECONDS = 5.0
HEALTH_REFRESH_SECONDS = 1.0


class Supervisor:
    def __init__(self, config: DaemonConfig, jobs: Queue, results: Queue, prefix: str) -> None:
        self.config = config
        self.jobs_in = jobs
        self.results = results
        self.prefix = prefix
        self.ctx = TreeContext(prefix)
        self.scheduler = WindowScheduler(results)
        self.nonce = itertools.count(1)
        self.failures = 0
        self.generation: Generation | None = None
        self.restart_at = 0.0
        self.stopping = False
        self.health_published = 0.0
        self._was_ready = False

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
                self.generation.kill_stalled(self.config.worker_stall_seconds)
                if self.generation.dead():
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
        self.generation = Generation.start(self.config, self.ctx, self.prefix, self.nonce)
        self._publish_health()

    def _lose_generation(self) -> None:
        """A worker died: stop its generation (its memory goes with its processes), retry or fail its jobs."""
        generation = self.generation
        assert generation is not None
        log.error("worker(s) %s died; restarting all workers", ", ".join(generation.dead()))
        metrics.workers_restarted()
        generation.stop(grace=1.0)
        self.generation = None
        self.failures += 1
        self.restart_at = time.monotonic() + RESTART_BACKOFF[min(self.failures, len(RESTART_BACKOFF)) - 1]
        self.scheduler.generation_lost()
        self._publish_health()

    def _shutdown(self) -> None:
        self.stopping = True
        if self.generation is not None:
            self.generation.stop(STOP_GRACE_SECONDS)
        self.scheduler.fail_all("the server is shutting down")

    def _ready(self) -> bool:
        return self.generation is not None and self.generation.ready

    def _publish_health(self) -> None:
        """/health's answer every HEALTH_REFRESH_SECONDS; the moment a generation becomes ready, its
        queues lose their names and the jobs that waited for it are planned."""
        self.health_published = time.monotonic()
        self.results.put(health_update(self.generation, self.failures))
        ready, was_ready = self._ready(), self._was_ready
        self._was_ready = ready
        if ready and not was_ready:
            self.failures = 0
            self.generation.unname_queues()
            self.scheduler.plan_waiting(self.generation)

    def _handle(self, message) -> None:
        live = self.generation if self._ready() else None
        if isinstance(message, m.Submit):
            self.scheduler.submit(message, live)
        elif isinstance(message, m.Cancel):
            self.scheduler.cancel(message.uid, self.generation)
        elif isinstance(message, m.Ready):
            if self.generation is not None and self.generation.mark_ready(message):
                self._publish_health()
        elif isinstance(message, m.Planned):
            if self.generation is not None:
                self.scheduler.planned(message, self.generation)
        elif isinstance(message, m.WindowDone):
            self.scheduler.window_done(message, self.generation)
        elif isinstance(message, m.WorkerFailure):
            self.scheduler.fail(message.uid, WORKER_FAILURE_CODE, message.message,
                                None if self.stopping else self.generation)


def run_supervisor(config: DaemonConfig, jobs: Queue, results: Queue, prefix: str) -> None:
    """Process entry point."""
    ignore_stop_signals()
    logs.configure(config.log_level)
    try:
        Supervisor(config, jobs, results, prefix).run()
    except KeyboardInterrupt:
        pass
