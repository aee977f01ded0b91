"""Memory of a whole process tree, read from /proc (psutil is not a dependency).

The daemon is a front plus supervisor, decoder and inference processes, so its
footprint is the sum over the tree, not the RSS of the pid we started. VmRSS
counts pages shared between processes (torch libraries, shared-memory blocks)
once per process, so the sum over-states the true footprint; PSS (proportional
set size) splits shared pages between their users and does not, so both are kept.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants that are alive now (children listed per thread)."""
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        try:
            tasks = list((_PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                stack += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def _kb(path: Path, key: str) -> int:
    """Value in kB of `key:` in a /proc status-style file; 0 if the process is gone."""
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", path.read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def process_rss_mb(pid: int) -> float:
    """VmRSS of one process in MB; 0 if it is gone."""
    return _kb(_PROC / str(pid) / "status", "VmRSS") / 1024


def tree_memory_mb(root: int) -> tuple[float, float]:
    """(summed VmRSS, summed PSS) of the tree in MB."""
    pids = tree_pids(root)
    rss = sum(_kb(_PROC / str(p) / "status", "VmRSS") for p in pids)
    pss = sum(_kb(_PROC / str(p) / "smaps_rollup", "Pss") for p in pids)
    return rss / 1024, pss / 1024


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the live processes in the tree (utime, stime of /proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        try:
            fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, from /proc/stat)."""
    values = [int(v) for v in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class TreeSampler:
    """Samples a tree's memory every `interval` s on a thread; peaks are reset per phase."""

    root: int
    interval: float = 0.5
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    last_rss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "TreeSampler":
        """Take the first sample now, so `last_rss_mb` is the idle footprint, then keep sampling."""
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        rss, pss = tree_memory_mb(self.root)
        self.last_rss_mb = rss
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        self.peak_pss_mb = max(self.peak_pss_mb, pss)

    def reset_peaks(self) -> None:
        """Start a new phase: the next peaks are this phase's own."""
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
