"""Stateful property test of the payment lifecycle invariants (DESIGN.md "Payment lifecycle").

A hypothesis RuleBasedStateMachine drives random sequences of what merchants, providers and
workers do — create (with or without confirm, automatic or manual capture, pinned or routed,
any test card of docs/api.md), confirm, capture (full, partial, too large, not positive), cancel,
refund (full, partial, too large, not positive), provider outages and soft-decline rates
(`sandbox_fault`), a process dying just before or just after a provider call, status sync of
unknown and abandoned (pending) attempts (sometimes after the dropped connections have
recovered), the sandboxes' webhooks (Adyen's AUTHORISATION, CAPTURE, CANCELLATION, REFUND,
TECHNICAL_CANCEL: delivered to `/provider_webhooks/…` and applied by the worker) and the
providers' later confirmation of accepted or unknown captures, voids and refunds — against
real Postgres, calling the services directly as the views do (amounts go
through `money.parse_amount` first, like the API's). After every step it checks:

- per payment: 0 ≤ amount_refunded ≤ amount_captured ≤ amount; the event log replays to the
  payment's status and amounts; at most one attempt authorized or captured;
- terminal statuses are final;
- the providers' own ledgers (SandboxCharge) keep at most one charge per payment, and none
  for a failed or canceled payment once nothing about it is unknown;
- succeeded refunds add up to amount_refunded, and the provider ledger agrees once no refund
  is in flight;
- Switchyard and the provider ledger agree on what was authorized and captured.

Each example gets a fresh merchant (fresh provider accounts, so fresh circuit breakers) and
clean sandbox conditions. Webhook deliveries are real in-process requests, which close the
database connection when they end, so the test commits for real (`transaction=True`).
"""

from __future__ import annotations

import io
import uuid
from unittest import mock

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import Sum
from django.test import override_settings
from hypothesis import HealthCheck, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from payments import money
from payments.errors import PaymentsError
from payments.models import (
    AttemptStatus,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from payments.services import authorization, modifications, provider_events, refunds, status_sync
from payments.services.merchants import merchant_create
from payments.services.modifications import modification_settle, payment_cancel, payment_capture
from payments.services.payment_methods import payment_method_create
from payments.services.payments import payment_confirm, payment_create
from payments.services.provider_calls import call_provider
from payments.services.refunds import refund_create, refund_settle
from payments.state_machine import TERMINAL_PAYMENT_STATUSES, replay_events
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.models import SandboxCharge, SandboxCondition, SandboxOperation

S = PaymentStatus
A = AttemptStatus

# docs/api.md's sandbox test cards.
APPROVED_CARDS = ["4242424242424242", "5555555555554444", "378282246310005"]
HARD_DECLINE_CARDS = ["4000000000000002", "4000000000009995", "4000000000000069",
                      "4000000000009987"]
SOFT_DECLINE_CARD = "4000000000000119"
UNAVAILABLE_CARD = "4000000000000507"  # 503 before processing: nothing charged
COMMIT_THEN_DROP_CARD = "4000000000000408"  # charged, then the connection drops
TIMEOUT_BEFORE_COMMIT_CARD = "4000000000000606"  # times out, nothing charged
# Half approving cards, so that captures, voids and refunds have something to work on.
CARDS = st.one_of(
    st.sampled_from(APPROVED_CARDS),
    st.sampled_from([*HARD_DECLINE_CARDS, SOFT_DECLINE_CARD, UNAVAILABLE_CARD,
                     COMMIT_THEN_DROP_CARD, TIMEOUT_BEFORE_COMMIT_CARD]),
)

ACCOUNTS = st.sampled_from([None, "stripe-sandbox", "adyen-sandbox", "checkout-sandbox"])
PROVIDERS = st.sampled_from(["stripe", "adyen", "checkout"])
# Amounts a merchant may send for a capture or refund: none (everything left), valid ones,
# too large ones, and ones the API rejects (zero, negative).
MOD_AMOUNTS = st.one_of(st.none(), st.integers(min_value=-5, max_value=2500))
# Which payment an action takes: `fitting` prefers one in a status where it can work.
PICK = st.integers(min_value=0, max_value=15)
FITTING = st.sampled_from([True, True, True, False])

KEPT_ATTEMPT = (A.AUTHORIZED, A.CAPTURED)
UNSETTLED_ATTEMPT = (A.UNKNOWN, A.PENDING)
IN_FLIGHT_REFUNDS = (RefundStatus.PENDING, RefundStatus.UNRESOLVED)


class ProcessDied(BaseException):
    """The process making a provider call dies (deploy, OOM kill) just before or just after
    the call: a BaseException, like SystemExit, so that no `except Exception` swallows it."""


def _kept(charge: SandboxCharge) -> bool:
    """Does the provider still hold money (or a hold) for this charge?"""
    return charge.status == "authorized" or (
        charge.status == "captured" and charge.amount_refunded < charge.amount_captured)


class PaymentLifecycle(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        cache.clear()  # breakers, limits
        SandboxCondition.objects.all().delete()
        self.merchant, _, _ = merchant_create(actor="test", name=f"Hypo {uuid.uuid4().hex[:12]}", sandbox_accounts=True)
        self.last_status: dict[str, str] = {}
        # `process_dies` arms a crash for the next provider call made by a service
        self.dies: str | None = None
        self.patches = [mock.patch.object(module, "call_provider", self._mortal_call)
                        for module in (authorization, modifications, refunds, status_sync)]
        for patch in self.patches:
            patch.start()

    def teardown(self):
        for patch in self.patches:
            patch.stop()
        SandboxCondition.objects.all().delete()

    def _mortal_call(self, account, operation, request):
        when, self.dies = self.dies, None
        if when == "before_call":
            raise ProcessDied(operation)
        outcome = call_provider(account, operation, request)
        if when == "after_call":
            raise ProcessDied(operation)
        return outcome

    # --- helpers --------------------------------------------------------------------------
    def _card(self, number: str):
        cvc = "1234" if number.startswith("3") else "123"
        return payment_method_create(merchant=self.merchant, livemode=False, number=number,
                                     exp_month=12, exp_year=2034, cvc=cvc)

    def _payments(self):
        return Payment.objects.filter(merchant=self.merchant).order_by("created_at", "id")

    def _pick(self, pick: int, fitting: bool, statuses) -> Payment:
        """A payment of this example: with `fitting`, one in `statuses` when there is one (so
        that actions mostly do something), else any (so that illegal ones are tried too)."""
        payments = list(self._payments())
        fit = [p for p in payments if p.status in statuses]
        pool = fit if fitting and fit else payments
        chosen = pool[pick % len(pool)]
        note(f"-> {chosen.id} ({chosen.status}, {chosen.capture_method}, "
             f"{chosen.provider_account.name if chosen.provider_account else 'unrouted'})")
        return chosen

    def _has_payments(self) -> bool:
        return self._payments().exists()

    # --- merchant actions -----------------------------------------------------------------
    @rule(card=CARDS, amount=st.integers(min_value=1, max_value=2000),
          currency=st.sampled_from(["USD", "USD", "EUR", "JPY"]),
          capture_method=st.sampled_from(["automatic", "manual"]), provider=ACCOUNTS,
          confirm=st.sampled_from([True, True, True, False]))
    def create(self, card, amount, currency, capture_method, provider, confirm):
        try:
            payment_create(
                merchant=self.merchant, livemode=False, amount=amount, currency=currency,
                payment_method=self._card(card), capture_method=capture_method,
                provider=provider, confirm=confirm)
        except (PaymentsError, ProcessDied):
            pass  # declined, unavailable or crashed: the payment may exist all the same

    @precondition(_has_payments)
    @rule(pick=PICK, fitting=FITTING, new_card=st.one_of(st.none(), CARDS))
    def confirm(self, pick, fitting, new_card):
        payment = self._pick(pick, fitting, {S.REQUIRES_CONFIRMATION})
        pm = self._card(new_card) if new_card else None
        try:
            payment_confirm(payment=payment, payment_method=pm)
        except (PaymentsError, ProcessDied):
            pass

    @precondition(_has_payments)
    @rule(pick=PICK, fitting=FITTING, amount=MOD_AMOUNTS)
    def capture(self, pick, fitting, amount):
        payment = self._pick(pick, fitting, {S.REQUIRES_CAPTURE})
        try:
            if amount is not None:
                amount = money.parse_amount(amount, param="amount_to_capture")
            payment_capture(payment=payment, amount=amount)
        except (PaymentsError, ProcessDied):
            pass

    @precondition(_has_payments)
    @rule(pick=PICK, fitting=FITTING)
    def cancel(self, pick, fitting):
        payment = self._pick(pick, fitting, {S.REQUIRES_CONFIRMATION, S.REQUIRES_CAPTURE})
        try:
            payment_cancel(payment=payment, reason="abandoned")
        except (PaymentsError, ProcessDied):
            pass

    @precondition(_has_payments)
    @rule(pick=PICK, fitting=FITTING, amount=MOD_AMOUNTS)
    def refund(self, pick, fitting, amount):
        payment = self._pick(pick, fitting, {S.SUCCEEDED})
        try:
            if amount is not None:
                amount = money.parse_amount(amount)
            refund_create(payment=payment, amount=amount, reason="requested_by_customer")
        except (PaymentsError, ProcessDied):
            pass

    @rule(when=st.sampled_from(["before_call", "after_call"]))
    def process_dies(self, when):
        """The next provider call's process dies just before or just after the call."""
        self.dies = when

    # --- providers --------------------------------------------------------------------------
    @rule(provider=PROVIDERS, on=st.booleans())
    def outage(self, provider, on):
        call_command("sandbox_fault", "--provider", provider, "--outage", "on" if on else "off",
                     stdout=io.StringIO())

    @rule(provider=PROVIDERS, rate=st.sampled_from([0.0, 0.5, 1.0]))
    def soft_decline_rate(self, provider, rate):
        call_command("sandbox_fault", "--provider", provider, "--soft-decline-rate", str(rate),
                     stdout=io.StringIO())

    @rule()
    def providers_confirm(self):
        """The providers' final word on accepted (pending) or unknown captures, voids and
        refunds — what a webhook or a status lookup reports — taken from their own ledgers
        (the sandboxes apply operations at once)."""
        for mod in Modification.objects.filter(
                payment__merchant=self.merchant,
                status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN]):
            done = SandboxOperation.objects.filter(reference=mod.id).first()
            modification_settle(modification=mod, succeeded=done is not None, actor="webhook",
                                provider_reference=done.provider_reference if done else "")
        for refund in Refund.objects.filter(merchant=self.merchant,
                                            status__in=IN_FLIGHT_REFUNDS):
            done = SandboxOperation.objects.filter(reference=refund.id, kind="refund").first()
            refund_settle(refund=refund, succeeded=done is not None, actor="webhook",
                          provider_reference=done.provider_reference if done else "")

    @rule()
    def provider_webhooks(self):
        """Time passes: the sandboxes deliver their due webhooks, the worker applies them."""
        sandbox_webhooks.deliver_due(limit=1000)
        try:
            provider_events.process_due(limit=1000)
        except ProcessDied:
            pass  # the events it had claimed wait for their claim to expire

    # --- status sync --------------------------------------------------------------------------
    def _sync(self, attempts, later: bool):
        """What the periodic job does with due attempts: unknown ones, and pending ones whose
        process died (taken as due: their grace period is over by now)."""
        ids = list(attempts.filter(status__in=UNSETTLED_ATTEMPT)
                   .order_by("created_at", "id").values_list("id", flat=True))
        # later: the sandboxes' dropped connections (card …0408) have recovered by now
        with override_settings(**({"SANDBOX_DROP_WINDOW_SECONDS": 0} if later else {})):
            for attempt_id in ids:
                try:
                    status_sync.attempt_sync(attempt_id)
                except ProcessDied:
                    pass

    @precondition(_has_payments)
    @rule(pick=PICK, fitting=FITTING, later=st.booleans())
    def sync_payment(self, pick, fitting, later):
        payment = self._pick(pick, fitting, {S.UNRESOLVED, S.PROCESSING})
        self._sync(PaymentAttempt.objects.filter(payment=payment), later)

    @rule(later=st.booleans())
    def sync_all(self, later):
        self._sync(PaymentAttempt.objects.filter(payment__merchant=self.merchant), later)

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def amounts_and_event_log(self):
        for p in self._payments():
            assert 0 <= p.amount_refunded <= p.amount_captured <= p.amount, (
                p.id, p.amount_refunded, p.amount_captured, p.amount)
            state = replay_events(p)
            assert state == {"status": p.status, "amount_capturable": p.amount_capturable,
                             "amount_captured": p.amount_captured,
                             "amount_refunded": p.amount_refunded}, (p.id, state)
            kept = p.attempts.filter(status__in=KEPT_ATTEMPT).count()
            assert kept <= 1, (p.id, "successful attempts", kept)

    @invariant()
    def terminal_statuses_are_final(self):
        for pid, status in self._payments().values_list("id", "status"):
            before = self.last_status.get(pid)
            if before in TERMINAL_PAYMENT_STATUSES:
                assert status == before, f"{pid} was {before}, now {status}"
            self.last_status[pid] = status

    @invariant()
    def at_most_one_charge_kept(self):
        for p in self._payments():
            attempts = list(p.attempts.all())
            charges = SandboxCharge.objects.filter(reference__in=[a.id for a in attempts])
            kept = [c for c in charges if _kept(c)]
            assert len(kept) <= 1, (
                p.id, p.status, [(a.id, a.provider_account.name, a.status) for a in attempts],
                [(c.reference, c.provider, c.status, c.amount_captured, c.amount_refunded)
                 for c in kept])
            settled = not any(a.status in UNSETTLED_ATTEMPT for a in attempts)
            if p.status in (S.FAILED, S.CANCELED) and settled:
                assert not kept, (
                    p.id, p.status, "still charged at the provider",
                    [(a.id, a.provider_account.name, a.status) for a in attempts],
                    [(c.reference, c.provider, c.status) for c in kept])

    @invariant()
    def refunds_add_up(self):
        for p in self._payments():
            payment_refunds = p.refunds.all()
            succeeded = payment_refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(
                total=Sum("amount"))["total"] or 0
            assert succeeded == p.amount_refunded, (p.id, succeeded, p.amount_refunded)
            if not p.amount_captured:
                continue
            attempt = p.attempts.filter(status=A.CAPTURED).select_related(
                "provider_account").first()
            assert attempt is not None, (p.id, p.status, "captured money without a captured "
                                         "attempt")
            charge = SandboxCharge.objects.get(reference=attempt.id)
            assert charge.amount_refunded >= p.amount_refunded, (
                p.id, charge.amount_refunded, p.amount_refunded)
            # Stripe answers refunds for good at once; Adyen's and Checkout.com's stay pending
            # until `providers_confirm`: once none is in flight, every ledger must agree.
            if not payment_refunds.filter(status__in=IN_FLIGHT_REFUNDS).exists():
                assert charge.amount_refunded == p.amount_refunded, (
                    p.id, attempt.provider_account.provider, "ledger refunded",
                    charge.amount_refunded, "switchyard refunded", p.amount_refunded)

    @invariant()
    def switchyard_agrees_with_the_ledger(self):
        """What Switchyard says it holds is what the provider holds, once it is settled."""
        for p in self._payments():
            kept = p.attempts.filter(status__in=KEPT_ATTEMPT).first()
            if p.status == S.REQUIRES_CAPTURE:
                assert kept is not None and kept.status == A.AUTHORIZED, (p.id, kept)
                charge = SandboxCharge.objects.get(reference=kept.id)
                assert charge.status == "authorized", (p.id, charge.status)
                assert charge.amount == p.amount_capturable == p.amount, (
                    p.id, charge.amount, p.amount_capturable)
            elif p.status == S.SUCCEEDED:
                assert kept is not None and kept.status == A.CAPTURED, (p.id, kept)
                charge = SandboxCharge.objects.get(reference=kept.id)
                assert charge.status == "captured", (p.id, charge.status)
                assert charge.amount_captured == p.amount_captured, (
                    p.id, charge.amount_captured, p.amount_captured)


@pytest.mark.django_db(transaction=True)
def test_payment_lifecycle_invariants():
    # the provider-retry backoff is a millisecond in settings.test: retries decide as before
    run_state_machine_as_test(PaymentLifecycle, settings=hsettings(
        max_examples=50, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
