"""Markdown tables and the dated RESULTS.md section, so every number keeps its provenance."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import sys
from pathlib import Path

from bench.measure import Run
from bench.wer import count_errors

BASELINE = "faster-whisper"
HYPOTHESES = Path(__file__).resolve().parent / "cache" / "hyps"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """The command as typed, so a section can be reproduced exactly."""
    return "python -m bench " + shlex.join(sys.argv[1:])


def environment() -> str:
    """Machine and library versions: speed numbers mean nothing without them. The engine's CPU compute
    type follows the CPU (bfloat16 with AMX, int8 otherwise) unless the environment sets it, so it is
    named too."""
    from engine.settings import cpu_has_bf16_matrix_units, default_cpu_compute_type

    versions = ", ".join(f"{d} {_version(d)}" for d in ("faster-whisper", "ctranslate2", "torch"))
    chosen = os.environ.get("ASYNC_ENGINE_COMPUTE_TYPE")
    compute = (f"ASYNC_ENGINE_COMPUTE_TYPE={chosen}" if chosen else
               f"{default_cpu_compute_type()} by default ({'' if cpu_has_bf16_matrix_units() else 'no '}AMX-BF16)")
    return (f"{os.cpu_count()} cores ({_cpu_model()}), Python {platform.python_version()}; "
            f"{versions}; engine on the CPU: {compute}")


def main_table(runs: list[Run]) -> str:
    """One row per system and data set, with ratios against faster-whisper on the same data."""
    base = {r.data: r for r in runs if r.system == BASELINE}
    lines = ["| system | data | WER % | words | audio s | load s | wall s | CPU s | RTF | speed x | "
             "speed vs FW | ΔWER vs FW (pts) | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        b = base.get(r.data.split(" ")[0])
        ratio = f"{r.speed / b.speed:.2f}x" if b else "–"
        delta = f"{100 * (r.wer.overall.wer - b.wer.overall.wer):+.2f}" if b else "–"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "–"
        lines.append(f"| {r.system} | {r.data} | {100 * r.wer.overall.wer:.2f} | "
                     f"{r.wer.overall.words} | {r.audio_s:.1f} | {r.load_s:.2f} | {r.wall_s:.1f} | "
                     f"{r.cpu_s:.1f} | {r.rtf:.3f} | {r.speed:.1f} | {ratio} | {delta} | {rss} |")
    return "\n".join(lines)


def source_table(runs: list[Run]) -> str:
    """WER % per source folder for the dev-set runs, to show where systems differ."""
    dev = [r for r in runs if r.wer.per_source]
    if not dev:
        return ""
    sources = sorted({s for r in dev for s in r.wer.per_source})
    header = "| source | words | " + " | ".join(f"{r.system} {r.data}" for r in dev) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(dev)]
    for s in sources:
        words = dev[0].wer.per_source[s].words
        cells = " | ".join(f"{100 * r.wer.per_source[s].wer:.1f}" for r in dev)
        lines.append(f"| {s} | {words} | {cells} |")
    return "\n".join(lines)


def section(title: str, runs: list[Run], notes: list[str]) -> str:
    """A dated markdown section: title, command, machine, tables."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"## {stamp} — {title}", "", f"Command: `{command_line()}`", "",
             f"Machine: {environment()}", ""]
    parts += [f"- {n}" for n in notes]
    parts += ["", main_table(runs), "", source_table(runs), ""]
    return "\n".join(parts) + "\n"


def dated_section(title: str, notes: list[str], body: str) -> str:
    """A dated markdown section with the command and machine, for benchmarks with their own tables."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"## {stamp} — {title}", "", f"Command: `{command_line()}`", "",
             f"Machine: {environment()}", ""]
    parts += [f"- {n}" for n in notes] + ["", body, ""]
    return "\n".join(parts) + "\n"


def write_hypotheses(path: Path, names: list[str], references: list[str],
                     hypotheses: list[str]) -> None:
    """Per-clip errors and text as TSV, to diff systems clip by clip after a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["clip\terrors\twords\thypothesis"]
    for name, ref, hyp in zip(names, references, hypotheses):
        count = count_errors(ref, hyp)
        rows.append(f"{name}\t{count.errors}\t{count.words}\t{' '.join(hyp.split())}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def append(path: Path, text: str) -> None:
    """Append a section, creating the file with a heading the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmark results\n\nAppended by `python -m bench`; newest last.\n\n")
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
