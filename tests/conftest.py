"""Shared session fixtures: the converted tiny.en model, a loaded Transcriber, the eval corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.store import install_model
from engine.settings import EngineSettings


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The engine's models directory (ASYNC_ENGINE_MODELS_DIR or the default), with tiny.en installed.

    install_model is a no-op when the converted model is already there.
    """
    directory = EngineSettings.from_env().models_dir
    install_model("tiny.en", directory)
    return directory


@pytest.fixture(scope="session")
def tiny_en_path(models_dir: Path) -> Path:
    return models_dir / "tiny.en"


@pytest.fixture(scope="session")
def transcriber(models_dir: Path):
    from engine.transcriber import Transcriber

    return Transcriber.load("tiny.en")


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    directory = Path(__file__).resolve().parents[2] / "shared" / "eval"
    if not directory.is_dir():
        pytest.skip(f"evaluation corpus not found at {directory}")
    return directory


@pytest.fixture(scope="session")
def installed_model(models_dir: Path) -> Path:
    """tiny.en converted into the engine's models directory (what `async-engine models install` does)."""
    return models_dir / "tiny.en"
