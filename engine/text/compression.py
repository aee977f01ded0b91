"""Whisper's compression ratio: how well a text gzips. A decoding loop repeats itself and compresses
too well; the temperature fallback tests it, and OpenAI-shaped segments report it.

Its own module so that the front (engine/text/exports.py) reaches it without importing the search.
"""

from __future__ import annotations

import zlib


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
