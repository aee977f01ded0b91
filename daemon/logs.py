"""Logging for every process of the tree: one format, credentials masked, one line per request.

Each process (front, supervisor, workers) calls `configure` once; the formatter masks URL
credentials in the whole line, traceback included, so no code path has to remember to.
`request_line` is the single shape of the per-request line, written by the Falcon app for the
requests it serves and by the HTTP server for those it answers itself (malformed HTTP).
"""

from __future__ import annotations

import logging

from daemon.redact import redact

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"
requests_log = logging.getLogger("async_engine.front")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str) -> None:
    """Root logging at `level` to stderr, every line passed through redact()."""
    logging.basicConfig(level=level, format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_RedactingFormatter(FORMAT))


def request_line(uid: str, method: str, path: str, status: int, code: int | None, audio_seconds: float | None,
                 wall_seconds: float, description: str | None, redecoded: int = 0) -> None:
    """uid, request, status, error code, audio and wall seconds, the windows decoded again whole (when any)
    and the error's description (if any)."""
    level = logging.DEBUG if path == "/health" and status < 500 else logging.INFO
    requests_log.log(level, "uid=%s %s %s status=%d code=%s audio_s=%s wall_s=%.3f%s%s", uid, _cut(method),
                     _cut(path), status, code if code is not None else "-",
                     f"{audio_seconds:.3f}" if audio_seconds is not None else "-", wall_seconds,
                     f" redecoded={redecoded}" if redecoded else "", f" error={description!r}" if description else "")


def _cut(text: str | None, limit: int = 200) -> str:
    """A client's method or path as logged: bounded, so a 30 kB path cannot flood the log."""
    if not text:
        return "-"
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"
