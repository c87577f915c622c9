"""Payment lifecycle services: create, confirm, capture, cancel.

The pattern for every provider call, so that a crash or a race never charges twice:
1. in one short transaction, lock the payment, check its status, move it to `processing` and
   record what is about to be sent (a `PaymentAttempt`, whose id is the provider idempotency
   key);
2. call the provider outside any transaction (no row lock is held over the network);
3. in a second transaction, record the answer through the state machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from payments import state_machine as sm
from payments.errors import CardDeclined, InvalidRequest, ProviderFailed, StateConflict
from payments.models import (
    AttemptStatus,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentStatus,
)
from payments.services.payment_methods import card_for_provider
from providers import base, gateway
from providers.accounts import default_order
from providers.models import ProviderAccount

logger = logging.getLogger(__name__)
S = PaymentStatus


@dataclass(frozen=True)
class Outcome:
    """What a provider call came to, in the terms the state machine needs."""

    kind: str  # approved | declined | unavailable | unknown
    result: object = None
    error: base.ProviderError | None = None


def call_provider(account: ProviderAccount, operation: str, request) -> Outcome:
    """Call `operation` (authorize, capture, cancel, refund) on the account through the
    provider gateway (limits, circuit breaker, safe retries, adapter) and classify what
    happened. Never raises: every failure becomes an outcome."""
    try:
        return Outcome("approved", result=gateway.call(account, operation, request))
    except (base.HardDecline, base.SoftDecline) as exc:
        return Outcome("declined", error=exc)
    except (base.ProviderUnavailable, base.ProviderBadRequest) as exc:
        return Outcome("unavailable", error=exc)
    except base.OutcomeUnknown as exc:
        return Outcome("unknown", error=exc)
    except Exception as exc:  # an adapter bug after sending: the money may have moved
        logger.exception("provider call raised unexpectedly; treating the outcome as unknown")
        return Outcome("unknown", error=base.OutcomeUnknown(type(exc).__name__))


def _error_body(error: base.ProviderError) -> dict:
    return {"code": error.code, "decline_code": error.decline_code, "message": error.message}


# --- create -------------------------------------------------------------------------------
def payment_create(
    *,
    merchant: Merchant,
    livemode: bool,
    amount: int,
    currency: str,
    payment_method: PaymentMethod | None,
    capture_method: str = "automatic",
    description: str = "",
    reference: str = "",
    metadata: dict | None = None,
    provider: str | None = None,
    confirm: bool = False,
) -> Payment:
    account = None
    if provider is not None:
        account = ProviderAccount.objects.filter(
            merchant=merchant, livemode=livemode, name=provider
        ).first()
        if account is None:
            raise InvalidRequest(f"No provider account named {provider!r} in this mode.",
                                 code="provider_unknown", param="provider")
        if not account.enabled:
            raise InvalidRequest(f"Provider account {account.name!r} is disabled.",
                                 code="provider_disabled", param="provider")
    if confirm and payment_method is None:
        raise InvalidRequest("payment_method is required to confirm.", code="parameter_missing",
                             param="payment_method")
    if confirm:
        # Fail a confirmation that cannot start (no account to route to) before the payment
        # exists: a 400 is not stored under the Idempotency-Key, so it must change nothing.
        _route(Payment(merchant=merchant, livemode=livemode, currency=currency,
                       provider_account=account, pinned=account is not None))
    with transaction.atomic():
        payment = sm.create_payment(
            merchant=merchant,
            livemode=livemode,
            amount=amount,
            currency=currency,
            payment_method=payment_method,
            capture_method=capture_method,
            description=description,
            reference=reference,
            metadata=metadata or {},
            provider_account=account,
            pinned=account is not None,
        )
    if confirm:
        return payment_confirm(payment=payment)
    return payment


# --- confirm (authorize) ------------------------------------------------------------------
def _route(payment: Payment) -> tuple[ProviderAccount, dict]:
    """Pick the account for this payment and say why (routing rules come later)."""
    if payment.pinned:
        account = payment.provider_account
        if not account.enabled:
            raise InvalidRequest(f"Provider account {account.name!r} is disabled.",
                                 code="provider_disabled", param="provider")
        if not account.supports_currency(payment.currency):
            raise InvalidRequest(f"Provider account {account.name!r} does not support "
                                 f"{payment.currency}.", code="currency_unsupported",
                                 param="provider")
        return account, {"strategy": "pinned", "selected": account.name,
                         "candidates": [account.name], "skipped": []}
    enabled = default_order(merchant_id=payment.merchant_id, livemode=payment.livemode)
    candidates = [a for a in enabled if a.supports_currency(payment.currency)]
    skipped = [{"account": a.name, "reason": "currency_unsupported"}
               for a in enabled if a not in candidates]
    if not candidates:
        raise InvalidRequest(
            f"No enabled provider account in this mode supports {payment.currency}; add one "
            "with `manage.py provider_account add`.",
            code="no_provider_account",
        )
    return candidates[0], {"strategy": "default_order", "selected": candidates[0].name,
                           "candidates": [a.name for a in candidates], "skipped": skipped}


def payment_confirm(*, payment: Payment, payment_method: PaymentMethod | None = None,
                    actor: str = "api") -> Payment:
    pm = payment_method or payment.payment_method
    if pm is None:
        raise InvalidRequest("payment_method is required to confirm.",
                             code="parameter_missing", param="payment_method")
    # Decrypt before the payment moves: a vault failure must leave it untouched, not stuck
    # in processing.
    card = card_for_provider(pm)
    with transaction.atomic():
        locked = sm.lock_payment(payment.pk)
        if locked.status != S.REQUIRES_CONFIRMATION:
            raise StateConflict(f"This payment is {locked.status}; only a payment that "
                                f"requires_confirmation can be confirmed.")
        account, routing = _route(locked)
        attempt = PaymentAttempt.objects.create(
            payment=locked, provider_account=account, status=AttemptStatus.PENDING
        )
        sm.transition_payment(
            locked, S.PROCESSING, event="payment.authorization_started", actor=actor,
            updates={"payment_method": pm, "provider_account": account, "routing": routing},
            data={"attempt": attempt.id, "provider": account.name},
        )

    request = base.AuthorizeRequest(
        reference=attempt.provider_idempotency_key,
        amount=locked.amount,
        currency=locked.currency,
        card=card,
        capture=locked.capture_method == "automatic",
        description=locked.description,
    )
    outcome = call_provider(account, "authorize", request)
    payment = _record_authorization(locked, attempt, outcome, actor=actor)

    if outcome.kind == "declined":
        raise CardDeclined(outcome.error.message, code=outcome.error.code,
                           decline_code=outcome.error.decline_code, payment=payment)
    if outcome.kind == "unavailable":
        raise ProviderFailed(
            f"{account.name} could not process the payment; nothing was charged.",
            payment=payment,
        )
    return payment


def _record_authorization(payment: Payment, attempt: PaymentAttempt, outcome: Outcome,
                          *, actor: str) -> Payment:
    with transaction.atomic():
        data = {"attempt": attempt.id, "outcome": outcome.kind}
        if outcome.kind == "approved":
            result: base.AuthorizeResult = outcome.result
            attempt.status = AttemptStatus.CAPTURED if result.captured else AttemptStatus.AUTHORIZED
            attempt.provider_reference = result.provider_reference
            attempt.save()
            if result.captured:
                return sm.transition_payment(
                    payment, S.SUCCEEDED, event="payment.captured", actor=actor, data=data,
                    updates={"amount_captured": payment.amount, "amount_capturable": 0,
                             "last_error": None},
                )
            return sm.transition_payment(
                payment, S.REQUIRES_CAPTURE, event="payment.authorized", actor=actor, data=data,
                updates={"amount_capturable": payment.amount, "last_error": None},
            )

        error = outcome.error
        attempt.error_code = error.code
        attempt.decline_code = error.decline_code or ""
        attempt.error_message = error.message[:500]
        data["code"] = error.code
        if outcome.kind == "unknown":
            attempt.status = AttemptStatus.UNKNOWN
            attempt.save()
            return sm.transition_payment(
                payment, S.UNRESOLVED, event="payment.outcome_unknown", actor=actor, data=data,
                updates={"last_error": {
                    "code": "outcome_unknown",
                    "decline_code": None,
                    "message": "The provider did not answer; the payment may have been "
                               "charged. Switchyard will find out from the provider. Do not "
                               "retry with a new Idempotency-Key.",
                }},
            )
        attempt.status = (AttemptStatus.DECLINED if outcome.kind == "declined"
                          else AttemptStatus.FAILED)
        attempt.save()
        return sm.transition_payment(
            payment, S.FAILED, event=f"payment.{attempt.status}", actor=actor, data=data,
            updates={"last_error": _error_body(error)},
        )
