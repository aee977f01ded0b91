"""`idle`: what the daemon's process tree costs before any request: startup time and memory.

Starts `async-engine serve` as a user would (defaults, plus whatever the environment sets), times
spawn to the first /health 200, lets the tree settle (the model load's transient peak is gone a
few seconds later), then reads every process's RSS and PSS and whether it has torch mapped. PSS
splits shared pages (torch's libraries, the model file) among the processes that map them, so the
tree's PSS is what the tree really holds. Repeated --runs times; each run is a row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import requests

from bench import measure, report
from bench.daemon_proc import running_daemon
from bench.proctree import _kb, tree_memory_mb, tree_pids

_PROC = Path("/proc")


def _role(pid: int, front: int, workers: dict[int, str]) -> str:
    """front, supervisor, a worker by its /health name, or multiprocessing's resource tracker."""
    if pid == front:
        return "front"
    if pid in workers:
        return workers[pid]
    cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    return "resource tracker" if b"resource_tracker" in cmdline else "supervisor"


def _processes(front: int, workers: dict[int, str]) -> list[tuple[str, float, float, bool]]:
    rows = []
    for pid in tree_pids(front):
        try:
            maps = (_PROC / str(pid) / "maps").read_text()
            rows.append((_role(pid, front, workers), _kb(_PROC / str(pid) / "status", "VmRSS") / 1024,
                         _kb(_PROC / str(pid) / "smaps_rollup", "Pss") / 1024, "libtorch" in maps))
        except OSError:
            continue
    return rows


def idle(args: argparse.Namespace) -> None:
    busy = measure.busy_fraction()
    lines = ["| run | startup to /health 200 s | tree RSS MB | tree PSS MB | per process: PSS MB (torch mapped) |",
             "|---|---|---|---|---|"]
    for run in range(args.runs):
        with running_daemon(ASYNC_ENGINE_MODEL=args.model) as daemon:
            startup = daemon.startup_s
            time.sleep(args.settle)
            rss, pss = tree_memory_mb(daemon.process.pid)
            workers = {w["pid"]: w["name"] for w in requests.get(daemon.url + "/health", timeout=10).json()["workers"]}
            each = ", ".join(f"{role} {p:.0f}{' (torch)' if torch else ''}" for role, _, p, torch
                             in sorted(_processes(daemon.process.pid, workers), key=lambda r: -r[2]))
        lines.append(f"| {run + 1} | {startup:.1f} | {rss:.0f} | {pss:.0f} | {each} |")
        print(lines[-1], flush=True)
    notes = [f"`async-engine serve`, model {args.model}, every other setting at its default or as the environment "
             f"of the command sets it; memory read {args.settle:g} s after the first /health 200",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    text = report.dated_section(f"{args.model}, the idle daemon: startup and memory", notes, "\n".join(lines))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
