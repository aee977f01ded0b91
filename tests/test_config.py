"""DaemonConfig.from_env: defaults, device lists, and a clear error naming every bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import config as config_module
from daemon.config import ConfigError, DaemonConfig, default_decoders, parse_devices
from engine import settings as settings_module
from engine.settings import cpu_has_bf16_matrix_units, default_cpu_compute_type


@pytest.fixture
def cuda_cards(monkeypatch):
    """Pretend this many CUDA cards are visible."""
    def set_count(count: int) -> None:
        monkeypatch.setattr(config_module, "cuda_device_count", lambda: count)
    set_count(0)
    return set_count


def test_defaults_on_a_cpu_host(cuda_cards, monkeypatch):
    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    config = DaemonConfig.from_env({})
    assert config.max_transcripts_parallel == 14
    assert config.reject_over_parallel is True
    assert config.enable_auto_punctuation is True
    assert config.engine.language_model is None
    assert config.skip_decoder is False and config.redis_url is None
    assert config.worker_node_timeout == 10 and config.metrics_port == 9998
    assert config.log_level == "INFO"
    assert (config.host, config.port) == ("0.0.0.0", 9999)
    assert config.devices == ("cpu",)
    assert config.decoders == 3
    assert config.windows_in_flight == 8
    assert (config.download.connect_timeout, config.download.read_timeout) == (5.0, 30.0)
    assert (config.download.max_bytes, config.download.max_redirects) == (500_000_000, 5)
    assert (config.max_audio_seconds, config.request_timeout_seconds) == (14400, 3600)
    assert config.engine.model == "tiny.en" and config.engine.compute_type == default_cpu_compute_type()
    assert config.api_key is None and config.worker_stall_seconds == 300
    assert config.download.addresses.allow.empty
    assert [str(n) for n in config.download.addresses.deny.networks] == [
        "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"]


def test_auto_takes_every_cuda_card(cuda_cards):
    cuda_cards(2)
    config = DaemonConfig.from_env({})
    assert config.devices == ("cuda:0", "cuda:1")
    assert config.windows_in_flight == 64
    assert config.engine.compute_type == "float16", "the engine's defaults follow the daemon's devices"
    assert config.engine.cuda_graphs is True, "cards replay decoder steps as CUDA graphs by default"
    assert DaemonConfig.from_env({"ASYNC_ENGINE_CUDA_GRAPHS": "0"}).engine.cuda_graphs is False


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8", True),  # Intel with AMX
    ("fpu sse2 avx512f avx512_bf16 avx512_vnni", False),  # AMD EPYC: bfloat16 instructions, no tiles
    ("fpu sse2 avx2", False),
])
def test_bf16_matrix_units_are_read_from_cpuinfo(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_bf16_matrix_units(cpuinfo) is expected
    assert cpu_has_bf16_matrix_units(tmp_path / "absent") is False


@pytest.mark.parametrize(("amx", "expected"), [(True, "bfloat16"), (False, "int8")])
def test_the_cpu_compute_type_follows_the_matrix_units(cuda_cards, monkeypatch, amx, expected):
    monkeypatch.setattr(settings_module, "cpu_has_bf16_matrix_units", lambda: amx)
    assert DaemonConfig.from_env({}).engine.compute_type == expected
    for chosen in ("int8", "bfloat16", "float32"):  # an operator's choice wins on any CPU
        assert DaemonConfig.from_env({"ASYNC_ENGINE_COMPUTE_TYPE": chosen}).engine.compute_type == chosen


def test_bfloat16_is_a_cpu_compute_type(cuda_cards):
    cuda_cards(1)
    with pytest.raises(ConfigError, match="ASYNC_ENGINE_COMPUTE_TYPE"):
        DaemonConfig.from_env({"ASYNC_ENGINE_COMPUTE_TYPE": "bfloat16"})


def test_step_graphs_stay_off_on_a_cpu_host(cuda_cards):
    assert DaemonConfig.from_env({}).engine.cuda_graphs is False
    assert DaemonConfig.from_env({"ASYNC_ENGINE_CUDA_GRAPHS": "auto"}).engine.cuda_graphs is False


def test_explicit_values(cuda_cards, tmp_path):
    lm = tmp_path / "domain.arpa"
    lm.write_text("\\data\\\n")
    config = DaemonConfig.from_env({
        "MAX_TRANSCRIPTS_PARALLEL": "3", "REJECT_OVER_PARALLEL": "false", "ENABLE_AUTO_PUNCTUATION": "0",
        "CUSTOM_LANG_MODEL_PATH": str(lm), "LOGLEVEL": "debug", "REDIS_URL": "rediss://:s3cret@redis:6380/2",
        "WORKER_NODE_TIMEOUT_SECONDS": "4.5", "METRICS_PORT": "9100",
        "ASYNC_ENGINE_DEVICES": "cpu,cpu", "ASYNC_ENGINE_DECODERS": "2", "ASYNC_ENGINE_WINDOWS_IN_FLIGHT": "8",
        "DOWNLOAD_CONNECT_TIMEOUT": "0.5", "DOWNLOAD_MAX_BYTES": "1000", "MAX_AUDIO_SECONDS": "60",
        "DOWNLOAD_DENY": "none", "DOWNLOAD_ALLOW": "10.0.0.0/8, cdn.example.com",
        "ASYNC_ENGINE_API_KEY": "0123456789abcdef0123", "WORKER_STALL_SECONDS": "30",
    })
    assert config.download.addresses.deny.empty
    assert config.download.addresses.allow.names == ("cdn.example.com",)
    assert config.api_key == "0123456789abcdef0123" and config.worker_stall_seconds == 30
    assert config.max_transcripts_parallel == 3 and config.reject_over_parallel is False
    assert config.enable_auto_punctuation is False and config.skip_decoder is False
    assert config.redis_url == "rediss://:s3cret@redis:6380/2" and config.worker_node_timeout == 4.5
    assert config.metrics_port == 9100
    assert config.engine.language_model == Path(lm) and config.log_level == "DEBUG"
    assert config.devices == ("cpu", "cpu") and config.decoders == 2 and config.windows_in_flight == 8
    assert config.download.connect_timeout == 0.5 and config.download.max_bytes == 1000
    assert config.max_audio_seconds == 60


@pytest.mark.parametrize(
    ("value", "cards", "devices"),
    [
        ("cpu", 0, ("cpu",)),
        ("cpu,cpu", 0, ("cpu", "cpu")),
        ("cuda:0,cuda:1", 2, ("cuda:0", "cuda:1")),
        (" cuda:1 , cuda:0 ", 2, ("cuda:1", "cuda:0")),
        ("cuda", 1, ("cuda:0",)),
        ("auto", 0, ("cpu",)),
        ("auto", 3, ("cuda:0", "cuda:1", "cuda:2")),
    ],
)
def test_device_lists_parse(cuda_cards, value, cards, devices):
    cuda_cards(cards)
    assert parse_devices(value) == devices


@pytest.mark.parametrize(
    ("value", "cards"),
    [("gpu", 0), ("cpu,", 0), ("cpu,cuda:0", 1), ("cuda:0,cuda:0", 1), ("cuda:2", 2), ("cuda:0", 0)],
)
def test_bad_device_lists(cuda_cards, value, cards):
    cuda_cards(cards)
    with pytest.raises(ConfigError, match="ASYNC_ENGINE_DEVICES"):
        DaemonConfig.from_env({"ASYNC_ENGINE_DEVICES": value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_TRANSCRIPTS_PARALLEL", "0"),
        ("MAX_TRANSCRIPTS_PARALLEL", "many"),
        ("REJECT_OVER_PARALLEL", "yes"),
        ("ENABLE_AUTO_PUNCTUATION", "TRUE"),
        ("CUSTOM_LANG_MODEL_PATH", "/nonexistent/domain.arpa"),
        ("CUSTOM_LANG_MODEL_PATH", "/"),
        ("SKIP_DECODER", "2"),
        ("LOGLEVEL", "verbose"),
        ("ASYNC_ENGINE_PORT", "70000"),
        ("ASYNC_ENGINE_DECODERS", "0"),
        ("ASYNC_ENGINE_WINDOWS_IN_FLIGHT", "-1"),
        ("DOWNLOAD_CONNECT_TIMEOUT", "0"),
        ("DOWNLOAD_READ_TIMEOUT", "soon"),
        ("DOWNLOAD_MAX_BYTES", "1.5"),
        ("DOWNLOAD_MAX_REDIRECTS", "-1"),
        ("MAX_AUDIO_SECONDS", "0"),
        ("REQUEST_TIMEOUT_SECONDS", "forever"),
        ("ASYNC_ENGINE_MODEL", "huge"),
        ("DECODER_BEAM_SIZE", "0"),
        ("ASYNC_ENGINE_COMPUTE_TYPE", "float16"),
        ("ASYNC_ENGINE_CUDA_GRAPHS", "maybe"),
        ("ASYNC_ENGINE_CUDA_GRAPHS", "1"),  # on this CPU-only host: nothing to replay graphs on
        ("DOWNLOAD_DENY", "169.254.0.0/99"),
        ("DOWNLOAD_ALLOW", "http://cdn.example.com"),
        ("ASYNC_ENGINE_API_KEY", "short"),
        ("ASYNC_ENGINE_API_KEY", "has spaces in the middle of it"),
        ("WORKER_STALL_SECONDS", "0"),
        ("REDIS_URL", "http://redis:6379"),
        ("REDIS_URL", "redis://redis:port/0"),
        ("REDIS_URL", "redis://"),
        ("WORKER_NODE_TIMEOUT_SECONDS", "0"),
        ("METRICS_PORT", "0"),
    ],
)
def test_every_bad_value_names_its_variable(cuda_cards, name, value):
    with pytest.raises(ConfigError, match=name):
        DaemonConfig.from_env({name: value})


def test_an_api_node_needs_redis_and_never_looks_for_devices(monkeypatch):
    with pytest.raises(ConfigError, match="SKIP_DECODER=1 .* REDIS_URL"):
        DaemonConfig.from_env({"SKIP_DECODER": "1"})

    def no_torch() -> int:
        raise AssertionError("an API node must not import torch to count CUDA cards")

    monkeypatch.setattr("daemon.config.cuda_device_count", no_torch)
    config = DaemonConfig.from_env({"SKIP_DECODER": "1", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert config.skip_decoder and config.redis_url == "redis://127.0.0.1:6379/0"


def test_a_bad_redis_url_is_refused_without_showing_its_password():
    with pytest.raises(ConfigError) as refused:
        DaemonConfig.from_env({"REDIS_URL": "http://:hunter2@redis:6379"})
    assert "hunter2" not in str(refused.value) and "REDIS_URL" in str(refused.value)


@pytest.mark.parametrize(("inference", "cores", "decoders"), [(1, 1, 1), (1, 2, 1), (1, 4, 3), (2, 64, 8)])
def test_default_decoder_count(inference, cores, decoders):
    assert default_decoders(inference, cores) == decoders


def test_counting_cuda_cards_never_imports_torch_here(monkeypatch, tmp_path):
    """The front only starts processes: no driver, no count to make; with one, a child interpreter counts."""
    import subprocess
    import sys

    code = ("import sys; from daemon.config import cuda_device_count; n = cuda_device_count(); "
            "print(n, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr
    driver = tmp_path / "version"
    driver.write_text("NVRM version: pretend\n")
    monkeypatch.setattr(config_module, "_NVIDIA_DRIVER", str(driver))
    assert config_module.cuda_device_count() == 0  # asked torch in a child: this machine's torch sees no card
