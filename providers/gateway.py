"""The one way payments call a provider account: limits, breaker, retries, adapter.

    call(account, "authorize", request)

applies, outermost first:
1. the account's concurrency cap and rate limit: refused at once, never queued
   (ProviderUnavailable "provider_concurrency_limited" / "provider_rate_limited");
2. the account's circuit breaker, shared by every process: refused while open
   (ProviderUnavailable "breaker_open"); the call's final result, after any retries, is what
   the breaker counts;
3. the retry policy: only retries that cannot charge twice (providers/resilience/retry.py),
   each one re-sending the same request, so with the same idempotency key;
4. the adapter (`providers.accounts.adapter_for`).

It raises the adapter taxonomy (providers/base.py) and nothing else of its own: every refusal
above is a ProviderUnavailable, raised before anything was sent.
"""

from __future__ import annotations

import logging
from typing import Any

from providers.accounts import adapter_for
from providers.base import ProviderBadRequest, ProviderError
from providers.models import ProviderAccount
from providers.resilience import limits, retry
from providers.resilience.breaker import breaker_for

logger = logging.getLogger(__name__)
OPERATIONS = frozenset({"authorize", "capture", "cancel", "refund", "lookup",
                        "lookup_modification", "release", "reverse"})


def supports(account: ProviderAccount, operation: str) -> bool:
    """Whether the account's adapter offers an optional operation (e.g. `release`)."""
    try:
        return callable(getattr(adapter_for(account), operation, None))
    except Exception:  # a misconfigured account offers nothing; `call` says why
        return False


def call(account: ProviderAccount, operation: str, request: Any) -> Any:
    if operation not in OPERATIONS:
        raise ValueError(f"Unknown provider operation {operation!r}.")
    # Resolving the adapter is configuration, not traffic: an account that cannot be used
    # (no adapter, credentials that no vault key decrypts) is refused before anything is
    # sent, before it takes a limit slot or counts against its breaker.
    try:
        method = getattr(adapter_for(account), operation)
    except ProviderError:
        raise
    except Exception as exc:
        logger.exception("provider account %s is misconfigured", account.pk)
        raise ProviderBadRequest(f"Provider account {account.name!r} is misconfigured: "
                                 f"{type(exc).__name__}.", code="provider_misconfigured",
                                 raw_code=type(exc).__name__) from exc
    with limits.limited(account), breaker_for(account).guard():
        return retry.call_with_retry(account.provider, lambda: method(request))
