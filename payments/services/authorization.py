"""The orchestration loop: route → call → record the attempt → fail over or stop.

Each turn is the three steps of every provider call (lock and record a pending attempt; call
the provider outside any transaction; record the answer). After the answer:

- approved: the payment is authorized (or captured); stop.
- outcome unknown: the provider may have charged. NO failover: the payment is `unresolved`
  and status sync asks the provider later (`payments.services.status_sync`).
- a decline or a provably-not-processed error that is retriable (a soft decline, an outage,
  an open breaker, a limit; merchants may override per decline code): the next candidate
  account is tried, up to PAYMENT_MAX_ATTEMPTS attempts. A hard decline ends the payment.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import state_machine as sm
from payments.models import AttemptStatus, Payment, PaymentAttempt, PaymentStatus
from payments.services.provider_calls import Outcome, _error_body, call_provider
from providers import base
from providers.models import ProviderAccount
from providers.routing import retry as retry_rules
from providers.routing import stats

S = PaymentStatus

UNKNOWN_ERROR = {
    "code": "outcome_unknown",
    "decline_code": None,
    "message": "The provider did not answer; the payment may have been charged. Switchyard "
               "is finding out from the provider. Do not retry with a new Idempotency-Key.",
}


def candidate_names(payment: Payment) -> list[str]:
    """The accounts routing chose for this payment, in order."""
    routing = payment.routing or {}
    return list(routing.get("order") or [])


def may_fail_over(payment: Payment, outcome: Outcome) -> bool:
    """Does the payment go on to its next candidate after this outcome? Never after an
    unknown one; soft declines and provably-not-processed errors by default, merchants may
    override per decline code (`/v1/retry_rules`, providers.routing.retry); and only while a
    candidate is left within the attempt budget."""
    if outcome.kind in ("approved", "unknown"):
        return False
    return retry_rules.is_retriable(payment.merchant_id, payment.livemode,
                                    retry_rules.outcome_of(outcome.error)) \
        and _next_account(payment) is not None


def _record_stats(account: ProviderAccount, outcome: Outcome) -> None:
    """Feed the account's rolling success rate (routing), unless our own breaker or limits
    refused the call: that says nothing about the provider."""
    error = outcome.error if outcome.kind != "approved" else None
    if not retry_rules.refused_before_sending(error):
        stats.record_outcome(account, retry_rules.outcome_of(error).kind)


def authorize(payment: Payment, card: base.Card, *, actor: str) -> tuple[Payment, Outcome | None]:
    """Try the payment's candidate accounts until one answers for good. The payment must be
    `processing`; returns it in its new status with the last provider outcome."""
    last: Outcome | None = None
    while True:
        with transaction.atomic():
            locked = sm.lock_payment(payment.pk)
            if locked.status != S.PROCESSING:
                return locked, last
            account = _next_account(locked)
            if account is None:
                return _give_up(locked, last, actor=actor), last
            # If this process dies during the call, status sync picks the attempt up after
            # the grace period (longer than any live call) and asks the provider.
            attempt = PaymentAttempt.objects.create(
                payment=locked, provider_account=account, status=AttemptStatus.PENDING,
                next_sync_at=timezone.now() + dt.timedelta(
                    seconds=settings.STATUS_SYNC_PENDING_GRACE_SECONDS))
            sm.transition_payment(
                locked, None, event="payment.attempt_started", actor=actor,
                updates={"provider_account": account},
                data={"attempt": attempt.id, "provider": account.name})
        request = authorize_request(locked, attempt, card)
        last = call_provider(account, "authorize", request)
        _record_stats(account, last)
        payment = record_attempt(locked, attempt, last, actor=actor)
        if payment.status != S.PROCESSING:
            return payment, last


def authorize_request(payment: Payment, attempt: PaymentAttempt,
                      card: base.Card) -> base.AuthorizeRequest:
    billing = (payment.payment_method.billing_details or {}) if payment.payment_method else {}
    return base.AuthorizeRequest(
        reference=attempt.provider_idempotency_key,
        amount=payment.amount,
        currency=payment.currency,
        card=card,
        capture=payment.capture_method == "automatic",
        description=payment.description,
        holder_name=billing.get("name", ""),
    )


def _next_account(payment: Payment) -> ProviderAccount | None:
    """The next candidate not tried yet, within the attempt budget."""
    tried = list(payment.attempts.values_list("provider_account__name", flat=True))
    if len(tried) >= settings.PAYMENT_MAX_ATTEMPTS:
        return None
    names = [name for name in candidate_names(payment) if name not in tried]
    enabled = {account.name: account for account in ProviderAccount.objects.filter(
        merchant_id=payment.merchant_id, livemode=payment.livemode, name__in=names,
        enabled=True)}
    return next((enabled[name] for name in names if name in enabled), None)


def _give_up(payment: Payment, last: Outcome | None, *, actor: str) -> Payment:
    error = _error_body(last.error) if last and last.error else {
        "code": "no_provider_available", "decline_code": None,
        "message": "No provider account could take this payment."}
    return sm.transition_payment(payment, S.FAILED, event="payment.failed", actor=actor,
                                 updates={"last_error": error})


def record_attempt(payment: Payment, attempt: PaymentAttempt, outcome: Outcome, *,
                   actor: str) -> Payment:
    """Record one attempt's answer and move the payment accordingly (processing = go on)."""
    with transaction.atomic():
        data = {"attempt": attempt.id, "outcome": outcome.kind}
        if outcome.kind == "approved":
            result: base.AuthorizeResult = outcome.result
            return mark_approved(payment, attempt, result.provider_reference,
                                 captured=result.captured, actor=actor, data=data)
        error = outcome.error
        attempt.error_code = error.code
        attempt.decline_code = error.decline_code or ""
        attempt.error_message = error.message[:500]
        data["code"] = error.code
        if outcome.kind == "unknown":
            now = timezone.now()
            attempt.status = AttemptStatus.UNKNOWN
            attempt.unknown_since = now
            attempt.next_sync_at = next_sync_time(now, sync_count=0, now=now)
            attempt.save()
            if attempt.next_sync_at is not None:
                delay = (attempt.next_sync_at - now).total_seconds()
                transaction.on_commit(lambda: _nudge_status_sync(delay))
            return sm.transition_payment(
                payment, S.UNRESOLVED, event="payment.outcome_unknown", actor=actor,
                data=data, updates={"last_error": UNKNOWN_ERROR})
        attempt.status = (AttemptStatus.DECLINED if outcome.kind == "declined"
                          else AttemptStatus.FAILED)
        attempt.next_sync_at = None
        attempt.save()
        locked = sm.lock_payment(payment.pk)
        if may_fail_over(locked, outcome):
            return sm.transition_payment(
                locked, None, event="payment.failover", actor=actor, data=data,
                updates={"last_error": _error_body(error)})
        return sm.transition_payment(
            locked, S.FAILED, event=f"payment.{attempt.status}", actor=actor, data=data,
            updates={"last_error": _error_body(error)})


def mark_approved(payment: Payment, attempt: PaymentAttempt, provider_reference: str, *,
                  captured: bool, actor: str, data: dict) -> Payment:
    """The provider authorized (or captured) this attempt: so is the payment."""
    attempt.status = AttemptStatus.CAPTURED if captured else AttemptStatus.AUTHORIZED
    attempt.provider_reference = provider_reference
    attempt.next_sync_at = None
    attempt.save()
    if captured:
        return sm.transition_payment(
            payment, S.SUCCEEDED, event="payment.captured", actor=actor, data=data,
            updates={"amount_captured": payment.amount, "amount_capturable": 0,
                     "last_error": None, "provider_account": attempt.provider_account})
    return sm.transition_payment(
        payment, S.REQUIRES_CAPTURE, event="payment.authorized", actor=actor, data=data,
        updates={"amount_capturable": payment.amount, "last_error": None,
                 "provider_account": attempt.provider_account})


def _nudge_status_sync(delay: float) -> None:
    from payments.services import status_sync  # it imports this module

    status_sync.nudge(delay)


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
