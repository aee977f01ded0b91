"""`python -m bench parse --baseline CHECKOUT`: what reading a request's body costs, this checkout against another.

Each checkout's own parser runs, in a child interpreter started in that checkout, on the same
bodies: a /transcribe/url body, an AssemblyAI SDK's /v2/transcript body, the same with a wrong type
(the error path), and OpenAI's multipart form (a 1 kB file, so the form's fields weigh; Falcon's
multipart reading is in both). Beside them: one in-process transcription of the first dev clip,
the work a request is parsed for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import dataset, measure, report

# Runs in the checkout under test: its parsers, whichever API it has (request_models.py: this issue's).
_CHILD = r'''
import json, sys, timeit
from pathlib import Path
import falcon.testing
from urllib3.filepost import encode_multipart_formdata
from daemon.config import DaemonConfig
from daemon.errors import ApiError
from daemon.http import v1

URL = "http://127.0.0.1:9/a.wav"
LEGACY = {"audio_url": URL, "dual_channel": False, "punctuate": True, "format_text": True, "audio_start_from": 1000}
V2 = {"audio_url": URL, "punctuate": True, "format_text": True, "dual_channel": False, "word_boost": ["invoice", "SKU"],
      "boost_param": "high", "speaker_labels": False, "language_code": "en_us", "webhook_url": None}
BAD = {**V2, "punctuate": "yes"}
config = DaemonConfig.from_env({"ASYNC_ENGINE_DEVICES": "cpu", "ASYNC_ENGINE_DATA_DIR": sys.argv[1]})
resource = v1._Transcriptions(config, None)
body, content_type = encode_multipart_formdata([("file", ("a.wav", bytes(1000), "audio/wav")), ("model", "whisper-1"),
                                                ("response_format", "verbose_json"), ("temperature", "0"),
                                                ("timestamp_granularities[]", "word"), ("word_boost[]", "Acme")])

if Path("daemon/http/request_models.py").exists():
    from daemon.http.request_models import TranscribeRequest, V1TranscriptionForm, V2TranscriptRequest
    from daemon.http.validation import parse_form, parse_json
    legacy = lambda: parse_json(TranscribeRequest, LEGACY).options()
    v2 = lambda: parse_json(V2TranscriptRequest, V2).options()
    bad = lambda: parse_json(V2TranscriptRequest, BAD)
    form = lambda req: parse_form(V1TranscriptionForm, resource._read_form(req), models=resource.models)
else:
    from daemon.http.request import parse_request
    from daemon.http.v2 import _parse_request
    legacy = lambda: parse_request(LEGACY)
    v2 = lambda: _parse_request(V2, None)
    bad = lambda: _parse_request(BAD, None)
    form = lambda req: resource._read_form(req)

def refused():
    try:
        bad()
    except ApiError:
        return
    raise AssertionError("the bad body was accepted")

def multipart():
    form(falcon.testing.create_req(method="POST", path="/v1/audio/transcriptions", body=body,
                                   headers={"Content-Type": content_type}))

out = {}
for name, call in (("transcribe/url", legacy), ("v2 transcript", v2), ("v2 transcript, a wrong type", refused),
                   ("v1 multipart form", multipart)):
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    out[name] = min(timer.repeat(5, number)) / number * 1e6
print(json.dumps(out))
'''


def parse(args: argparse.Namespace) -> None:
    busy = measure.busy_fraction()
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    for _ in range(args.rounds):
        for name, source in (("baseline", args.baseline), ("this", dataset.REPO_ROOT)):
            child = subprocess.run([sys.executable, "-c", _CHILD, str(Path("/tmp") / f"bench-parse-{name}")],
                                   cwd=source, capture_output=True, text=True, timeout=600, check=True)
            runs[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    transcription_ms = _transcription_ms(args)
    rows = ["| body | baseline µs per call | this µs per call | this / baseline | this, share of one transcription |",
            "|---|---:|---:|---:|---:|"]
    for body in runs["this"][0]:
        before = min(run[body] for run in runs["baseline"])
        after = min(run[body] for run in runs["this"])
        rows.append(f"| {body} | {before:.1f} | {after:.1f} | {after / before:.2f}x | "
                    f"{after / 1000 / transcription_ms:.5%} |")
    notes = [f"baseline: the checkout at {args.baseline}; this: {dataset.REPO_ROOT}; each in its own interpreter, "
             f"{args.rounds} rounds alternating, the best of 5 timeit repeats per round, the best round shown",
             f"one transcription: the first dev clip in process ({args.model}, beam {args.beam}), median of 3: "
             f"{transcription_ms:.0f} ms",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    text = report.dated_section("request parsing: the request models against the hand-written parsers", notes,
                                "\n".join(rows))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")


def _transcription_ms(args: argparse.Namespace) -> float:
    from engine.model.store import load_stored_model
    from engine.settings import EngineSettings
    from engine.transcriber import Transcriber

    settings = EngineSettings.from_env()
    audio = dataset.load_audio(dataset.load_manifest(args.eval_dir, 1)[0])
    transcriber = Transcriber(load_stored_model(settings.models_dir, args.model, "cpu"), args.beam, "cpu",
                              int8=settings.compute_type == "int8", settings=settings)
    transcriber.transcribe(audio)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        transcriber.transcribe(audio)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)
