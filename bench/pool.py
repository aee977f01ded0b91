"""K client threads draining one work queue: how a server is loaded by K concurrent users.

Each clip is taken once by whichever thread is free, so a slow clip delays only its
own thread and the wall time is that of the whole set at concurrency K.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class PoolResult:
    """Per-item texts (None on failure), latencies in s, error messages by item, wall s."""

    texts: list[str | None]
    latencies: list[float]
    errors: dict[int, str]
    wall_s: float


def run_pool(k: int, count: int, work: Callable[[int], str]) -> PoolResult:
    """Run work(i) for i in range(count) on k threads; an exception marks item i as an error."""
    todo: queue.Queue[int] = queue.Queue()
    for i in range(count):
        todo.put(i)
    texts: list[str | None] = [None] * count
    latencies = [0.0] * count
    errors: dict[int, str] = {}

    def client() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            try:
                texts[i] = work(i)
            except Exception as exc:  # noqa: BLE001 - a failed request is data, not a crash
                errors[i] = f"{type(exc).__name__}: {exc}"
            latencies[i] = time.perf_counter() - start

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(k)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return PoolResult(texts, latencies, errors, time.perf_counter() - start)
