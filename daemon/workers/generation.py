"""Worker process lifecycle: one generation of inference and decoder processes and their queues.

A generation is started whole and stopped whole. A process killed while holding a queue's lock would
wedge that queue for everyone, so when any worker dies the supervisor stops the generation and starts
a new one with fresh queues. The queues keep names in /dev/shm only until every worker has answered its
probe (daemon/workers/ipc.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

from daemon.config import DaemonConfig, usable_cores
from daemon.workers import messages as m
from daemon.workers import entry
from daemon.workers.ipc import TreeContext, release
from daemon.workers.lifeline import UNRESPONSIVE_AFTER_SECONDS, Heartbeat

log = logging.getLogger("async_engine.supervisor")


@dataclass
class Worker:
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
class Generation:
    events: Queue
    inference: list[Worker] = field(default_factory=list)
    decoders: list[Worker] = field(default_factory=list)
    queues_named: bool = True  # until every worker has opened the queues (answered its probe)

    @classmethod
    def start(cls, config: DaemonConfig, ctx: TreeContext, prefix: str, nonce: itertools.count) -> "Generation":
        """Spawn an inference process per device and the decoder pool, each probed for readiness."""
        generation = cls(ctx.Queue())
        inference_inboxes = [ctx.Queue() for _ in config.devices]
        decoder_inboxes = [ctx.Queue() for _ in range(config.decoders)]
        cpu_devices = sum(1 for d in config.devices if d == "cpu")
        threads = max(1, usable_cores() // max(1, cpu_devices))
        for index, device in enumerate(config.devices):
            heartbeat = Heartbeat(ctx)
            process = ctx.Process(
                target=entry.start, name=f"async-engine-inference-{index}", daemon=True,
                args=(entry.INFERENCE, index, device, config.engine, config.windows_in_flight, config.stream_slots, threads,
                      inference_inboxes[index], generation.events, decoder_inboxes, prefix, heartbeat, config.log_level),
            )
            generation.inference.append(Worker("inference", index, process, inference_inboxes[index], heartbeat))
        for index in range(config.decoders):
            heartbeat = Heartbeat(ctx)
            process = ctx.Process(
                target=entry.start, name=f"async-engine-decoder-{index}", daemon=True,
                args=(entry.DECODER, index, config.engine, decoder_inboxes[index], generation.events,
                      inference_inboxes, heartbeat, config.log_level),
            )
            generation.decoders.append(Worker("decoder", index, process, decoder_inboxes[index], heartbeat))
        for worker in generation.workers:
            worker.process.start()
            worker.inbox.put(m.Probe(next(nonce)))
        log.info("started %d inference and %d decoder processes", len(generation.inference),
                 len(generation.decoders))
        return generation

    @property
    def workers(self) -> list[Worker]:
        return self.inference + self.decoders

    @property
    def queues(self) -> list[Queue]:
        return [self.events] + [w.inbox for w in self.workers]

    @property
    def ready(self) -> bool:
        return all(w.state == "ready" for w in self.workers)

    def dead(self) -> list[str]:
        return [w.name for w in self.workers if not w.process.is_alive()]

    def mark_ready(self, message: m.Ready) -> bool:
        """Record a worker's answer to its probe; False if it names no worker of this generation."""
        group = self.inference if message.kind == "inference" else self.decoders
        if message.index >= len(group):
            return False
        group[message.index].state, group[message.index].pid = "ready", message.pid
        return True

    def unname_queues(self) -> None:
        """Every worker has opened every queue: their names in /dev/shm can go."""
        if self.queues_named:
            release(*self.queues)
            self.queues_named = False

    def kill_stalled(self, stall_seconds: int) -> None:
        """A ready worker without a heartbeat for WORKER_STALL_SECONDS is as good as dead: kill it."""
        for worker in self.workers:
            age = worker.heartbeat.age()
            if worker.state == "ready" and worker.process.is_alive() and age > stall_seconds:
                log.error("%s (pid %s) made no progress for %.0f s (WORKER_STALL_SECONDS=%d); killing it",
                          worker.name, worker.pid, age, stall_seconds)
                worker.process.kill()
                worker.process.join(5.0)

    def stop(self, grace: float) -> None:
        """Ask every worker to stop, kill what is still alive after `grace`, close and unname the queues."""
        for worker in self.workers:
            if worker.process.is_alive():
                worker.inbox.put(m.Stop())
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
        for q in self.queues:
            q.cancel_join_thread()
            q.close()
        release(*self.queues)  # names of queues whose workers never all started
