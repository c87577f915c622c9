"""Calling a provider from payments: through the gateway, every answer classified."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Generic, Literal, TypeVar, overload

from payments import metrics
from providers import base, gateway
from providers.models import ProviderAccount

logger = logging.getLogger(__name__)


class CallKind(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"  # a hard or soft decline
    UNAVAILABLE = "unavailable"  # not processed (or our request was refused as malformed)
    UNKNOWN = "unknown"  # the provider may have done it


# The adapter's result for one operation (providers.gateway.Result): AuthorizeResult for
# authorize, LookupResult for lookup, ModificationResult for the others, ModificationResult
# or None for lookup_modification (None: the provider has no such operation).
R = TypeVar("R", bound=gateway.Result, covariant=True)


@dataclass(frozen=True)
class CallOutcome(Generic[R]):
    """What a provider call came to, in the terms the state machine needs: the adapter's
    result when approved (typed per operation: `CallOutcome[base.AuthorizeResult]` for an
    authorization), else the adapter's error."""

    kind: CallKind
    result: R | None = None
    error: base.ProviderError | None = None
    # how long the call took, the gateway's limits, breaker and safe retries included (ms)
    latency_ms: int | None = None

    # The accessors below read an approved outcome's result; each is only offered (to the
    # type checker) on the outcomes of the operations that return it.
    @property
    def authorization(self: CallOutcome[base.AuthorizeResult]) -> base.AuthorizeResult:
        assert isinstance(self.result, base.AuthorizeResult), self.result
        return self.result

    @property
    def modification(self: CallOutcome[base.ModificationResult | None]
                     ) -> base.ModificationResult:
        assert isinstance(self.result, base.ModificationResult), self.result
        return self.result

    @property
    def lookup(self: CallOutcome[base.LookupResult]) -> base.LookupResult:
        assert isinstance(self.result, base.LookupResult), self.result
        return self.result

    @property
    def failure(self) -> base.ProviderError:
        assert self.error is not None, self
        return self.error


@overload
def call_provider(account: ProviderAccount, operation: Literal["authorize"],
                  request: base.AuthorizeRequest) -> CallOutcome[base.AuthorizeResult]: ...
@overload
def call_provider(account: ProviderAccount, operation: Literal["lookup"],
                  request: base.AuthorizeRequest) -> CallOutcome[base.LookupResult]: ...
@overload
def call_provider(account: ProviderAccount, operation: Literal["release"],
                  request: base.AuthorizeRequest) -> CallOutcome[base.ModificationResult]: ...
@overload
def call_provider(account: ProviderAccount, operation: gateway.ModifyOperation,
                  request: base.ModificationRequest) -> CallOutcome[base.ModificationResult]: ...
@overload
def call_provider(account: ProviderAccount, operation: Literal["lookup_modification"],
                  request: base.ModificationRequest
                  ) -> CallOutcome[base.ModificationResult | None]: ...
def call_provider(account: ProviderAccount, operation: gateway.Operation,
                  request: gateway.Request) -> CallOutcome[gateway.Result]:
    """Call `operation` (authorize, capture, cancel, refund, lookup, lookup_modification,
    release, reverse) on the account through the provider gateway (limits, circuit breaker,
    safe retries, adapter) and classify what happened. Never raises: every failure becomes an
    outcome. Typed per operation, like `gateway.call`. The outcome carries how long the call
    took (`latency_ms`), measured here, where every provider call is made.

    Every authorization's outcome is counted here (`switchyard_attempts_total`)."""
    started = time.perf_counter()
    outcome = _call(account, operation, request)
    outcome = replace(outcome, latency_ms=round((time.perf_counter() - started) * 1000))
    if operation == "authorize":
        metrics.count_attempt(provider=account.provider, outcome=outcome.kind.value,
                              decline_code=outcome.error.decline_code if outcome.error else None)
    return outcome


def _call(account: ProviderAccount, operation: gateway.Operation,
          request: gateway.Request) -> CallOutcome[gateway.Result]:
    try:
        # The overloads above pair each operation with its request exactly as gateway.call's
        # do; this implementation, which serves them all, cannot name the pair.
        result = gateway.call(account, operation, request)  # type: ignore[arg-type]
        return CallOutcome(CallKind.APPROVED, result=result)
    except (base.HardDecline, base.SoftDecline) as exc:
        return CallOutcome(CallKind.DECLINED, error=exc)
    except (base.ProviderUnavailable, base.ProviderBadRequest) as exc:
        return CallOutcome(CallKind.UNAVAILABLE, error=exc)
    except base.OutcomeUnknown as exc:
        return CallOutcome(CallKind.UNKNOWN, error=exc)
    except Exception as exc:  # an adapter bug after sending: the money may have moved
        logger.exception("provider call raised unexpectedly; treating the outcome as unknown")
        return CallOutcome(CallKind.UNKNOWN, error=base.OutcomeUnknown(type(exc).__name__))


def for_modification(outcome: CallOutcome[R]) -> CallOutcome[R]:
    """What a capture's, void's or refund's outcome means. It failed only if the provider
    provably did not do it: it refused it (a decline, a 4xx), or the request never reached
    it. Any other error, a provider's "not processed, retry" 503 or 429 included, leaves it
    unknown, to be looked up: the merchant must not be told to repeat a refund that may
    have gone through."""
    if outcome.kind == CallKind.UNAVAILABLE and outcome.error is not None and outcome.error.sent \
            and not isinstance(outcome.error, base.ProviderBadRequest):
        error = outcome.error
        return CallOutcome(CallKind.UNKNOWN, error=base.OutcomeUnknown(
            error.message, raw_code=error.raw_code or error.code))
    return outcome


def error_body(error: base.ProviderError) -> dict[str, str | None]:
    """The merchant's view of a provider error (a payment's `last_error`, an API error):
    our code and decline code, and a message of ours. The provider's own text (its codes,
    its retry advice for its API, which is not ours) stays in the attempt's error_message
    and the event log, for operators."""
    return {"code": error.code, "decline_code": error.decline_code,
            "message": merchant_message(error)}


# decline_code → what the merchant is told (Stripe's vocabulary, which merchants know)
DECLINE_MESSAGES = {
    "insufficient_funds": "The card has insufficient funds.",
    "expired_card": "The card has expired.",
    "incorrect_cvc": "The card's security code is incorrect.",
    "incorrect_number": "The card number is incorrect.",
    "incorrect_zip": "The card's postal code is incorrect.",
    "invalid_amount": "The amount is not valid for this card.",
    "card_not_supported": "The card does not support this kind of purchase.",
    "currency_not_supported": "The card does not support this currency.",
    "card_velocity_exceeded": "The card is over its limit or has too many recent payments.",
    "withdrawal_count_limit_exceeded": "The card is over its limit.",
    "authentication_required": "The card requires authentication (3-D Secure), which this "
                               "payment could not perform.",
    "processing_error": "The card could not be processed; another attempt may succeed.",
    "issuer_not_available": "The card's issuer could not be reached; another attempt may "
                            "succeed.",
    "try_again_later": "The card was declined for now; another attempt may succeed.",
    "call_issuer": "The card was declined; the cardholder should contact their bank.",
}
# codes whose errors payments itself words (status sync's conclusions), never a provider
OWN_MESSAGES = frozenset({"provider_not_processed"})
# error code (no decline) → what the merchant is told
CODE_MESSAGES = {
    "provider_unavailable": "The provider could not process the request; nothing was "
                            "charged.",
    "provider_rate_limited": "The provider is refusing requests for now; nothing was "
                             "charged.",
    "breaker_open": "The provider is unavailable right now; nothing was charged.",
    "rate_limited": "The provider account is at its request rate; nothing was charged.",
    "concurrency_limited": "The provider account is at its concurrency limit; nothing was "
                           "charged.",
    "provider_bad_request": "The provider refused the request; nothing was charged.",
    "provider_misconfigured": "The provider account is not configured correctly; nothing "
                              "was charged.",
    "amount_not_representable": "The provider cannot charge this amount in this currency; "
                                "nothing was charged.",
    "outcome_unknown": "The provider did not answer; the operation may have gone through. "
                       "Switchyard is finding out from the provider.",
    "refund_failed": "The provider refused the refund.",
    "operation_refused": "The provider refused the operation.",
}


def merchant_message(error: base.ProviderError) -> str:
    """A provider-neutral message for a provider error."""
    if error.code in OWN_MESSAGES:
        return error.message
    if error.code == "refund_failed":  # its decline code is the refund's failure reason
        return CODE_MESSAGES["refund_failed"]
    if error.decline_code:
        return DECLINE_MESSAGES.get(error.decline_code, "The card was declined.")
    if isinstance(error, (base.HardDecline, base.SoftDecline)):
        return CODE_MESSAGES.get(error.code, "The card was declined.")
    return CODE_MESSAGES.get(error.code, "The provider could not process the request.")
