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

from payments.api.authentication import revoked
from payments.services.merchants import KEYS_GENERATION_KEY, api_key_recheck

WINDOW_SECONDS = 60


class MerchantRateThrottle(BaseThrottle):
    """Fixed one-minute window per merchant and mode; INCR is atomic, so it holds across
    processes.

    The same round trip reads the API keys' generation: a key the process cached under
    another one is read from the database again (payments.services.merchants), so a key
    revoked (or a merchant changed) in another process is seen here at its next request.
    """

    def allow_request(self, request, view) -> bool:
        if request.auth is None or request.user is None:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        mode = "live" if request.auth.livemode else "test"
        count, generation = count_request(f"ratelimit:{request.user.id}:{mode}:{window}",
                                          ttl=WINDOW_SECONDS * 2,
                                          also_read=KEYS_GENERATION_KEY)
        if generation != getattr(request, "api_key_generation", None):
            fresh = api_key_recheck(request.auth, generation=generation)
            if fresh is None:
                raise revoked()
            request.user, request.auth = fresh.merchant, fresh  # its merchant as saved now
        merchant = request.user
        limit = merchant.rate_limit_per_minute or settings.MERCHANT_RATE_LIMIT_PER_MINUTE
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float:
        return getattr(self, "_wait", WINDOW_SECONDS)


def count_request(key: str, *, ttl: int, also_read: str) -> tuple[int, str]:
    """Add one to the counter `key` of the shared cache, which expires `ttl` seconds after
    its last request; returns the new count and the string stored at `also_read` ("" if
    none). On Redis one round trip: INCR, EXPIRE and GET in a MULTI/EXEC (atomic: no counter
    is ever left without its expiry). Elsewhere (the local-memory cache of the embedded
    default) add, incr and get, atomic in one process."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, RedisCache):
        full_key = backend.make_and_validate_key(key)
        # (Django's Redis backend has no public handle on its client; the read goes to the
        # same client: one server, as REDIS_URL names)
        client = backend._cache.get_client(full_key, write=True)  # type: ignore[attr-defined]
        pipeline = client.pipeline(transaction=True)
        pipeline.incr(full_key)
        pipeline.expire(full_key, ttl)
        pipeline.get(backend.make_and_validate_key(also_read))
        count, _, raw = pipeline.execute()
        return int(count), _decode(backend, raw)
    cache.add(key, 0, timeout=ttl)
    try:
        count = int(cache.incr(key))
    except ValueError:  # evicted between add and incr: start the window again
        cache.add(key, 1, timeout=ttl)
        count = 1
    return count, str(cache.get(also_read) or "")


def _decode(backend: RedisCache, raw: bytes | None) -> str:
    """A value as Django's Redis backend stores it (its serializer), as a string."""
    if raw is None:
        return ""
    return str(backend._cache._serializer.loads(raw))  # type: ignore[attr-defined]
