"""Retries of a provider call, only where a retry provably cannot charge twice.

Two cases are safe, and nothing else is retried:

1. The connection was never made (`providers.http.send` raised ProviderUnavailable for a
   connect error, connect timeout or pool timeout: `raw_code` is the httpx exception's name).
   The provider never saw the request.
2. The outcome is unknown, and the provider replays the stored result of a request whose
   idempotency key it has seen. Every adapter sends a key derived from our attempt/operation
   reference, and a retry re-sends the SAME request object, so the provider either executes it
   for the first time or answers with what the first one did. Stripe and Adyen replay stored
   results (errors included); Checkout.com caches only 2xx responses and re-executes after a
   4xx/5xx, so a retry there after an unknown outcome is no proof: never retried.

Declines, bad requests, a provider's "unavailable" answer (it said no: respect it) and our own
limit/breaker refusals are never retried. Backoff is exponential with full jitter, and the
whole policy is bounded in attempts and in time (settings below).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity
from django.conf import settings

from providers.base import OutcomeUnknown, ProviderBadRequest, ProviderUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Does the provider answer a repeated idempotency key with the stored result of the first
# request, whatever it was? (docs/providers.md "Idempotency replays differ".) A provider missing
# here is treated as not replaying: when in doubt, never retry an unknown outcome.
REPLAYS_IDEMPOTENT_RESULTS: dict[str, bool] = {
    "stripe": True,
    "adyen": True,
    "checkout": False,
}

# What providers.http.send puts in raw_code when the request never left this machine.
NEVER_CONNECTED = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})

DEFAULTS = {
    "PROVIDER_RETRY_MAX_ATTEMPTS": 3,  # the first try included
    "PROVIDER_RETRY_MAX_SECONDS": 2.0,  # no retry starts after this much time has passed
    "PROVIDER_RETRY_BACKOFF_SECONDS": 0.1,  # first backoff's upper bound; doubles each retry
    "PROVIDER_RETRY_BACKOFF_MAX_SECONDS": 1.0,
}


def setting(name: str) -> float:
    return getattr(settings, name, DEFAULTS[name])


def is_retry_safe(provider: str, exc: BaseException) -> bool:
    if isinstance(exc, ProviderUnavailable):
        return exc.raw_code in NEVER_CONNECTED
    if isinstance(exc, OutcomeUnknown):
        return REPLAYS_IDEMPOTENT_RESULTS.get(provider, False)
    return False


def call_with_retry(provider: str, fn: Callable[[], T]) -> T:
    """Run `fn` (one provider call, the same request every time) under the retry policy.

    The last exception propagates, except that once any try's outcome was unknown, a later
    "unavailable" (a refused connection, a 503 that says "not processed") or "bad request"
    speaks only of that later try: the first may still have charged, so the call stays
    OutcomeUnknown.
    """
    unknown: list[OutcomeUnknown] = []

    def once() -> T:
        try:
            return fn()
        except OutcomeUnknown as exc:
            unknown.append(exc)
            raise

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: is_retry_safe(provider, exc)),
        stop=(tenacity.stop_after_attempt(int(setting("PROVIDER_RETRY_MAX_ATTEMPTS")))
              | tenacity.stop_before_delay(setting("PROVIDER_RETRY_MAX_SECONDS"))),
        wait=tenacity.wait_random_exponential(
            multiplier=setting("PROVIDER_RETRY_BACKOFF_SECONDS"),
            max=setting("PROVIDER_RETRY_BACKOFF_MAX_SECONDS")),
        before_sleep=lambda state: _log_retry(provider, state),
        reraise=True,
    )
    try:
        return retrying(once)
    except (ProviderUnavailable, ProviderBadRequest) as exc:
        if unknown:
            raise unknown[-1] from exc
        raise


def worst_case_seconds(*, connect_timeout: float, read_timeout: float) -> float:
    """An upper bound on how long one gateway call can take, retries included: how long a
    concurrency lease or a half-open probe slot must outlive a live call."""
    attempts = int(setting("PROVIDER_RETRY_MAX_ATTEMPTS"))
    return (attempts * (connect_timeout + read_timeout)
            + setting("PROVIDER_RETRY_MAX_SECONDS") + setting("PROVIDER_RETRY_BACKOFF_MAX_SECONDS"))


def _log_retry(provider: str, state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning("retrying provider call provider=%s attempt=%d error=%s raw_code=%s "
                   "sleep_ms=%d", provider, state.attempt_number, getattr(exc, "code", exc),
                   getattr(exc, "raw_code", ""), (state.upcoming_sleep or 0) * 1000)
