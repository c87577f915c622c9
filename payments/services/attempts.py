"""What an attempt's outcome means, whoever told us, and what follows: one place.

The provider answers an authorization at once (`record_answer`), or later: a status lookup, a
provider webhook, or the outcome of a release all come to `settle`. Either way this module
decides:

- approved: the attempt holds the charge and so does the payment (`mark_approved`) — unless
  another attempt of the payment already holds one, or the payment has ended: then the charge
  is extra and is reversed at once (`compensate`), never kept;
- declined, or provably not processed: the attempt is over without a charge, and the payment
  fails over to its next candidate (`may_fail_over`) or fails;
- unknown: the provider may have charged. NO failover: the payment is `unresolved` and
  status sync asks again on the back-off schedule (`next_sync_time`, `reschedule`); when it
  runs out, an operator is told.

The orchestration loop that calls providers (`payments.services.authorization`) and the jobs
that ask them later (`status_sync`, `release`, `provider_events`) call this module; it calls
none of them. Every status change goes through `payments.state_machine`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import metrics
from payments import state_machine as sm
from payments.errors import InvalidRequest, StateConflict
from payments.events import EventType
from payments.models import AttemptStatus, Payment, PaymentAttempt, PaymentStatus
from payments.services.nudge import nudge
from payments.services.provider_calls import CallKind, CallOutcome, call_provider, error_body
from providers import base, gateway, outcomes
from providers.models import ProviderAccount
from providers.routing import retry as retry_rules

logger = logging.getLogger(__name__)
S = PaymentStatus
A = AttemptStatus

# Who acts when a later answer is applied, and how long a worker's claim on a due attempt
# lasts (a crashed worker's claim expires by itself).
ACTOR = "status_sync"
CLAIM_SECONDS = 120

KEPT = (A.AUTHORIZED, A.CAPTURED)
# error_code of an attempt that ended because the provider released (cancelled) whatever it
# held under the attempt's reference
RELEASED = "released"

UNKNOWN_ERROR = {
    "code": "outcome_unknown",
    "decline_code": None,
    "message": "The provider did not answer; the payment may have been charged. Switchyard "
               "is finding out from the provider. Do not retry with a new Idempotency-Key.",
}
_ENDED_EVENTS = {A.DECLINED: EventType.DECLINED, A.FAILED: EventType.FAILED}


# --- the immediate answer ---------------------------------------------------------------
def record_answer(payment: Payment, attempt: PaymentAttempt,
                  outcome: CallOutcome[base.AuthorizeResult], *,
                  actor: str) -> Payment:
    """Record one attempt's immediate answer and move the payment accordingly (`processing`
    means: go on with the next candidate)."""
    # the call's latency, for the hourly provider stats; none for a call never sent
    latency = None if retry_rules.refused_before_sending(outcome.error) else outcome.latency_ms
    with transaction.atomic():
        locked = sm.lock_payment(payment.pk)  # the payment first, then the attempt
        data = {"attempt": attempt.id, "outcome": outcome.kind}
        if outcome.kind == CallKind.APPROVED:
            result = outcome.authorization
            return mark_approved(locked, attempt, result.provider_reference,
                                 captured=result.captured, actor=actor, data=data,
                                 attempt_updates={"latency_ms": latency})
        error = outcome.failure
        data["code"] = error.code
        details = {"error_code": error.code, "decline_code": error.decline_code or "",
                   "error_message": error.message[:500], "latency_ms": latency}
        if outcome.kind == CallKind.UNKNOWN:
            now = timezone.now()
            due = next_sync_time(now, sync_count=0, now=now)
            sm.transition_attempt(attempt, A.UNKNOWN, updates={
                **details, "unknown_since": now, "next_sync_at": due})
            if due is not None:
                delay = (due - now).total_seconds()
                transaction.on_commit(lambda: nudge(delay))
            return sm.transition_payment(
                locked, S.UNRESOLVED, event=EventType.OUTCOME_UNKNOWN, actor=actor,
                data=data, updates={"last_error": UNKNOWN_ERROR})
        status = A.DECLINED if outcome.kind == CallKind.DECLINED else A.FAILED
        sm.transition_attempt(attempt, status, updates={**details, "next_sync_at": None})
        if may_fail_over(locked, outcome):
            return sm.transition_payment(
                locked, None, event=EventType.FAILOVER, actor=actor, data=data,
                updates={"last_error": error_body(error)})
        return sm.transition_payment(
            locked, S.FAILED, event=_ENDED_EVENTS[status], actor=actor, data=data,
            updates={"last_error": error_body(error)})


def mark_approved(payment: Payment, attempt: PaymentAttempt, provider_reference: str, *,
                  captured: bool, actor: str, data: dict[str, Any],
                  attempt_updates: dict[str, Any] | None = None) -> Payment:
    """The provider authorized (or captured) this attempt: so is the payment. Inside the
    caller's transaction. `attempt_updates`: other fields of the attempt to write with it."""
    sm.lock_payment(payment.pk)
    sm.transition_attempt(attempt, A.CAPTURED if captured else A.AUTHORIZED, updates={
        **(attempt_updates or {}), "provider_reference": provider_reference,
        "next_sync_at": None})
    if captured:
        return sm.transition_payment(
            payment, S.SUCCEEDED, event=EventType.CAPTURED, actor=actor, data=data,
            updates={"amount_captured": payment.amount, "amount_capturable": 0,
                     "last_error": None, "provider_account": attempt.provider_account})
    return sm.transition_payment(
        payment, S.REQUIRES_CAPTURE, event=EventType.AUTHORIZED, actor=actor, data=data,
        updates={"amount_capturable": payment.amount, "last_error": None,
                 "provider_account": attempt.provider_account})


# --- an operator's word -------------------------------------------------------------------
# error_code of an attempt an operator found not charged at the provider
OPERATOR_NOT_CHARGED = "operator_not_charged"
OPERATOR_OUTCOMES = (A.AUTHORIZED, A.CAPTURED, A.FAILED)


def operator_resolve(attempt: PaymentAttempt, *, outcome: str, provider_reference: str,
                     actor: str, data: dict[str, Any]) -> Payment:
    """An operator read an unknown attempt's outcome at the provider (status sync gave up):
    `authorized` or `captured` under `provider_reference` (the payment keeps that charge, as
    if a lookup had found it), or `failed`: nothing was charged, and the payment fails (no
    failover: the operator settles the payment, they do not start another charge). Inside
    the caller's transaction; raises StateConflict/InvalidRequest, changing nothing, when
    the attempt or the payment is not in a state this fits."""
    if outcome not in OPERATOR_OUTCOMES:
        raise InvalidRequest(f"outcome must be one of {', '.join(OPERATOR_OUTCOMES)}.",
                             param="outcome")
    payment = sm.lock_payment(attempt.payment_id)  # the payment first, then the attempt
    locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
    if locked.status != A.UNKNOWN:
        raise StateConflict(f"Attempt {locked.id} is {locked.status}, not unknown: its "
                            f"outcome is known already.", changed_nothing=True)
    if payment.status != S.UNRESOLVED:
        raise StateConflict(f"This payment is {payment.status}, not unresolved.",
                            changed_nothing=True)
    data = {**data, "attempt": locked.id, "operator_outcome": outcome}
    if outcome in KEPT:
        if not provider_reference.strip():
            raise InvalidRequest("The provider's reference of the charge is required: read "
                                 "it at the provider.", param="provider_reference")
        other = payment.attempts.filter(status__in=KEPT).exclude(pk=locked.pk).first()
        if other is not None:
            # at most one successful attempt per payment: a second charge is reversed, not kept
            raise StateConflict(f"Attempt {other.id} already holds this payment's charge; a "
                                f"second charge must be reversed at the provider, not kept.",
                                changed_nothing=True)
        return mark_approved(payment, locked, provider_reference.strip(),
                             captured=outcome == A.CAPTURED, actor=actor, data=data)
    sm.transition_attempt(locked, A.FAILED, updates={
        "error_code": OPERATOR_NOT_CHARGED, "next_sync_at": None,
        "provider_reference": provider_reference.strip() or locked.provider_reference})
    error = base.ProviderUnavailable("The provider never processed the request; nothing was "
                                     "charged.", code="provider_not_processed")
    return sm.transition_payment(payment, S.FAILED, event=EventType.FAILED, actor=actor,
                                 data=data, updates={"last_error": error_body(error)})


# --- failover ---------------------------------------------------------------------------
def candidate_names(payment: Payment) -> list[str]:
    """The accounts routing chose for this payment, in order."""
    routing = payment.routing or {}
    return list(routing.get("order") or [])


def next_account(payment: Payment) -> ProviderAccount | None:
    """The next candidate not tried yet, within the attempt budget."""
    tried = list(payment.attempts.values_list("provider_account__name", flat=True))
    if len(tried) >= settings.PAYMENT_MAX_ATTEMPTS:
        return None
    names = [name for name in candidate_names(payment) if name not in tried]
    enabled = {account.name: account for account in ProviderAccount.objects.filter(
        merchant_id=payment.merchant_id, livemode=payment.livemode, name__in=names,
        enabled=True)}
    return next((enabled[name] for name in names if name in enabled), None)


def may_fail_over(payment: Payment, outcome: CallOutcome[gateway.Result]) -> bool:
    """Does the payment go on to its next candidate after this outcome? Never after an
    unknown one; soft declines and provably-not-processed errors by default, merchants may
    override per decline code (`/v1/retry_rules`, providers.routing.retry); and only while a
    candidate is left within the attempt budget."""
    if outcome.kind in (CallKind.APPROVED, CallKind.UNKNOWN):
        return False
    return retry_rules.is_retriable(payment.merchant_id, payment.livemode,
                                    retry_rules.outcome_of(outcome.failure)) \
        and next_account(payment) is not None


# --- a later answer: lookup, provider webhook, release ------------------------------------
def settle(attempt: PaymentAttempt, found: base.LookupResult, *, actor: str = ACTOR,
           error_code: str = "", via_release: bool = False) -> tuple[Payment, bool]:
    """Apply the provider's later answer about an unknown attempt. `error_code` is kept on an
    attempt that ends without a charge. Once a release was requested only its outcome
    (`via_release`) decides. Returns the payment and whether its authorization loop goes on
    with the next candidate (the caller runs it: `authorization.apply_lookup`)."""
    charged = found.found and found.status in ("authorized", "captured")
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if attempt.status != A.UNKNOWN:
            return payment, False  # another worker (or a webhook) got there first
        if attempt.release_requested_at is not None and not via_release:
            return payment, False  # the release decides (payments.services.release)
        data = {"attempt": attempt.id,
                "lookup": found.status or ("released" if error_code == RELEASED else "not_found")}
        if charged:
            other = payment.attempts.filter(status__in=KEPT).exclude(pk=attempt.pk).first()
            if other is None and payment.status == S.UNRESOLVED:
                # as when the provider answers at once: an automatic-capture payment counts
                # as captured once approved, even while the provider's capture is pending
                # (Checkout.com reports `Authorized` until then)
                return mark_approved(
                    payment, attempt, found.provider_reference,
                    captured=found.status == "captured" or payment.capture_method == "automatic",
                    actor=actor, data=data), False
            # extra charge: reversed below, outside this transaction. The attempt stays due
            # until it is reversed, so a worker dying in between cannot leave it charged.
            sm.transition_attempt(attempt, None, updates={
                "provider_reference": found.provider_reference,
                "next_sync_at": timezone.now() + dt.timedelta(seconds=CLAIM_SECONDS)})
        else:
            sm.transition_attempt(
                attempt, A.DECLINED if found.status == "declined" else A.FAILED, updates={
                    "decline_code": found.decline_code or attempt.decline_code,
                    "error_code": error_code or attempt.error_code,
                    "provider_reference": found.provider_reference or attempt.provider_reference,
                    "next_sync_at": None})
            if payment.status != S.UNRESOLVED:
                return payment, False
            outcome = not_charged_outcome(found, released=error_code == RELEASED)
            if not may_fail_over(payment, outcome):
                return sm.transition_payment(
                    payment, S.FAILED, event=EventType.FAILED, actor=actor, data=data,
                    updates={"last_error": error_body(outcome.failure)}), False
            sm.transition_payment(payment, S.PROCESSING, event=EventType.FAILOVER,
                                  actor=actor, data=data)
    if charged:
        return (compensate(attempt, found, actor=actor)
                or Payment.objects.get(pk=attempt.payment_id)), False
    return payment, True


def not_charged_outcome(found: base.LookupResult, *,
                        released: bool = False) -> CallOutcome[base.AuthorizeResult]:
    """The call outcome a later "no charge" amounts to, for the failover decision."""
    if found.status == "declined":
        normalized = outcomes.classify_decline("stripe", found.decline_code) \
            if found.decline_code else outcomes.GENERIC_DECLINE
        return CallOutcome(CallKind.DECLINED, error=outcomes.error_for(
            normalized, "The provider declined the card."))
    if released:
        return CallOutcome(CallKind.UNAVAILABLE, error=base.ProviderUnavailable(
            "The provider could not tell what became of the request, so it was asked to "
            "cancel it: it holds no charge for it.", code="provider_not_processed"))
    return CallOutcome(CallKind.UNAVAILABLE, error=base.ProviderUnavailable(
        "The provider never processed the request.", code="provider_not_processed"))


# --- unknown outcomes: abandoned calls and the back-off schedule ----------------------------
def abandon(attempt: PaymentAttempt, *, actor: str) -> Payment:
    """An attempt still `pending` after the grace period: the process that sent it died
    before recording the answer. The provider may have charged: its outcome is unknown."""
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if locked.status != A.PENDING or payment.status != S.PROCESSING:
            return payment
        sm.transition_attempt(locked, A.UNKNOWN, updates={"unknown_since": timezone.now()})
        return sm.transition_payment(
            payment, S.UNRESOLVED, event=EventType.ATTEMPT_ABANDONED, actor=actor,
            data={"attempt": locked.id}, updates={"last_error": UNKNOWN_ERROR})


def next_sync_time(since: dt.datetime, *, sync_count: int, now: dt.datetime) -> dt.datetime | None:
    """When to ask the provider again after `sync_count` lookups of an outcome unknown since
    `since`; None when the schedule has run out (an operator takes over)."""
    schedule = settings.STATUS_SYNC_SCHEDULE
    if sync_count < len(schedule):
        due = since + dt.timedelta(seconds=schedule[sync_count])
    else:
        due = now + dt.timedelta(seconds=settings.STATUS_SYNC_REPEAT_SECONDS)
    if due > since + dt.timedelta(seconds=settings.STATUS_SYNC_GIVE_UP_SECONDS):
        return None
    return due


def reschedule(attempt: PaymentAttempt, *, reason: str) -> Payment:
    """The provider could not tell yet: ask again on the schedule, or, when it has run out,
    flag the payment for an operator."""
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if locked.status != A.UNKNOWN:
            return payment
        now = timezone.now()
        due = next_sync_time(locked.unknown_since or now, sync_count=locked.sync_count + 1,
                             now=now)
        sm.transition_attempt(locked, None, updates={"sync_count": locked.sync_count + 1,
                                                     "next_sync_at": due})
        if due is None:
            # (recorded even if the payment is flagged already for another reason)
            sm.flag_for_operator(payment.pk, EventType.FLAGGED_FOR_OPERATOR, actor=ACTOR,
                                 data={"attempt": locked.id, "lookups": locked.sync_count,
                                       "reason": reason}, once_by=("attempt",))
        elif settings.CELERY_TASK_ALWAYS_EAGER:
            # the embedded default has no beat: the next lookup is a timer in this process
            delay = (due - now).total_seconds()
            transaction.on_commit(lambda: nudge(delay))
    return Payment.objects.get(pk=attempt.payment_id)


# --- extra charges ----------------------------------------------------------------------
REVERSAL = "-reversal-"


def reversal_reference(attempt_id: str, provider_reference: str) -> str:
    """Our reference (and idempotency key) for the reversal of one extra charge."""
    return f"{attempt_id}{REVERSAL}{provider_reference}"


def reversed_attempt_id(reference: str) -> str | None:
    """The attempt id in a reversal's reference, or None if it is not one (also the older
    form `<attempt>-reversal`, for reversals sent before references named the charge)."""
    if REVERSAL in reference:
        return reference.split(REVERSAL, 1)[0]
    return reference.removesuffix("-reversal") if reference.endswith("-reversal") else None


def is_reversed(payment: Payment, provider_reference: str) -> bool:
    return payment.events.filter(type=EventType.DUPLICATE_CHARGE_REVERSED,
                                 data__provider_reference=provider_reference).exists()


def compensate(attempt: PaymentAttempt, found: base.LookupResult, *,
               actor: str) -> Payment | None:
    """Void (authorized) or refund (captured) a charge the payment must not keep. Keyed by
    the charge, so a retry (or a second worker) reverses it once; a reversal that fails is
    retried by whoever found it and flags the payment for an operator meanwhile. Returns
    None when the provider refused it for good (a 4xx: nothing to retry; the operator
    decides), else the payment."""
    operation: gateway.ModifyOperation = "cancel" if found.status == "authorized" else "refund"
    if gateway.supports(attempt.provider_account, "reverse"):
        operation = "reverse"  # cancel or refund, as applies when the provider gets to it
    payment = attempt.payment
    answer = call_provider(attempt.provider_account, operation, base.ModificationRequest(
        reference=reversal_reference(attempt.id, found.provider_reference),
        provider_reference=found.provider_reference,
        amount=found.amount or payment.amount, currency=payment.currency))
    with transaction.atomic():
        payment = sm.lock_payment(payment.pk)  # the payment first, then the attempt
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        data = {"attempt": attempt.id, "operation": operation, "outcome": answer.kind,
                "provider_reference": found.provider_reference, "amount": found.amount,
                # the provider's id for the reversal, to recognise its later confirmation
                "operation_reference": getattr(answer.result, "provider_reference", "")}
        if answer.kind == CallKind.APPROVED:
            # the extra charge was this attempt's only one: it is reversed; any other attempt
            # keeps its own final status (the reversed charge is in the event below)
            only_charge = locked.status == A.UNKNOWN or (
                locked.status == A.FAILED and locked.error_code == RELEASED)
            sm.transition_attempt(locked, A.REVERSED if only_charge else None,
                                  updates={"next_sync_at": None})
            if not is_reversed(payment, found.provider_reference):
                sm.record_event(payment, EventType.DUPLICATE_CHARGE_REVERSED, actor=actor,
                                data=data)
                metrics.compensations.labels(
                    provider=attempt.provider_account.provider).inc()
                logger.warning("reversed an extra charge payment=%s attempt=%s provider=%s",
                               payment.id, attempt.id, attempt.provider_account.provider)
        else:  # could not reverse it yet: asked again, and an operator is told meanwhile
            sm.flag_for_operator(payment.pk, EventType.DUPLICATE_CHARGE_REVERSAL_FAILED,
                                 actor=actor, data=data, once_by=("provider_reference",))
            refused = isinstance(answer.error, base.ProviderBadRequest)  # for good
            if locked.status == A.UNKNOWN:  # status sync asks again, unless refused
                sm.transition_attempt(locked, None, updates={"next_sync_at": None if refused
                                      else timezone.now() + dt.timedelta(minutes=5)})
            if refused:
                return None
    return Payment.objects.get(pk=payment.pk)
