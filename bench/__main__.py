"""CLI: `python -m bench COMMAND --model tiny.en --beam 5 [...]`.

One run measures every system on the same decoded audio, in one process on one
machine, so the ratios between them are trustworthy even if absolute speeds drift.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import dataset, measure, report
from bench.measure import Run

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    acc = sub.add_parser("accuracy", help="WER and speed of faster-whisper and the engine")
    acc.add_argument("--model", default="tiny.en")
    acc.add_argument("--beam", type=int, default=5)
    acc.add_argument("--eval-dir", type=Path, default=dataset.default_eval_dir())
    acc.add_argument("--long-minutes", type=float, default=10.0,
                     help="length of the concatenated long file; 0 skips it")
    acc.add_argument("--only", choices=["faster-whisper", "engine"])
    acc.add_argument("--limit", type=int, help="first N clips of dev.tsv only")
    acc.add_argument("--fw-words", choices=["off", "on", "both"], default="both",
                     help="faster-whisper word_timestamps (the engine always computes word timings)")
    acc.add_argument("--results", type=Path, default=RESULTS,
                     help="markdown file the dated section is appended to")
    for name, text in (("load", "the daemon under K concurrent clients vs faster-whisper"),
                       ("http-wer", "WER of the daemon (K=2) vs the engine in-process")):
        cmd = sub.add_parser(name, help=text)
        _common(cmd)
        cmd.add_argument("--limit", type=int, help="first N clips of dev.tsv only")
        cmd.add_argument("--concurrency", type=_int_list, default=[1, 4] if name == "load" else [2],
                         help="comma-separated client counts, e.g. 1,4")
        cmd.add_argument("--long-minutes", type=float, default=0.0,
                         help="also one long file of the dev clips joined (about this many minutes), "
                              "one request, daemon against faster-whisper; 0 skips it")
    _common(sub.add_parser("heldout", help="the held-out stereo file, per channel and dual_channel"))
    calls = sub.add_parser("calls", help="generated two-party stereo calls: WER, speed, utterance timing")
    _common(calls)
    calls.add_argument("--count", type=int, default=16, help="number of calls")
    calls.add_argument("--seed", type=int, default=1)
    soak = sub.add_parser("soak", help="many mixed good, bad and hostile requests at the parallel limit "
                                       "under slow clients; RSS per daemon process, shared memory and "
                                       "/health over time")
    _common(soak)
    soak.add_argument("--requests", type=int, default=1000, help="requests sent in all")
    soak.add_argument("--parallel", type=int, default=2,
                      help="K: MAX_TRANSCRIPTS_PARALLEL of the daemon and client threads")
    soak.add_argument("--warmup", type=float, default=10.0, help="%% of the requests counted as warm-up")
    soak.add_argument("--interval", type=float, default=1.0, help="seconds between memory samples")
    soak.add_argument("--settle", type=float, default=3.0,
                      help="seconds after the warm-up's last answer, and after the last one, before their samples")
    soak.add_argument("--max-clip-seconds", type=float, default=10.0, help="longest dev clip used")
    soak.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--csv", type=Path, help="time series; default bench/cache/soak-<UTC time>.csv")
    jobs = sub.add_parser("jobs", help="submit-to-completed latency of /v2/transcript jobs (webhook and polled) "
                                       "against the synchronous /transcribe/url, with WER")
    _common(jobs)
    jobs.add_argument("--limit", type=int, help="first N clips of dev.tsv only")
    jobs.add_argument("--poll", type=float, default=0.1, help="seconds between GETs of the polled way")
    jobs.add_argument("--timeout", type=float, default=600.0, help="seconds per transcript")
    scale = sub.add_parser("scale", help="throughput through an API node with one and with two worker nodes "
                                         "(each pinned to a core), WER beside it, and the API node's memory")
    _common(scale)
    scale.add_argument("--limit", type=int, help="first N clips of dev.tsv only")
    scale.add_argument("--clients", type=int, default=8, help="concurrent clients")
    scale.add_argument("--parallel", type=int, default=14, help="MAX_TRANSCRIPTS_PARALLEL of each worker node")
    scale.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    gpu = sub.add_parser("gpu", help="on a CUDA host: the daemon (float16 on the card) against faster-whisper "
                                     "float16 on the same card, 1-32 clients, tiny.en and small, WER beside each")
    gpu.add_argument("--models", type=lambda text: text.split(","), default=["tiny.en", "small"])
    gpu.add_argument("--beam", type=int, default=5)
    gpu.add_argument("--eval-dir", type=Path, default=dataset.default_eval_dir())
    gpu.add_argument("--limit", type=int, default=60, help="first N clips of dev.tsv")
    gpu.add_argument("--concurrency", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    gpu.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: check the script without a card")
    gpu.add_argument("--cuda-graphs", choices=["auto", "0", "1"], default="auto",
                     help="the daemon's ASYNC_ENGINE_CUDA_GRAPHS, auto (on for cards) as shipped "
                          "(the in-process comparison runs both ways)")
    gpu.add_argument("--throughput-models", type=lambda text: [m for m in text.split(",") if m],
                     default=["tiny.en", "base"], help="models of the long-file throughput run ('' skips it)")
    gpu.add_argument("--files", type=int, default=32, help="long files at once in the throughput run")
    gpu.add_argument("--file-minutes", type=float, default=10.0, help="length of the throughput run's file")
    gpu.add_argument("--results", type=Path, default=RESULTS, help="markdown file the dated section is appended to")
    prof = sub.add_parser("profile", help="py-spy on every process of the daemon under K clients: where time goes")
    _common(prof)
    prof.add_argument("--limit", type=int, default=60, help="first N clips of dev.tsv")
    prof.add_argument("--concurrency", type=_int_list, default=[4, 8], help="comma-separated client counts")
    prof.add_argument("--seconds", type=int, default=20, help="seconds recorded per concurrency")
    prof.add_argument("--top", type=int, default=6, help="functions listed per process")
    prof.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the daemon on card 0")
    width = sub.add_parser("encoder-width", help="in-process WER and speed for several encoder paddings")
    _common(width)
    width.add_argument("--limit", type=int, help="first N clips of dev.tsv only")
    width.add_argument("--padding", type=lambda text: text.split(","), default=["whole", "300", "600", "800"],
                       help="comma-separated paddings in mel frames (100 = 1 s), or whole")
    rep = sub.add_parser("repeats", help="doubled sentences, WER and in-process speed of short, whole and "
                                         "short + re-decode encoder windows, on dev and on short clips cut from it")
    _common(rep)
    rep.add_argument("--no-fw", action="store_true", help="leave faster-whisper's WER and repeats out")
    edges = sub.add_parser("vad-edges", help="in-process WER and speed with a file's head and tail kept in its windows "
                                              "or trimmed to the VAD's speech, on dev and on short clips cut from it")
    _common(edges)
    edges.add_argument("--no-fw", action="store_true", help="leave faster-whisper's rows out")
    domain = sub.add_parser("domain-lm", help="custom vocabulary: WER with word_boost, prompt and a custom LM, ours beside faster-whisper's hotwords and initial_prompt, per domain and on general speech")
    domain.add_argument("--model", default="tiny.en")
    domain.add_argument("--eval-dir", type=Path, default=dataset.default_eval_dir())
    domain.add_argument("--results", type=Path, default=RESULTS, help="markdown file the dated section is appended to")
    from bench.domain_lm import add_arguments

    add_arguments(domain)
    cost = sub.add_parser("prompt-cost", help="a long prompt's prefill and step cost on the runtime, "
                                              "prefilled once per window against once per beam row")
    cost.add_argument("--model", default="tiny.en")
    cost.add_argument("--eval-dir", type=Path, default=dataset.default_eval_dir())
    cost.add_argument("--results", type=Path, default=RESULTS, help="markdown file the dated section is appended to")
    from bench.prompt_cost import add_arguments as prompt_cost_arguments

    prompt_cost_arguments(cost)
    steps = sub.add_parser("steps", help="bytes per row per step to the decoders, and decoder CPU per token over "
                                         "HTTP against a baseline checkout, same load")
    _common(steps)
    steps.add_argument("--baseline", type=Path, required=True,
                       help="a checkout of the commit to compare with (git worktree add PATH COMMIT)")
    steps.add_argument("--limit", type=int, default=60, help="first N clips of dev.tsv")
    steps.add_argument("--concurrency", type=int, default=4, help="clients")
    steps.add_argument("--rounds", type=int, default=2, help="baseline, this, alternating, this many times")
    spk = sub.add_parser("speakers", help="speaker labels on conversations of real voices: DER, speaker count, "
                                          "words to the right speaker, time added")
    _common(spk)
    spk.add_argument("--two", type=int, default=12, help="conversations of 2 speakers")
    spk.add_argument("--three", type=int, default=6, help="conversations of 3 speakers")
    spk.add_argument("--four", type=int, default=6, help="conversations of 4 speakers")
    spk.add_argument("--seed", type=int, default=1)
    spk.add_argument("--hours", type=float, nargs="*",
                     help="instead: labelling time and peak memory on files this long (a conversation repeated)")
    spk.add_argument("--over-http", action="store_true",
                     help="instead: the time speaker_labels adds to /transcribe/url requests to the real daemon")
    live = sub.add_parser("streaming", help="live calls through AssemblyAI's streaming SDK at real-time pace: "
                                            "turn latency, partial latency, WER beside the same audio as files")
    _common(live)
    from bench.streaming import add_arguments as streaming_arguments

    streaming_arguments(live)
    soak_streams = sub.add_parser("stream-soak", help="live streams connecting and dropping, round after round: "
                                                      "memory, live streams and turn audio blocks left")
    _common(soak_streams)
    from bench.stream_soak import add_arguments as stream_soak_arguments

    stream_soak_arguments(soak_streams)
    parse = sub.add_parser("parse", help="what reading a request body costs, this checkout against a baseline one")
    _common(parse)
    parse.add_argument("--baseline", type=Path, required=True,
                       help="a checkout of the commit to compare with (git worktree add PATH COMMIT)")
    parse.add_argument("--rounds", type=int, default=3, help="baseline, this, alternating, this many times")
    image = sub.add_parser("image", help="the CPU Docker image against the daemon on the host: build time cold and "
                                         "cached, size, start to /health 200, WER on the dev clips")
    from bench.image import add_arguments as image_arguments

    image_arguments(image)
    idle = sub.add_parser("idle", help="the idle daemon: startup to /health 200, RSS and PSS per process")
    idle.add_argument("--model", default="tiny.en")
    idle.add_argument("--runs", type=int, default=3)
    idle.add_argument("--settle", type=float, default=5.0, help="seconds after /health 200 before reading memory")
    idle.add_argument("--results", type=Path, default=RESULTS, help="markdown file the dated section is appended to")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--eval-dir", type=Path, default=dataset.default_eval_dir())
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file the dated section is appended to")


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _load(factory: Callable[[], object]) -> tuple[object, float]:
    """Build a runner with a fresh memory high-water mark; returns it and its load time."""
    gc.collect()
    measure.reset_peak_rss()
    return measure.timed(factory)


def _faster_whisper(args: argparse.Namespace, audios: list[np.ndarray], clips: list[dataset.Clip],
                    long: dataset.LongFile | None) -> list[Run]:
    from bench.peers import FasterWhisperRunner

    flags = {"off": [False], "on": [True], "both": [False, True]}[args.fw_words]
    runs = []
    for words in flags:
        name = report.BASELINE + (" +words" if words else "")
        runner, load_s = _load(lambda: FasterWhisperRunner(args.model, args.beam, words))
        runs += _sequential_runs(name, runner.transcribe, audios, clips, long, load_s)
        del runner
    return runs


def _engine(args: argparse.Namespace, audios: list[np.ndarray], clips: list[dataset.Clip],
            long: dataset.LongFile | None) -> list[Run]:
    from bench.engine_runner import EngineRunner

    runner, load_s = _load(lambda: EngineRunner(args.model, args.beam))
    runs = _sequential_runs("engine", runner.transcribe, audios, clips, long, load_s)
    run, hyps = measure.run_batched("engine", "dev (batched)", runner.transcribe_many, audios,
                                    [c.reference for c in clips], [c.source for c in clips], load_s)
    _save(run, clips, hyps)
    return runs + [run]


def _save(run: Run, clips: list[dataset.Clip], hyps: list[str]) -> None:
    """Keep a run's texts in bench/cache/hyps/ (gitignored) for clip-by-clip diffs."""
    eval_dir = clips[0].path.parent.parent
    names = [str(c.path.relative_to(eval_dir)) for c in clips]
    slug = f"{run.system}-{run.data}".replace(" ", "_").replace("(", "").replace(")", "")
    report.write_hypotheses(report.HYPOTHESES / f"{slug}.tsv", names, [c.reference for c in clips], hyps)


def _sequential_runs(name: str, transcribe: Callable[[np.ndarray], str], audios: list[np.ndarray],
                     clips: list[dataset.Clip], long: dataset.LongFile | None,
                     load_s: float) -> list[Run]:
    """Dev set one clip at a time, then the long file if any."""
    dev, hyps = measure.run_sequential(name, "dev", transcribe, audios,
                                       [c.reference for c in clips], [c.source for c in clips],
                                       load_s)
    _save(dev, clips, hyps)
    print(f"{name} dev: WER {100 * dev.wer.overall.wer:.2f} %, {dev.wall_s:.1f} s", flush=True)
    if long is None:
        return [dev]
    run, _ = measure.run_sequential(name, "long", transcribe, [long.audio], [long.reference],
                                    None, load_s)
    print(f"{name} long: WER {100 * run.wer.overall.wer:.2f} %, {run.wall_s:.1f} s", flush=True)
    return [dev, run]


def accuracy(args: argparse.Namespace) -> None:
    """Run the selected systems over dev and the long file, print and append the report."""
    if args.only != "faster-whisper" and importlib.util.find_spec("engine.transcriber") is None:
        raise SystemExit("engine.transcriber is missing; use --only faster-whisper")
    busy = measure.busy_fraction()
    if busy > 0.2:
        print(f"warning: machine {100 * busy:.0f} % busy before start; wall times will suffer",
              flush=True)
    clips = dataset.load_manifest(args.eval_dir, args.limit)
    audios = [dataset.load_audio(c) for c in tqdm(clips, desc="decoding", unit="clip")]
    long = dataset.build_long_file(clips, audios, args.long_minutes) if args.long_minutes else None
    runs: list[Run] = []
    if args.only != "engine":
        runs += _faster_whisper(args, audios, clips, long)
    if args.only != "faster-whisper":
        runs += _engine(args, audios, clips, long)
    notes = [f"eval: {args.eval_dir} ({len(clips)} clips, "
             f"{sum(len(a) for a in audios) / dataset.SAMPLE_RATE:.1f} s)",
             f"model {args.model}, beam {args.beam}, language en; faster-whisper int8, "
             f"cpu_threads=2, library defaults otherwise",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    if long is not None:
        notes.append(f"long: {long.clip_count} dev clips joined by 1 s silences, "
                     f"{long.duration:.1f} s")
    text = report.section(f"{args.model} beam {args.beam}", runs, notes)
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")


# Commands whose module is named after them (- as _) and holds a function of the same name; imported only
# when run, so one benchmark's dependencies (faster-whisper, py-spy, redis-server) do not burden another.
_MODULE_COMMANDS = ("heldout", "calls", "soak", "jobs", "profile", "idle", "scale", "gpu", "encoder-width",
                    "domain-lm", "prompt-cost", "repeats", "vad-edges", "steps", "parse", "speakers", "streaming", "stream-soak", "image")


def main() -> None:
    args = _parser().parse_args()
    if args.command == "accuracy":
        accuracy(args)
    elif args.command in ("load", "http-wer"):
        from bench.load import load

        load(args, with_fw=args.command == "load")
    elif args.command in _MODULE_COMMANDS:
        name = args.command.replace("-", "_")
        getattr(importlib.import_module(f"bench.{name}"), name)(args)


if __name__ == "__main__":
    main()
