"""Capture and cancel (void) of an authorized payment, and their later confirmation.

Same three steps as every provider call (see payments.services.payments): lock and record a
`Modification` (its id is the provider idempotency key) with the payment in `processing`;
call the provider outside any transaction; record the answer. Providers that confirm
modifications asynchronously (Adyen, Checkout.com) leave it `pending` and the payment
`processing` until `modification_settle` applies their confirmation (webhook or status sync).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import state_machine as sm
from payments.errors import InvalidRequest, ProviderFailed, StateConflict
from payments.events import MODIFICATION_EVENTS, EventType
from payments.models import (
    AttemptStatus,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
)
from payments.services import idempotency
from payments.services.provider_calls import (
    CallKind,
    call_provider,
    error_body,
    for_modification,
)
from providers import base, gateway
from providers.registry import amount_problem

S = PaymentStatus
M = ModificationStatus

# kind → (payment status on success, attempt status on success, failure message)
_KINDS = {
    "capture": (S.SUCCEEDED, AttemptStatus.CAPTURED,
                "The provider could not capture the payment; it is still authorized and can "
                "be captured again."),
    "cancel": (S.CANCELED, AttemptStatus.VOIDED,
               "The provider could not void the authorization; the payment is still "
               "authorized."),
}


def first_sync_time() -> dt.datetime:
    """When status sync first asks about a capture, void or refund just sent (if nothing
    settled it by then: an answer lost, a process that died, a confirmation still due)."""
    return timezone.now() + dt.timedelta(seconds=settings.MODIFICATION_SYNC_AFTER_SECONDS)


def check_amount(attempt: PaymentAttempt, amount: int, currency: str, *, param: str) -> None:
    """A partial capture or refund in an amount the attempt's provider cannot represent (1.5
    ISK at Stripe) is the merchant's to change: a 400 before anything is recorded."""
    problem = amount_problem(attempt.provider_account.provider, amount, currency)
    if problem is not None:
        raise InvalidRequest(f"The provider of this payment cannot take this amount: "
                             f"{problem}", code="amount_not_representable", param=param)


def _successful_attempt(payment: Payment) -> PaymentAttempt:
    return payment.attempts.get(status__in=[AttemptStatus.AUTHORIZED, AttemptStatus.CAPTURED])


def payment_capture(*, payment: Payment, amount: int | None = None,
                    actor: str = "api") -> Payment:
    """Capture once, in full or in part; a partial capture releases the rest."""
    with transaction.atomic():
        locked = sm.lock_payment(payment.pk)
        if locked.status != S.REQUIRES_CAPTURE:
            raise StateConflict(f"This payment is {locked.status}; only a payment that "
                                f"requires_capture can be captured.", changed_nothing=True)
        amount = locked.amount_capturable if amount is None else amount
        if amount > locked.amount_capturable:
            raise InvalidRequest(
                f"amount_to_capture must be at most {locked.amount_capturable}.",
                code="amount_too_large", param="amount_to_capture",
            )
        modification = _start(locked, "capture", amount, actor=actor)
    return modification_send(locked, modification, actor=actor)


def payment_cancel(*, payment: Payment, reason: str = "", actor: str = "api") -> Payment:
    """Cancel before confirmation, or void an uncaptured authorization."""
    with transaction.atomic():
        locked, modification = payment_cancel_start(payment=payment, reason=reason,
                                                    actor=actor)
    if modification is None:
        return locked
    return modification_send(locked, modification, actor=actor)


def payment_cancel_start(*, payment: Payment, reason: str = "", actor: str = "api"
                         ) -> tuple[Payment, Modification | None]:
    """Cancel a payment not confirmed yet (done: no modification), or record the void of an
    uncaptured authorization (`pending`) for `modification_send` to send once the caller's
    transaction commits (an operator action writes its audit row in it)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("payment_cancel_start must run inside transaction.atomic()")
    locked = sm.lock_payment(payment.pk)
    if locked.status == S.REQUIRES_CONFIRMATION:
        canceled = sm.transition_payment(locked, S.CANCELED, event=EventType.CANCELED,
                                         actor=actor, updates={"cancellation_reason": reason})
        idempotency.record_object(canceled)
        return canceled, None
    if locked.status != S.REQUIRES_CAPTURE:
        raise StateConflict(f"This payment is {locked.status}; only a payment that "
                            f"requires_confirmation or requires_capture can be canceled.",
                            changed_nothing=True)
    modification = _start(locked, "cancel", locked.amount_capturable, actor=actor,
                          updates={"cancellation_reason": reason})
    return locked, modification


# a modification's kind → the provider operation that performs it
_OPERATIONS: dict[str, gateway.ModifyOperation] = {"capture": "capture", "cancel": "cancel"}


def _start(payment: Payment, kind: str, amount: int, *, actor: str,
           updates: dict[str, Any] | None = None) -> Modification:
    attempt = _successful_attempt(payment)
    check_amount(attempt, amount, payment.currency, param="amount_to_capture")
    modification = Modification.objects.create(
        payment=payment, attempt=attempt, kind=kind, amount=amount, status=M.PENDING,
        next_sync_at=first_sync_time())
    idempotency.record_object(payment)
    sm.transition_payment(payment, S.PROCESSING, event=MODIFICATION_EVENTS[kind]["started"],
                          actor=actor,
                          updates=updates,
                          data={"modification": modification.id, "amount": amount})
    return modification


def modification_send(payment: Payment, modification: Modification, *,
                      actor: str) -> Payment:
    """Send a recorded (committed) capture or void to the provider, outside any
    transaction, and record the answer."""
    attempt = modification.attempt
    outcome = for_modification(call_provider(
        attempt.provider_account, _OPERATIONS[modification.kind], base.ModificationRequest(
            reference=modification.id, provider_reference=attempt.provider_reference,
            amount=modification.amount, currency=payment.currency,
            operation=modification.kind)))
    data = {"modification": modification.id, "amount": modification.amount,
            "outcome": outcome.kind}
    if outcome.kind == CallKind.APPROVED and not outcome.modification.pending:
        return modification_settle(modification=modification, succeeded=True, actor=actor,
                                   provider_reference=outcome.modification.provider_reference)
    with transaction.atomic():
        # Lock order everywhere: the payment, then its modification. A webhook or status sync
        # may have settled it while we waited for the provider: then its word stands.
        payment = sm.lock_payment(payment.pk)
        modification = Modification.objects.select_for_update().get(pk=modification.pk)
        if modification.status != M.PENDING:
            return payment
        events = MODIFICATION_EVENTS[modification.kind]
        if outcome.kind == CallKind.APPROVED:  # accepted; the provider confirms later
            sm.transition_modification(modification, None, updates={
                "provider_reference": outcome.modification.provider_reference})
            return sm.transition_payment(payment, None, event=events["pending"], actor=actor,
                                         data=data)
        error = outcome.failure
        if outcome.kind == CallKind.UNKNOWN:
            sm.transition_modification(modification, M.UNKNOWN,
                                       updates={"error_code": error.code})
            return sm.transition_payment(
                payment, S.UNRESOLVED, event=events["unknown"], actor=actor, data=data,
                updates={"last_error": error_body(error)})
        sm.transition_modification(modification, M.FAILED, updates={"error_code": error.code})
        sm.transition_payment(
            payment, S.REQUIRES_CAPTURE, event=events["failed"], actor=actor, data=data,
            updates={"last_error": error_body(error)})
    raise ProviderFailed(_KINDS[modification.kind][2], payment=payment)


def raise_for_failed_modification(payment: Payment, kind: str) -> Payment:
    """The answer to a capture or void that was started and is known to have failed (the
    payment is authorized again), from what the payment records: 503 with the payment, as
    `modification_send` answers when the provider refuses it at once. For a request that
    ended without its process (an Idempotency-Key recovered after it died)."""
    if payment.status == S.REQUIRES_CAPTURE:
        raise ProviderFailed(_KINDS[kind][2], payment=payment)
    return payment


def modification_accept(*, modification: Modification, actor: str,
                        provider_reference: str = "") -> Payment:
    """A capture or void whose outcome was unknown turns out to be with the provider, which
    confirms it later: it is pending again, and the payment processing."""
    with transaction.atomic():
        payment = sm.lock_payment(modification.payment_id)
        locked = Modification.objects.select_for_update().get(pk=modification.pk)
        reference = {"provider_reference": provider_reference} if provider_reference else {}
        if locked.status != M.UNKNOWN:  # pending already: learn the provider's id, if new
            if locked.status == M.PENDING and reference and not locked.provider_reference:
                sm.transition_modification(locked, None, updates=reference)
            return payment
        sm.transition_modification(locked, M.PENDING, updates=reference)
        return sm.transition_payment(
            payment, S.PROCESSING, event=MODIFICATION_EVENTS[locked.kind]["accepted"],
            actor=actor,
            data={"modification": locked.id, "amount": locked.amount},
            updates={"last_error": None})


def modification_settle(*, modification: Modification, succeeded: bool, actor: str,
                        provider_reference: str = "") -> Payment:
    """Apply the provider's final word on a capture or void (at once, by webhook or by
    status sync): the payment leaves `processing` (or `unresolved`)."""
    kind = modification.kind
    with transaction.atomic():
        payment = sm.lock_payment(modification.payment_id)  # the payment first, always
        locked = Modification.objects.select_for_update().get(pk=modification.pk)
        if locked.status not in (M.PENDING, M.UNKNOWN):
            return payment  # already settled: webhooks and status sync may both report it
        sm.transition_modification(locked, M.SUCCEEDED if succeeded else M.FAILED, updates={
            "provider_reference": provider_reference or locked.provider_reference})
        data = {"modification": locked.id, "amount": locked.amount}
        events = MODIFICATION_EVENTS[kind]
        if not succeeded:
            return sm.transition_payment(
                payment, S.REQUIRES_CAPTURE, event=events["failed"], actor=actor,
                data=data, updates={"last_error": {
                    "code": f"{kind}_failed", "decline_code": None,
                    "message": "The provider refused the " + kind + "."}})
        payment_status, attempt_status, _ = _KINDS[kind]
        sm.transition_attempt(locked.attempt, attempt_status)
        updates = {"amount_capturable": 0, "last_error": None}
        if kind == "capture":
            updates["amount_captured"] = locked.amount
        return sm.transition_payment(payment, payment_status, event=events["succeeded"],
                                     actor=actor, data=data, updates=updates)
