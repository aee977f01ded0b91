"""The front's side of the supervisor: hands jobs over and waits for their answers.

A request thread copies its PCM into a shared-memory block it owns, puts a descriptor on the
supervisor's queue and waits on an event; one reader thread routes the supervisor's answers
(results, failures, health) back. If the supervisor process itself dies, waiting requests fail
at once with a clear code and a new supervisor is started. If it stops answering (it reports
health every second), /health turns 501 within seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from daemon.jobs.client import Transcribed
from daemon.workers import messages as m
from daemon.config import DaemonConfig
from daemon.errors import request_timed_out, service_not_ready, worker_failed
from daemon.workers.ipc import TreeContext, release
from daemon.workers.leftovers import remove_tree_names, tree_prefix
from daemon.workers.lifeline import UNRESPONSIVE_AFTER_SECONDS
from daemon.workers.shm import OwnedBlock
from daemon.workers import entry
from engine.decoding.options import DecodeOptions

log = logging.getLogger("async_engine.dispatcher")


@dataclass
class _Pending:
    done: threading.Event
    answer: m.JobDone | m.JobFailed | None = None


class Dispatcher:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.prefix = tree_prefix()
        self.ctx = TreeContext(self.prefix)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._health = (False, {"status": "loading", "workers": []})
        self._health_at = time.monotonic()
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self._start_supervisor()
        self._reader = threading.Thread(target=self._read, name="supervisor-reader", daemon=True)
        self._reader.start()

    def _start_supervisor(self) -> None:
        self._jobs = self.ctx.Queue()
        self._results = self.ctx.Queue()
        self._queues_named = True  # until the supervisor has opened them: see daemon/workers/ipc.py
        self._supervisor = self.ctx.Process(
            target=entry.start, name="async-engine-supervisor",
            args=(entry.SUPERVISOR, self.config, self._jobs, self._results, self.prefix),
        )
        self._supervisor.start()

    def submit(self, uid: str, pcm: np.ndarray, timeout: float, options: DecodeOptions = DecodeOptions(),
               priority: int = m.FILE) -> Transcribed:
        """The words of `pcm` ([channels, samples] at 16 kHz); `priority`: m.FILE, or a live stream's turn
        (m.TURN, m.TURN_END), whose windows go ahead of files' (daemon/workers/inference.py)."""
        if self._draining.is_set():
            raise service_not_ready("the server is shutting down; retry on another instance")
        block = OwnedBlock(f"{self.prefix}pcm_{uid[2:]}", pcm.nbytes)
        pending = _Pending(threading.Event())
        try:
            block.array(pcm.shape, "float32")[:] = pcm  # any layout: one copy, into the block
            with self._lock:
                self._pending[uid] = pending
            self._jobs.put(m.Submit(uid, block.ref(pcm.shape, "float32"), options, priority))
            if not pending.done.wait(timeout):
                self._jobs.put(m.Cancel(uid, "timed out"))
                raise request_timed_out(timeout)
        finally:
            with self._lock:
                self._pending.pop(uid, None)
            block.close()
        answer = pending.answer
        if isinstance(answer, m.JobDone):
            return Transcribed(answer.channels, answer.redecoded, answer.speech)
        if isinstance(answer, m.JobFailed):
            raise worker_failed(answer.message)
        raise service_not_ready()

    def health(self) -> tuple[bool, dict]:
        ready, body = self._health
        silent = time.monotonic() - self._health_at
        if ready and silent > UNRESPONSIVE_AFTER_SECONDS:
            return False, {**body, "status": "unresponsive",
                           "detail": f"the supervisor process has not reported for {silent:.0f} s"}
        return ready, body

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._results.get(timeout=0.5)
            except queue.Empty:
                if not self._supervisor.is_alive() and not (self._stopping.is_set() or self._draining.is_set()):
                    self._supervisor_died()
                continue
            if self._queues_named:  # the supervisor speaks, so it has opened both queues
                release(self._jobs, self._results)
                self._queues_named = False
            if isinstance(message, m.HealthUpdate):
                self._health_at = time.monotonic()
                if self._draining.is_set():
                    continue
                self._health = (message.ready, {"status": message.status, "workers": message.workers})
            elif isinstance(message, (m.JobDone, m.JobFailed)):
                with self._lock:
                    pending = self._pending.get(message.uid)
                if pending is not None:
                    pending.answer = message
                    pending.done.set()

    def _supervisor_died(self) -> None:
        log.error("the supervisor process died (exit code %s); restarting it", self._supervisor.exitcode)
        self._health = (False, {"status": "restarting", "workers": []})
        with self._lock:
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.answer = m.JobFailed("", 13, "the supervisor process died")
            pending.done.set()
        for q in (self._jobs, self._results):
            q.cancel_join_thread()
            q.close()
        remove_tree_names(self.prefix)  # the dead supervisor's queues, if it died before its workers opened them
        time.sleep(1.0)
        self._start_supervisor()

    def drain(self, timeout: float) -> None:
        """Refuse new jobs and wait (up to timeout) for the ones in flight to finish."""
        self._draining.set()
        self._health = (False, {"status": "draining", "workers": self._health[1].get("workers", [])})
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the supervisor and its workers; leaves nothing in /dev/shm."""
        self._stopping.set()
        self._reader.join(2.0)
        if self._supervisor.is_alive():
            self._jobs.put(m.Stop())
            self._supervisor.join(15.0)
        if self._supervisor.is_alive():
            self._supervisor.kill()
            self._supervisor.join(2.0)
        for q in (self._jobs, self._results):
            q.cancel_join_thread()
            q.close()
        remove_tree_names(self.prefix)

