"""Queues between the tree's processes whose semaphores are named only until every peer has opened them.

A multiprocessing Queue under the spawn start method rests on three POSIX named semaphores: a
child opens them by name when it unpickles the queue, as it starts. multiprocessing names them at
random (`sem.mp-*`) and registers them with its resource tracker, a helper process that unlinks
them when the tree ends; if the tracker is killed, or the whole tree is, they stay in /dev/shm for
good, and nothing can tell whose they were.

TreeContext is the spawn context with two changes: the semaphores are named with the tree's
prefix (daemon/workers/leftovers.py removes a dead tree's at the next start), and no resource tracker
hears of them (there is none to kill). `release()` unlinks their names once every process using a
queue has started; the semaphores themselves live on in the processes that opened them.
"""

from __future__ import annotations

import secrets
from multiprocessing import context, synchronize
from multiprocessing.queues import Queue

import _multiprocessing


class TreeContext(context.SpawnContext):
    """mp.get_context("spawn"), but its locks and semaphores are named `/<prefix>sem<random>` and untracked."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def Lock(self) -> synchronize.Lock:  # noqa: N802 (multiprocessing's name)
        return _Lock(self.prefix)

    def BoundedSemaphore(self, value: int = 1) -> synchronize.BoundedSemaphore:  # noqa: N802
        return _BoundedSemaphore(value, self.prefix)


def release(*queues: Queue) -> None:
    """Unlink the names behind these queues: every process that uses them must have opened them already."""
    for q in queues:
        for lock in (q._rlock, q._wlock, q._sem):  # type: ignore[attr-defined]
            name = getattr(getattr(lock, "_semlock", None), "name", None)
            if name is not None:
                try:
                    _multiprocessing.sem_unlink(name)
                except FileNotFoundError:
                    pass


class _Untracked:
    """The part of multiprocessing's SemLock.__init__ we keep: create the semaphore, under our name."""

    def _create(self, value: int, maxvalue: int, prefix: str) -> None:
        self._is_fork_ctx = False  # read by SemLock.__getstate__ (Python 3.11.7+)
        for _ in range(100):
            name = f"/{prefix}sem{secrets.token_hex(6)}"
            try:
                self._semlock = _multiprocessing.SemLock(synchronize.SEMAPHORE, value, maxvalue, name, False)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError("cannot find a free name for a semaphore")
        self._make_methods()  # type: ignore[attr-defined]


class _Lock(_Untracked, synchronize.Lock):
    def __init__(self, prefix: str) -> None:
        self._create(1, 1, prefix)


class _BoundedSemaphore(_Untracked, synchronize.BoundedSemaphore):
    def __init__(self, value: int, prefix: str) -> None:
        self._create(value, value, prefix)
