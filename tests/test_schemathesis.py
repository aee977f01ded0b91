"""Schemathesis against the served OpenAPI document, on a daemon in a network namespace of its own.

Every operation gets schema-valid and schema-breaking requests (a few thousand in all, a fixed
seed), and every answer is held to the document: no server error, a documented status and content
type, a body of the documented schema, breaking requests refused. The namespace has no route out,
so the URLs it generates fail to download (502, code 1: the one server error the document allows
for a host that does not resolve or answer) instead of reaching the internet. The exports get a real
completed transcript's id, so their query parameters are exercised too.

Two of schemathesis's checks do not apply, and are left out:
- positive_data_acceptance: rules between fields or on the audio itself (audio_start_from before
  audio_end_at, a webhook header name with its value, a file with samples, deleting a transcript
  while it is transcribed) are refused with a 4xx that no single field's schema can say.
- use_after_free: a deleted transcript stays readable ("Deleted by user."), as AssemblyAI's does.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from daemon_support import running_daemon
from netns import isolated_host
from synth import silence, speak_at

ST = Path(sys.executable).with_name("st")
EXAMPLES = 200  # per operation and phase (at most; fewer where its inputs run out): about 3,000 requests
SEED = 20261206
_DOWNLOAD_FAILED = re.compile(r'\[502\] Bad Gateway:\s+`\{"code": 1, "description": "Download error to ')


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, installed_model):
    with isolated_host() as host:
        with running_daemon(tmp_path_factory.mktemp("schemathesis"), host=host.address, wrapper=tuple(host.command),
                            DOWNLOAD_CONNECT_TIMEOUT="2", MAX_QUEUED_JOBS="100000") as running:
            running.wait_healthy()
            yield running


def _completed_transcript(daemon) -> str:
    """A v2 transcript of a spoken sentence, completed: the exports need one to answer 200."""
    audio = io.BytesIO()
    sf.write(audio, np.concatenate([silence(0.3, 16000), speak_at("Press four for the previous message.", 16000)]),
             16000, format="WAV")
    upload = requests.post(daemon.url + "/v2/upload", data=audio.getvalue(), timeout=30).json()["upload_url"]
    job_id = requests.post(daemon.url + "/v2/transcript", json={"audio_url": upload}, timeout=30).json()["id"]
    for _ in range(300):  # 60 s at most
        status = requests.get(f"{daemon.url}/v2/transcript/{job_id}", timeout=10).json()["status"]
        if status in ("completed", "error"):
            assert status == "completed"
            return job_id
        time.sleep(0.2)
    raise AssertionError(f"transcript {job_id} did not complete in 60 s")


def test_no_undocumented_answer(isolated, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text('[[operations]]\ninclude-path-regex = "^/v2/transcript/\\\\{job_id\\\\}/"\n'
                      f'parameters = {{ job_id = "{_completed_transcript(isolated)}" }}\n')
    junit = tmp_path / "junit.xml"
    run = subprocess.run(
        [str(ST), "--config-file", str(config), "--no-color", "run", isolated.url + "/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance,use_after_free", "--max-examples", str(EXAMPLES),
         "--seed", str(SEED), "--request-timeout", "30", "--continue-on-failure", "--report", "junit",
         "--report-junit-path", str(junit)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its example database stays out of the repo
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated and int(generated.group(1)) >= 2000, run.stdout[-3000:]
    failures = [(case.get("name"), failure.text or failure.get("message", ""))
                for case in ElementTree.parse(junit).getroot().iter("testcase")
                for failure in [*case.iter("failure"), *case.iter("error")]]
    unexplained = [(name, text) for name, text in failures
                   if not (name == "POST /transcribe/url" and "Server error" in text and _DOWNLOAD_FAILED.search(text))]
    assert not unexplained, "\n\n".join(f"{name}: {text[:1500]}" for name, text in unexplained)
    assert "Traceback" not in isolated.log(), "no request raised inside the server"
