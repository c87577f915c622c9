"""The orchestration loop: route → call → record the attempt → fail over or stop.

Each turn is the three steps of every provider call (lock and record a pending attempt; call
the provider outside any transaction; record the answer). What the answer means, and whether
the loop goes on, is decided in `payments.services.attempts`:

- approved: the payment is authorized (or captured); stop.
- outcome unknown: the provider may have charged. NO failover: the payment is `unresolved`
  and status sync asks the provider later (`payments.services.status_sync`).
- a decline or a provably-not-processed error that is retriable (a soft decline, an outage,
  an open breaker, a limit; merchants may override per decline code): the next candidate
  account is tried, up to PAYMENT_MAX_ATTEMPTS attempts. A hard decline ends the payment.

A later answer about an unknown attempt (a lookup, a provider webhook, a release) comes
through `apply_lookup`, which continues the loop when the attempt turns out not charged.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import state_machine as sm
from payments.events import EventType
from payments.models import Payment, PaymentAttempt, PaymentStatus
from payments.services import attempts
from payments.services.provider_calls import CallKind, CallOutcome, call_provider, error_body
from providers import base
from providers.models import ProviderAccount
from providers.routing import retry as retry_rules
from providers.routing import stats

S = PaymentStatus


def _record_stats(account: ProviderAccount,
                  outcome: CallOutcome[base.AuthorizeResult]) -> None:
    """Feed the account's rolling success rate (routing), unless our own breaker or limits
    refused the call: that says nothing about the provider."""
    error = outcome.error if outcome.kind != CallKind.APPROVED else None
    if not retry_rules.refused_before_sending(error):
        stats.record_outcome(account, retry_rules.outcome_of(error).kind)


def authorize(payment: Payment, card: base.Card, *, actor: str,
              started: PaymentAttempt | None = None
              ) -> tuple[Payment, CallOutcome[base.AuthorizeResult] | None]:
    """Try the payment's candidate accounts until one answers for good. The payment must be
    `processing`; returns it in its new status with the last provider outcome. `started`: the
    first attempt, already recorded (`start_attempt`) in the transaction that confirmed the
    payment, which `payment` is as it committed."""
    last: CallOutcome[base.AuthorizeResult] | None = None
    holder_name = _holder_name(payment)
    attempt = started
    while True:
        if attempt is None:
            with transaction.atomic():
                locked = sm.lock_payment(payment.pk)
                if locked.status != S.PROCESSING:
                    return locked, last
                account = attempts.next_account(locked)
                if account is None:
                    return _give_up(locked, last, actor=actor), last
                attempt = start_attempt(locked, account, actor=actor)
            payment = locked
        request = authorize_request(payment, attempt, card, holder_name=holder_name)
        last = call_provider(attempt.provider_account, "authorize", request)
        _record_stats(attempt.provider_account, last)
        payment = attempts.record_answer(payment, attempt, last, actor=actor)
        if payment.status != S.PROCESSING:
            return payment, last
        attempt = None


def start_attempt(payment: Payment, account: ProviderAccount, *, actor: str) -> PaymentAttempt:
    """Record the next try at `account` (`pending`), inside the caller's transaction with the
    payment locked, before anything is sent."""
    attempt = sm.start_attempt(payment, account, **first_attempt_fields())
    sm.transition_payment(
        payment, None, event=EventType.ATTEMPT_STARTED, actor=actor,
        updates={"provider_account": account},
        data={"attempt": attempt.id, "provider": account.name})
    return attempt


def apply_lookup(attempt: PaymentAttempt, found: base.LookupResult, *, card: base.Card,
                 actor: str = attempts.ACTOR, error_code: str = "",
                 via_release: bool = False) -> Payment:
    """Apply the provider's later answer about an unknown attempt (lookup, webhook or
    release: `attempts.settle` decides) and go on with the next candidate if it says so."""
    payment, go_on = attempts.settle(attempt, found, actor=actor, error_code=error_code,
                                     via_release=via_release)
    if go_on:
        payment, _ = authorize(payment, card, actor=actor)
    return payment


def first_attempt_fields() -> dict[str, object]:
    """What a new attempt is recorded with, before anything is sent."""
    # If this process dies during the call, status sync picks the attempt up after the grace
    # period (longer than any live call) and asks the provider.
    return {"next_sync_at": timezone.now() + dt.timedelta(
        seconds=settings.STATUS_SYNC_PENDING_GRACE_SECONDS)}


def _holder_name(payment: Payment) -> str:
    billing = (payment.payment_method.billing_details or {}) if payment.payment_method else {}
    return str(billing.get("name", ""))


def authorize_request(payment: Payment, attempt: PaymentAttempt, card: base.Card, *,
                      holder_name: str | None = None) -> base.AuthorizeRequest:
    """What is sent for the attempt; `holder_name` when the caller has read the card's
    billing details already."""
    return base.AuthorizeRequest(
        reference=attempt.provider_idempotency_key,
        amount=payment.amount,
        currency=payment.currency,
        card=card,
        capture=payment.capture_method == "automatic",
        description=payment.description,
        holder_name=_holder_name(payment) if holder_name is None else holder_name,
    )


def _give_up(payment: Payment, last: CallOutcome[base.AuthorizeResult] | None, *,
             actor: str) -> Payment:
    error = error_body(last.error) if last and last.error else {
        "code": "no_provider_available", "decline_code": None,
        "message": "No provider account could take this payment."}
    return sm.transition_payment(payment, S.FAILED, event=EventType.FAILED, actor=actor,
                                 updates={"last_error": error})
