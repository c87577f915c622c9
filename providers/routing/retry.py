"""May a failed attempt be retried on the next candidate account? The default table, and the
merchant's overrides per decline code (RetryRule, `/v1/retry_rules`).

By outcome class (providers/outcomes.py):

- unavailable: always. The provider provably did not process the request (connect error, 503
  with its retry-safe signal, open breaker, limit): nothing was charged.
- unknown: never, whatever the merchant says. The money may have moved; a second provider
  could charge the customer twice. Status sync finds out instead.
- hard: not by default. A merchant MAY mark a hard decline code retriable (e.g.
  `do_not_honor`, which some issuers return for a transient refusal) — except the codes the
  card networks forbid retrying (NEVER_RETRIABLE: lost or stolen card, fraud, closed account,
  revoked authorization, …): re-presenting those elsewhere is a network-rule breach and a fraud
  pattern, so no override can enable it.
- soft: by default yes; a merchant may mark a soft code not retriable.
- approved: nothing to retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from providers.base import (
    HardDecline,
    ProviderBadRequest,
    ProviderError,
    ProviderUnavailable,
    SoftDecline,
)
from providers.models import RetryRule
from providers.outcomes import (
    APPROVED,
    DECLINES,
    HARD,
    RESULTS,
    SOFT,
    UNAVAILABLE,
    UNKNOWN,
    Outcome,
)
from providers.resilience.breaker import BreakerOpen
from providers.resilience.limits import CONCURRENCY_LIMITED, RATE_LIMITED

# Decline codes the issuer will never approve, whatever the provider (Visa's category 1
# "issuer will never approve", Mastercard's "do not try again" advice codes): never retried.
NEVER_RETRIABLE = frozenset({
    "lost_card", "stolen_card", "pickup_card", "fraudulent", "merchant_blacklist",
    "security_violation", "revocation_of_authorization", "revocation_of_all_authorizations",
    "stop_payment_order", "invalid_account", "incorrect_number", "transaction_not_allowed",
    "do_not_try_again",
    # the issuer saw this charge already: another provider could make it a double charge
    "duplicate_transaction",
})


def _decline_classes() -> dict[str, str]:
    """Our decline code → hard | soft, from the normalization table (each code has one class;
    tests/providers/test_routing.py checks it)."""
    classes: dict[str, str] = {}
    for outcome in (*DECLINES.values(), *RESULTS.values()):
        if outcome.decline_code:
            classes.setdefault(outcome.decline_code, outcome.kind)
    return classes


DECLINE_CLASSES: dict[str, str] = _decline_classes()


class HasKind(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def decline_code(self) -> str | None: ...


def default_retry(decline_code: str) -> bool:
    """Whether a decline code is retried when the merchant has no override."""
    return DECLINE_CLASSES.get(decline_code) == SOFT


def can_override(decline_code: str, retry: bool) -> bool:
    """May a merchant set `retry` for this code? Never-retriable codes cannot be enabled."""
    return not (retry and decline_code in NEVER_RETRIABLE)


def overrides_for(merchant_id: str, livemode: bool) -> dict[str, bool]:
    """The merchant's overrides in this mode, decline code → retry (one query)."""
    return dict(RetryRule.objects.filter(merchant_id=merchant_id, livemode=livemode)
                .values_list("decline_code", "retry"))


def is_retriable(merchant_id: str, livemode: bool, outcome: HasKind, *,
                 overrides: Mapping[str, bool] | None = None) -> bool:
    """May the payment go on to the next candidate account after `outcome`?

    `outcome` is a providers.outcomes.Outcome (or anything with `kind` in approved | hard |
    soft | unavailable | unknown and `decline_code`). `overrides` (from `overrides_for`) saves
    the query when the caller already has them; otherwise at most one query, and none for
    unavailable / unknown / approved outcomes.
    """
    kind = outcome.kind
    if kind == UNAVAILABLE:
        return True
    if kind in (UNKNOWN, APPROVED):
        return False
    if kind not in (HARD, SOFT):
        raise ValueError(f"Unknown outcome kind {kind!r}.")
    default = kind == SOFT
    code = outcome.decline_code or ""
    if not code:
        return default
    if code in NEVER_RETRIABLE:
        return False
    if overrides is None:
        override = (RetryRule.objects.filter(merchant_id=merchant_id, livemode=livemode,
                                             decline_code=code)
                    .values_list("retry", flat=True).first())
    else:
        override = overrides.get(code)
    return default if override is None else bool(override)


def outcome_of(error: ProviderError | None) -> Outcome:
    """The outcome of one gateway call that returned (error None) or raised `error`, in the
    terms of `is_retriable` and `stats.record_outcome`: a bad request is hard (resending it
    elsewhere fails the same way), an unreadable or lost answer unknown."""
    if error is None:
        return Outcome(APPROVED)
    if isinstance(error, SoftDecline):
        kind = SOFT
    elif isinstance(error, (HardDecline, ProviderBadRequest)):
        kind = HARD
    elif isinstance(error, ProviderUnavailable):
        kind = UNAVAILABLE
    else:
        kind = UNKNOWN
    return Outcome(kind, error.code or "", error.decline_code or "")


def refused_before_sending(error: ProviderError | None) -> bool:
    """Did our own breaker or limits refuse the call (nothing reached the provider, so it says
    nothing about the provider's success rate)? The limiter's refusals carry no provider code
    (raw_code), unlike a provider's own HTTP 429."""
    if isinstance(error, BreakerOpen):
        return True
    return (isinstance(error, ProviderUnavailable) and not error.raw_code
            and error.code in (RATE_LIMITED, CONCURRENCY_LIMITED))
