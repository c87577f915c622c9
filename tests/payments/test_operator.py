"""Operator actions (payments.services.operator): each goes through the state machine or the
owning service, writes its audit row in the same transaction, emits the merchant event its
change implies, and refuses (changing nothing) what does not fit the current state."""

import datetime as dt

import pytest
from django.db.models import F
from django.utils import timezone

from payments import state_machine as sm
from payments.errors import InvalidRequest, PaymentsError, StateConflict
from payments.models import (
    AuditLog,
    IdempotencyKey,
    Modification,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    Refund,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutbox,
)
from payments.money import format_amount
from payments.services import idempotency, operator, status_sync
from providers.sandboxes.models import SandboxCharge
from tests.conftest import pay
from tests.payments.test_unknown_modifications import (
    authorized,
    captured,
    done_then_dropped,
    provider_with,
)

pytestmark = pytest.mark.django_db

ALICE = "user:alice"
IP = "192.0.2.10"  # TEST-NET-1 (RFC 5737)


def unknown_attempt(resp) -> PaymentAttempt:
    assert resp.status_code == 202, resp.json()
    [attempt] = [a for a in resp.json()["attempts"] if a["status"] == "unknown"]
    return PaymentAttempt.objects.get(pk=attempt["id"])


def stuck_payment(api, settings, number: str = "4000000000000606", **fields) -> Payment:
    """A payment status sync gave up on: unresolved, flagged for an operator. Adyen cannot
    be asked, and its replays of these cards cannot tell within the schedule."""
    schedule, give_up = settings.STATUS_SYNC_SCHEDULE, settings.STATUS_SYNC_GIVE_UP_SECONDS
    settings.STATUS_SYNC_SCHEDULE, settings.STATUS_SYNC_GIVE_UP_SECONDS = [0], 0
    attempt = unknown_attempt(pay(api, number, provider="adyen-sandbox", **fields))
    payment = status_sync.attempt_sync(attempt.id)
    settings.STATUS_SYNC_SCHEDULE, settings.STATUS_SYNC_GIVE_UP_SECONDS = schedule, give_up
    assert payment.status == "unresolved" and payment.needs_operator
    return payment


def counts(payment: Payment) -> tuple[int, int, int]:
    return (PaymentEvent.objects.filter(payment=payment).count(),
            WebhookOutbox.objects.count(), AuditLog.objects.count())


def outbox_types(object_id: str) -> list[str]:
    return list(WebhookOutbox.objects.filter(object_id=object_id).order_by("id")
                .values_list("type", flat=True))


def the_audit_row(**filters) -> AuditLog:
    [row] = AuditLog.objects.filter(**filters)
    return row


def assert_consistent(payment: Payment) -> None:
    payment.refresh_from_db()
    assert sm.replay_events(payment)["status"] == payment.status
    assert payment.attempts.filter(status__in=["authorized", "captured"]).count() <= 1


# --- resolve an unresolved payment ---------------------------------------------------------
def test_resolve_as_captured_with_the_providers_reference(api, settings):
    payment = stuck_payment(api, settings, "4000000000000408")  # charged, answer lost
    [charge] = SandboxCharge.objects.all()  # what the operator reads at the provider
    result = operator.payment_resolve(payment=payment, outcome="captured",
                                      provider_reference=charge.provider_reference, actor=ALICE,
                                      reason="Adyen CA shows the capture", ip=IP)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured, payment.needs_operator) == (
        "succeeded", 1050, False)
    attempt = payment.attempts.get()
    assert (attempt.status, attempt.provider_reference) == ("captured", charge.provider_reference)
    assert outbox_types(payment.pk)[-1] == "payment.succeeded"
    assert result.events == ("payment.succeeded",)
    assert "payment.succeeded" in result.message
    captured_event = payment.events.get(type="payment.captured")
    assert captured_event.actor == ALICE and captured_event.data["reason"]
    assert payment.events.filter(type="payment.operator_flag_cleared", actor=ALICE).exists()
    row = the_audit_row(action="payment.resolve")
    assert (row.actor, row.ip, row.reason, row.object_id, row.outcome) == (
        ALICE, IP, "Adyen CA shows the capture", payment.pk, "ok")
    assert row.before["payment"]["status"] == "unresolved"
    assert row.before["attempt"]["status"] == "unknown"
    assert row.after["payment"]["status"] == "succeeded"
    assert row.after["attempt"]["provider_reference"] == charge.provider_reference
    assert_consistent(payment)


def test_resolve_as_authorized_requires_capture(api, settings):
    payment = stuck_payment(api, settings, "4000000000000408", capture_method="manual")
    operator.payment_resolve(payment=payment, outcome="authorized",
                             provider_reference="PSP-READ-BY-HAND", actor=ALICE,
                             reason="authorised at Adyen")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_capturable) == ("requires_capture", 1050)
    assert outbox_types(payment.pk)[-1] == "payment.requires_capture"
    assert_consistent(payment)


def test_resolve_as_failed_fails_the_payment_without_failover(api, settings):
    payment = stuck_payment(api, settings)  # timed out before the provider committed
    result = operator.payment_resolve(payment=payment, outcome="failed", actor=ALICE,
                                      reason="no payment under our reference at Adyen")
    payment.refresh_from_db()
    assert payment.status == "failed"
    assert payment.last_error["code"] == "provider_not_processed"
    assert [(a.status, a.error_code) for a in payment.attempts.all()] == [
        ("failed", "operator_not_charged")]  # nothing tried elsewhere
    assert result.events == ("payment.failed",)
    assert the_audit_row(action="payment.resolve").after["payment"]["status"] == "failed"
    assert_consistent(payment)


def test_resolve_can_leave_the_flag_set(api, settings):
    payment = stuck_payment(api, settings)
    operator.payment_resolve(payment=payment, outcome="failed", clear_flag=False,
                             actor=ALICE, reason="not charged; flag kept for the review")
    payment.refresh_from_db()
    assert payment.status == "failed" and payment.needs_operator


@pytest.mark.parametrize(("outcome", "reference", "error"), [
    ("captured", "", InvalidRequest),  # a kept charge needs the provider's reference
    ("refunded", "x", InvalidRequest),
])
def test_resolve_refuses_what_it_cannot_check(api, settings, outcome, reference, error):
    payment = stuck_payment(api, settings)
    before = counts(payment)
    with pytest.raises(error):
        operator.payment_resolve(payment=payment, outcome=outcome,
                                 provider_reference=reference, actor=ALICE, reason="r")
    payment.refresh_from_db()
    assert payment.status == "unresolved" and payment.needs_operator
    events, outbox, audits = counts(payment)
    assert (events, outbox) == before[:2]
    assert audits == before[2] + 1
    assert AuditLog.objects.get(action="payment.resolve").outcome.startswith("refused: ")


def test_resolving_a_payment_that_is_not_unresolved_is_refused_and_changes_nothing(api):
    payment = Payment.objects.get(pk=pay(api).json()["id"])  # succeeded
    before = counts(payment)
    with pytest.raises(StateConflict, match="succeeded"):
        operator.payment_resolve(payment=payment, outcome="failed", actor=ALICE,
                                 reason="wrong payment", ip=IP)
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert counts(payment)[:2] == before[:2]
    row = the_audit_row(action="payment.resolve")
    assert (row.actor, row.ip, row.reason) == (ALICE, IP, "wrong payment")
    assert row.outcome.startswith("refused: ") and "succeeded" in row.outcome
    assert "succeeded" in row.after["error"]


def test_a_reason_is_required_and_nothing_is_looked_at_without_one(api, settings):
    payment = stuck_payment(api, settings)
    before = counts(payment)
    with pytest.raises(InvalidRequest, match="reason"):
        operator.payment_resolve(payment=payment, outcome="failed", actor=ALICE,
                                 reason="   ")
    assert counts(payment) == before


def test_an_action_that_fails_midway_leaves_neither_change_nor_audit_row(
        api, settings, monkeypatch):
    payment = stuck_payment(api, settings, "4000000000000408")
    before = counts(payment)

    def broken_audit(**kwargs):
        raise RuntimeError("the audit table is unavailable")

    # the change is made, then its audit row cannot be written: both go
    monkeypatch.setattr(operator, "audit_record", broken_audit)
    with pytest.raises(RuntimeError):
        operator.payment_resolve(payment=payment, outcome="captured",
                                 provider_reference="PSP-1", actor=ALICE, reason="seen")
    payment.refresh_from_db()
    assert (payment.status, payment.needs_operator) == ("unresolved", True)
    assert payment.attempts.get().status == "unknown"
    assert counts(payment) == before


def test_a_second_successful_attempt_is_never_kept(api, settings):
    """At most one successful attempt per payment: an unknown attempt found charged while
    another attempt holds the charge is refused (the second charge is reversed, not kept)."""
    payment = stuck_payment(api, settings)
    unknown = payment.attempts.get()
    # A state no flow produces today (status sync reverses such a charge itself), made by
    # hand to prove the guard: another attempt of the payment holding a charge.
    PaymentAttempt.objects.create(payment=payment, provider_account=unknown.provider_account,
                                  status="authorized", provider_reference="PSP-OTHER")
    with pytest.raises(StateConflict, match="already holds"):
        operator.payment_resolve(payment=payment, outcome="captured",
                                 provider_reference="PSP-2", actor=ALICE, reason="seen")
    unknown.refresh_from_db()
    assert unknown.status == "unknown"


# --- ask the provider now -----------------------------------------------------------------
def test_sync_now_asks_the_provider_whatever_the_schedule(api, settings):
    attempt = unknown_attempt(pay(api, "4000000000000408", provider="stripe-sandbox"))
    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_sync_at=None)  # given up
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0  # the provider answers lookups again
    payment = Payment.objects.get(pk=attempt.payment_id)
    result = operator.sync_now(payment=payment, actor=ALICE, reason="Stripe is back", ip=IP)
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert result.events == ("payment.succeeded",)
    assert payment.events.get(type="payment.captured").actor == ALICE
    row = the_audit_row(action="payment.sync")
    assert (row.outcome, row.ip) == ("ok", IP)
    assert row.before["payment"]["status"] == "unresolved"
    assert row.after["payment"]["status"] == "succeeded"


def test_sync_now_asks_about_a_capture_given_up_on(api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, capture=done_then_dropped)
    api.post(f"/v1/payments/{pay_id}/capture")
    Modification.objects.filter(payment_id=pay_id).update(
        next_sync_at=None, created_at=F("created_at") - dt.timedelta(days=30))
    result = operator.sync_now(payment=Payment.objects.get(pk=pay_id), actor=ALICE,
                               reason="ask once more")
    assert Payment.objects.get(pk=pay_id).status == "succeeded"
    assert result.events == ("payment.succeeded",)


def test_sync_now_with_nothing_open_is_refused(api):
    payment = Payment.objects.get(pk=pay(api).json()["id"])
    with pytest.raises(StateConflict, match="Nothing"):
        operator.sync_now(payment=payment, actor=ALICE, reason="just in case")
    assert the_audit_row(action="payment.sync").outcome.startswith("refused: ")


# --- captures, voids and refunds stuck -----------------------------------------------------
@pytest.mark.parametrize(("done", "status", "event"), [
    (True, "succeeded", "payment.succeeded"),
    (False, "requires_capture", "payment.requires_capture"),
])
def test_settle_an_unknown_capture(api, monkeypatch, done, status, event):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, capture=done_then_dropped)
    api.post(f"/v1/payments/{pay_id}/capture")
    [mod] = Modification.objects.filter(payment_id=pay_id)
    assert mod.status == "unknown"
    result = operator.modification_resolve(modification=mod, succeeded=done, actor=ALICE,
                                           reason="read at Stripe", ip=IP)
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == status
    assert result.events == (event,)
    mod.refresh_from_db()
    assert mod.status == ("succeeded" if done else "failed")
    row = the_audit_row(action="capture.resolve")
    assert (row.object_type, row.object_id) == ("modification", mod.pk)
    assert (row.before["operation"]["status"], row.after["operation"]["status"]) == (
        "unknown", mod.status)
    assert_consistent(payment)


def test_settle_a_pending_void_as_done(api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, cancel=done_then_dropped)
    api.post(f"/v1/payments/{pay_id}/cancel")
    [mod] = Modification.objects.filter(payment_id=pay_id)
    operator.modification_resolve(modification=mod, succeeded=True, actor=ALICE,
                                  reason="voided at Stripe")
    assert Payment.objects.get(pk=pay_id).status == "canceled"
    assert outbox_types(pay_id)[-1] == "payment.canceled"


def test_settling_a_settled_capture_is_refused(api):
    pay_id = authorized(api, "stripe-sandbox")
    api.post(f"/v1/payments/{pay_id}/capture")
    [mod] = Modification.objects.filter(payment_id=pay_id)
    payment = Payment.objects.get(pk=pay_id)
    before = counts(payment)
    with pytest.raises(StateConflict, match="succeeded already"):
        operator.modification_resolve(modification=mod, succeeded=False, actor=ALICE,
                                      reason="r")
    assert counts(payment)[:2] == before[:2]
    assert Modification.objects.get(pk=mod.pk).status == "succeeded"


def test_settle_an_unresolved_refund_as_done(api, monkeypatch):
    pay_id = captured(api, "stripe-sandbox")
    provider_with(monkeypatch, refund=done_then_dropped)
    refund_id = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()["id"]
    refund = Refund.objects.get(pk=refund_id)
    assert refund.status == "unresolved"
    result = operator.refund_resolve(refund=refund, succeeded=True, provider_reference="re_x",
                                     actor=ALICE, reason="in Stripe's dashboard")
    refund.refresh_from_db()
    assert (refund.status, refund.provider_reference) == ("succeeded", "re_x")
    assert Payment.objects.get(pk=pay_id).amount_refunded == 300
    assert result.events == ("refund.succeeded",)
    row = the_audit_row(action="refund.resolve")
    assert row.before["payment"]["amount_refunded"] == 0
    assert row.after["payment"]["amount_refunded"] == 300


def test_settle_an_unresolved_refund_as_not_done(api, monkeypatch):
    pay_id = captured(api, "stripe-sandbox")
    provider_with(monkeypatch, refund=done_then_dropped)
    refund = Refund.objects.get(pk=api.post("/v1/refunds", {"payment": pay_id}).json()["id"])
    operator.refund_resolve(refund=refund, succeeded=False, actor=ALICE, reason="none there")
    refund.refresh_from_db()
    assert (refund.status, refund.failure_code) == ("failed", "operator_not_refunded")
    assert Payment.objects.get(pk=pay_id).amount_refunded == 0
    assert outbox_types(refund.pk)[-1] == "refund.failed"


def test_settling_a_settled_refund_is_refused(api):
    pay_id = captured(api, "stripe-sandbox")
    refund = Refund.objects.get(pk=api.post("/v1/refunds", {"payment": pay_id}).json()["id"])
    with pytest.raises(StateConflict):
        operator.refund_resolve(refund=refund, succeeded=False, actor=ALICE, reason="r")
    assert Refund.objects.get(pk=refund.pk).status == "succeeded"


# --- refund, void ------------------------------------------------------------------------
def test_refund_through_the_refund_service(api):
    payment = Payment.objects.get(pk=captured(api, "stripe-sandbox"))
    result = operator.refund_issue(payment=payment, amount=250, actor=ALICE,
                                   reason="goodwill, ticket 123", ip=IP)
    refund = Refund.objects.get(payment=payment)
    assert (refund.status, refund.amount) == ("succeeded", 250)
    assert Payment.objects.get(pk=payment.pk).amount_refunded == 250
    assert result.events == ("refund.succeeded",)
    assert format_amount(250, "USD") in result.message
    row = the_audit_row(action="payment.refund")
    assert row.after["refund"]["id"] == refund.pk
    assert row.after["refund"]["amount"] == 250


@pytest.mark.parametrize("amount", [None, 5000])
def test_refund_refusals_change_nothing(api, amount):
    payment = Payment.objects.get(pk=authorized(api, "stripe-sandbox"))
    if amount:  # more than was captured
        payment = Payment.objects.get(pk=captured(api, "stripe-sandbox"))
    before = counts(payment)
    with pytest.raises(PaymentsError):
        operator.refund_issue(payment=payment, amount=amount, actor=ALICE, reason="r")
    assert not Refund.objects.filter(payment=payment).exists()
    assert counts(payment)[:2] == before[:2]
    assert the_audit_row(action="payment.refund").outcome.startswith("refused: ")


def test_void_an_authorization(api):
    payment = Payment.objects.get(pk=authorized(api, "stripe-sandbox"))
    result = operator.payment_void(payment=payment, actor=ALICE, reason="merchant asked")
    payment.refresh_from_db()
    assert payment.status == "canceled"
    assert result.events == ("payment.processing", "payment.canceled")
    row = the_audit_row(action="payment.cancel")
    assert row.after["operation"]["kind"] == "cancel"


def test_voiding_a_captured_payment_is_refused(api):
    payment = Payment.objects.get(pk=captured(api, "stripe-sandbox"))
    with pytest.raises(StateConflict):
        operator.payment_void(payment=payment, actor=ALICE, reason="r")
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"
    assert not Modification.objects.filter(payment=payment).exists()


# --- the flag, keys, events ----------------------------------------------------------------
def test_clear_the_flag(api, settings):
    payment = stuck_payment(api, settings)
    result = operator.flag_clear(payment=payment, actor=ALICE, reason="handled by phone")
    payment.refresh_from_db()
    assert not payment.needs_operator and payment.status == "unresolved"
    assert result.events == ()
    event = payment.events.get(type="payment.operator_flag_cleared")
    assert (event.actor, event.data["reason"]) == (ALICE, "handled by phone")
    row = the_audit_row(action="payment.clear_flag")
    assert (row.before["payment"]["needs_operator"], row.after["payment"]["needs_operator"]) \
        == (True, False)
    with pytest.raises(StateConflict, match="not flagged"):
        operator.flag_clear(payment=payment, actor=ALICE, reason="again")


def in_flight_key(merchant, *, seconds_ago: int, **fields) -> IdempotencyKey:
    claim = idempotency.claim(merchant=merchant, livemode=False, key=f"k-{seconds_ago}",
                              fingerprint="f" * 64)
    IdempotencyKey.objects.filter(pk=claim.row.pk).update(
        created_at=timezone.now() - dt.timedelta(seconds=seconds_ago), **fields)
    return IdempotencyKey.objects.get(pk=claim.row.pk)


def test_release_a_wedged_idempotency_key(merchant, settings):
    key = in_flight_key(merchant, seconds_ago=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS + 60)
    assert list(idempotency.wedged()) == [key]
    operator.idempotency_key_release(key=key, actor=ALICE, reason="request died, checked", ip=IP)
    assert not IdempotencyKey.objects.filter(pk=key.pk).exists()
    row = the_audit_row(action="idempotency_key.release")
    assert (row.object_id, row.before["key"], row.before["object_id"]) == (
        str(key.pk), key.key, "")


@pytest.mark.parametrize(("seconds_ago", "fields", "message"), [
    (10, {}, "may still be running"),
    (3600, {"object_id": "pay_recorded", "recoverable": True}, "answered from it"),
    (3600, {"object_id": "pay_recorded"}, "Settle pay_recorded"),
    (3600, {"completed_at": timezone.now()}, "finished"),
])
def test_keys_that_are_not_wedged_or_began_something_are_not_released(
        merchant, seconds_ago, fields, message):
    key = in_flight_key(merchant, seconds_ago=seconds_ago, **fields)
    with pytest.raises(StateConflict, match=message):
        operator.idempotency_key_release(key=key, actor=ALICE, reason="r")
    assert IdempotencyKey.objects.filter(pk=key.pk).exists()
    assert the_audit_row(action="idempotency_key.release").outcome.startswith("refused: ")


def endpoint(merchant, **fields) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(merchant=merchant, livemode=False,
                               url="https://merchant.example/hooks", enabled_events=["*"],
                               **fields)
    endpoint.set_secrets("whsec_test_only")
    endpoint.save()
    return endpoint


def test_redeliver_an_event(api, merchant):
    payment_id = pay(api).json()["id"]
    event = WebhookOutbox.objects.filter(object_id=payment_id).last()
    hook = endpoint(merchant)
    result = operator.event_redeliver(event=event, actor=ALICE, reason="merchant lost it")
    delivery = WebhookDelivery.objects.get(event=event, endpoint=hook)
    assert delivery.status == "pending" and delivery.next_attempt_at is not None
    assert event.event_id in result.message
    row = the_audit_row(action="event.redeliver")
    assert (row.object_type, row.object_id, row.after) == (
        "event", event.event_id, {"deliveries_due": 1})


def test_redelivering_to_no_endpoint_is_refused(api, merchant):
    event = WebhookOutbox.objects.filter(object_id=pay(api).json()["id"]).last()
    endpoint(merchant, disabled=True, disabled_reason="failing for 3 days")
    with pytest.raises(StateConflict, match="No enabled webhook endpoint"):
        operator.event_redeliver(event=event, actor=ALICE, reason="r")
    assert not WebhookDelivery.objects.exists()
