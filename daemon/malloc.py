"""glibc's allocator, told to give back what the daemon's processes free.

By default glibc keeps freed memory for reuse: it raises its mmap threshold to the size of each
large block freed (up to 32 MB), after which blocks of that size come from per-thread heaps
(arenas) that hold on to them. A process's resident size then tracks the busiest moment it has
ever seen, not its load: the front grew about 2 MB with every refused gzip bomb, for good, and an
inference process stepped up 64 MB at a busy moment late in a soak. Not glibc (musl): these are
no-ops.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt parameters (malloc.h)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc has both)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def map_large_blocks_alone() -> None:
    """For the front, whose large blocks are one request's file or audio: every block over 128 KiB is
    mapped on its own and unmapped when freed, and two arenas bound what small ones can strand.
    Called before the process starts threads (arenas are made per thread)."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        _LIBC.mallopt(_M_ARENA_MAX, 2)


def release_free_memory() -> None:
    """Return every free page of every arena to the system; for a worker that has gone idle, where its
    next busy moment would otherwise find its last one's memory still resident."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
