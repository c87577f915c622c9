"""The one way payments call a provider account: limits, breaker, retries, adapter.

    call(account, "authorize", request)  # -> AuthorizeResult

Typed per operation: each operation name (a `Literal`) fixes the request it takes and the
result it returns, as the adapter contract (providers/base.py) defines them.

applies, outermost first:
1. the account's concurrency cap and rate limit: refused at once, never queued
   (ProviderUnavailable "provider_concurrency_limited" / "provider_rate_limited");
2. the account's circuit breaker, shared by every process: refused while open
   (ProviderUnavailable "breaker_open"); the call's final result, after any retries, is what
   the breaker counts;
3. the retry policy: only retries that cannot charge twice (providers/resilience/retry.py),
   each one re-sending the same request, so with the same idempotency key;
4. the adapter (`providers.accounts.adapter_for`), each try timed
   (`switchyard_provider_latency_seconds`, providers/metrics.py).

It raises the adapter taxonomy (providers/base.py) and nothing else of its own: every refusal
above is a ProviderUnavailable, raised before anything was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeAlias, get_args, overload

from providers import metrics
from providers.accounts import adapter_for
from providers.base import (
    AuthorizeRequest,
    AuthorizeResult,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    ProviderBadRequest,
    ProviderError,
)
from providers.models import ProviderAccount
from providers.resilience import limits, retry
from providers.resilience.breaker import breaker_for

logger = logging.getLogger(__name__)

# capture, cancel (void), refund; reverse (optional: cancel or refund, whichever applies)
ModifyOperation: TypeAlias = Literal["capture", "cancel", "refund", "reverse"]
Operation: TypeAlias = Literal["authorize", "lookup", "release", "lookup_modification",
                               ModifyOperation]
# What an operation may take and return, whichever it is.
Request: TypeAlias = AuthorizeRequest | ModificationRequest
Result: TypeAlias = AuthorizeResult | ModificationResult | LookupResult | None
OPERATIONS: frozenset[str] = frozenset(get_args(Operation))  # nested Literals are flattened


def supports(account: ProviderAccount, operation: Operation) -> bool:
    """Whether the account's adapter offers an optional operation (e.g. `release`)."""
    try:
        return callable(getattr(adapter_for(account), operation, None))
    except Exception:  # a misconfigured account offers nothing; `call` says why
        return False


@overload
def call(account: ProviderAccount, operation: Literal["authorize"],
         request: AuthorizeRequest) -> AuthorizeResult: ...
@overload
def call(account: ProviderAccount, operation: Literal["lookup"],
         request: AuthorizeRequest) -> LookupResult: ...
@overload
def call(account: ProviderAccount, operation: Literal["release"],  # optional (Adyen)
         request: AuthorizeRequest) -> ModificationResult: ...
@overload
def call(account: ProviderAccount, operation: ModifyOperation,
         request: ModificationRequest) -> ModificationResult: ...
@overload
def call(account: ProviderAccount, operation: Literal["lookup_modification"],
         request: ModificationRequest) -> ModificationResult | None: ...
def call(account: ProviderAccount, operation: Operation, request: Request) -> Result:
    if operation not in OPERATIONS:
        raise ValueError(f"Unknown provider operation {operation!r}.")
    # Resolving the adapter is configuration, not traffic: an account that cannot be used
    # (no adapter, credentials that no vault key decrypts) is refused before anything is
    # sent, before it takes a limit slot or counts against its breaker.
    try:
        # the overloads above tie each operation to its request and result type
        method: Callable[[Any], Result] = getattr(adapter_for(account), operation)
    except ProviderError:
        raise
    except Exception as exc:
        logger.exception("provider account %s is misconfigured", account.pk)
        raise ProviderBadRequest(f"Provider account {account.name!r} is misconfigured: "
                                 f"{type(exc).__name__}.", code="provider_misconfigured",
                                 raw_code=type(exc).__name__) from exc
    latency = metrics.provider_latency.labels(provider=account.provider, operation=operation)

    def send() -> Result:  # one try; its time, answered or not, is the provider's latency
        with latency.time():
            return method(request)

    with limits.limited(account), breaker_for(account).guard():
        return retry.call_with_retry(account.provider, send)
