"""How worker processes live and are seen to live: stop signals, heartbeats.

Shutdown belongs to the front: child processes ignore the stop signals an init system sends.

systemd (and a terminal's Ctrl-C) signal the whole process group; if the workers died at once,
the front could not drain the jobs in flight. They stop when the supervisor says so, or when
their parent disappears.
"""

from __future__ import annotations

import signal
import threading
import time
from multiprocessing.context import BaseContext

PULSE_SECONDS = 0.5
UNRESPONSIVE_AFTER_SECONDS = 3.0  # no pulse this long: /health says 501 (replacement waits for WORKER_STALL_SECONDS)


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Heartbeat:
    """A worker's two signs of life, in shared memory that the supervisor reads.

    The pulse comes from a thread of the worker every PULSE_SECONDS, busy or not: when it stops,
    the process is stopped (SIGSTOP, a debugger), frozen in native code that holds the interpreter,
    or dead, and /health turns 501 within seconds. The beat comes from the worker's loop, once a
    round (a second when idle, a batch when busy): a long batch delays it, so only a beat older than
    WORKER_STALL_SECONDS (a deadlock, a driver hang) gets the worker killed and replaced.
    """

    def __init__(self, ctx: BaseContext) -> None:
        now = time.monotonic()  # CLOCK_MONOTONIC is shared by all processes
        self._beat = ctx.RawValue("d", now)
        self._pulse = ctx.RawValue("d", now)

    def beat(self) -> None:
        self._beat.value = time.monotonic()

    def start_pulse(self) -> None:
        """Called once in the worker process."""
        threading.Thread(target=self._pulsing, name="pulse", daemon=True).start()

    def _pulsing(self) -> None:
        while True:
            self._pulse.value = time.monotonic()
            time.sleep(PULSE_SECONDS)

    def age(self) -> float:
        """Seconds since the worker's loop last went round."""
        return time.monotonic() - self._beat.value

    def silence(self) -> float:
        """Seconds since the worker process last showed it runs at all."""
        return time.monotonic() - self._pulse.value
