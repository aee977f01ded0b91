"""Shared-memory blocks viewed as numpy arrays, with one owner each and names that say whose.

Queues carry only descriptors (block name, shape, dtype, offsets); the arrays themselves live
here. Every block has exactly one owner, who creates and unlinks it. All the daemon's processes
share the resource tracker the front starts, which holds names in a set: an attachment's implicit
registration is a no-op and must not be undone (that would drop the owner's), and if the whole tree
is killed the tracker still unlinks what was left. Names start with the daemon's prefix so that a
supervisor can sweep what a killed worker left behind.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")
log = logging.getLogger("async_engine.shm")


def daemon_prefix(daemon_pid: int | None = None) -> str:
    return f"ae{daemon_pid or os.getpid()}_"


@dataclass(frozen=True)
class ArrayRef:
    """What a queue carries instead of an array."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class OwnedBlock:
    """A block this process created and must unlink."""

    def __init__(self, name: str, nbytes: int) -> None:
        self.shm = shared_memory.SharedMemory(name=name, create=True, size=max(1, nbytes))
        self.name = name

    def array(self, shape: tuple[int, ...], dtype: str, offset: int = 0) -> np.ndarray:
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset)

    def ref(self, shape: tuple[int, ...], dtype: str, offset: int = 0) -> ArrayRef:
        return ArrayRef(self.name, tuple(int(s) for s in shape), dtype, offset)

    def close(self) -> None:
        """Unlink and unmap; views into the block must be dropped first."""
        try:
            self.shm.close()
        except BufferError:
            pass  # a view is still alive: the mapping goes with the process, the name goes now
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass


class Attachments:
    """Blocks other processes own, attached once per name and cached."""

    def __init__(self) -> None:
        self._blocks: dict[str, shared_memory.SharedMemory] = {}

    def view(self, ref: ArrayRef) -> np.ndarray:
        block = self._blocks.get(ref.name)
        if block is None:
            block = shared_memory.SharedMemory(name=ref.name)
            self._blocks[ref.name] = block
        return np.ndarray(ref.shape, dtype=ref.dtype, buffer=block.buf, offset=ref.offset)

    def forget(self, name: str) -> None:
        block = self._blocks.pop(name, None)
        if block is not None:
            try:
                block.close()
            except BufferError:  # an array still points into it: it stays mapped until that goes
                log.warning("shared memory block %s is still in use; it stays mapped", name)

    def close(self) -> None:
        for name in list(self._blocks):
            self.forget(name)


def sweep(prefix: str, infix: str = "") -> list[str]:
    """Unlink every block whose name starts with prefix and contains infix; returns their names."""
    removed = []
    if not SHM_DIR.is_dir():
        return removed
    for path in SHM_DIR.iterdir():
        if path.name.startswith(prefix) and infix in path.name:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            resource_tracker.unregister("/" + path.name, "shared_memory")  # its owner never will
            removed.append(path.name)
    return removed
