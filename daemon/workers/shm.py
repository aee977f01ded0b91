"""Shared memory without names: memfd blocks viewed as numpy arrays, one owner each.

Queues carry only descriptors (owner, descriptor, name, shape, dtype, offset); the arrays live
here. A block is an anonymous memfd, not a name in /dev/shm. A name outlives its processes: when a
whole tree is killed at once (the OOM killer, systemd's final SIGKILL) nobody unlinks it and its
memory stays taken until reboot, which is what the inference processes' 360 MB of blocks did. A
memfd's memory goes with its last descriptor or mapping, so a dead tree leaves nothing behind,
and no cleanup code has to run for that to hold.

Peers attach by opening /proc/<owner pid>/fd/<descriptor>: the kernel allows it to processes of
the same user (as it does /dev/shm names) and hands out the same memory. Descriptor numbers are
reused once closed, so every descriptor also carries the block's unique name, and an attachment
checks that the descriptor it opened is that block; a block whose owner has closed it (its
request ended) or exited raises BlockGone.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("async_engine.shm")


@dataclass(frozen=True)
class ArrayRef:
    """What a queue carries instead of an array."""

    owner: int  # pid of the process that owns the block
    fd: int  # the block's descriptor in the owner
    name: str  # unique per block: proves a reused descriptor number is not this block
    shape: tuple[int, ...]
    dtype: str
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class BlockGone(Exception):
    """The block's owner closed it (its request ended, or was cancelled) or exited."""


class OwnedBlock:
    """A block this process created; its memory lasts while it or any peer maps it."""

    def __init__(self, name: str, nbytes: int) -> None:
        self.name = name
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, max(1, nbytes))
            self.map = mmap.mmap(self.fd, max(1, nbytes))
        except BaseException:
            os.close(self.fd)
            raise

    def array(self, shape: tuple[int, ...], dtype: str, offset: int = 0) -> np.ndarray:
        return np.ndarray(shape, dtype=dtype, buffer=self.map, offset=offset)

    def ref(self, shape: tuple[int, ...], dtype: str, offset: int = 0) -> ArrayRef:
        return ArrayRef(os.getpid(), self.fd, self.name, tuple(int(s) for s in shape), dtype, offset)

    def close(self) -> None:
        """No new peer can attach from now on; views into the block must be dropped first to unmap it."""
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still alive: the mapping goes with it
        os.close(self.fd)


class Attachments:
    """Blocks other processes own, attached once per block and cached."""

    def __init__(self) -> None:
        self._blocks: dict[str, mmap.mmap] = {}

    def view(self, ref: ArrayRef) -> np.ndarray:
        block = self._blocks.get(ref.name)
        if block is None:
            block = self._blocks[ref.name] = _attach(ref)
        return np.ndarray(ref.shape, dtype=ref.dtype, buffer=block, offset=ref.offset)

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


def _attach(ref: ArrayRef) -> mmap.mmap:
    try:
        fd = os.open(f"/proc/{ref.owner}/fd/{ref.fd}", os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise BlockGone(f"block {ref.name} is gone: {exc.strerror}") from None
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != f"/memfd:{ref.name} (deleted)":
            raise BlockGone(f"block {ref.name} is gone: its descriptor now holds another file")
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
