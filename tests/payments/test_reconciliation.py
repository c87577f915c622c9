"""Reconciliation against each provider's settlement report, end to end through the
in-process sandboxes: payments, captures and refunds made through the API, then the day
reconciled (payments.services.reconciliation). Everything matches; each kind of planted
discrepancy is found, once, however often the day is run; what the report proves settles
what we still hold as unknown or pending."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from payments.models import (
    AttemptStatus,
    Discrepancy,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    ReconciliationLine,
    ReconciliationRun,
    Refund,
    RefundStatus,
)
from payments.services.modifications import modification_settle
from payments.services.reconciliation import reconciliation_run
from payments.services.refunds import refund_settle
from providers.models import ProviderAccount
from providers.sandboxes import ledger
from providers.sandboxes.models import SandboxCharge, SandboxOperation
from providers.sandboxes.stripe import account_for_key
from providers.stripe.currencies import WIRE as STRIPE_WIRE
from tests.conftest import pay

pytestmark = pytest.mark.django_db
PROVIDERS = ["stripe", "adyen", "checkout"]
# the sandboxes' pricing (providers.sandboxes.ledger.settlement_fee) as a fee schedule
SANDBOX_PRICING = {"*": {"percent": "2.9", "fixed": 30}}


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def account_of(merchant, provider: str) -> ProviderAccount:
    return ProviderAccount.objects.get(merchant=merchant, name=f"{provider}-sandbox")


def sandbox_merchant_account(account: ProviderAccount) -> str:
    """How the provider's sandbox knows the account (its ledger's `merchant_account`)."""
    credentials = account.get_credentials()
    return {"stripe": lambda: account_for_key(credentials["secret_key"]),
            "adyen": lambda: credentials["merchant_account"],
            "checkout": lambda: credentials["processing_channel_id"]}[account.provider]()


def reconcile(account: ProviderAccount, day: dt.date | None = None):
    return reconciliation_run(account=account, day=day or today())


def found(account: ProviderAccount) -> set[tuple[str, str]]:
    """(kind, our object or the line) of every open discrepancy of the account."""
    return {(d.kind, d.object_id or d.line_id)
            for d in Discrepancy.objects.filter(account=account, status="open")}


def confirm_all() -> None:
    """What Adyen and Checkout.com accepted is confirmed in our books, as their webhooks
    would confirm it (applied directly: a webhook delivery is a real request that closes the
    test's connection)."""
    for mod in Modification.objects.filter(status=ModificationStatus.PENDING):
        modification_settle(modification=mod, succeeded=True, actor="provider_webhook")
    for refund in Refund.objects.filter(status=RefundStatus.PENDING):
        refund_settle(refund=refund, succeeded=True, actor="provider_webhook")


def make_day(api, provider: str) -> dict:
    """An automatically captured payment, a manual one captured in part, a partial refund."""
    auto = pay(api, provider=f"{provider}-sandbox", amount=1050).json()
    assert auto["status"] == "succeeded", auto
    manual = pay(api, provider=f"{provider}-sandbox", amount=2000,
                 capture_method="manual").json()
    assert manual["status"] == "requires_capture", manual
    captured = api.post(f"/v1/payments/{manual['id']}/capture", {"amount_to_capture": 1500})
    assert captured.status_code == 200, captured.json()
    refund = api.post("/v1/refunds", {"payment": auto["id"], "amount": 300})
    assert refund.status_code == 200, refund.json()
    return {"auto": auto["id"], "manual": manual["id"], "refund": refund.json()["id"],
            "capture": Modification.objects.get(payment_id=manual["id"], kind="capture").id}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_day_that_matches_has_no_discrepancy_and_settles_what_is_pending(
        api, merchant, provider):
    account = account_of(merchant, provider)
    account.fees = SANDBOX_PRICING  # our schedule is what the sandbox charges: fees agree
    account.save(update_fields=["fees"])
    made = make_day(api, provider)
    async_provider = provider != "stripe"  # Adyen and Checkout.com confirm by webhook later
    capture = Modification.objects.get(pk=made["capture"])
    refund = Refund.objects.get(pk=made["refund"])
    assert (capture.status == ModificationStatus.PENDING) == async_provider
    assert (refund.status == RefundStatus.PENDING) == async_provider

    result = reconcile(account)

    assert (result.status, result.lines, result.matched) == ("completed", 3, 3)
    assert result.open_discrepancies == 0 and found(account) == set()
    assert result.settled == (2 if async_provider else 0)
    capture.refresh_from_db()
    refund.refresh_from_db()
    assert (capture.status, refund.status) == ("succeeded", "succeeded")
    manual = Payment.objects.get(pk=made["manual"])
    assert (manual.status, manual.amount_captured) == ("succeeded", 1500)
    assert Payment.objects.get(pk=made["auto"]).amount_refunded == 300
    lines = {line.matched_id: line for line in ReconciliationLine.objects.filter(
        run__account=account)}
    assert set(lines) == {PaymentAttempt.objects.get(payment_id=made["auto"]).id,
                          made["capture"], made["refund"]}
    assert lines[made["capture"]].matched_type == "modification"
    assert lines[made["refund"]].matched_type == "refund"
    if async_provider:  # the settlement is on record: the line, and the event's actor
        assert (lines[made["capture"]].settled, lines[made["refund"]].settled) == (
            "capture_succeeded", "refund_succeeded")
        assert PaymentEvent.objects.filter(payment_id=made["manual"],
                                           type="payment.capture_succeeded",
                                           actor="reconciliation").exists()
    run = ReconciliationRun.objects.get(account=account, day=today())
    fee = ledger.settlement_fee
    assert run.fees == {"USD": fee(1050) + fee(1500)}  # captures pay; refunds are free


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_kind_of_planted_discrepancy_is_found_once(api, merchant, provider):
    account = account_of(merchant, provider)
    account.fees = SANDBOX_PRICING
    account.save(update_fields=["fees"])
    made = make_day(api, provider)
    extra = pay(api, provider=f"{provider}-sandbox", amount=700).json()  # automatic capture
    held = pay(api, provider=f"{provider}-sandbox", amount=900, capture_method="manual").json()
    confirm_all()  # our books say done: the capture and the refund succeeded
    assert Modification.objects.get(pk=made["capture"]).status == "succeeded"
    attempt = {pid: PaymentAttempt.objects.get(payment_id=pid)
               for pid in (made["auto"], made["manual"], extra["id"], held["id"])}
    capture_op = SandboxOperation.objects.get(
        charge__provider_reference=attempt[made["manual"]].provider_reference, kind="capture")
    refund_op = SandboxOperation.objects.get(
        charge__provider_reference=attempt[made["auto"]].provider_reference, kind="refund")
    # only ours: the provider's books lack our capture
    ledger.plant_settlement_fault(provider, capture_op.provider_reference, omit=True)
    # amount: the provider refunded 2.50, we 3.00
    ledger.plant_settlement_fault(provider, refund_op.provider_reference, amount=250)
    # currency: the provider settled the automatic capture of `extra` in EUR
    ledger.plant_settlement_fault(provider, attempt[extra["id"]].provider_reference,
                                  currency="EUR")
    # fee: the provider charged more than the schedule on the automatic capture of `auto`
    ledger.plant_settlement_fault(provider, attempt[made["auto"]].provider_reference, fee=99)
    # only theirs: a charge the provider made that we never sent
    stranger = ledger.plant_unrecorded_charge(
        provider, merchant_account=sandbox_merchant_account(account), amount=4200,
        currency="USD", reference="order-from-the-dashboard")
    # status: captured at the provider (by hand, in its dashboard) while we hold it authorized
    ledger.modify(provider, "capture", attempt[held["id"]].provider_reference, amount=None)

    result = reconcile(account)

    stranger_line = ReconciliationLine.objects.get(
        run__account=account, provider_reference=stranger.provider_reference)
    expected = {
        ("only_ours", made["capture"]),
        ("amount_mismatch", made["refund"]),
        ("currency_mismatch", attempt[extra["id"]].id),
        ("fee_mismatch", attempt[made["auto"]].id),
        ("only_theirs", stranger_line.line_id),
        ("status_mismatch", attempt[held["id"]].id),
    }
    assert found(account) == expected
    assert result.open_discrepancies == len(expected)
    amount = Discrepancy.objects.get(account=account, kind="amount_mismatch")
    assert (amount.ours["amount"], amount.theirs["amount"]) == (300, 250)
    assert amount.payment_id == made["auto"]
    fee = Discrepancy.objects.get(account=account, kind="fee_mismatch")
    assert (fee.ours["fee"], fee.theirs["fee"]) == (ledger.settlement_fee(1050), 99)
    status = Discrepancy.objects.get(account=account, kind="status_mismatch")
    assert status.ours["status"] == "authorized" and "no capture of ours" in status.message
    assert Payment.objects.get(pk=held["id"]).status == "requires_capture"  # not settled

    # running the day again re-matches it: the same discrepancies, none twice
    ids = set(Discrepancy.objects.values_list("id", flat=True))
    again = reconcile(account)
    assert found(account) == expected and again.open_discrepancies == len(expected)
    assert set(Discrepancy.objects.values_list("id", flat=True)) == ids
    assert ReconciliationLine.objects.filter(run__account=account).count() == result.lines
    run = ReconciliationRun.objects.get(account=account, day=today())
    assert (run.runs, run.status) == (2, "completed")

    # the provider corrects its report: the discrepancy that is gone is resolved by the run
    ledger.plant_settlement_fault(provider, refund_op.provider_reference)  # no fault
    reconcile(account)
    assert found(account) == expected - {("amount_mismatch", made["refund"])}
    amount.refresh_from_db()
    assert (amount.status, amount.resolved_by) == ("resolved", "reconciliation")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unknown_outcome_is_settled_by_the_report(api, merchant, provider):
    account = account_of(merchant, provider)
    # the provider charges and captures, then the connection drops: outcome unknown
    body = pay(api, "4000000000000408", provider=f"{provider}-sandbox", amount=1234).json()
    payment = Payment.objects.get(pk=body["id"])
    [attempt] = payment.attempts.all()
    assert (payment.status, attempt.status) == ("unresolved", AttemptStatus.UNKNOWN)
    charge = SandboxCharge.objects.get(provider=provider, reference=attempt.id)

    result = reconcile(account)

    assert (result.settled, result.open_discrepancies) == (1, 0)
    payment.refresh_from_db()
    attempt.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("succeeded", 1234)
    assert (attempt.status, attempt.provider_reference) == ("captured",
                                                           charge.provider_reference)
    line = ReconciliationLine.objects.get(run__account=account, matched_id=attempt.id)
    assert line.settled == "attempt_captured"
    assert PaymentEvent.objects.filter(payment=payment, type="payment.captured",
                                       actor="reconciliation").exists()
    # a second run changes nothing more
    assert reconcile(account).settled == 0


def test_an_only_ours_found_in_the_next_days_report_is_resolved(api, merchant):
    """A capture the provider booked after midnight: "only ours" on its day, matched by the
    next day's report, which resolves it."""
    account = account_of(merchant, "stripe")
    paid = pay(api, provider="stripe-sandbox", amount=1000).json()
    attempt = PaymentAttempt.objects.get(payment_id=paid["id"])
    charge = SandboxCharge.objects.get(provider_reference=attempt.provider_reference)
    SandboxCharge.objects.filter(pk=charge.pk).update(
        created_at=charge.created_at + dt.timedelta(days=1))  # the provider's next day

    reconcile(account)
    [discrepancy] = Discrepancy.objects.filter(account=account)
    assert (discrepancy.kind, discrepancy.object_id) == ("only_ours", attempt.id)

    reconcile(account, today() + dt.timedelta(days=1))
    discrepancy.refresh_from_db()
    assert (discrepancy.status, discrepancy.resolved_by) == ("resolved", "reconciliation")
    assert str(today() + dt.timedelta(days=1)) in discrepancy.resolution


def test_another_accounts_charges_are_not_in_the_report(api, other_api, merchant):
    pay(other_api, provider="adyen-sandbox", amount=500)  # another merchant, same sandbox
    pay(api, provider="adyen-sandbox", amount=600)
    result = reconcile(account_of(merchant, "adyen"))
    assert (result.lines, result.matched, result.open_discrepancies) == (1, 1, 0)


def test_a_report_that_cannot_be_read_fails_the_run_and_it_is_run_again(api, merchant):
    from payments.services.reconciliation import ReconciliationFailed
    from providers.sandboxes.models import SandboxCondition

    account = account_of(merchant, "checkout")
    pay(api, provider="checkout-sandbox", amount=500)
    SandboxCondition.objects.create(provider="checkout", outage=True)
    with pytest.raises(ReconciliationFailed):
        reconcile(account)
    run = ReconciliationRun.objects.get(account=account)
    assert run.status == "failed" and "503" in run.error
    assert not ReconciliationLine.objects.exists()

    SandboxCondition.objects.filter(provider="checkout").update(outage=False)
    assert reconcile(account).status == "completed"
    run.refresh_from_db()
    assert (run.status, run.error, run.lines, run.runs) == ("completed", "", 1, 2)


def test_stripe_amounts_are_read_in_iso_minor_units(api, merchant):
    """ISK: Stripe counts hundredths (1000 ISK is 100000 on its wire), we count krónur."""
    account = account_of(merchant, "stripe")
    paid = pay(api, provider="stripe-sandbox", amount=1000, currency="ISK").json()
    assert paid["status"] == "succeeded", paid
    assert SandboxCharge.objects.get().amount == STRIPE_WIRE.to_wire(1000, "ISK") == 100000
    result = reconcile(account)
    assert (result.matched, result.open_discrepancies) == (1, 0)
    assert ReconciliationLine.objects.get().amount == 1000


# --- once per account and day, whoever runs it ------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_workers_reconciling_the_same_day_at_once_record_it_once(api, merchant):
    from providers.sandboxes.models import SandboxCondition
    from tests.threads import in_threads

    account = account_of(merchant, "adyen")
    pay(api, provider="adyen-sandbox", amount=500)
    pay(api, provider="adyen-sandbox", amount=600)
    ledger.plant_unrecorded_charge("adyen", merchant_account=sandbox_merchant_account(account),
                                   amount=700, currency="USD")
    # the report takes a while: the second worker arrives while the first holds the run
    SandboxCondition.objects.create(provider="adyen", latency_ms=300)

    outcomes = in_threads(3, lambda i: reconciliation_run(account=account, day=today()))

    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert {o.status for o in outcomes} <= {"completed", "skipped"}
    assert "completed" in {o.status for o in outcomes}
    run = ReconciliationRun.objects.get(account=account)
    assert run.status == "completed" and run.lines == 3
    assert ReconciliationLine.objects.filter(run=run).count() == 3
    [discrepancy] = Discrepancy.objects.all()
    assert discrepancy.kind == "only_theirs"
    assert run.runs == sum(o.status == "completed" for o in outcomes)


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_row_another_worker_has_locked_is_skipped(merchant):
    import threading

    from django.db import connection, transaction

    account = account_of(merchant, "stripe")
    ReconciliationRun.objects.create(account=account, day=today())
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                ReconciliationRun.objects.select_for_update().get(account=account)
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        assert reconcile(account).status == "skipped"  # SKIP LOCKED: no wait, no second run
    finally:
        release.set()
        holder.join(30)
    assert ReconciliationRun.objects.get(account=account).runs == 0
    assert reconcile(account).status == "completed"


def test_a_claim_holds_until_its_lease_runs_out(merchant, settings):
    account = account_of(merchant, "stripe")
    now = timezone.now()
    run = ReconciliationRun.objects.create(account=account, day=today(), status="running",
                                           claim_token="other", runs=1,
                                           claimed_until=now + dt.timedelta(minutes=5))
    assert reconcile(account).status == "skipped"
    ReconciliationRun.objects.filter(pk=run.pk).update(
        claimed_until=now - dt.timedelta(seconds=1))  # the other worker died
    assert reconcile(account).status == "completed"
    run.refresh_from_db()
    assert (run.status, run.runs, run.claim_token) == ("completed", 2, "")


def test_a_run_that_lost_its_claim_records_nothing(api, merchant, monkeypatch):
    """Its lease ran out during the fetch and another worker took the run over: only that
    worker records the day."""
    from providers.stripe.adapter import StripeAdapter

    account = account_of(merchant, "stripe")
    pay(api, provider="stripe-sandbox", amount=500)
    real = StripeAdapter.fetch_settlement

    def slow_fetch(self, day):
        ReconciliationRun.objects.filter(account=account).update(claim_token="taken-over")
        return real(self, day)

    monkeypatch.setattr(StripeAdapter, "fetch_settlement", slow_fetch)
    assert reconcile(account).status == "skipped"
    run = ReconciliationRun.objects.get(account=account)
    assert (run.status, run.claim_token, run.lines) == ("running", "taken-over", 0)
    assert not ReconciliationLine.objects.exists()


# --- operators ---------------------------------------------------------------------------------
def test_an_operator_resolves_a_discrepancy_from_needs_attention_with_a_reason(
        api, merchant, client):
    from django.contrib.auth.models import User

    from payments.models import AuditLog
    from tests.payments.test_admin_operator import NEEDS_ATTENTION, action_url, staff_in

    account = account_of(merchant, "checkout")
    ledger.plant_unrecorded_charge(
        "checkout", merchant_account=sandbox_merchant_account(account), amount=4200,
        currency="USD")
    reconcile(account)
    [discrepancy] = Discrepancy.objects.all()
    resolve = action_url(discrepancy, "resolve")

    support = staff_in(client, "sam", "support")  # sees it, cannot act
    assert support.get(NEEDS_ATTENTION).status_code == 200
    assert support.get(admin_url(discrepancy)).status_code == 200
    assert support.post(resolve, {"reason": "x"}).status_code == 403

    client.force_login(User.objects.create_superuser("olivia", "o@example.invalid", "pw"))
    page = client.get(NEEDS_ATTENTION)
    assert discrepancy.pk.encode() in page.content and resolve.encode() in page.content
    assert b"(provider report vs our books) (1)" in page.content
    assert client.get(admin_url(discrepancy)).status_code == 200

    missing = client.post(resolve, {"reason": "   "})  # a reason is mandatory
    assert missing.status_code == 200 and b"required" in missing.content
    assert not AuditLog.objects.filter(action="discrepancy.resolve").exists()

    done = client.post(resolve, {"reason": "A manual sale made in the Hub; booked by finance "
                                           "(ticket FIN-42)."}, REMOTE_ADDR="198.51.100.7")
    assert done.status_code == 302
    discrepancy.refresh_from_db()
    assert (discrepancy.status, discrepancy.resolved_by) == ("resolved", "user:olivia")
    assert "FIN-42" in discrepancy.resolution
    audit = AuditLog.objects.get(action="discrepancy.resolve")
    assert (audit.actor, audit.object_id, audit.ip, audit.outcome) == (
        "user:olivia", discrepancy.pk, "198.51.100.7", "ok")
    assert audit.before["status"] == "open" and audit.after == {"status": "resolved"}
    assert "FIN-42" in audit.reason
    assert b"(provider report vs our books) (0)" in client.get(NEEDS_ATTENTION).content

    # the resolution stands when the day is run again, and a second resolve is refused
    reconcile(account)
    discrepancy.refresh_from_db()
    assert (discrepancy.status, discrepancy.resolved_by) == ("resolved", "user:olivia")
    client.post(resolve, {"reason": "again"})
    refused = AuditLog.objects.filter(action="discrepancy.resolve").exclude(pk=audit.pk).get()
    assert refused.outcome.startswith("refused:")


def admin_url(obj) -> str:
    from tests.conftest import admin_change_url

    return admin_change_url(obj)


def test_a_capture_the_report_loses_on_a_rerun_is_only_ours(api, merchant):
    """The day ran clean; the provider's corrected report no longer has a capture: the
    earlier run's own lines do not count as having seen it."""
    account = account_of(merchant, "stripe")
    paid = pay(api, provider="stripe-sandbox", amount=1000).json()
    attempt = PaymentAttempt.objects.get(payment_id=paid["id"])
    assert reconcile(account).open_discrepancies == 0
    ledger.plant_settlement_fault("stripe", attempt.provider_reference, omit=True)
    assert reconcile(account).open_discrepancies == 1
    assert found(account) == {("only_ours", attempt.id)}
