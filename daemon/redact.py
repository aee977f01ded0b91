"""Credentials never leave the server in an error description or a log line.

Customers put secrets in audio URLs: userinfo (`https://user:password@host/...`) and signed-URL
query parameters (S3's X-Amz-Signature, GCS's X-Goog-Signature, Azure's sig, tokens). Error
descriptions echo the URL so the caller can see which one failed, and every description is
logged, so both pass through `redact` (ApiError applies it to every description, the log
formatter to every line).
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : userinfo runs to the last "@" before the path, query or fragment.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s?#\"'<>]*@")
_SECRET_PARAMS = (
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "token", "access_token", "id_token", "api_key", "apikey", "key", "password", "passwd",
    "pwd", "secret", "client_secret", "auth", "authorization", "credential", "credentials", "policy",
    "key-pair-id",
)
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:%s)=)[^&#\s\"'<>]*" % "|".join(re.escape(name) for name in _SECRET_PARAMS)
)


def redact(text: str) -> str:
    """`text` with the userinfo of every URL and the values of secret-bearing query parameters masked."""
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text))
