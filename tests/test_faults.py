"""Faults of the process tree itself (issue 9, items 9 and 10), against the real daemon.

A worker or the supervisor frozen by SIGSTOP must turn /health 501 within seconds (and back to
200 when it runs again, without being replaced before WORKER_STALL_SECONDS); the resource tracker
or the whole tree SIGKILLed must leave nothing in /dev/shm, and a start must remove what an older,
dead tree of ours left there while keeping a live tree's names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
import soxr

from bench.proctree import tree_pids
from daemon.workers.leftovers import SHM_DIR, tree_prefix
from daemon_support import audio_server, running_daemon
from synth import silence, speak

DETECT_WITHIN_S = 6.0  # lifeline's 3 s without a pulse, the supervisor's 1 s refresh, and slack


@pytest.fixture(scope="module")
def origin(tmp_path_factory, installed_model):
    root = tmp_path_factory.mktemp("audio")
    parts = []
    for text in ["the weather today is sunny and warm", "the train leaves from platform nine"] * 3:
        samples, rate = speak(text)
        parts += [soxr.resample(samples, rate, 16000).astype(np.float32), silence(1.5, 16000)]
    sf.write(root / "long.wav", np.concatenate(parts), 16000, subtype="PCM_16")
    with audio_server(root) as url:
        yield url


def _poll(daemon, wanted: int, within: float) -> tuple[float, dict]:
    """Seconds until /health answers `wanted`, and its body then; fails after `within`."""
    started = time.monotonic()
    while True:
        response = daemon.health()
        if response.status_code == wanted:
            return time.monotonic() - started, response.json()
        assert time.monotonic() - started < within, f"/health still {response.status_code}: {response.text}"
        time.sleep(0.2)


def _supervisor(daemon) -> int:
    """The front's child that has children of its own (the other is multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children").read_text().split()]
    return next(pid for pid in children if len(tree_pids(pid)) > 1)


def _tracker(daemon) -> int:
    children = [int(c) for c in Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children").read_text().split()]
    return next(pid for pid in children if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes())


def test_a_frozen_process_turns_health_501_within_seconds_and_back(tmp_path, origin):
    """SIGSTOP each kind of process in turn: 501 "unresponsive" within seconds (not WORKER_STALL_SECONDS),
    200 again on SIGCONT with the same processes (not replaced), and a job accepted meanwhile finishes."""
    with running_daemon(tmp_path) as daemon:  # WORKER_STALL_SECONDS keeps its default, 300
        daemon.wait_healthy()
        workers = {w["kind"]: w["pid"] for w in daemon.health().json()["workers"]}
        victims = [("inference", workers["inference"]), ("decoder", workers["decoder"]),
                   ("supervisor", _supervisor(daemon))]
        with ThreadPoolExecutor(1) as pool:
            for kind, pid in victims:
                os.kill(pid, signal.SIGSTOP)
                try:
                    job = pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.wav"}) if kind == "inference" \
                        else None
                    took, body = _poll(daemon, 501, DETECT_WITHIN_S)
                    assert body["status"] == "unresponsive", body
                    if kind != "supervisor":
                        assert {w["pid"]: w["state"] for w in body["workers"]}[pid] == "unresponsive", body
                finally:
                    os.kill(pid, signal.SIGCONT)
                _poll(daemon, 200, DETECT_WITHIN_S)
                assert {w["pid"] for w in daemon.health().json()["workers"]} == set(workers.values()), \
                    "frozen for seconds, not WORKER_STALL_SECONDS: nothing was replaced"
                if job is not None:
                    response = job.result()
                    assert response.status_code == 200 and "platform" in response.json()["blob"].lower()
        assert "made no progress" not in daemon.log()
        assert daemon.stop() == 0


def test_a_killed_resource_tracker_leaves_nothing_behind(tmp_path, origin):
    before = {p.name for p in SHM_DIR.iterdir()}
    with running_daemon(tmp_path) as daemon:
        daemon.wait_healthy()
        os.kill(_tracker(daemon), signal.SIGKILL)
        assert daemon.transcribe({"audio_url": f"{origin}/long.wav"}).status_code == 200
        assert daemon.stop() == 0
    assert {p.name for p in SHM_DIR.iterdir()} - before == set()


def _exited(pid: int) -> bool:
    """Gone, or a zombie (its memory is freed; its parent, or init, has yet to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_tree_killed_whole_leaves_nothing_and_a_start_clears_what_older_trees_left(tmp_path, origin):
    """The OOM killer or systemd's final SIGKILL take every process at once, nothing runs to clean up."""
    before = {p.name for p in SHM_DIR.iterdir()}
    with running_daemon(tmp_path) as daemon:
        daemon.wait_healthy()
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(daemon.transcribe, {"audio_url": f"{origin}/long.wav"})
            time.sleep(1.5)
            assert daemon.shm_blocks(), "a transcription is in flight"
            pids = tree_pids(daemon.process.pid)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(requests.ConnectionError):  # the connection dies with the server
                job.result()
        daemon.process.wait(10)
        deadline = time.monotonic() + 10
        while not all(_exited(pid) for pid in pids):
            assert time.monotonic() < deadline, [pid for pid in pids if not _exited(pid)]
            time.sleep(0.1)
    assert {p.name for p in SHM_DIR.iterdir()} - before == set(), "a killed tree left names behind"

    # What trees killed at a worse moment (or older versions) left: a dead front's semaphore, a dead
    # front's old-style inference block, and a live tree's name (this test process's), which must stay.
    dead = _dead_pid()
    planted = {
        f"sem.ae{dead}-123_semdeadbeef": False,
        f"ae{dead}_inf0_{dead}_logits": False,
        f"sem.{tree_prefix()}semlive": True,
    }
    for name in planted:
        (SHM_DIR / name).write_bytes(b"\0" * 4096)
    try:
        with running_daemon(tmp_path) as daemon:
            daemon.wait_healthy()
            left = {name: (SHM_DIR / name).exists() for name in planted}
            assert left == planted, left
            assert f"removed 2 name(s) in {SHM_DIR}" in daemon.log()
    finally:
        for name in planted:
            (SHM_DIR / name).unlink(missing_ok=True)
