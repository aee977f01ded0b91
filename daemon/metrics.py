"""Prometheus metrics: what every node counts, and GET /metrics in Prometheus's text format.

A process tree shares one multiprocess directory (prometheus-client's multiprocess mode): the
front, a worker node's job threads and the supervisor each write their own counters and
histograms there, and a scrape sums them. `start_tree` makes that directory before anything
imports prometheus_client (the library picks its value class at import) and children inherit it
through PROMETHEUS_MULTIPROC_DIR; it is removed when the tree stops, and a dead tree's directory
is removed at the next start. Levels that are read at the moment of the scrape (queue depth, jobs
in flight, capacity, worker nodes alive) come from a LoadSource instead, so a dead process can
never leave a stale gauge behind.

Before start_tree (unit tests driving the app in-process) the counters are plain in-process ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import falcon

from daemon.errors import ApiError
from daemon.jobs.record import Job

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "async-engine-metrics-"
_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
_RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)


@dataclass(frozen=True)
class Load:
    """A node's levels at the moment of a scrape."""

    queued: int  # jobs waiting for a slot (the shared queue, in shared mode)
    in_flight: int  # jobs being transcribed (on every live worker node, in shared mode)
    capacity: int  # MAX_TRANSCRIPTS_PARALLEL (summed over live worker nodes, in shared mode)
    nodes_alive: int  # worker nodes with a fresh heartbeat (1 on one host)


class LoadSource(Protocol):
    def load(self) -> Load:
        ...


def start_tree() -> Path:
    """Give this process tree its multiprocess directory; call before anything imports prometheus_client."""
    for stale in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        pid = stale.name.removeprefix(_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    os.environ[_ENV] = str(directory)
    return directory


def stop_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter("async_engine_http_requests", "HTTP requests answered, by endpoint (route), "
                                "method, status and error code", ("endpoint", "method", "status", "code"))
        self.request_seconds = Histogram("async_engine_http_request_seconds", "Wall time of HTTP requests, by "
                                         "endpoint (route)", ("endpoint",), buckets=_SECONDS_BUCKETS)
        self.jobs = Counter("async_engine_jobs", "Jobs ended, by origin (transcribe_url, v1, v2), status "
                            "(completed, error) and error code", ("origin", "status", "code"))
        self.audio_seconds = Counter("async_engine_audio_seconds", "Seconds of audio transcribed")
        self.job_seconds = Histogram("async_engine_job_seconds", "Wall time of a job from audio to transcript",
                                     buckets=_SECONDS_BUCKETS)
        self.real_time_factor = Histogram("async_engine_real_time_factor", "Wall time over audio duration of "
                                          "completed jobs (lower is faster)", buckets=_RTF_BUCKETS)
        self.redecoded_windows = Counter("async_engine_redecoded_windows", "Speech windows decoded again with "
                                         "a whole 30 s encoder window because the shortened one said a phrase "
                                         "twice back to back (docs/DESIGN.md \"Encoder width\")")
        self.streams = Counter("async_engine_streams", "Live streams ended, by close code (1000: normal; "
                               "docs/STREAMING.md lists the others)", ("code",))
        self.stream_audio_seconds = Counter("async_engine_stream_audio_seconds", "Seconds of audio received "
                                            "from live streams")
        self.stream_turn_seconds = Histogram("async_engine_stream_turn_seconds", "Wall time from the audio that "
                                             "asked for a Turn message (partial, or final: the end of the turn's "
                                             "silence) to its sending", ("kind",), buckets=_LATENCY_BUCKETS)
        self.worker_restarts = Counter("async_engine_worker_restarts", "Times the supervisor restarted its "
                                       "inference and decoder processes (one of them died or stalled)")


_instance: _Metrics | None = None


def _metrics() -> _Metrics:
    global _instance
    if _instance is None:
        _instance = _Metrics()
    return _instance


def request_answered(endpoint: str | None, method: str, status: int, code: int | None, seconds: float) -> None:
    """endpoint: the route's template (/v2/transcript/{job_id}), so ids do not make new series."""
    route = endpoint or "unrouted"
    metrics = _metrics()
    metrics.requests.labels(route, method if method in _METHODS else "other", str(status),
                            str(code) if code is not None else "").inc()
    metrics.request_seconds.labels(route).observe(seconds)


_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def job_ended(job: Job, wall_seconds: float) -> None:
    metrics = _metrics()
    metrics.jobs.labels(job.origin.value, job.status.value, str(job.error.code) if job.error else "").inc()
    if job.redecoded:
        metrics.redecoded_windows.inc(job.redecoded)
    duration = (job.result or {}).get("duration")
    if duration:
        metrics.audio_seconds.inc(duration)
        metrics.job_seconds.observe(wall_seconds)
        metrics.real_time_factor.observe(wall_seconds / duration)


def workers_restarted() -> None:
    _metrics().worker_restarts.inc()


def stream_ended(code: str) -> None:
    _metrics().streams.labels(code).inc()


def stream_audio(seconds: float) -> None:
    _metrics().stream_audio_seconds.inc(seconds)


def stream_turn_sent(kind: str, seconds: float) -> None:
    _metrics().stream_turn_seconds.labels(kind).observe(seconds)


_stream_levels: tuple[Callable[[], int], int] | None = None


def stream_levels(live: Callable[[], int], limit: int) -> None:
    """The stream server's live count, read at each scrape like the job levels."""
    global _stream_levels
    _stream_levels = (live, limit)


class _Everything:
    """What a scrape shows, as one registry: the tree's counters and histograms (summed over its
    processes), then the levels read now."""

    def __init__(self, load: Callable[[], Load] | None) -> None:
        self.load = load

    def collect(self) -> Iterable:
        from prometheus_client import REGISTRY, CollectorRegistry
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.multiprocess import MultiProcessCollector

        _metrics()  # every series is declared even before its first event
        if _ENV in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = REGISTRY  # in-process counters
        yield from registry.collect()
        if _stream_levels is not None:
            live, limit = _stream_levels
            yield GaugeMetricFamily("async_engine_streams_live", "Live streams now", value=live())
            yield GaugeMetricFamily("async_engine_capacity_streams", "Live streams at once "
                                    "(ASYNC_ENGINE_MAX_STREAMS)", value=limit)
        if self.load is None:
            return
        try:
            now = self.load()
        except ApiError:  # the store is away (shared mode): the counters still answer
            return
        yield GaugeMetricFamily("async_engine_queue_depth", "Jobs waiting for a slot", value=now.queued)
        yield GaugeMetricFamily("async_engine_jobs_in_flight", "Jobs being transcribed", value=now.in_flight)
        yield GaugeMetricFamily("async_engine_capacity_jobs", "Jobs that can be transcribed at once "
                                "(MAX_TRANSCRIPTS_PARALLEL, summed over live worker nodes)", value=now.capacity)
        yield GaugeMetricFamily("async_engine_worker_nodes_alive", "Worker nodes with a fresh heartbeat",
                                value=now.nodes_alive)


def exposition(load: Callable[[], Load] | None) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_Everything(load)), CONTENT_TYPE_LATEST


def serve_metrics(host: str, port: int, source: LoadSource):
    """A node without the HTTP API (a worker node) still answers GET /metrics; returns the server
    (its shutdown() stops it)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, host, registry=_Everything(source.load))
    return server


class MetricsResource:
    """GET /metrics: open like /health (no key), since scrapers are configured per target, and it holds
    no transcript, URL or credential."""

    def __init__(self, source: LoadSource | None) -> None:
        self.source = source

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body, content_type = exposition(self.source.load if self.source else None)
        resp.data = body
        resp.content_type = content_type
