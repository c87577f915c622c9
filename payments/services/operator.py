"""Operator actions: what a person does in the admin to resolve what is stuck.

One keyword-only function per action. Each takes the `actor` (`user:<name>`, see
`payments.audit.user_actor`), a mandatory `reason` and the operator's `ip`, makes its change
through the state machine or the service that owns it, and writes its `AuditLog` row in the
same transaction, with the before and after of what it changed: the row exists exactly when
the change does. The merchant hears of the change as it would of any other: the transitions
write the outbox events (`payment.succeeded`, `refund.failed`, …), which each result names.

An action that does not fit the object's current state raises a `PaymentsError` (mostly
`StateConflict`) from inside its one transaction, so it changes nothing. The refusal is then
audited on its own (outcome `refused: <why>`, in a transaction of its own after the
rollback): who tried what on which object, and why it was refused, is worth keeping (an
operator trying to fail a payment that had succeeded meanwhile is the first thing a review
asks about), and a refusal row can never sit beside a change, since the change was rolled
back before it is written. A missing reason is a form error, refused before anything is looked at, and not
audited.

Actions that call a provider (refund, void) record their start (the pending refund or void,
and the audit row) in one transaction and call the provider after it commits, as the API
does: no row lock is held over the network, and what the provider answers is recorded by
the owning service as usual (events with the operator as actor). Asking the provider now
(`sync_now`) is the provider's word applied by status sync in its own transactions; its audit
row, written after the answers with the payment's state before and after, records that the
operator asked and what came of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from payments import state_machine as sm
from payments.audit import audit_record
from payments.errors import InvalidRequest, PaymentsError, StateConflict
from payments.models import (
    AttemptStatus,
    Discrepancy,
    DiscrepancyStatus,
    IdempotencyKey,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookOutbox,
)
from payments.money import format_amount
from payments.services import (
    attempts,
    idempotency,
    modifications,
    refunds,
    status_sync,
    webhook_relay,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ActionResult:
    """What an action did, for the operator: a sentence, and the merchant events (types)
    it wrote to the outbox."""

    message: str
    events: tuple[str, ...] = ()


# --- snapshots: what the audit row's before and after show ---------------------------------
def payment_state(payment: Payment) -> dict[str, Any]:
    return {"status": payment.status, "needs_operator": payment.needs_operator,
            "amount_capturable": payment.amount_capturable,
            "amount_captured": payment.amount_captured,
            "amount_refunded": payment.amount_refunded,
            "provider_account": payment.provider_account_id}


def _attempt_state(attempt: PaymentAttempt) -> dict[str, Any]:
    return {"id": attempt.id, "status": attempt.status,
            "provider_reference": attempt.provider_reference}


def _operation_state(row: Modification | Refund) -> dict[str, Any]:
    kind = "refund" if isinstance(row, Refund) else row.kind
    return {"id": row.id, "kind": kind, "status": row.status, "amount": row.amount,
            "provider_reference": row.provider_reference}


def _open_state(payment: Payment) -> dict[str, Any]:
    """The payment and everything of it whose outcome is open or was just settled."""
    operations: list[Modification | Refund] = [*payment.modifications.order_by("created_at"),
                                               *payment.refunds.order_by("created_at")]
    return {"payment": payment_state(payment),
            "attempts": [_attempt_state(a) for a in payment.attempts.order_by("created_at")],
            "operations": [_operation_state(row) for row in operations]}


# --- the frame every action runs in ----------------------------------------------------------
def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest("A reason is required: say what you found and why this is right.",
                             param="reason", code="reason_missing")
    return reason


def _outbox_mark() -> int:
    return WebhookOutbox.objects.aggregate(last=Max("id"))["last"] or 0


def _events_since(mark: int, object_ids: list[str]) -> tuple[str, ...]:
    return tuple(WebhookOutbox.objects.filter(id__gt=mark, object_id__in=object_ids)
                 .order_by("id").values_list("type", flat=True))


def _audited(*, actor: str, action: str, object_type: str, object_id: str, reason: str,
             ip: str | None, change: Callable[[], tuple[T, dict[str, Any], dict[str, Any]]]
             ) -> T:
    """Run `change` (which returns its result, before and after) and its audit row in one
    transaction; a domain refusal rolls both back and is audited on its own."""
    try:
        with transaction.atomic():
            result, before, after = change()
            audit_record(actor=actor, action=action, object_type=object_type,
                         object_id=object_id, reason=reason, before=before, after=after,
                         ip=ip, outcome="ok")
    except PaymentsError as exc:
        _audit_refusal(actor=actor, action=action, object_type=object_type,
                       object_id=object_id, reason=reason, ip=ip, error=exc)
        raise
    return result


def _audit_refusal(*, actor: str, action: str, object_type: str, object_id: str,
                   reason: str, ip: str | None, error: PaymentsError) -> None:
    with transaction.atomic():
        audit_record(actor=actor, action=action, object_type=object_type,
                     object_id=object_id, reason=reason, ip=ip,
                     outcome=f"refused: {error.message}", after={"error": error.message})


def _summary(prefix: str, events: tuple[str, ...]) -> str:
    if not events:
        return f"{prefix}. No merchant event."
    return f"{prefix}. Merchant event{'s' if len(events) > 1 else ''}: {', '.join(events)}."


def _flag_clear_in(payment_id: str, *, actor: str, reason: str) -> None:
    """Clear the flag inside the action's transaction (the action dealt with it)."""
    sm.clear_operator_flag(payment_id, actor=actor, reason=reason)


# --- the actions --------------------------------------------------------------------------
def sync_now(*, payment: Payment, actor: str, reason: str, ip: str | None = None
             ) -> ActionResult:
    """Ask the provider now about this payment's unknown attempt and its pending or unknown
    captures, voids and refunds (`status_sync.payment_sync`), whatever the schedule says."""
    reason = _require_reason(reason)
    mark = _outbox_mark()
    payment = Payment.objects.get(pk=payment.pk)
    before = _open_state(payment)
    open_attempts = payment.attempts.filter(
        status__in=[AttemptStatus.UNKNOWN, AttemptStatus.PENDING]).exists()
    open_operations = payment.modifications.filter(
        status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN]).exists() or \
        payment.refunds.filter(status__in=[RefundStatus.PENDING,
                                           RefundStatus.UNRESOLVED]).exists()
    if not (open_attempts or open_operations):
        error = StateConflict(f"Nothing of payment {payment.pk} is waiting for the provider: "
                              f"no unknown attempt, no pending capture, void or refund.",
                              changed_nothing=True)
        _audit_refusal(actor=actor, action="payment.sync", object_type="payment",
                       object_id=payment.pk, reason=reason, ip=ip, error=error)
        raise error
    try:
        asked = status_sync.payment_sync(payment.pk, actor=actor)
    except Exception as exc:
        # the provider's answers applied so far stand (each in its own transaction); the
        # operator's request is on record with what it left
        with transaction.atomic():
            audit_record(actor=actor, action="payment.sync", object_type="payment",
                         object_id=payment.pk, reason=reason, ip=ip, before=before,
                         after=_open_state(Payment.objects.get(pk=payment.pk)),
                         outcome=f"failed: {type(exc).__name__}")
        raise
    payment = Payment.objects.get(pk=payment.pk)
    after = _open_state(payment)
    with transaction.atomic():
        audit_record(actor=actor, action="payment.sync", object_type="payment",
                     object_id=payment.pk, reason=reason, ip=ip, before=before, after=after,
                     outcome="ok" if after != before
                     else "unchanged: the provider could not tell yet")
    events = _events_since(mark, [payment.pk, *payment.refunds.values_list("id", flat=True)])
    return ActionResult(_summary(f"Asked the provider about {asked} open item(s) of "
                                 f"{payment.pk}; the payment is {payment.status}", events),
                        events)


RESOLVE_OUTCOMES = {"authorized": AttemptStatus.AUTHORIZED, "captured": AttemptStatus.CAPTURED,
                    "failed": AttemptStatus.FAILED}


def payment_resolve(*, payment: Payment, outcome: str, provider_reference: str = "",
                    clear_flag: bool = True, actor: str, reason: str, ip: str | None = None
                    ) -> ActionResult:
    """Settle an `unresolved` payment whose attempt's outcome is unknown, from what the
    operator read at the provider: `authorized` (→ requires_capture) or `captured`
    (→ succeeded) under the provider's reference, or `failed` (nothing was charged:
    → failed). `clear_flag` also clears `needs_operator` in the same transaction."""
    reason = _require_reason(reason)
    mark = _outbox_mark()

    def change() -> tuple[Payment, dict[str, Any], dict[str, Any]]:
        locked = sm.lock_payment(payment.pk)
        before = {"payment": payment_state(locked)}
        if outcome not in RESOLVE_OUTCOMES:
            raise InvalidRequest(f"outcome must be one of {', '.join(RESOLVE_OUTCOMES)}.",
                                 param="outcome", changed_nothing=True)
        if locked.status != PaymentStatus.UNRESOLVED:
            raise StateConflict(f"This payment is {locked.status}; only an unresolved payment "
                                f"can be resolved.", changed_nothing=True)
        unsettled = locked.modifications.filter(status=ModificationStatus.UNKNOWN).first()
        if unsettled is not None:
            raise StateConflict(f"This payment is unresolved because its {unsettled.kind} "
                                f"{unsettled.id} is unknown: settle the {unsettled.kind} "
                                f"instead.", changed_nothing=True)
        unknown = list(locked.attempts.filter(status=AttemptStatus.UNKNOWN))
        if len(unknown) != 1:
            raise StateConflict(f"This payment has {len(unknown)} attempts of unknown outcome; "
                                f"resolving needs exactly one.", changed_nothing=True)
        [attempt] = unknown
        before["attempt"] = _attempt_state(attempt)
        resolved = attempts.operator_resolve(
            attempt, outcome=RESOLVE_OUTCOMES[outcome], provider_reference=provider_reference,
            actor=actor, data={"reason": reason})
        if clear_flag:
            _flag_clear_in(locked.pk, actor=actor, reason=reason)
        resolved = Payment.objects.get(pk=locked.pk)
        attempt.refresh_from_db()
        return resolved, before, {"payment": payment_state(resolved),
                                  "attempt": _attempt_state(attempt)}

    resolved = _audited(actor=actor, action="payment.resolve", object_type="payment",
                        object_id=payment.pk, reason=reason, ip=ip, change=change)
    events = _events_since(mark, [payment.pk])
    return ActionResult(_summary(f"Payment {payment.pk} resolved as {outcome}: it is "
                                 f"{resolved.status}", events), events)


def modification_resolve(*, modification: Modification, succeeded: bool,
                         provider_reference: str = "", clear_flag: bool = True, actor: str,
                         reason: str, ip: str | None = None) -> ActionResult:
    """Settle a capture or void stuck `pending` or `unknown` as done (`succeeded`) or not
    done, from what the operator read at the provider (`modification_settle`)."""
    reason = _require_reason(reason)
    mark = _outbox_mark()

    def change() -> tuple[Payment, dict[str, Any], dict[str, Any]]:
        locked = sm.lock_payment(modification.payment_id)  # the payment first, always
        row = Modification.objects.select_for_update().get(pk=modification.pk)
        before = {"payment": payment_state(locked), "operation": _operation_state(row)}
        if row.status not in (ModificationStatus.PENDING, ModificationStatus.UNKNOWN):
            raise StateConflict(f"This {row.kind} is {row.status} already; only a pending or "
                                f"unknown one can be settled.", changed_nothing=True)
        payment = modifications.modification_settle(
            modification=row, succeeded=succeeded, actor=actor,
            provider_reference=provider_reference.strip())
        if clear_flag:
            _flag_clear_in(locked.pk, actor=actor, reason=reason)
        payment = Payment.objects.get(pk=locked.pk)
        row.refresh_from_db()
        return payment, before, {"payment": payment_state(payment),
                                 "operation": _operation_state(row)}

    payment = _audited(actor=actor, action=f"{modification.kind}.resolve",
                       object_type="modification", object_id=modification.pk, reason=reason,
                       ip=ip, change=change)
    events = _events_since(mark, [payment.pk])
    done = "done" if succeeded else "not done"
    return ActionResult(_summary(f"The {modification.kind} {modification.pk} was settled as "
                                 f"{done}: payment {payment.pk} is {payment.status}", events),
                        events)


def refund_resolve(*, refund: Refund, succeeded: bool, provider_reference: str = "",
                   clear_flag: bool = True, actor: str, reason: str, ip: str | None = None
                   ) -> ActionResult:
    """Settle a refund stuck `pending` or `unresolved` as done or not done (`refund_settle`:
    a succeeded refund is booked on its payment)."""
    reason = _require_reason(reason)
    mark = _outbox_mark()

    def change() -> tuple[Refund, dict[str, Any], dict[str, Any]]:
        payment = sm.lock_payment(refund.payment_id)  # the payment first, always
        row = Refund.objects.select_for_update().get(pk=refund.pk)
        before = {"payment": payment_state(payment), "operation": _operation_state(row)}
        if row.status not in (RefundStatus.PENDING, RefundStatus.UNRESOLVED):
            raise StateConflict(f"This refund is {row.status} already; only a pending or "
                                f"unresolved one can be settled.", changed_nothing=True)
        settled = refunds.refund_settle(
            refund=row, succeeded=succeeded, actor=actor,
            provider_reference=provider_reference.strip(),
            failure_code="" if succeeded else "operator_not_refunded")
        if clear_flag:
            _flag_clear_in(payment.pk, actor=actor, reason=reason)
        payment = Payment.objects.get(pk=payment.pk)
        return settled, before, {"payment": payment_state(payment),
                                 "operation": _operation_state(settled)}

    settled = _audited(actor=actor, action="refund.resolve", object_type="refund",
                       object_id=refund.pk, reason=reason, ip=ip, change=change)
    events = _events_since(mark, [refund.pk, refund.payment_id])
    return ActionResult(_summary(f"Refund {refund.pk} settled as "
                                 f"{'done' if succeeded else 'not done'}: it is "
                                 f"{settled.status}", events), events)


def refund_issue(*, payment: Payment, amount: int | None = None, actor: str, reason: str,
                 ip: str | None = None) -> ActionResult:
    """Refund a succeeded payment, in full (`amount` None) or in part (minor units), through
    the refund service: the refund is reserved and audited in one transaction, then sent."""
    reason = _require_reason(reason)
    mark = _outbox_mark()

    def change() -> tuple[Refund, dict[str, Any], dict[str, Any]]:
        locked = sm.lock_payment(payment.pk)
        before = {"payment": payment_state(locked)}
        refund = refunds.refund_start(payment=locked, amount=amount, actor=actor)
        return refund, before, {"payment": payment_state(sm.lock_payment(payment.pk)),
                                "refund": _operation_state(refund)}

    refund = _audited(actor=actor, action="payment.refund", object_type="payment",
                      object_id=payment.pk, reason=reason, ip=ip, change=change)
    # sent after the commit; a refusal by the provider raises ProviderFailed (the refund
    # failed, its payment unchanged), which the caller shows
    refund = refunds.refund_send(refund, actor=actor)
    events = _events_since(mark, [refund.pk, payment.pk])
    amount_text = format_amount(refund.amount, refund.currency)
    return ActionResult(_summary(f"Refund {refund.pk} of {amount_text} is {refund.status}",
                                 events), events)


def payment_void(*, payment: Payment, actor: str, reason: str, ip: str | None = None
                 ) -> ActionResult:
    """Cancel a payment not confirmed yet, or void its uncaptured authorization
    (`payment_cancel_start`, then `modification_send` after the commit)."""
    reason = _require_reason(reason)
    mark = _outbox_mark()

    def change() -> tuple[tuple[Payment, Modification | None], dict[str, Any],
                          dict[str, Any]]:
        locked = sm.lock_payment(payment.pk)
        before = {"payment": payment_state(locked)}
        canceled, void = modifications.payment_cancel_start(payment=locked, actor=actor)
        after: dict[str, Any] = {"payment": payment_state(canceled)}
        if void is not None:
            after["operation"] = _operation_state(void)
        return (canceled, void), before, after

    result, void = _audited(actor=actor, action="payment.cancel", object_type="payment",
                            object_id=payment.pk, reason=reason, ip=ip, change=change)
    if void is not None:
        result = modifications.modification_send(result, void, actor=actor)
    events = _events_since(mark, [payment.pk])
    return ActionResult(_summary(f"Payment {payment.pk} is {result.status}", events), events)


def flag_clear(*, payment: Payment, actor: str, reason: str, ip: str | None = None
               ) -> ActionResult:
    """Clear `needs_operator`: the operator dealt with what it flagged
    (`state_machine.clear_operator_flag`, which records who and why in the event log)."""
    reason = _require_reason(reason)

    def change() -> tuple[None, dict[str, Any], dict[str, Any]]:
        locked = sm.lock_payment(payment.pk)
        before = {"payment": payment_state(locked)}
        if not sm.clear_operator_flag(locked.pk, actor=actor, reason=reason):
            raise StateConflict("This payment is not flagged for an operator.",
                                changed_nothing=True)
        return None, before, {"payment": payment_state(Payment.objects.get(pk=locked.pk))}

    _audited(actor=actor, action="payment.clear_flag", object_type="payment",
             object_id=payment.pk, reason=reason, ip=ip, change=change)
    return ActionResult(f"The needs-attention flag of {payment.pk} is cleared. No merchant "
                        f"event.")


def idempotency_key_release(*, key: IdempotencyKey, actor: str, reason: str,
                            ip: str | None = None) -> ActionResult:
    """Release a wedged Idempotency-Key whose request died before writing anything
    (`idempotency.release_wedged`): the merchant's retry with it runs afresh."""
    reason = _require_reason(reason)

    def change() -> tuple[None, dict[str, Any], dict[str, Any]]:
        row = idempotency.release_wedged(key)
        return None, {"merchant": row.merchant_id, "livemode": row.livemode, "key": row.key,
                      "claimed_at": row.created_at.isoformat(), "object_id": row.object_id,
                      "recoverable": row.recoverable}, {"released": True}

    _audited(actor=actor, action="idempotency_key.release", object_type="idempotency_key",
             object_id=str(key.pk), reason=reason, ip=ip, change=change)
    return ActionResult(f"Idempotency-Key {key.key!r} released: the merchant's next request "
                        f"with it runs afresh. No merchant event.")


def event_redeliver(*, event: WebhookOutbox, actor: str, reason: str, ip: str | None = None
                    ) -> ActionResult:
    """Deliver a merchant event again to every endpoint that wants it (same event id, a new
    round of tries: `webhook_relay.event_redeliver`)."""
    reason = _require_reason(reason)

    def change() -> tuple[int, dict[str, Any], dict[str, Any]]:
        locked = WebhookOutbox.objects.select_for_update().get(pk=event.pk)
        before = {"type": locked.type, "relayed_at": locked.relayed_at and
                  locked.relayed_at.isoformat(),
                  "deliveries": {str(d.endpoint_id): d.status for d in locked.deliveries.all()}}
        due = webhook_relay.event_redeliver(event=locked)
        if not due:
            raise StateConflict("No enabled webhook endpoint of the merchant (in this mode) "
                                f"wants {locked.type} events: nothing to deliver.",
                                changed_nothing=True)
        return due, before, {"deliveries_due": due}

    due = _audited(actor=actor, action="event.redeliver", object_type="event",
                   object_id=event.event_id, reason=reason, ip=ip, change=change)
    return ActionResult(f"Event {event.event_id} ({event.type}) is due again for {due} "
                        f"endpoint(s). No new merchant event: the same one again.")


def discrepancy_resolve(*, discrepancy: Discrepancy, actor: str, reason: str,
                        ip: str | None = None) -> ActionResult:
    """Mark a reconciliation discrepancy resolved: the operator looked into it (at the
    provider, in our books) and dealt with it or found it explained — the reason says which.
    Nothing else changes (a payment to settle is settled with its own action); a later run
    of the same day keeps the resolution."""
    reason = _require_reason(reason)

    def change() -> tuple[None, dict[str, Any], dict[str, Any]]:
        row = Discrepancy.objects.select_for_update().get(pk=discrepancy.pk)
        before = {"status": row.status, "kind": row.kind, "account": row.account_id,
                  "day": row.run.day.isoformat(), "object": row.object_id or row.line_id}
        if row.status != DiscrepancyStatus.OPEN:
            raise StateConflict(f"This discrepancy is {row.status} already.",
                                changed_nothing=True)
        row.status, row.resolved_at = DiscrepancyStatus.RESOLVED, timezone.now()
        row.resolved_by, row.resolution = actor, reason
        row.save(update_fields=["status", "resolved_at", "resolved_by", "resolution"])
        return None, before, {"status": row.status}

    _audited(actor=actor, action="discrepancy.resolve", object_type="discrepancy",
             object_id=discrepancy.pk, reason=reason, ip=ip, change=change)
    return ActionResult(f"Discrepancy {discrepancy.pk} ({discrepancy.kind}) resolved. No "
                        f"merchant event.")
