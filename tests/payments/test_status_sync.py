"""Status sync: every unknown-outcome test card resolved by asking the provider, the back-off
schedule, the operator flag, claiming with SKIP LOCKED, and double-charge reversal."""

import datetime as dt
import threading

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from prometheus_client import REGISTRY

from payments import state_machine as sm
from payments.models import Payment, PaymentAttempt
from payments.services import attempts, authorization, status_sync
from payments.services.attempts import next_sync_time
from providers.accounts import account_config
from providers.base import AuthorizeRequest, Card, LookupResult
from providers.models import ProviderAccount
from providers.registry import get_adapter
from providers.sandboxes.models import SandboxCharge
from tests.conftest import pay


def unknown_attempt(resp) -> PaymentAttempt:
    assert resp.status_code == 202, resp.json()
    [attempt] = [a for a in resp.json()["attempts"] if a["status"] == "unknown"]
    return PaymentAttempt.objects.get(pk=attempt["id"])


def payment_of(attempt) -> Payment:
    return Payment.objects.get(pk=attempt.payment_id)


def assert_consistent(payment: Payment):
    payment.refresh_from_db()
    state = sm.replay_events(payment)
    assert state["status"] == payment.status
    kept = payment.attempts.filter(status__in=["authorized", "captured"]).count()
    assert kept <= 1


def later(settings):
    """Status sync runs after the sandbox's dropped connections have recovered."""
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0


def past_the_consistency_window(attempt, hours: float = 2):
    """As if the attempt had been sent `hours` ago: longer than any provider's window during
    which "not found" proves nothing (Stripe's Search lag, Checkout.com's list: 1 h)."""
    PaymentAttempt.objects.filter(pk=attempt.pk).update(
        created_at=F("created_at") - dt.timedelta(hours=hours))


@pytest.mark.django_db
@pytest.mark.parametrize("account", ["stripe-sandbox", "adyen-sandbox", "checkout-sandbox"])
def test_commit_then_drop_is_found_succeeded(api, account, settings):
    attempt = unknown_attempt(pay(api, "4000000000000408", provider=account))
    later(settings)
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "succeeded"
    assert payment.amount_captured == 1050
    attempt.refresh_from_db()
    assert attempt.status == "captured" and attempt.next_sync_at is None
    assert SandboxCharge.objects.filter(reference=attempt.id).count() == 1
    assert_consistent(payment)


@pytest.mark.django_db
@pytest.mark.parametrize("account", ["stripe-sandbox", "checkout-sandbox"])
def test_timeout_before_commit_is_found_not_charged_and_fails_when_pinned(api, account):
    attempt = unknown_attempt(pay(api, "4000000000000606", provider=account))
    past_the_consistency_window(attempt)
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "failed"
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    assert SandboxCharge.objects.count() == 0
    assert_consistent(payment)


@pytest.mark.django_db
@pytest.mark.parametrize("account", ["stripe-sandbox", "checkout-sandbox"])
def test_not_found_within_the_consistency_window_proves_nothing(api, account):
    """Stripe's Search and Checkout.com's list by reference may not show a charge yet: a
    lookup that finds nothing within the window leaves the attempt unknown, and nothing is
    tried elsewhere (item 3)."""
    attempt = unknown_attempt(pay(api, "4000000000000606"))  # stripe first, unpinned
    if account != "stripe-sandbox":
        attempt = unknown_attempt(pay(api, "4000000000000606", provider=account))
    past_the_consistency_window(attempt, hours=0.5)
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "unresolved"
    attempt.refresh_from_db()
    assert (attempt.status, attempt.sync_count) == ("unknown", 1)
    assert attempt.next_sync_at is not None
    assert payment.attempts.count() == 1  # no failover while the outcome is unknown
    past_the_consistency_window(attempt, hours=1)  # now 1.5 h after it was sent
    status_sync.attempt_sync(attempt.id)
    attempt.refresh_from_db()
    assert attempt.status == "failed"


@pytest.mark.django_db
def test_not_charged_continues_failover_within_the_budget(api):
    attempt = unknown_attempt(pay(api, "4000000000000606"))  # stripe first, unpinned
    past_the_consistency_window(attempt)
    payment = status_sync.attempt_sync(attempt.id)
    # stripe never charged, so adyen was tried: the same card times out there too
    assert [(a.provider_account.name, a.status) for a in payment.attempts.all()] == [
        ("stripe-sandbox", "failed"), ("adyen-sandbox", "unknown")]
    assert payment.status == "unresolved"
    assert_consistent(payment)


@pytest.mark.django_db
def test_adyen_replay_cannot_tell_so_it_asks_again(api):
    """The replay of a request Adyen never processed times out again; the first lookups
    just reschedule (a release by our reference comes later: test_provider_webhooks)."""
    attempt = unknown_attempt(pay(api, "4000000000000606", provider="adyen-sandbox"))
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "unresolved"
    attempt.refresh_from_db()
    assert attempt.status == "unknown" and attempt.sync_count == 1
    assert attempt.next_sync_at > timezone.now()


def test_back_off_schedule_then_give_up(settings):
    settings.STATUS_SYNC_SCHEDULE = [10, 60, 300, 1800, 7200]
    settings.STATUS_SYNC_REPEAT_SECONDS = 6 * 3600
    settings.STATUS_SYNC_GIVE_UP_SECONDS = 3 * 24 * 3600
    since = timezone.now()
    delays = [(next_sync_time(since, sync_count=n, now=since) - since).total_seconds()
              for n in range(5)]
    assert delays == [10, 60, 300, 1800, 7200]
    later = since + dt.timedelta(hours=3)
    assert next_sync_time(since, sync_count=5, now=later) == later + dt.timedelta(hours=6)
    assert next_sync_time(since, sync_count=9, now=since + dt.timedelta(days=3)) is None


@pytest.mark.django_db
def test_when_the_schedule_runs_out_the_payment_is_flagged_for_an_operator(api, settings):
    settings.STATUS_SYNC_SCHEDULE = [0]
    settings.STATUS_SYNC_GIVE_UP_SECONDS = 0
    attempt = unknown_attempt(pay(api, "4000000000000606", provider="adyen-sandbox"))
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "unresolved" and payment.needs_operator
    attempt.refresh_from_db()
    assert attempt.next_sync_at is None
    assert payment.events.filter(type="payment.flagged_for_operator").count() == 1
    assert status_sync.claim_due(now=timezone.now() + dt.timedelta(days=30)) == []


@pytest.mark.django_db
def test_sync_due_handles_only_due_attempts(api, settings):
    attempt = unknown_attempt(pay(api, "4000000000000408", provider="stripe-sandbox"))
    later(settings)
    assert status_sync.sync_due() == 0  # due in 10 s, not yet
    PaymentAttempt.objects.filter(pk=attempt.pk).update(
        next_sync_at=timezone.now() - dt.timedelta(seconds=1))
    assert status_sync.sync_due() == 1
    assert payment_of(attempt).status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_claim_each_attempt_once(api):
    # four, so that the account's breaker (five failures) stays closed
    ids = {unknown_attempt(pay(api, "4000000000000606", provider="adyen-sandbox")).id
           for _ in range(4)}
    PaymentAttempt.objects.filter(pk__in=ids).update(
        next_sync_at=timezone.now() - dt.timedelta(seconds=1))
    claims, barrier = [], threading.Barrier(3)

    def worker():
        try:
            barrier.wait()
            claims.append(status_sync.claim_due(limit=2))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [i for batch in claims for i in batch]
    assert sorted(claimed) == sorted(ids)  # every due attempt claimed, none twice


def _extra_charge(payment: Payment, account_name: str, *, capture: bool) -> PaymentAttempt:
    """An attempt that the provider really charged but Switchyard recorded as unknown."""
    account = ProviderAccount.objects.get(merchant=payment.merchant, livemode=False,
                                          name=account_name)
    attempt = PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                            status="unknown", unknown_since=timezone.now())
    get_adapter(account_config(account)).authorize(AuthorizeRequest(
        reference=attempt.id, amount=payment.amount, currency=payment.currency,
        card=Card("4242424242424242", 12, 2034, "visa"), capture=capture))
    return attempt


def _reversed_count() -> float:
    total = 0.0
    for provider in ("stripe", "adyen", "checkout"):
        total += REGISTRY.get_sample_value("switchyard_compensations_total",
                                           {"provider": provider}) or 0.0
    return total


@pytest.mark.django_db
@pytest.mark.parametrize(("capture", "ledger_status"), [(False, "canceled"),
                                                        (True, "captured")])
def test_an_extra_charge_is_reversed_when_another_attempt_succeeded(api, capture,
                                                                    ledger_status):
    resp = pay(api, "4242424242424242", provider="stripe-sandbox")
    payment = Payment.objects.get(pk=resp.json()["id"])
    assert payment.status == "succeeded"
    extra = _extra_charge(payment, "checkout-sandbox" if not capture else "stripe-sandbox",
                          capture=capture)
    before = _reversed_count()

    status_sync.attempt_sync(extra.id)

    extra.refresh_from_db()
    assert extra.status == "reversed"
    charge = SandboxCharge.objects.get(reference=extra.id)
    assert charge.status == ledger_status
    if capture:
        assert charge.amount_refunded == charge.amount_captured  # refunded in full
    payment.refresh_from_db()
    assert payment.status == "succeeded" and payment.amount_captured == 1050
    assert payment.events.filter(type="payment.duplicate_charge_reversed").count() == 1
    assert _reversed_count() == before + 1
    assert_consistent(payment)


@pytest.mark.django_db
def test_a_charge_found_for_a_failed_payment_is_reversed(api):
    resp = pay(api, "4000000000000002", provider="stripe-sandbox")  # hard decline
    payment = Payment.objects.get(pk=resp.json()["payment"]["id"])
    assert payment.status == "failed"
    extra = _extra_charge(payment, "stripe-sandbox", capture=True)
    status_sync.attempt_sync(extra.id)
    extra.refresh_from_db()
    assert extra.status == "reversed"
    charge = SandboxCharge.objects.get(reference=extra.id)
    assert charge.amount_refunded == charge.amount_captured
    payment.refresh_from_db()
    assert payment.status == "failed"


@pytest.mark.django_db
def test_lookup_declined_after_unknown_is_a_decline(api, monkeypatch):
    attempt = unknown_attempt(pay(api, "4000000000000606", provider="stripe-sandbox"))
    card = Card("4000000000000606", 12, 2034, "visa")
    payment = authorization.apply_lookup(
        attempt, LookupResult(found=True, status="declined", decline_code="insufficient_funds"),
        card=card)
    assert payment.status == "failed"
    assert payment.last_error["decline_code"] == "insufficient_funds"


@pytest.mark.django_db
def test_an_attempt_abandoned_by_a_dead_process_is_resolved(api, monkeypatch):
    """The process dies after the provider charged and before the answer was recorded: the
    attempt stays pending; after the grace period status sync asks the provider."""
    from providers import gateway

    real_call = gateway.call

    def charge_then_die(account, operation, request):
        real_call(account, operation, request)
        raise KeyboardInterrupt("worker killed")  # not an Exception: nothing catches it

    monkeypatch.setattr(gateway, "call", charge_then_die)
    with pytest.raises(KeyboardInterrupt):
        pay(api, "4242424242424242", provider="stripe-sandbox")
    monkeypatch.setattr(gateway, "call", real_call)

    payment = Payment.objects.get()
    [attempt] = payment.attempts.all()
    assert (payment.status, attempt.status) == ("processing", "pending")
    assert status_sync.sync_due() == 0  # within the grace period: it may still be running
    PaymentAttempt.objects.filter(pk=attempt.pk).update(
        next_sync_at=timezone.now() - dt.timedelta(seconds=1))
    assert status_sync.sync_due() == 1
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert payment.events.filter(type="payment.attempt_abandoned").count() == 1
    assert SandboxCharge.objects.filter(reference=attempt.id).count() == 1
    assert_consistent(payment)


@pytest.mark.django_db
def test_a_reversal_interrupted_by_a_dead_worker_is_retried(api, monkeypatch):
    """The extra charge is found, then the worker dies before reversing it: the attempt stays
    due, and the next pass reverses it."""
    resp = pay(api, "4242424242424242", provider="stripe-sandbox")
    payment = Payment.objects.get(pk=resp.json()["id"])
    extra = _extra_charge(payment, "stripe-sandbox", capture=True)

    def die(*args, **kwargs):
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(attempts, "compensate", die)
    with pytest.raises(KeyboardInterrupt):
        status_sync.attempt_sync(extra.id)
    monkeypatch.undo()
    extra.refresh_from_db()
    assert extra.status == "unknown" and extra.next_sync_at is not None
    PaymentAttempt.objects.filter(pk=extra.pk).update(
        next_sync_at=timezone.now() - dt.timedelta(seconds=1))
    assert status_sync.sync_due() == 1
    extra.refresh_from_db()
    assert extra.status == "reversed"
    charge = SandboxCharge.objects.get(reference=extra.id)
    assert charge.amount_refunded == charge.amount_captured


@pytest.mark.django_db
def test_a_payment_stalled_between_attempts_is_resumed(api, monkeypatch, settings):
    """The process dies after a failover was committed and before the next attempt row: the
    payment is `processing` with nothing in flight; after the grace period it goes on."""
    from django.core.management import call_command

    call_command("sandbox_fault", "--provider", "stripe", "--outage", "on")
    real_next = attempts.next_account
    calls = {"n": 0}

    def next_account_then_die(payment):
        calls["n"] += 1
        # the 1st call decides the failover from stripe (may_fail_over), the 2nd is the next
        # turn of the loop, after that failover was committed (the first attempt is recorded
        # with the confirmation, where routing has just chosen its account)
        if calls["n"] == 2:
            raise KeyboardInterrupt("process killed")
        return real_next(payment)

    monkeypatch.setattr(attempts, "next_account", next_account_then_die)
    with pytest.raises(KeyboardInterrupt):
        pay(api, "4242424242424242")
    monkeypatch.setattr(attempts, "next_account", real_next)
    payment = Payment.objects.get()
    assert payment.status == "processing"
    assert [a.status for a in payment.attempts.all()] == ["failed"]

    assert status_sync.claim_stalled() == []  # within the grace period
    grace = dt.timedelta(seconds=settings.STATUS_SYNC_PENDING_GRACE_SECONDS + 1)
    Payment.objects.filter(pk=payment.pk).update(updated_at=timezone.now() - grace)
    status_sync.sync_due()
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert [(a.provider_account.name, a.status) for a in payment.attempts.all()] == [
        ("stripe-sandbox", "failed"), ("adyen-sandbox", "captured")]
    assert_consistent(payment)


@pytest.mark.django_db
def test_checkout_captures_and_refunds_are_confirmed_by_status_sync(api, settings):
    from payments.models import Refund

    settings.MODIFICATION_SYNC_AFTER_SECONDS = 0
    resp = pay(api, "4242424242424242", provider="checkout-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    captured = api.post(f"/v1/payments/{pay_id}/capture", {"amount_to_capture": 800}).json()
    assert captured["status"] == "processing"  # accepted, not confirmed
    assert status_sync.sync_modifications(now=timezone.now() + dt.timedelta(seconds=1)) == 1
    payment = Payment.objects.get(pk=pay_id)
    assert (payment.status, payment.amount_captured) == ("succeeded", 800)

    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()
    assert refund["status"] == "pending"
    assert status_sync.sync_modifications(now=timezone.now() + dt.timedelta(seconds=1)) == 1
    assert Refund.objects.get(pk=refund["id"]).status == "succeeded"
    payment.refresh_from_db()
    assert payment.amount_refunded == 300
    assert_consistent(payment)


@pytest.mark.django_db
def test_adyen_modifications_wait_for_the_webhook(api, settings):
    settings.MODIFICATION_SYNC_AFTER_SECONDS = 0
    resp = pay(api, "4242424242424242", provider="adyen-sandbox", capture_method="manual")
    pay_id = resp.json()["id"]
    api.post(f"/v1/payments/{pay_id}/capture")
    assert status_sync.sync_modifications() == 0  # Adyen has no lookup: still pending
    assert Payment.objects.get(pk=pay_id).status == "processing"


@pytest.mark.django_db(transaction=True)  # sandbox webhooks are real in-process requests
@pytest.mark.parametrize("account", ["stripe-sandbox", "adyen-sandbox", "checkout-sandbox"])
@pytest.mark.parametrize("number,resolved", [("4000000000000408", "succeeded"),
                                             ("4000000000000606", "failed")])
def test_every_unknown_outcome_card_is_resolved_by_the_periodic_job(api, account, number,
                                                                    resolved, settings):
    """Nothing but time passing: the sandboxes deliver their webhooks and the periodic job
    runs whenever something is due. Every unknown outcome ends known, with at most one
    charge, whatever the provider (Adyen: by webhook and technical cancel)."""
    from providers.sandboxes import webhooks as sandbox_webhooks

    attempt = unknown_attempt(pay(api, number, provider=account))
    later(settings)
    for _ in range(4):  # four ticks of the clock
        sandbox_webhooks.deliver_due()
        PaymentAttempt.objects.filter(next_sync_at__isnull=False).update(
            next_sync_at=timezone.now() - dt.timedelta(seconds=1),
            created_at=F("created_at") - dt.timedelta(hours=1))
        status_sync.sync_due()
    payment = payment_of(attempt)
    assert payment.status == resolved and not payment.needs_operator
    kept = SandboxCharge.objects.filter(reference=attempt.id).exclude(status="canceled")
    assert kept.count() == (1 if resolved == "succeeded" else 0)
    assert_consistent(payment)
