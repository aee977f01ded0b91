"""The names a process tree of ours puts in /dev/shm, and the removal of a dead tree's at start.

Shared-memory blocks have no names (daemon/workers/shm.py), but a queue's semaphores must have one until
every process that uses it has opened it (daemon/workers/ipc.py). A tree killed whole in that moment (the
OOM killer, systemd's final SIGKILL) leaves them behind, and nothing else ever would remove them.
So every name carries its front's prefix, `ae<pid>-<start>_`: the pid, and that process's start
time in clock ticks since boot (/proc/<pid>/stat), which tells a live front from a pid the kernel
has since reused. At start the front removes every name of a tree whose front is gone; names of a
live tree (another server on this host) are left alone. Versions before this one named their
blocks `ae<pid>_...` without a start time; those go when their pid is not running at all.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

SHM_DIR = Path("/dev/shm")
_NAME = re.compile(r"(?:sem\.)?ae(\d+)(?:-(\d+))?_")
log = logging.getLogger("async_engine.leftovers")


def tree_prefix(pid: int | None = None) -> str:
    """The prefix of every name the tree of front `pid` (default: this process) creates."""
    pid = pid or os.getpid()
    return f"ae{pid}-{process_start(pid)}_"


def process_start(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot; None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22; the command name may hold spaces


def remove_dead_trees() -> list[str]:
    """Remove what trees whose front is no longer running left in /dev/shm; returns the names."""
    removed = []
    for path in _entries():
        match = _NAME.match(path.name)
        if match is None:
            continue
        pid, start = int(match.group(1)), match.group(2)
        running = process_start(pid)
        alive = running is not None and (start is None or int(start) == running)
        if not alive and _remove(path):
            removed.append(path.name)
    if removed:
        log.warning("removed %d name(s) in %s left by async-engine process trees that were killed: %s",
                    len(removed), SHM_DIR, ", ".join(sorted(removed)[:10]) + (" ..." if len(removed) > 10 else ""))
    return removed


def remove_tree_names(prefix: str) -> list[str]:
    """Remove every name of the tree with this prefix (its front is stopping, or a child died mid-start)."""
    return [path.name for path in _entries()
            if path.name.removeprefix("sem.").startswith(prefix) and _remove(path)]


def tree_names(prefix: str) -> list[str]:
    return sorted(path.name for path in _entries() if path.name.removeprefix("sem.").startswith(prefix))


def _entries() -> list[Path]:
    try:
        return list(SHM_DIR.iterdir())
    except FileNotFoundError:
        return []


def _remove(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except (FileNotFoundError, PermissionError):  # gone already, or another user's
        return False
