"""The async-engine command line, run as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from synth import speak

CLI = [sys.executable, "-m", "engine.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_transcribe_prints_the_api_json_shape(tmp_path: Path, installed_model):
    samples, rate = speak("good morning and welcome to the show")
    path = tmp_path / "speech.flac"
    sf.write(path, soxr.resample(samples, rate, 16000), 16000)
    done = _run("transcribe", str(path), "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert set(body) == {"blob", "duration", "stereo_decode", "uid", "utterances", "words"}
    assert body["uid"].startswith("t_") and body["stereo_decode"] is False and body["utterances"] is None
    assert "morning" in body["blob"].lower()
    assert body["words"] and set(body["words"][0]) == {"confidence", "end", "start", "text"}
    assert all(isinstance(w["start"], int) and isinstance(w["end"], int) for w in body["words"])


def test_transcribe_plain_text(tmp_path: Path, installed_model):
    samples, rate = speak("good morning")
    path = tmp_path / "speech.wav"
    sf.write(path, samples, rate)
    done = _run("transcribe", str(path))
    assert done.returncode == 0, done.stderr
    assert "morning" in done.stdout.lower()


def test_undecodable_file_is_a_clear_error(tmp_path: Path, installed_model):
    path = tmp_path / "not-audio.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    done = _run("transcribe", str(path))
    assert done.returncode == 2
    assert "async-engine:" in done.stderr and "Traceback" not in done.stderr


def test_models_list_shows_the_installed_default(installed_model):
    done = _run("models", "list")
    assert done.returncode == 0
    assert "tiny.en\tinstalled" in done.stdout


def test_bad_setting_stops_with_the_variable_named(tmp_path: Path):
    done = subprocess.run([*CLI, "models", "list"], capture_output=True, text=True,
                          env={"DECODER_BEAM_SIZE": "wide", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "DECODER_BEAM_SIZE" in done.stderr


def test_transcribe_a_call_with_every_option(tmp_path: Path, installed_model):
    from synth import two_party_call

    samples, starts = two_party_call([(1, "good morning, this is the help desk"),
                                      (2, "I was charged forty nine dollars twice"), (1, "let me check that")])
    path = tmp_path / "call.flac"
    sf.write(path, samples, 16000)
    begin = int(starts[1] * 1000) - 300
    done = _run("transcribe", str(path), "--json", "--dual-channel", "--no-format-text", "--no-punctuate",
                "--start-ms", str(begin))
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["stereo_decode"] is True
    assert [u["channel"] for u in body["utterances"]] == ["2", "1"]
    assert abs(body["utterances"][0]["start"] - starts[1] * 1000) <= 500
    assert "forty nine dollars" in body["blob"] and body["blob"] == body["blob"].lower()
    assert not any(c in ",.?!" for c in body["blob"])
    assert all(w["start"] >= begin for w in body["words"])
    plain = _run("transcribe", str(path), "--dual-channel")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.strip().splitlines()
    assert [line.split("]")[0].split()[-1] for line in lines] == ["1", "2", "1"]
    assert "49" in lines[1], "written form: digits"


def test_span_past_the_end_is_a_clear_error(tmp_path: Path, installed_model):
    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    done = _run("transcribe", str(path), "--start-ms", "5000")
    assert done.returncode == 2
    assert "audio_start_from (5000 ms)" in done.stderr and "Traceback" not in done.stderr


def test_prompt_steers_the_spelling(tmp_path: Path, installed_model):
    samples, rate = speak("Please call Zylotech tomorrow.")
    path = tmp_path / "name.wav"
    sf.write(path, samples, rate)
    plain = _run("transcribe", str(path))
    assert plain.returncode == 0, plain.stderr
    assert "Zylotech" not in plain.stdout
    prompted = _run("transcribe", str(path), "--prompt", "Zylotech", "--temperature", "0.2")
    assert prompted.returncode == 0, prompted.stderr
    assert "Zylotech" in prompted.stdout


def test_temperature_out_of_range_is_a_usage_error(tmp_path: Path):
    done = _run("transcribe", str(tmp_path / "any.wav"), "--temperature", "1.5")
    assert done.returncode == 2
    assert "expected a temperature from 0 to 1" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_node_or_an_api_node_without_redis_refuses_to_start_naming_the_variable(tmp_path: Path):
    """Shared-mode roles need REDIS_URL: the command stops at once with a message, not on the first job."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ASYNC_ENGINE_DATA_DIR": str(tmp_path / "data")}
    for command, extra in ((["worker"], {}), (["serve"], {"SKIP_DECODER": "1"}),
                           (["worker"], {"REDIS_URL": "redis://127.0.0.1:1/0", "SKIP_DECODER": "1"})):
        done = subprocess.run([sys.executable, "-m", "daemon.cli", *command], capture_output=True, text=True,
                              timeout=60, env={**env, **extra}, cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 2, (command, extra, done.stdout, done.stderr)
        assert ("REDIS_URL" if "REDIS_URL" not in extra else "SKIP_DECODER") in done.stderr, done.stderr
