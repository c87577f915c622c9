"""Per-merchant request rate limit, atomic in the shared cache (Redis in production).

Counted per merchant *and mode* (the mode of the API key used): test-mode traffic, or a leaked
`sk_test_…` key, cannot use up the limit the merchant's live payments run on. Each mode gets
the merchant's full limit.
"""

import time

from django.conf import settings
from django.core.cache import cache
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
        key = f"ratelimit:{merchant.id}:{mode}:{window}"
        cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
        try:
            count = cache.incr(key)
        except ValueError:  # evicted between add and incr: start the window again
            cache.add(key, 1, timeout=WINDOW_SECONDS * 2)
            count = 1
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float:
        return getattr(self, "_wait", WINDOW_SECONDS)
