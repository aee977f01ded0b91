"""Request bodies: JSON of at most MAX_BODY_BYTES, read strictly, and the uploads' size limit.

A JSON body carries a URL and a few options; anything larger is refused before it is parsed (the
HTTP server refuses it even earlier, from its Content-Length). Uploads (POST /v2/upload, OpenAI's
multipart form) carry audio instead, bounded like downloads by DOWNLOAD_MAX_BYTES.
"""

from __future__ import annotations

import json

import falcon

from daemon.errors import MALFORMED_REQUEST, UNSUPPORTED_CONTENT_TYPE, ApiError

MAX_BODY_BYTES = 64 * 1024
MULTIPART_OVERHEAD_BYTES = 1 << 20  # the form's other fields and boundaries, past the audio itself


def read_json(req: falcon.Request) -> object:
    media_type = (req.content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(UNSUPPORTED_CONTENT_TYPE, f"Content-Type must be application/json; got {req.content_type!r}")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(MALFORMED_REQUEST, f"the request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(MALFORMED_REQUEST, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(MALFORMED_REQUEST, "the request body is not valid JSON: it is nested too deeply") from None
