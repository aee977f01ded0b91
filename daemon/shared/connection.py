"""The Redis connection of shared mode, and what an outage looks like to a client.

Every node opens one client from REDIS_URL (redis://, rediss:// for TLS, a password in the URL).
Commands that block (a worker's stream reads, an API node's wait for a result) use a socket
timeout longer than their block time. When Redis cannot be reached, an HTTP request gets a JSON
503 with code 22 (store_unreachable) and /health 501; redis-py opens a fresh connection on the
next command, so the node recovers by itself when Redis is back.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import redis

from daemon.errors import store_unreachable

BLOCK_SECONDS = 2.0  # the longest a blocking read waits before its loop looks at its stop flag again
_SOCKET_TIMEOUT = 15.0  # > BLOCK_SECONDS and > the API node's longest wait slice (WAIT_SLICE_SECONDS)

Unreachable = (redis.ConnectionError, redis.TimeoutError)
T = TypeVar("T")


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=_SOCKET_TIMEOUT,
                                health_check_interval=10, client_name="async-engine")


def describe(exc: BaseException) -> str:
    """An outage in a few words, without the URL (which may hold the password)."""
    return f"{type(exc).__name__}: {str(exc).split(' connecting to ')[0][:200]}"


def answering_503(method: Callable[..., T]) -> Callable[..., T]:
    """A method that talks to Redis: an outage becomes the API's 503 (code 22) instead of a 500."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except Unreachable as exc:
            raise store_unreachable(describe(exc)) from None

    return wrapper
