"""`jobs`: submit-to-completed latency of asynchronous transcripts against the synchronous call.

One daemon, one request in flight at a time, every dev clip sent three ways in a rotating order
(so drift on a shared machine falls on all three alike):

- sync: POST /transcribe/url, answer in hand;
- v2 webhook: POST /v2/transcript with a webhook_url; done when the webhook arrives. No polling, so
  its excess over sync is the job machinery's own cost: the store, the queue, the runner thread,
  the webhook;
- v2 polled: POST /v2/transcript, then GET every --poll seconds until completed, as an SDK does
  (AssemblyAI's polls every 3 s by default). Its excess over sync is that cost plus the wait for
  the next poll, about half an interval on average.

The overheads are per clip (async minus sync on the same clip), so the clip length cancels.
WER of each way sits beside it: all three run the same decoding and must agree.
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import requests

from bench import dataset, measure, report
from bench.daemon_proc import Daemon, OriginHandler, audio_server, file_url, loopback_server, running_daemon
from bench.wer import score

DONE = ("completed", "error")


@dataclass
class Way:
    """One way of asking for a transcript, with its latency and text per clip."""

    name: str
    ask: Callable[[str], str]
    latencies: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


class WebhookInbox:
    """The customer's webhook endpoint: the monotonic arrival time of each transcript's call."""

    def __init__(self) -> None:
        self._arrived: dict[str, float] = {}
        self._wake = threading.Condition()

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        inbox = self

        class Handler(OriginHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                inbox.arrive(body["transcript_id"])
                self.send_body(200, b"{}", ("Content-Type", "application/json"))

        return Handler

    def arrive(self, transcript_id: str) -> None:
        with self._wake:
            self._arrived[transcript_id] = time.monotonic()
            self._wake.notify_all()

    def wait(self, transcript_id: str, timeout: float) -> float:
        with self._wake:
            if not self._wake.wait_for(lambda: transcript_id in self._arrived, timeout):
                raise TimeoutError(f"no webhook for {transcript_id} in {timeout} s")
            return self._arrived.pop(transcript_id)


def _sync(daemon: Daemon) -> Callable[[str], str]:
    def ask(url: str) -> str:
        response = daemon.transcribe({"audio_url": url})
        response.raise_for_status()
        return response.json()["blob"]
    return ask


def _submit(session: requests.Session, daemon: Daemon, body: dict) -> str:
    response = session.post(f"{daemon.url}/v2/transcript", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["id"]


def _text(session: requests.Session, daemon: Daemon, job_id: str) -> str:
    body = session.get(f"{daemon.url}/v2/transcript/{job_id}", timeout=30).json()
    if body["status"] != "completed":
        raise RuntimeError(f"transcript {job_id} ended {body['status']}: {body.get('error')}")
    return body["text"]


def _polled(daemon: Daemon, session: requests.Session, every: float, timeout: float) -> Callable[[str], str]:
    def ask(url: str) -> str:
        job_id = _submit(session, daemon, {"audio_url": url})
        deadline = time.monotonic() + timeout
        while True:
            body = session.get(f"{daemon.url}/v2/transcript/{job_id}", timeout=30).json()
            if body["status"] in DONE:
                return _text(session, daemon, job_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"transcript {job_id} still {body['status']} after {timeout} s")
            time.sleep(every)
    return ask


def _webhook(daemon: Daemon, session: requests.Session, inbox: WebhookInbox, hook: str,
             timeout: float) -> Callable[[str], str]:
    """Latency ends at the webhook's arrival; the text is fetched after the clock stops (see _run)."""
    def ask(url: str) -> str:
        job_id = _submit(session, daemon, {"audio_url": url, "webhook_url": hook})
        inbox.wait(job_id, timeout)
        return job_id
    return ask


def _run(ways: list[Way], urls: list[str], fetch_text: Callable[[str], str]) -> None:
    """Every clip through every way, the order rotating from clip to clip."""
    for i, url in enumerate(urls):
        for k in range(len(ways)):
            way = ways[(i + k) % len(ways)]
            started = time.monotonic()
            result = way.ask(url)
            way.latencies.append(time.monotonic() - started)
            way.texts.append(fetch_text(result) if way.name == "v2 webhook" else result)
        if (i + 1) % 10 == 0:
            print(f"{i + 1}/{len(urls)} clips", flush=True)


def _table(ways: list[Way], references: list[str], sources: list[str]) -> str:
    sync = np.array(ways[0].latencies)
    lines = ["| way | WER % | latency median s | p95 s | mean s | overhead vs sync: median s | p95 s | mean s | max s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for way in ways:
        lat = np.array(way.latencies)
        wer = 100 * score(references, way.texts, sources).overall.wer
        cells = [way.name, f"{wer:.2f}", f"{np.median(lat):.3f}", f"{np.percentile(lat, 95):.3f}", f"{lat.mean():.3f}"]
        if way is ways[0]:
            cells += ["–"] * 4
        else:
            extra = lat - sync
            cells += [f"{np.median(extra):+.3f}", f"{np.percentile(extra, 95):+.3f}", f"{extra.mean():+.3f}",
                      f"{extra.max():+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def jobs(args: argparse.Namespace) -> None:
    """Measure, print and append the section."""
    busy = measure.busy_fraction()
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    env = {"ASYNC_ENGINE_MODEL": args.model, "DECODER_BEAM_SIZE": str(args.beam)}
    inbox = WebhookInbox()
    with audio_server(args.eval_dir) as base, loopback_server(inbox.handler()) as hook_base, \
            running_daemon(**env) as daemon, requests.Session() as session:
        urls = [file_url(base, args.eval_dir, c.path) for c in clips]
        ways = [Way("sync /transcribe/url", _sync(daemon)),
                Way("v2 webhook", _webhook(daemon, session, inbox, f"{hook_base}/hook", args.timeout)),
                Way(f"v2 polled every {args.poll:g} s", _polled(daemon, session, args.poll, args.timeout))]
        for way in ways:  # warm-up: first-request costs (allocations, caches) fall outside the figures
            way.ask(urls[0])
        _run(ways, urls, lambda job_id: _text(session, daemon, job_id))
        startup = daemon.startup_s
    references, sources = [c.reference for c in clips], [c.source for c in clips]
    notes = [f"eval: {args.eval_dir} ({len(clips)} clips, one request in flight at a time, the order of the "
             "three ways rotating per clip; one warm-up request each first)",
             f"daemon: model {args.model}, beam {args.beam}, defaults otherwise; startup to /health 200 "
             f"{startup:.1f} s",
             "overhead = async latency minus sync latency on the same clip; webhook: submit to the webhook's "
             "arrival at a loopback receiver; polled: submit to the first GET that shows completed",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    text = report.dated_section(f"{args.model} beam {args.beam}, async jobs vs sync", notes,
                                _table(ways, references, sources))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
