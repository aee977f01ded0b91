"""The daemon's configuration: every environment variable it reads, validated once at start.

Defaults live in DEFAULTS and nowhere else; config/async-engine.env documents the same names for
operators. A bad value raises ConfigError naming the variable, so `async-engine serve` refuses to
start instead of failing on the first request. ConfigError is a SettingsError, so the CLI's one
handler covers the engine's variables and the daemon's alike.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from daemon.redact import redact
from daemon.address_policy import DEFAULT_DENY, AddressPolicy, HostRules, parse_rules
from engine.settings import EngineSettings, SettingsError, parse_bool, parse_int

DEFAULTS: dict[str, str] = {
    "MAX_TRANSCRIPTS_PARALLEL": "14",
    "REJECT_OVER_PARALLEL": "True",
    "ENABLE_AUTO_PUNCTUATION": "True",
    "SKIP_DECODER": "0",
    "LOGLEVEL": "INFO",
    "ASYNC_ENGINE_HOST": "0.0.0.0",
    "ASYNC_ENGINE_PORT": "9999",
    "ASYNC_ENGINE_DEVICES": "auto",
    "ASYNC_ENGINE_DECODERS": "",  # empty: one per core left over by the inference processes, at most 8
    "ASYNC_ENGINE_WINDOWS_IN_FLIGHT": "",  # empty: 8 on cpu, 64 on cuda
    "DOWNLOAD_CONNECT_TIMEOUT": "5",
    "DOWNLOAD_READ_TIMEOUT": "30",
    "DOWNLOAD_MAX_BYTES": "500000000",
    "DOWNLOAD_MAX_REDIRECTS": "5",
    "DOWNLOAD_DENY": DEFAULT_DENY,  # "none" empties it
    "DOWNLOAD_ALLOW": "",  # empty: every host not denied
    "ASYNC_ENGINE_API_KEY": "",  # empty: no key needed
    "WORKER_STALL_SECONDS": "300",
    "MAX_AUDIO_SECONDS": "14400",
    "REQUEST_TIMEOUT_SECONDS": "3600",
    "ASYNC_ENGINE_DATA_DIR": "",  # empty: $XDG_DATA_HOME/async-engine/data
    "MAX_QUEUED_JOBS": "10000",
    "JOB_RETENTION_HOURS": "24",
    "HTTP_MAX_CONNECTIONS": "1000",
    "HTTP_REQUEST_READ_TIMEOUT": "10",
    "HTTP_IDLE_TIMEOUT": "75",
    "REDIS_URL": "",  # empty: one host, embedded job store (SQLite)
    "WORKER_NODE_TIMEOUT_SECONDS": "10",
    "METRICS_PORT": "9998",
    "ASYNC_ENGINE_STREAM_PORT": "9997",  # the WebSocket streaming API (/v3/ws); "off": none
    "ASYNC_ENGINE_MAX_STREAMS": "16",
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_DEFAULT_DECODERS = 8
# cpu 8, not 16: the same throughput at 4 and 8 clients on the 2-core machine, 310 MB less reserved
# (bench/RESULTS.md, "windows in flight")
_DEFAULT_WINDOWS_IN_FLIGHT = {"cpu": 8, "cuda": 64}
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
_NVIDIA_DRIVER = "/proc/driver/nvidia/version"  # present where an NVIDIA driver is loaded (and in GPU containers)


class ConfigError(SettingsError):
    """An environment variable has a value the daemon cannot use."""


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on fetching a customer's audio_url, so one slow or huge origin cannot hold a slot forever."""

    connect_timeout: float  # seconds
    read_timeout: float  # seconds between bytes
    max_bytes: int
    max_redirects: int
    addresses: AddressPolicy


@dataclass(frozen=True)
class HttpLimits:
    """What one client connection may take (daemon/http/server.py), so slow or idle clients cannot lock others out."""

    max_connections: int
    read_timeout: float  # seconds for a whole request (head and body) to arrive, from its first byte
    idle_timeout: float  # seconds a keep-alive connection may sit unused


@dataclass(frozen=True)
class DaemonConfig:
    max_transcripts_parallel: int
    reject_over_parallel: bool
    enable_auto_punctuation: bool
    skip_decoder: bool
    log_level: str
    host: str
    port: int
    devices: tuple[str, ...]  # one inference process per entry
    decoders: int
    windows_in_flight: int  # per inference process
    download: DownloadLimits
    max_audio_seconds: int
    request_timeout_seconds: int
    api_key: str | None  # every endpoint but /health needs `Authorization: Bearer <key>`
    worker_stall_seconds: int  # a worker that shows no sign of life this long is killed and replaced
    http: HttpLimits  # what one client connection may take, in time and in number
    data_dir: Path  # the job store: records and audio
    max_queued_jobs: int  # asynchronous jobs waiting for a slot; more are refused (429, code 19)
    job_retention_hours: float  # finished jobs and their audio are removed this long after they end
    redis_url: str | None  # shared mode: job store and queue in Redis (API nodes and worker nodes)
    worker_node_timeout: float  # seconds: a worker node whose heartbeat is older is dead; others take its jobs
    metrics_port: int  # a worker node's /metrics listener (it has no HTTP API)
    stream_port: int | None  # the WebSocket streaming API's port (waitress serves no WebSocket); None: off
    max_streams: int  # live streams at once; the next is refused before its audio flows
    engine: EngineSettings

    @property
    def stream_slots(self) -> int:
        """Windows an inference process keeps free for live streams' turns, beyond the files' windows_in_flight."""
        return min(self.max_streams, self.windows_in_flight)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DaemonConfig":
        """Read and validate every variable; raises ConfigError naming the first bad one."""
        try:
            return cls._read(os.environ if env is None else env)
        except ConfigError:
            raise
        except SettingsError as exc:  # the engine's parsers: same message, the daemon's one error type
            raise ConfigError(str(exc)) from None

    @classmethod
    def _read(cls, env: Mapping[str, str]) -> "DaemonConfig":

        def get(name: str) -> str:
            return env.get(name, "").strip() or DEFAULTS[name]

        skip_decoder = parse_bool("SKIP_DECODER", get("SKIP_DECODER"))
        redis_url = _redis_url(get("REDIS_URL"))
        if skip_decoder and redis_url is None:
            raise ConfigError("SKIP_DECODER=1 makes an API node, which hands jobs to worker nodes through Redis: "
                              "set REDIS_URL (e.g. redis://redis:6379/0), or unset SKIP_DECODER to transcribe here")
        # An API node loads no model: its device list is never looked at (and "auto" would import torch).
        devices = ("cpu",) if skip_decoder else parse_devices(get("ASYNC_ENGINE_DEVICES"))
        kind = "cuda" if devices[0].startswith("cuda") else "cpu"
        decoders = get("ASYNC_ENGINE_DECODERS")
        windows = get("ASYNC_ENGINE_WINDOWS_IN_FLIGHT")
        # ASYNC_ENGINE_DEVICE (the single-device CLI setting) is superseded here: the engine's defaults
        # that depend on the device (compute type) follow the daemon's devices instead.
        engine = EngineSettings.from_env({**env, "ASYNC_ENGINE_DEVICE": devices[0]})
        return cls(
            max_transcripts_parallel=parse_int("MAX_TRANSCRIPTS_PARALLEL", get("MAX_TRANSCRIPTS_PARALLEL"), 1, 4096),
            reject_over_parallel=parse_bool("REJECT_OVER_PARALLEL", get("REJECT_OVER_PARALLEL")),
            enable_auto_punctuation=parse_bool("ENABLE_AUTO_PUNCTUATION", get("ENABLE_AUTO_PUNCTUATION")),
            skip_decoder=skip_decoder,
            log_level=_log_level(get("LOGLEVEL")),
            host=get("ASYNC_ENGINE_HOST"),
            port=parse_int("ASYNC_ENGINE_PORT", get("ASYNC_ENGINE_PORT"), 1, 65535),
            devices=devices,
            decoders=(
                parse_int("ASYNC_ENGINE_DECODERS", decoders, 1, 256) if decoders
                else default_decoders(len(devices), usable_cores())
            ),
            windows_in_flight=(
                parse_int("ASYNC_ENGINE_WINDOWS_IN_FLIGHT", windows, 1, 4096) if windows
                else _DEFAULT_WINDOWS_IN_FLIGHT[kind]
            ),
            download=DownloadLimits(
                connect_timeout=_seconds("DOWNLOAD_CONNECT_TIMEOUT", get("DOWNLOAD_CONNECT_TIMEOUT")),
                read_timeout=_seconds("DOWNLOAD_READ_TIMEOUT", get("DOWNLOAD_READ_TIMEOUT")),
                max_bytes=parse_int("DOWNLOAD_MAX_BYTES", get("DOWNLOAD_MAX_BYTES"), 1, 1 << 40),
                max_redirects=parse_int("DOWNLOAD_MAX_REDIRECTS", get("DOWNLOAD_MAX_REDIRECTS"), 0, 30),
                addresses=AddressPolicy(allow=_rules("DOWNLOAD_ALLOW", get("DOWNLOAD_ALLOW")),
                                        deny=_rules("DOWNLOAD_DENY", get("DOWNLOAD_DENY"))),
            ),
            max_audio_seconds=parse_int("MAX_AUDIO_SECONDS", get("MAX_AUDIO_SECONDS"), 1, 7 * 24 * 3600),
            request_timeout_seconds=parse_int(
                "REQUEST_TIMEOUT_SECONDS", get("REQUEST_TIMEOUT_SECONDS"), 1, 7 * 24 * 3600
            ),
            api_key=_api_key(env.get("ASYNC_ENGINE_API_KEY", "")),
            worker_stall_seconds=parse_int("WORKER_STALL_SECONDS", get("WORKER_STALL_SECONDS"), 1, 24 * 3600),
            http=HttpLimits(
                max_connections=parse_int("HTTP_MAX_CONNECTIONS", get("HTTP_MAX_CONNECTIONS"), 16, 100_000),
                read_timeout=_seconds("HTTP_REQUEST_READ_TIMEOUT", get("HTTP_REQUEST_READ_TIMEOUT")),
                idle_timeout=_seconds("HTTP_IDLE_TIMEOUT", get("HTTP_IDLE_TIMEOUT")),
            ),
            data_dir=_data_dir(get("ASYNC_ENGINE_DATA_DIR")),
            max_queued_jobs=parse_int("MAX_QUEUED_JOBS", get("MAX_QUEUED_JOBS"), 1, 10_000_000),
            job_retention_hours=_hours("JOB_RETENTION_HOURS", get("JOB_RETENTION_HOURS")),
            redis_url=redis_url,
            worker_node_timeout=_seconds("WORKER_NODE_TIMEOUT_SECONDS", get("WORKER_NODE_TIMEOUT_SECONDS")),
            metrics_port=parse_int("METRICS_PORT", get("METRICS_PORT"), 1, 65535),
            stream_port=(None if get("ASYNC_ENGINE_STREAM_PORT").lower() == "off"
                         else parse_int("ASYNC_ENGINE_STREAM_PORT", get("ASYNC_ENGINE_STREAM_PORT"), 1, 65535)),
            max_streams=parse_int("ASYNC_ENGINE_MAX_STREAMS", get("ASYNC_ENGINE_MAX_STREAMS"), 1, 10_000),
            engine=engine,
        )


def parse_devices(value: str) -> tuple[str, ...]:
    """ASYNC_ENGINE_DEVICES: "auto", or a comma-separated list such as "cpu,cpu" or "cuda:0,cuda:1".

    "auto" means every visible CUDA card, else one CPU process. A card may appear once (one process
    per card owns it); "cpu" may repeat. CPU and CUDA do not mix: the compute type is one setting.
    """
    if value == "auto":
        count = cuda_device_count()
        return tuple(f"cuda:{i}" for i in range(count)) if count else ("cpu",)
    devices = tuple(part.strip() for part in value.split(","))
    for device in devices:
        if not _DEVICE.fullmatch(device):
            raise ConfigError(f"ASYNC_ENGINE_DEVICES must be auto or a list of cpu / cuda:N; got {device!r} in {value!r}")
    cards = [d if ":" in d else "cuda:0" for d in devices if d.startswith("cuda")]
    if cards and len(cards) != len(devices):
        raise ConfigError(f"ASYNC_ENGINE_DEVICES cannot mix cpu and cuda devices; got {value!r}")
    if len(set(cards)) != len(cards):
        raise ConfigError(f"ASYNC_ENGINE_DEVICES names a CUDA card twice (one process per card); got {value!r}")
    if cards:
        visible = cuda_device_count()
        missing = [c for c in cards if int(c.split(":")[1]) >= visible]
        if missing:
            raise ConfigError(
                f"ASYNC_ENGINE_DEVICES names {', '.join(missing)} but {visible} CUDA device(s) are visible; got {value!r}"
            )
        return tuple(cards)
    return devices


def cuda_device_count() -> int:
    """Visible CUDA cards (CUDA_VISIBLE_DEVICES applies), without importing torch into this process.

    The front only starts processes; torch would cost it about 150 MB. Without an NVIDIA driver there
    is no card to count; with one, a short-lived interpreter asks torch, as the inference process will.
    """
    if not Path(_NVIDIA_DRIVER).exists():
        return 0
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ConfigError(f"ASYNC_ENGINE_DEVICES=auto: counting CUDA cards failed: {done.stderr.strip()[-300:]}")
    return int(done.stdout.strip())


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset), not the host's
    count, so a node pinned to one core does not start threads that fight over it."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_decoders(inference_processes: int, cpu_count: int) -> int:
    """The cores the inference processes leave over, at least one and at most MAX_DEFAULT_DECODERS."""
    return min(MAX_DEFAULT_DECODERS, max(1, cpu_count - inference_processes))


def _data_dir(value: str) -> Path:
    """ASYNC_ENGINE_DATA_DIR, or $XDG_DATA_HOME/async-engine/data; it must be (or become) a writable directory."""
    if value:
        path = Path(value)
    else:
        path = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "async-engine" / "data"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"ASYNC_ENGINE_DATA_DIR: cannot create {str(path)!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"ASYNC_ENGINE_DATA_DIR: {str(path)!r} is not writable by this process")
    return path


def _redis_url(value: str) -> str | None:
    """REDIS_URL: redis://[[user]:password@]host[:port][/db], rediss:// (TLS) or unix:///path?db=N."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ConfigError("REDIS_URL must look like redis://[:password@]host:6379/0, rediss://... (TLS) or "
                          f"unix:///path/redis.sock; got {redact(value)!r}")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ConfigError(f"REDIS_URL has a port that is not a number: {redact(value)!r}") from None
    return value


def _hours(name: str, value: str) -> float:
    return _duration(name, value, "hours", 24 * 3650, "87600 hours (10 years)")


def _rules(name: str, value: str) -> HostRules:
    try:
        return parse_rules(name, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _api_key(value: str) -> str | None:
    """Unset or empty: no key. A key must be at least 16 visible ASCII characters, without spaces."""
    if not value:
        return None
    if len(value) < 16 or not all(33 <= ord(c) < 127 for c in value):
        raise ConfigError("ASYNC_ENGINE_API_KEY must be at least 16 visible ASCII characters without spaces "
                          "(e.g. the output of `openssl rand -hex 24`), or unset")
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOGLEVEL must be one of {', '.join(LOG_LEVELS)}; got {value!r}")
    return level


def _seconds(name: str, value: str) -> float:
    return _duration(name, value, "seconds", 3600, "3600 seconds")


def _duration(name: str, value: str, unit: str, most: float, most_text: str) -> float:
    """A positive, finite length of time with an upper bound (nan, inf and 0 would stall or spin)."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of {unit}; got {value!r}") from None
    if not (math.isfinite(number) and 0 < number <= most):
        raise ConfigError(f"{name} must be more than 0 and at most {most_text}; got {value!r}")
    return number
