"""Per-merchant request rate limit, atomic in the shared cache (Redis in production).

Counted per merchant *and mode* (the mode of the API key used): test-mode traffic, or a leaked
`sk_test_…` key, cannot use up the limit the merchant's live payments run on. Each mode gets
the merchant's full limit.
"""

import time

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

WINDOW_SECONDS = 60


class MerchantRateThrottle(BaseThrottle):
    """Fixed one-minute window per merchant and mode; INCR is atomic, so it holds across
    processes."""

    def allow_request(self, request, view) -> bool:
        merchant = request.user
        if request.auth is None or merchant is None:
            return True
        limit = merchant.rate_limit_per_minute or settings.MERCHANT_RATE_LIMIT_PER_MINUTE
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        mode = "live" if request.auth.livemode else "test"
        count = count_request(f"ratelimit:{merchant.id}:{mode}:{window}",
                              ttl=WINDOW_SECONDS * 2)
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float:
        return getattr(self, "_wait", WINDOW_SECONDS)


def count_request(key: str, *, ttl: int) -> int:
    """Add one to the counter `key` of the shared cache, which expires `ttl` seconds after
    its last request; returns the new count. On Redis one round trip: INCR and EXPIRE in a
    MULTI/EXEC (atomic: no counter is ever left without its expiry). Elsewhere (the
    local-memory cache of the embedded default) add and incr, atomic in one process."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, RedisCache):
        full_key = backend.make_and_validate_key(key)
        # (Django's Redis backend has no public handle on its client)
        client = backend._cache.get_client(full_key, write=True)  # type: ignore[attr-defined]
        pipeline = client.pipeline(transaction=True)
        pipeline.incr(full_key)
        pipeline.expire(full_key, ttl)
        count, _ = pipeline.execute()
        return int(count)
    cache.add(key, 0, timeout=ttl)
    try:
        return int(cache.incr(key))
    except ValueError:  # evicted between add and incr: start the window again
        cache.add(key, 1, timeout=ttl)
        return 1
