"""How worker processes live and are seen to live: stop signals, heartbeats.

Shutdown belongs to the front: child processes ignore the stop signals an init system sends.

systemd (and a terminal's Ctrl-C) signal the whole process group; if the workers died at once,
the front could not drain the jobs in flight. They stop when the supervisor says so, or when
their parent disappears.
"""

from __future__ import annotations

import signal
import time
from multiprocessing.context import BaseContext


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Heartbeat:
    """A worker's last sign of life, in shared memory that the supervisor reads.

    A worker that is alive but stuck (a deadlock, a driver hang, SIGSTOP) holds its jobs forever
    unless someone notices; every worker loop beats at least once a second when idle and once per
    batch when busy, so a heartbeat older than WORKER_STALL_SECONDS means no progress.
    """

    def __init__(self, ctx: BaseContext) -> None:
        self._last = ctx.RawValue("d", time.monotonic())  # CLOCK_MONOTONIC is shared by all processes

    def beat(self) -> None:
        self._last.value = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last.value
