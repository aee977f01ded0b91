"""The optional API key: with ASYNC_ENGINE_API_KEY set, every endpoint but /health and /metrics needs it.

Two spellings are accepted, because two families of clients point at this server unchanged:
AssemblyAI's SDKs send `Authorization: <key>`, OpenAI's `Authorization: Bearer <key>`.
/health and /metrics stay open so load balancers, container runtimes and Prometheus can probe
without the secret; neither shows a transcript, a URL or a credential.
"""

from __future__ import annotations

import hmac

import falcon

from daemon.errors import UNAUTHORIZED, ApiError


_OPEN = frozenset({"/health", "/metrics"})


class ApiKey:
    def __init__(self, key: str | None) -> None:
        self.key = key.encode() if key else None

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.key is None or req.path in _OPEN:
            return
        header = (req.get_header("Authorization") or "").strip()
        scheme, _, rest = header.partition(" ")
        given = rest.strip() if scheme.lower() == "bearer" else header
        if given and hmac.compare_digest(given.encode(), self.key):
            return
        resp.set_header("WWW-Authenticate", 'Bearer realm="async-engine"')
        reason = "has no Authorization header" if not header else "has a wrong API key"
        raise ApiError(UNAUTHORIZED, "this server needs an API key: send `Authorization: Bearer <key>` or "
                                     f"`Authorization: <key>`; the request {reason}")
