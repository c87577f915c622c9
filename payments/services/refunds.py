"""Refunds: several partial ones allowed, their sum never above what was captured.

Concurrent refunds are serialized on the payment row: the amount of a new refund is reserved
(a `pending` refund) in the same locked transaction that checks what is still refundable, so
two racing refunds can never both fit into the same remaining amount.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Sum

from payments import state_machine as sm
from payments.errors import InvalidRequest, ProviderFailed, StateConflict
from payments.events import EventType
from payments.models import AttemptStatus, Payment, PaymentStatus, Refund, RefundStatus
from payments.services import idempotency
from payments.services.modifications import check_amount, first_sync_time
from payments.services.provider_calls import CallKind, call_provider, for_modification
from providers import base


def refundable_amount(payment: Payment) -> int:
    """Captured minus refunded minus refunds still in flight (pending or unresolved)."""
    reserved = (
        payment.refunds.filter(status__in=[RefundStatus.PENDING, RefundStatus.UNRESOLVED])
        .aggregate(total=Sum("amount"))["total"]
        or 0
    )
    return payment.amount_captured - payment.amount_refunded - reserved


def refund_create(*, payment: Payment, amount: int | None = None, reason: str = "",
                  metadata: dict[str, Any] | None = None, actor: str = "api") -> Refund:
    with transaction.atomic():
        refund = refund_start(payment=payment, amount=amount, reason=reason,
                              metadata=metadata, actor=actor)
    return refund_send(refund, actor=actor)


def refund_start(*, payment: Payment, amount: int | None = None, reason: str = "",
                 metadata: dict[str, Any] | None = None, actor: str = "api") -> Refund:
    """Check and reserve a refund (`pending`), inside the caller's transaction, which must
    commit before `refund_send` calls the provider (an operator action writes its audit row
    in it, so that the row exists exactly when the refund does)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("refund_start must run inside transaction.atomic()")
    locked = sm.lock_payment(payment.pk)
    if locked.status != PaymentStatus.SUCCEEDED:
        raise StateConflict(f"This payment is {locked.status}; only a succeeded (captured) "
                            f"payment can be refunded.", changed_nothing=True)
    available = refundable_amount(locked)
    if available <= 0:
        raise InvalidRequest("This payment has already been fully refunded.",
                             code="charge_already_refunded", param="payment")
    amount = available if amount is None else amount
    if amount > available:
        raise InvalidRequest(f"amount must be at most {available}, the amount left to "
                             f"refund.", code="amount_too_large", param="amount")
    check_amount(locked.attempts.get(status=AttemptStatus.CAPTURED), amount,
                 locked.currency, param="amount")
    refund = Refund.objects.create(
        merchant_id=locked.merchant_id, livemode=locked.livemode, payment=locked,
        amount=amount, currency=locked.currency, status=RefundStatus.PENDING,
        next_sync_at=first_sync_time(),
        reason=reason, metadata=metadata or {},
    )
    idempotency.record_object(refund)
    sm.transition_payment(locked, None, event=EventType.REFUND_CREATED, actor=actor,
                          data={"refund": refund.id, "amount": amount})
    return refund


def refund_send(refund: Refund, *, actor: str = "api") -> Refund:
    """Send a refund `refund_start` reserved (committed) to the provider, outside any
    transaction, and record the answer."""
    attempt = refund.payment.attempts.select_related("provider_account").get(
        status=AttemptStatus.CAPTURED)
    outcome = for_modification(call_provider(
        attempt.provider_account, "refund",
        base.ModificationRequest(reference=refund.id,
                                 provider_reference=attempt.provider_reference,
                                 amount=refund.amount, currency=refund.currency,
                                 operation="refund"),
    ))
    if outcome.kind == CallKind.APPROVED and not outcome.modification.pending:
        return refund_settle(refund=refund, succeeded=True, actor=actor,
                             provider_reference=outcome.modification.provider_reference)
    with transaction.atomic():
        # the payment, then the refund; a webhook or status sync may have settled it already
        sm.lock_payment(refund.payment_id)
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        if refund.status != RefundStatus.PENDING:
            return refund
        if outcome.kind == CallKind.APPROVED:  # accepted; the provider confirms it later
            refund.provider_reference = outcome.modification.provider_reference
            refund.save(update_fields=["provider_reference", "updated_at"])
            return refund
        if outcome.kind == CallKind.UNKNOWN:
            return sm.transition_refund(refund, RefundStatus.UNRESOLVED, actor=actor,
                                        updates={"failure_code": outcome.failure.code})
        sm.transition_refund(refund, RefundStatus.FAILED, actor=actor,
                             updates={"failure_code": outcome.failure.code})
    raise ProviderFailed(_NOT_REFUNDED, refund=refund)


_NOT_REFUNDED = "The provider could not refund the payment; nothing was refunded."


def raise_for_failed_refund(refund: Refund) -> Refund:
    """The answer to a refund known to have failed, from what it records: 503 with the
    refund, as `refund_create` answers when the provider refuses it at once. For a request
    that ended without its process (an Idempotency-Key recovered after it died)."""
    if refund.status == RefundStatus.FAILED:
        raise ProviderFailed(_NOT_REFUNDED, refund=refund)
    return refund


def refund_accept(*, refund: Refund, actor: str, provider_reference: str = "") -> Refund:
    """A refund whose outcome was unknown turns out to be with the provider, which confirms
    it later: pending again."""
    with transaction.atomic():
        sm.lock_payment(refund.payment_id)
        current = Refund.objects.select_for_update().get(pk=refund.pk)
        reference = {"provider_reference": provider_reference} if provider_reference else {}
        if current.status != RefundStatus.UNRESOLVED:  # pending already: learn its id
            if current.status == RefundStatus.PENDING and reference and \
                    not current.provider_reference:
                Refund.objects.filter(pk=current.pk).update(**reference)
            return current
        return sm.transition_refund(current, RefundStatus.PENDING, actor=actor,
                                    updates=reference)


def refund_settle(*, refund: Refund, succeeded: bool, actor: str,
                  provider_reference: str = "", failure_code: str = "") -> Refund:
    """Apply the provider's final word on a refund (at once, by webhook or by status sync)."""
    with transaction.atomic():
        sm.lock_payment(refund.payment_id)  # the payment first, always
        current = Refund.objects.select_for_update().get(pk=refund.pk)
        if current.status not in (RefundStatus.PENDING, RefundStatus.UNRESOLVED):
            return current  # already settled
        updates = {"provider_reference": provider_reference or current.provider_reference}
        if succeeded:
            return sm.transition_refund(current, RefundStatus.SUCCEEDED, actor=actor,
                                        updates=updates)
        return sm.transition_refund(current, RefundStatus.FAILED, actor=actor,
                                    updates={**updates,
                                             "failure_code": failure_code or "refund_failed"})
