"""The Redis client the resilience state lives in, or None in the embedded default."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings

KEY_PREFIX = "switchyard:resilience"

# A payment must never hang on Redis: a slow or absent Redis fails these calls quickly, and
# each caller decides what that means (see breaker.py and limits.py).
SOCKET_TIMEOUT_SECONDS = 0.5
MAX_CONNECTIONS = 50


def redis_url() -> str:
    return getattr(settings, "REDIS_URL", "") or ""


def redis_client() -> redis.Redis | None:
    url = redis_url()
    return _client(url) if url else None


@lru_cache(maxsize=8)
def _client(url: str) -> redis.Redis:
    # One pool per process and URL (redis-py resets it after a fork). A blocking pool: when
    # every connection is busy a caller waits briefly for one (each command takes
    # microseconds) instead of failing, which would let a call past its limits.
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30)
    return redis.Redis(connection_pool=pool)


def account_key(account_id: str, *parts: str) -> str:
    # {…} is a Redis Cluster hash tag: every key of one account lives in one slot, so a Lua
    # script may touch several of them.
    return ":".join([KEY_PREFIX, "{" + account_id + "}", *parts])
