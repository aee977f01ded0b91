"""Engine settings, read from the environment in one place and validated before any work starts.

Every variable the engine reads is declared here with its default; config/async-engine.env lists the
same names for operators. A bad value raises SettingsError naming the variable, so a daemon or CLI
stops at start rather than failing on the first request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

MODEL_NAMES = ("tiny.en", "base", "small")
DEFAULT_BEAM_SIZE = {"tiny.en": 5, "base": 5, "small": 5}
# Shallow fusion with CUSTOM_LANG_MODEL_PATH (engine.lm.fusion): tuned on the dev halves of
# bench/domains and general speech (docs/LANGUAGE_MODEL.md).
DEFAULT_LM_WEIGHT = "0.15"
DEFAULT_LM_WORD_BONUS = "0.0"
# Decoder steps replayed as CUDA graphs (engine/model/step_graphs.py): "auto" is on for a card, off on the CPU.
# On an H200, tiny.en, 60 dev clips over HTTP: 2.0-3.6x the eager steps' throughput, same WER
# (bench/RESULTS.md, 2026-11-28).
DEFAULT_CUDA_GRAPHS = "auto"


def cpu_has_bf16_matrix_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware tiles (Intel AMX, flag amx_bf16).

    There, bfloat16 layers beat int8 (engine/model/whisper_net.py); elsewhere (AVX-512 or AVX2 alone, as
    on AMD EPYC) bfloat16 is emulated with float32 arithmetic and int8 stays the faster choice.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags


def default_cpu_compute_type() -> str:
    """ASYNC_ENGINE_COMPUTE_TYPE's default on the CPU: bfloat16 with AMX, int8 otherwise."""
    return "bfloat16" if cpu_has_bf16_matrix_units() else "int8"


class SettingsError(ValueError):
    """An environment variable has a value the engine cannot use."""


def _default_models_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "async-engine" / "models"


_TRUE, _FALSE = ("True", "true", "1"), ("False", "false", "0")


def parse_bool(name: str, value: str, also: tuple[str, ...] = ()) -> bool:
    """Accept the spellings API.md promises (True/False, true/false, 1/0) and nothing else; a caller that
    gives a value of its own meaning (`also`, handled before this) is named in the error too."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    spellings = ", ".join((*also, *(s for pair in zip(_TRUE, _FALSE) for s in pair)))
    raise SettingsError(f"{name} must be one of {spellings}; got {value!r}")


def parse_float(name: str, value: str, minimum: float, maximum: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number; got {value!r}") from None
    if not minimum <= number <= maximum:  # NaN fails both
        raise SettingsError(f"{name} must be between {minimum:g} and {maximum:g}; got {value}")
    return number


def _readable_file(name: str, value: str) -> Path | None:
    """An optional path that must name a readable file when set (the file's content is checked on load)."""
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise SettingsError(f"{name} must name an existing file; {value!r} is not one")
    if not os.access(path, os.R_OK):
        raise SettingsError(f"{name} names {value!r}, which this process cannot read")
    return path


def parse_int(name: str, value: str, minimum: int, maximum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number; got {value!r}") from None
    if not minimum <= number <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}; got {number}")
    return number


@dataclass(frozen=True)
class EngineSettings:
    models_dir: Path
    model: str
    beam_size: int
    device: str
    compute_type: str
    language_model: Path | None = None  # CUSTOM_LANG_MODEL_PATH: a KenLM model fused in the beam search
    lm_weight: float = float(DEFAULT_LM_WEIGHT)
    lm_word_bonus: float = float(DEFAULT_LM_WORD_BONUS)
    cuda_graphs: bool = False  # ASYNC_ENGINE_CUDA_GRAPHS: single-token decoder steps as CUDA graphs (cards only)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "EngineSettings":
        env = os.environ if env is None else env
        model = env.get("ASYNC_ENGINE_MODEL", "tiny.en")
        if model not in MODEL_NAMES:
            raise SettingsError(f"ASYNC_ENGINE_MODEL must be one of {', '.join(MODEL_NAMES)}; got {model!r}")
        beam = env.get("DECODER_BEAM_SIZE", "")
        beam_size = parse_int("DECODER_BEAM_SIZE", beam, 1, 16) if beam else DEFAULT_BEAM_SIZE[model]
        device = env.get("ASYNC_ENGINE_DEVICE", "cpu")
        if not (device == "cpu" or device.startswith("cuda")):
            raise SettingsError(f"ASYNC_ENGINE_DEVICE must be cpu or cuda[:N]; got {device!r}")
        compute_type = env.get("ASYNC_ENGINE_COMPUTE_TYPE") or (default_cpu_compute_type() if device == "cpu"
                                                                else "float16")
        allowed = ("int8", "bfloat16", "float32") if device == "cpu" else ("float16", "float32")
        if compute_type not in allowed:
            raise SettingsError(
                f"ASYNC_ENGINE_COMPUTE_TYPE must be one of {', '.join(allowed)} on {device}; got {compute_type!r}"
            )
        graphs = env.get("ASYNC_ENGINE_CUDA_GRAPHS", "").strip() or DEFAULT_CUDA_GRAPHS
        cuda_graphs = device != "cpu" if graphs == "auto" else parse_bool("ASYNC_ENGINE_CUDA_GRAPHS", graphs, ("auto",))
        if cuda_graphs and device == "cpu":
            raise SettingsError("ASYNC_ENGINE_CUDA_GRAPHS=1 replays decoder steps on a CUDA card; the device here is "
                                "cpu (set ASYNC_ENGINE_DEVICES / ASYNC_ENGINE_DEVICE to cuda:N, or unset it)")
        return cls(
            language_model=_readable_file("CUSTOM_LANG_MODEL_PATH", env.get("CUSTOM_LANG_MODEL_PATH", "").strip()),
            lm_weight=parse_float("CUSTOM_LANG_MODEL_WEIGHT",
                                  env.get("CUSTOM_LANG_MODEL_WEIGHT", "").strip() or DEFAULT_LM_WEIGHT, 0.0, 10.0),
            lm_word_bonus=parse_float("CUSTOM_LANG_MODEL_WORD_BONUS",
                                      env.get("CUSTOM_LANG_MODEL_WORD_BONUS", "").strip() or DEFAULT_LM_WORD_BONUS,
                                      -10.0, 10.0),
            compute_type=compute_type,
            cuda_graphs=cuda_graphs,
            models_dir=Path(env.get("ASYNC_ENGINE_MODELS_DIR") or _default_models_dir()),
            model=model,
            beam_size=beam_size,
            device=device,
        )
