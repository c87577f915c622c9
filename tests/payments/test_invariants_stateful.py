"""Stateful property test of the payment lifecycle invariants (DESIGN.md "Payment lifecycle").

A hypothesis RuleBasedStateMachine drives random sequences of what merchants, providers and
workers do — create (with or without confirm, automatic or manual capture, pinned or routed,
any test card of API.md), confirm, capture (full, partial, too large, not positive), cancel,
refund (full, partial, too large, not positive), provider outages and soft-decline rates
(`sandbox_fault`), status sync of unknown attempts (sometimes after the dropped connections
have recovered), and the providers' later confirmation of accepted captures, voids and
refunds — against real Postgres, calling the services directly as the views do (amounts go
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
clean sandbox conditions; everything runs in the test's transaction (`db`).
"""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import Sum
from django.test import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from payments import money
from payments.errors import CardDeclined, PaymentsError, ProviderFailed
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
from payments.services import status_sync
from payments.services.merchants import merchant_create
from payments.services.modifications import modification_settle, payment_cancel, payment_capture
from payments.services.payment_methods import payment_method_create
from payments.services.payments import payment_confirm, payment_create
from payments.services.refunds import refund_create, refund_settle
from payments.state_machine import TERMINAL_PAYMENT_STATUSES, replay_events
from providers.models import SandboxCharge, SandboxCondition, SandboxOperation

S = PaymentStatus
A = AttemptStatus

# API.md's sandbox test cards.
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

KEPT_ATTEMPT = (A.AUTHORIZED, A.CAPTURED)
IN_FLIGHT_REFUNDS = (RefundStatus.PENDING, RefundStatus.UNRESOLVED)


def _kept(charge: SandboxCharge) -> bool:
    """Does the provider still hold money (or a hold) for this charge?"""
    return charge.status == "authorized" or (
        charge.status == "captured" and charge.amount_refunded < charge.amount_captured)


class PaymentLifecycle(RuleBasedStateMachine):
    payments = Bundle("payments")

    def __init__(self):
        super().__init__()
        cache.clear()  # breakers, limits
        SandboxCondition.objects.all().delete()
        self.merchant, _, _ = merchant_create(name=f"Hypo {uuid.uuid4().hex[:12]}")
        self.last_status: dict[str, str] = {}

    def teardown(self):
        SandboxCondition.objects.all().delete()

    # --- helpers --------------------------------------------------------------------------
    def _card(self, number: str):
        cvc = "1234" if number.startswith("3") else "123"
        return payment_method_create(merchant=self.merchant, livemode=False, number=number,
                                     exp_month=12, exp_year=2034, cvc=cvc)

    def _payments(self):
        return Payment.objects.filter(merchant=self.merchant).order_by("created_at", "id")

    # --- merchant actions -----------------------------------------------------------------
    @rule(target=payments, card=CARDS, amount=st.integers(min_value=1, max_value=2000),
          currency=st.sampled_from(["USD", "USD", "EUR", "JPY"]),
          capture_method=st.sampled_from(["automatic", "manual"]), provider=ACCOUNTS,
          confirm=st.booleans())
    def create(self, card, amount, currency, capture_method, provider, confirm):
        try:
            payment = payment_create(
                merchant=self.merchant, livemode=False, amount=amount, currency=currency,
                payment_method=self._card(card), capture_method=capture_method,
                provider=provider, confirm=confirm)
        except (CardDeclined, ProviderFailed) as exc:
            payment = exc.payment
        if payment is None:
            return multiple()
        return payment.id

    @rule(payment_id=payments, new_card=st.one_of(st.none(), CARDS))
    def confirm(self, payment_id, new_card):
        pm = self._card(new_card) if new_card else None
        try:
            payment_confirm(payment=Payment.objects.get(pk=payment_id), payment_method=pm)
        except PaymentsError:
            pass

    @rule(payment_id=payments, amount=MOD_AMOUNTS)
    def capture(self, payment_id, amount):
        try:
            if amount is not None:
                amount = money.parse_amount(amount, param="amount_to_capture")
            payment_capture(payment=Payment.objects.get(pk=payment_id), amount=amount)
        except PaymentsError:
            pass

    @rule(payment_id=payments)
    def cancel(self, payment_id):
        try:
            payment_cancel(payment=Payment.objects.get(pk=payment_id), reason="abandoned")
        except PaymentsError:
            pass

    @rule(payment_id=payments, amount=MOD_AMOUNTS)
    def refund(self, payment_id, amount):
        try:
            if amount is not None:
                amount = money.parse_amount(amount)
            refund_create(payment=Payment.objects.get(pk=payment_id), amount=amount,
                          reason="requested_by_customer")
        except PaymentsError:
            pass

    # --- providers --------------------------------------------------------------------------
    @rule(provider=PROVIDERS, on=st.booleans())
    def outage(self, provider, on):
        call_command("sandbox_fault", "--provider", provider, "--outage", "on" if on else "off",
                     stdout=io.StringIO())

    @rule(provider=PROVIDERS, rate=st.sampled_from([0.0, 0.5, 1.0]))
    def soft_decline_rate(self, provider, rate):
        call_command("sandbox_fault", "--provider", provider, "--soft-decline-rate", str(rate),
                     stdout=io.StringIO())

    @rule(payment_id=payments)
    def provider_confirms(self, payment_id):
        """The provider's final word on accepted (pending) or unknown captures, voids and
        refunds — what a webhook or a status lookup reports — taken from its own ledger (the
        sandboxes apply operations at once)."""
        for mod in Modification.objects.filter(
                payment_id=payment_id,
                status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN]):
            done = SandboxOperation.objects.filter(reference=mod.id).first()
            modification_settle(modification=mod, succeeded=done is not None, actor="webhook",
                                provider_reference=done.provider_reference if done else "")
        for refund in Refund.objects.filter(payment_id=payment_id, status__in=IN_FLIGHT_REFUNDS):
            done = SandboxOperation.objects.filter(reference=refund.id, kind="refund").first()
            refund_settle(refund=refund, succeeded=done is not None, actor="webhook",
                          provider_reference=done.provider_reference if done else "")

    # --- status sync --------------------------------------------------------------------------
    def _sync(self, attempt_ids, later: bool):
        # later: the sandboxes' dropped connections (card …0408) have recovered by now
        with override_settings(**({"SANDBOX_DROP_WINDOW_SECONDS": 0} if later else {})):
            for attempt_id in attempt_ids:
                status_sync.attempt_sync(attempt_id)

    @rule(payment_id=payments, later=st.booleans())
    def sync_payment(self, payment_id, later):
        self._sync(list(PaymentAttempt.objects.filter(
            payment_id=payment_id, status=A.UNKNOWN).values_list("id", flat=True)), later)

    @rule(later=st.booleans())
    def sync_all(self, later):
        self._sync(list(PaymentAttempt.objects.filter(
            payment__merchant=self.merchant, status=A.UNKNOWN)
            .order_by("created_at", "id").values_list("id", flat=True)), later)

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
            settled = not any(a.status in (A.UNKNOWN, A.PENDING) for a in attempts)
            if p.status in (S.FAILED, S.CANCELED) and settled:
                assert not kept, (
                    p.id, p.status, "still charged at the provider",
                    [(a.id, a.provider_account.name, a.status) for a in attempts],
                    [(c.reference, c.provider, c.status) for c in kept])

    @invariant()
    def refunds_add_up(self):
        for p in self._payments():
            refunds = p.refunds.all()
            succeeded = refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(
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
            # until `provider_confirms`: once none is in flight, every ledger must agree.
            if not refunds.filter(status__in=IN_FLIGHT_REFUNDS).exists():
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


@pytest.mark.django_db
def test_payment_lifecycle_invariants(settings):
    # Only timing: the provider-retry backoff sleeps (up to 0.3 s per unknown outcome) would
    # dominate the run; every retry decision stays the same.
    settings.PROVIDER_RETRY_BACKOFF_SECONDS = 0.001
    settings.PROVIDER_RETRY_BACKOFF_MAX_SECONDS = 0.002
    run_state_machine_as_test(PaymentLifecycle, settings=hsettings(
        max_examples=40, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
