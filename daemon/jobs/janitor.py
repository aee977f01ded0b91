"""Removes jobs past JOB_RETENTION_HOURS, with their audio, on every kind of node."""

from __future__ import annotations

import logging
import threading
import time

from daemon.jobs.store import JobStore

log = logging.getLogger("async_engine.jobs")

EVERY_SECONDS = 600.0


def remove_expired_jobs(store: JobStore, hours: float, stopping: threading.Event) -> None:
    """Runs until `stopping` is set; a job outlives its retention by a quarter of it at most."""
    every = min(EVERY_SECONDS, hours * 3600 / 4)
    while True:
        try:
            removed = store.purge(time.time() - hours * 3600)
            if removed:
                log.info("removed %d job(s) finished more than %g h ago (JOB_RETENTION_HOURS), with their audio",
                         removed, hours)
        except Exception:
            log.exception("removing expired jobs failed; trying again later")
        if stopping.wait(every):
            return
