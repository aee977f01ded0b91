"""A job whose id was returned is never lost: the whole tree SIGKILLed (the OOM killer, systemd's final
kill, a power cut as far as the process tree can tell) with jobs queued and processing, then started
again on the same data directory, runs every one of them to completion; and a job that crashes its
workers twice ends as an error with a clear message instead of looping."""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest
import requests
import soundfile as sf

from bench.proctree import tree_pids
from daemon.workers.leftovers import SHM_DIR
from daemon_support import audio_server, running_daemon
from synth import silence, speak_at

SR = 16000
SENTENCES = ["the weather today is sunny and warm", "our meeting moved to the afternoon",
             "the train leaves from platform nine", "thank you for your patience"]


@pytest.fixture(scope="module")
def origin(tmp_path_factory, installed_model):
    root = tmp_path_factory.mktemp("durable-audio")
    parts = []
    for text in SENTENCES * 4:
        parts += [speak_at(text, SR), silence(1.0, SR)]
    sf.write(root / "long.wav", np.concatenate(parts), SR, subtype="PCM_16")  # about a minute of speech
    with audio_server(root) as url:
        yield url


def _submit(daemon, url: str) -> str:
    answer = requests.post(f"{daemon.url}/v2/transcript", json={"audio_url": url}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def _status(daemon, job_id: str) -> dict:
    return requests.get(f"{daemon.url}/v2/transcript/{job_id}", timeout=10).json()


def _wait(daemon, job_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        states = {job_id: _status(daemon, job_id) for job_id in job_ids}
        if all(s["status"] in ("completed", "error") for s in states.values()):
            return states
        assert time.monotonic() < deadline, {k: v["status"] for k, v in states.items()}
        time.sleep(0.5)


def _kill_tree(daemon) -> None:
    pids = tree_pids(daemon.process.pid)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    daemon.process.wait(10)


def test_queued_and_processing_jobs_survive_a_sigkill_of_the_whole_tree(tmp_path, origin):
    data = str(tmp_path / "jobs")
    before = {p.name for p in SHM_DIR.iterdir()}
    with running_daemon(tmp_path, ASYNC_ENGINE_DATA_DIR=data, MAX_TRANSCRIPTS_PARALLEL="1") as daemon:
        daemon.wait_healthy()
        jobs = [_submit(daemon, f"{origin}/long.wav") for _ in range(4)]
        deadline = time.monotonic() + 60
        while _status(daemon, jobs[0])["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # well into the first job: its audio downloaded, windows in the workers
        assert [_status(daemon, j)["status"] for j in jobs[1:]] == ["queued"] * 3
        _kill_tree(daemon)
    time.sleep(0.5)
    assert {p.name for p in SHM_DIR.iterdir()} - before == set(), "the killed tree left names in /dev/shm"
    with running_daemon(tmp_path, ASYNC_ENGINE_DATA_DIR=data, MAX_TRANSCRIPTS_PARALLEL="2") as daemon:
        daemon.wait_healthy()
        assert {p.name for p in SHM_DIR.iterdir()} - before == set()
        states = _wait(daemon, jobs, timeout=300)
        for job_id, state in states.items():
            assert state["status"] == "completed", (job_id, state["error"])
            said = set(re.findall(r"[a-z]+", state["text"].lower()))
            assert {"platform", "patience", "afternoon"} <= said, state["text"]
        log = daemon.log_path.read_text()
        assert f"1 job(s) a stopped server left unfinished are queued again: {jobs[0]}" in log
        assert daemon.stop() == 0


def test_a_job_that_crashes_the_workers_twice_ends_in_error(tmp_path, origin):
    with running_daemon(tmp_path) as daemon:
        daemon.wait_healthy()
        job_id = _submit(daemon, f"{origin}/long.wav")
        killed: set[int] = set()
        for _ in range(2):
            deadline = time.monotonic() + 90
            while True:  # processing, with every worker up: the second time, the replacements
                health = daemon.health()
                workers = health.json()["workers"] if health.status_code == 200 else []
                inference = next((w["pid"] for w in workers if w["kind"] == "inference"), None)
                if inference not in (None, *killed) and _status(daemon, job_id)["status"] == "processing":
                    break
                assert time.monotonic() < deadline and _status(daemon, job_id)["status"] != "completed"
                time.sleep(0.1)
            time.sleep(1.0)
            os.kill(inference, signal.SIGKILL)
            killed.add(inference)
        state = _wait(daemon, [job_id], timeout=60)[job_id]
        assert state["status"] == "error" and "died twice" in state["error"], state
        assert daemon.wait_healthy()[-1] == 200, "the workers came back for the next job"
