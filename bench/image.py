"""`image`: the CPU image against the daemon on the host: build time (cold, then cached), size, start to
/health 200, and WER on the dev clips through /transcribe/url, in one run.

Cold means an empty Docker data root (a temporary one, removed after): the local base is imported from
the cached debootstrap root and every layer is built. The package is built first (packaging/build-deb,
timed apart). The container runs on the host's network, as the tests run it; the host daemon is
`python -m daemon.cli serve` from this checkout, the same code the package carries.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from bench import report
from bench.daemon_proc import audio_server, file_url, free_port, running_daemon
from bench.dataset import default_eval_dir, load_manifest
from bench.docker_engine import REPO_ROOT, Container, build_images, docker_engine, missing_tools
from bench.wer import normalise, score

RESULTS = Path(__file__).with_name("RESULTS.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-dir", type=Path, default=default_eval_dir())
    parser.add_argument("--limit", type=int, default=None, help="first N clips of dev.tsv only")
    parser.add_argument("--starts", type=int, default=3, help="container starts timed to /health 200")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file the dated section is appended to")


def _transcripts(url: str, urls: list[str]) -> list[str]:
    texts = []
    for audio in urls:
        answer = requests.post(url + "/transcribe/url", json={"audio_url": audio}, timeout=600)
        answer.raise_for_status()
        texts.append(answer.json()["blob"])
    return texts


def image(args: argparse.Namespace) -> None:
    reason = missing_tools()
    if reason:
        raise SystemExit(f"bench image: {reason}")
    started = time.monotonic()
    subprocess.run([str(REPO_ROOT / "packaging" / "build-deb")], check=True, stdout=subprocess.DEVNULL)
    deb_s = time.monotonic() - started
    clips = load_manifest(args.eval_dir, args.limit)
    data_root = Path(tempfile.mkdtemp(prefix="async-engine-bench-docker-", dir="/var/lib"))
    try:
        with docker_engine(data_root) as engine:
            tag, cold_s = build_images(engine)
            _, cached_s = build_images(engine)
            size_mb = int(engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6
            layers = engine.docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", tag).stdout.splitlines()
            big = [f"{line.split(chr(9))[0]}: {line.split(chr(9))[1][:60]}" for line in layers
                   if line.split("\t")[0].endswith(("MB", "GB"))]
            starts = []
            for _ in range(args.starts):
                container = Container(engine, tag, free_port(), ASYNC_ENGINE_STREAM_PORT=str(free_port()))
                try:
                    starts.append(container.wait_healthy())
                finally:
                    container.remove()
            with audio_server(args.eval_dir) as origin:
                urls = [file_url(origin, args.eval_dir, clip.path) for clip in clips]
                container = Container(engine, tag, free_port(), ASYNC_ENGINE_STREAM_PORT=str(free_port()))
                try:
                    container.wait_healthy()
                    t0 = time.monotonic()
                    in_image = _transcripts(container.url, urls)
                    image_s = time.monotonic() - t0
                finally:
                    container.remove()
                with running_daemon() as host:
                    t0 = time.monotonic()
                    on_host = _transcripts(host.url, urls)
                    host_s = time.monotonic() - t0
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
    references = [clip.reference for clip in clips]
    wer_image, wer_host = score(references, in_image).overall, score(references, on_host).overall
    same = sum(normalise(a) == normalise(b) for a, b in zip(in_image, on_host))
    table = "\n".join([
        "| figure | value |", "|---|---:|",
        f"| packaging/build-deb | {deb_s:.0f} s |",
        f"| image build, cold (empty data root: base imported, every layer built) | {cold_s:.0f} s |",
        f"| image build, cached (same package) | {cached_s:.0f} s |",
        f"| image size | {size_mb:.0f} MB |",
        f"| `docker run` to /health 200, median of {len(starts)} | {statistics.median(starts):.1f} s "
        f"({', '.join(f'{s:.1f}' for s in starts)}) |",
        f"| WER, image, {len(clips)} dev clips ({wer_image.words} words) | {100 * wer_image.wer:.2f} % |",
        f"| WER, daemon on the host, same clips | {100 * wer_host.wer:.2f} % |",
        f"| clips with the same words in both | {same} / {len(clips)} |",
        f"| wall, the clips one at a time: image / host | {image_s:.0f} s / {host_s:.0f} s |"])
    notes = [f"{tag}, built on the local base (packaging/local-base) with --network host",
             "layers over 1 MB: " + "; ".join(big)]
    text = report.dated_section("the CPU image against the daemon on the host", notes, table)
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")
