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


class SettingsError(ValueError):
    """An environment variable has a value the engine cannot use."""


def _default_models_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "async-engine" / "models"


def parse_bool(name: str, value: str) -> bool:
    """Accept the spellings API.md promises (True/False, true/false, 1/0) and nothing else."""
    if value in ("True", "true", "1"):
        return True
    if value in ("False", "false", "0"):
        return False
    raise SettingsError(f"{name} must be one of True, False, true, false, 1, 0; got {value!r}")


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
        compute_type = env.get("ASYNC_ENGINE_COMPUTE_TYPE") or ("int8" if device == "cpu" else "float16")
        allowed = ("int8", "float32") if device == "cpu" else ("float16", "float32")
        if compute_type not in allowed:
            raise SettingsError(
                f"ASYNC_ENGINE_COMPUTE_TYPE must be one of {', '.join(allowed)} on {device}; got {compute_type!r}"
            )
        return cls(
            compute_type=compute_type,
            models_dir=Path(env.get("ASYNC_ENGINE_MODELS_DIR") or _default_models_dir()),
            model=model,
            beam_size=beam_size,
            device=device,
        )
