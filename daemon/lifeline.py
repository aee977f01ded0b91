"""Shutdown belongs to the front: child processes ignore the stop signals an init system sends.

systemd (and a terminal's Ctrl-C) signal the whole process group; if the workers died at once,
the front could not drain the jobs in flight. They stop when the supervisor says so, or when
their parent disappears.
"""

from __future__ import annotations

import signal


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
