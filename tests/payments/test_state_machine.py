"""`payments.state_machine`: the one place where a payment or a refund changes state.

Every (from, to) pair of statuses is tried: the allowed-transitions tables decide, each
allowed transition appends exactly one event (and its outbox row), and a refused one writes
nothing at all. The database constraints that back the invariants of DESIGN.md are checked
directly.
"""

from __future__ import annotations

import itertools
import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from payments import state_machine as sm
from payments.api.serializers import PaymentOutput
from payments.errors import StateConflict
from payments.models import (
    AttemptStatus,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookOutbox,
)
from payments.services.merchants import merchant_create
from providers.models import ProviderAccount
from tests.conftest import make_card, pay

S = PaymentStatus
R = RefundStatus
PAYMENT_PAIRS = list(itertools.product(S.values, S.values))
REFUND_PAIRS = list(itertools.product(R.values, R.values))
WEBHOOK_TYPES = {
    S.PROCESSING: "payment.processing",
    S.REQUIRES_CAPTURE: "payment.requires_capture",
    S.SUCCEEDED: "payment.succeeded",
    S.FAILED: "payment.failed",
    S.CANCELED: "payment.canceled",
    S.UNRESOLVED: "payment.unresolved",
}
TERMINAL = {S.SUCCEEDED, S.CANCELED, S.FAILED}


# --- helpers ------------------------------------------------------------------------------
def new_payment(merchant, status: str = S.REQUIRES_CONFIRMATION, *, amount: int = 1000,
                captured: int = 0, refunded: int = 0) -> Payment:
    """A payment forced into `status` (test set-up only: the state machine is under test).

    The forced change is logged as one set-up event, so the event log still replays."""
    with transaction.atomic():
        payment = sm.create_payment(merchant=merchant, livemode=False, amount=amount,
                                    currency="USD")
    if (status, captured, refunded) != (S.REQUIRES_CONFIRMATION, 0, 0):
        Payment.objects.filter(pk=payment.pk).update(status=status, amount_captured=captured,
                                                     amount_refunded=refunded)
        PaymentEvent.objects.create(
            payment=payment, type="test.setup", from_status=S.REQUIRES_CONFIRMATION,
            to_status=status, actor="test",
            data={"amount_capturable": 0, "amount_captured": captured,
                  "amount_refunded": refunded})
    payment.refresh_from_db()
    return payment


def new_refund(payment: Payment, status: str = R.PENDING, amount: int = 300) -> Refund:
    return Refund.objects.create(merchant_id=payment.merchant_id, livemode=payment.livemode,
                                 payment=payment, amount=amount, currency=payment.currency,
                                 status=status)


def row(payment: Payment) -> dict:
    return Payment.objects.filter(pk=payment.pk).values().get()


def events(payment: Payment) -> list[tuple]:
    return list(PaymentEvent.objects.filter(payment=payment)
                .values_list("id", "type", "from_status", "to_status"))


def outbox(merchant) -> list[WebhookOutbox]:
    return list(WebhookOutbox.objects.filter(merchant=merchant).order_by("id"))


def state_of(payment: Payment) -> dict:
    payment.refresh_from_db()
    return {"status": payment.status, "amount_capturable": payment.amount_capturable,
            "amount_captured": payment.amount_captured,
            "amount_refunded": payment.amount_refunded}


# --- the tables -----------------------------------------------------------------------------
def test_tables_cover_every_status():
    assert set(sm.PAYMENT_TRANSITIONS) == set(S.values)
    assert set(sm.REFUND_TRANSITIONS) == set(R.values)
    for table, values in ((sm.PAYMENT_TRANSITIONS, S.values), (sm.REFUND_TRANSITIONS, R.values)):
        for frm, targets in table.items():
            assert targets <= set(values), frm
            assert frm not in targets, f"{frm} → {frm} is not a transition"


def test_terminal_statuses_are_succeeded_canceled_failed():
    assert sm.TERMINAL_PAYMENT_STATUSES == TERMINAL
    for status in TERMINAL:
        assert sm.PAYMENT_TRANSITIONS[status] == frozenset()
    assert sm.REFUND_TRANSITIONS[R.SUCCEEDED] == frozenset()
    assert sm.REFUND_TRANSITIONS[R.FAILED] == frozenset()


def test_the_documented_lifecycle_is_allowed():
    path = [S.REQUIRES_CONFIRMATION, S.PROCESSING, S.REQUIRES_CAPTURE, S.PROCESSING,
            S.SUCCEEDED]
    for frm, to in itertools.pairwise(path):
        assert to in sm.PAYMENT_TRANSITIONS[frm], (frm, to)
    # no status may skip the provider call straight to a provider outcome
    for outcome in (S.SUCCEEDED, S.REQUIRES_CAPTURE, S.FAILED, S.UNRESOLVED):
        assert outcome not in sm.PAYMENT_TRANSITIONS[S.REQUIRES_CONFIRMATION]


# --- payments: every pair -------------------------------------------------------------------
@pytest.mark.parametrize(("frm", "to"), PAYMENT_PAIRS)
def test_payment_transition_pair(merchant, frm, to):
    payment = new_payment(merchant, frm)
    before_row, before_events, before_outbox = row(payment), events(payment), outbox(merchant)
    allowed = to in sm.PAYMENT_TRANSITIONS[frm]

    with transaction.atomic():
        if not allowed:
            with pytest.raises(StateConflict) as excinfo:
                sm.transition_payment(payment, to, event="test.move", actor="tester",
                                      updates={"description": "moved"})
            assert excinfo.value.status == 409
            assert excinfo.value.code == "payment_state_invalid"
            # refused inside a transaction that goes on: nothing was written before the check
            assert row(payment) == before_row
            assert events(payment) == before_events
            assert outbox(merchant) == before_outbox
            assert payment.status == frm  # the caller's copy is untouched too
            return
        result = sm.transition_payment(payment, to, event="test.move", actor="tester",
                                       updates={"description": "moved"}, data={"why": "test"})

    assert result.status == to
    assert payment.status == to  # the caller's copy follows
    stored = Payment.objects.get(pk=payment.pk)
    assert stored.status == to
    assert stored.description == "moved"

    new_events = PaymentEvent.objects.filter(payment=payment).exclude(
        id__in=[e[0] for e in before_events])
    [event] = new_events
    assert (event.type, event.from_status, event.to_status, event.actor) == (
        "test.move", frm, to, "tester")
    assert event.data["why"] == "test"
    assert {k: event.data[k] for k in ("amount_capturable", "amount_captured",
                                       "amount_refunded")} == {
        "amount_capturable": stored.amount_capturable,
        "amount_captured": stored.amount_captured,
        "amount_refunded": stored.amount_refunded,
    }

    written = outbox(merchant)[len(before_outbox):]
    if to in WEBHOOK_TYPES:
        [message] = written
        assert message.type == WEBHOOK_TYPES[to]
        assert message.livemode is False
        assert message.event_id.startswith("evt_")
        assert message.payload["type"] == WEBHOOK_TYPES[to]
        assert message.payload["id"] == message.event_id
        assert message.payload["data"]["object"]["id"] == payment.id
        assert message.payload["data"]["object"]["status"] == to
        assert message.payload["created"] == int(message.created_at.timestamp())
        assert message.payload["data"]["object"] == PaymentOutput(stored).data
        assert message.object_id == payment.id
        assert message.relayed_at is None
    else:
        assert written == []


def test_every_status_has_a_pair_that_is_refused():
    # sanity of the parametrization above: the table is not "everything allowed"
    refused = [(f, t) for f, t in PAYMENT_PAIRS if t not in sm.PAYMENT_TRANSITIONS[f]]
    assert {f for f, _ in refused} == set(S.values)
    assert all((s, s) in refused for s in S.values)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_statuses_accept_no_status_change(merchant, terminal):
    payment = new_payment(merchant, terminal, captured=1000 if terminal == S.SUCCEEDED else 0)
    before_row, before_events = row(payment), events(payment)
    for to in S.values:
        with transaction.atomic():
            with pytest.raises(StateConflict):
                sm.transition_payment(payment, to, event="test.move")
    assert row(payment) == before_row
    assert events(payment) == before_events
    assert outbox(merchant) == []


@pytest.mark.parametrize("status", S.values)
def test_same_status_update(merchant, status):
    """`to_status=None` books a change without moving (a refund on a succeeded payment);
    a canceled or failed payment never changes again."""
    captured = 1000 if status == S.SUCCEEDED else 0
    payment = new_payment(merchant, status, captured=captured)
    before_row, before_events = row(payment), events(payment)
    updates = {"amount_refunded": 100} if status == S.SUCCEEDED else {"description": "noted"}

    with transaction.atomic():
        if status in (S.CANCELED, S.FAILED):
            with pytest.raises(StateConflict):
                sm.transition_payment(payment, None, event="test.note", updates=updates)
            assert row(payment) == before_row
            assert events(payment) == before_events
            assert outbox(merchant) == []
            return
        sm.transition_payment(payment, None, event="test.note", updates=updates)

    stored = Payment.objects.get(pk=payment.pk)
    assert stored.status == status
    for name, value in updates.items():
        assert getattr(stored, name) == value
    [event] = PaymentEvent.objects.filter(payment=payment).exclude(
        id__in=[e[0] for e in before_events])
    assert (event.type, event.from_status, event.to_status) == ("test.note", status, status)
    assert event.data["amount_refunded"] == stored.amount_refunded
    assert outbox(merchant) == []  # no status change, no webhook


def test_transition_checks_the_committed_status_not_a_stale_copy(merchant):
    payment = new_payment(merchant, S.REQUIRES_CONFIRMATION)
    stale = Payment.objects.get(pk=payment.pk)
    Payment.objects.filter(pk=payment.pk).update(status=S.CANCELED)
    with transaction.atomic():
        with pytest.raises(StateConflict):
            sm.transition_payment(stale, S.PROCESSING, event="test.move")
    assert row(payment)["status"] == S.CANCELED


def test_each_transition_appends_exactly_one_event(merchant):
    payment = new_payment(merchant)
    path = [S.PROCESSING, S.REQUIRES_CAPTURE, S.PROCESSING, S.UNRESOLVED, S.SUCCEEDED]
    for to in path:
        with transaction.atomic():
            sm.transition_payment(payment, to, event=f"test.{to}")
    log = events(payment)
    assert [(e[2], e[3]) for e in log] == list(itertools.pairwise(
        ["", S.REQUIRES_CONFIRMATION, *path]))
    assert [m.type for m in outbox(merchant)] == [
        "payment.processing", "payment.requires_capture", "payment.processing",
        "payment.unresolved", "payment.succeeded"]
    assert sm.replay_events(payment)["status"] == S.SUCCEEDED


# --- outside a transaction ------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_transitions_outside_a_transaction_raise_runtime_error():
    merchant, _, _ = merchant_create(name="Autocommit shop", sandbox_accounts=True)
    assert not connection.in_atomic_block
    payment = new_payment(merchant, S.REQUIRES_CONFIRMATION)
    with pytest.raises(RuntimeError):
        sm.transition_payment(payment, S.PROCESSING, event="test.move")
    with pytest.raises(RuntimeError):
        sm.transition_payment(payment, None, event="test.note")
    assert row(payment)["status"] == S.REQUIRES_CONFIRMATION
    assert len(events(payment)) == 1

    paid_payment = new_payment(merchant, S.SUCCEEDED, captured=1000)
    refund = new_refund(paid_payment)
    with pytest.raises(RuntimeError):
        sm.transition_refund(refund, R.SUCCEEDED)
    refund.refresh_from_db()
    assert refund.status == R.PENDING
    assert row(paid_payment)["amount_refunded"] == 0
    assert not WebhookOutbox.objects.filter(merchant=merchant).exists()


# --- refunds: every pair --------------------------------------------------------------------
@pytest.mark.parametrize(("frm", "to"), REFUND_PAIRS)
def test_refund_transition_pair(merchant, frm, to):
    # a refund that already succeeded is already booked on the payment
    payment = new_payment(merchant, S.SUCCEEDED, captured=1000,
                          refunded=300 if frm == R.SUCCEEDED else 0)
    refund = new_refund(payment, frm, amount=300)
    refund_row = Refund.objects.filter(pk=refund.pk).values().get()
    before_row, before_events, before_outbox = row(payment), events(payment), outbox(merchant)
    allowed = to in sm.REFUND_TRANSITIONS[frm]

    with transaction.atomic():
        if not allowed:
            with pytest.raises(StateConflict):
                sm.transition_refund(refund, to, updates={"failure_code": "x"})
            assert Refund.objects.filter(pk=refund.pk).values().get() == refund_row
            assert row(payment) == before_row
            assert events(payment) == before_events
            assert outbox(merchant) == before_outbox
            assert refund.status == frm
            return
        result = sm.transition_refund(refund, to, actor="tester",
                                      updates={"provider_reference": "sbx_1"})

    assert result.status == to == refund.status
    stored = Refund.objects.get(pk=refund.pk)
    assert stored.status == to
    assert stored.provider_reference == "sbx_1"
    after = Payment.objects.get(pk=payment.pk)
    assert after.status == S.SUCCEEDED
    expected_refunded = 300 if to == R.SUCCEEDED else 0
    assert after.amount_refunded == expected_refunded

    [event] = PaymentEvent.objects.filter(payment=payment).exclude(
        id__in=[e[0] for e in before_events])
    assert (event.type, event.from_status, event.to_status, event.actor) == (
        f"refund.{to}", S.SUCCEEDED, S.SUCCEEDED, "tester")
    assert event.data["refund"] == refund.id
    assert event.data["from_status"] == frm
    assert event.data["amount_refunded"] == expected_refunded

    [message] = outbox(merchant)[len(before_outbox):]
    assert message.type == f"refund.{to}"
    assert message.payload["data"]["object"]["id"] == refund.id
    assert message.payload["data"]["object"]["status"] == to


def test_succeeded_refunds_add_up_on_the_payment_even_from_stale_copies(merchant):
    payment = new_payment(merchant, S.SUCCEEDED, captured=1000)
    first, second = new_refund(payment, amount=300), new_refund(payment, amount=200)
    # both refunds carry a payment copy that says amount_refunded=0
    first = Refund.objects.select_related("payment").get(pk=first.pk)
    second = Refund.objects.select_related("payment").get(pk=second.pk)
    with transaction.atomic():
        sm.transition_refund(first, R.SUCCEEDED)
    with transaction.atomic():
        sm.transition_refund(second, R.UNRESOLVED)
    with transaction.atomic():
        sm.transition_refund(second, R.SUCCEEDED)
    assert row(payment)["amount_refunded"] == 500
    assert sm.replay_events(payment)["amount_refunded"] == 500


def test_succeeded_refund_is_booked_atomically_with_its_status(merchant):
    """If the payment cannot take the refund (the amounts constraint), the refund does not
    become succeeded either: both change together or not at all."""
    payment = new_payment(merchant, S.SUCCEEDED, captured=1000, refunded=900)
    refund = new_refund(payment, amount=300)
    before_row, before_events = row(payment), events(payment)
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            sm.transition_refund(refund, R.SUCCEEDED)
    refund.refresh_from_db()
    assert refund.status == R.PENDING
    assert row(payment) == before_row
    assert events(payment) == before_events
    assert outbox(merchant) == []


def test_failed_refund_books_nothing(merchant):
    payment = new_payment(merchant, S.SUCCEEDED, captured=1000)
    refund = new_refund(payment, amount=300)
    with transaction.atomic():
        sm.transition_refund(refund, R.FAILED, updates={"failure_code": "provider_unavailable"})
    assert row(payment)["amount_refunded"] == 0
    with transaction.atomic():
        with pytest.raises(StateConflict):
            sm.transition_refund(refund, R.SUCCEEDED)
    assert row(payment)["amount_refunded"] == 0


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_concurrent_succeeded_refunds_never_lose_an_update():
    merchant, _, _ = merchant_create(name="Concurrent refunds shop", sandbox_accounts=True)
    payment = new_payment(merchant, S.SUCCEEDED, captured=1000)
    refunds = [new_refund(payment, amount=100) for _ in range(8)]
    barrier = threading.Barrier(len(refunds))
    errors: list[Exception] = []

    def book(refund: Refund) -> None:
        try:
            barrier.wait(timeout=10)
            with transaction.atomic():
                sm.transition_refund(refund, R.SUCCEEDED)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=book, args=(r,)) for r in refunds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert row(payment)["amount_refunded"] == 800
    assert sm.replay_events(payment)["amount_refunded"] == 800
    assert [e[1] for e in events(payment)][2:] == ["refund.succeeded"] * len(refunds)


# --- the event log replays to the current state ---------------------------------------------
def test_replay_after_a_full_lifecycle_through_the_api(api):
    pm = make_card(api)
    resp = api.post("/v1/payments", {"amount": 1000, "currency": "USD", "payment_method": pm,
                                     "capture_method": "manual"})
    assert resp.status_code == 200, resp.json()
    payment = Payment.objects.get(pk=resp.json()["id"])
    assert sm.replay_events(payment) == state_of(payment)

    assert api.post(f"/v1/payments/{payment.id}/confirm", {}).json()["status"] == (
        "requires_capture")
    assert sm.replay_events(payment) == state_of(payment)
    assert state_of(payment)["amount_capturable"] == 1000

    assert api.post(f"/v1/payments/{payment.id}/capture",
                    {"amount_to_capture": 700}).json()["status"] == "succeeded"
    assert sm.replay_events(payment) == state_of(payment)

    for amount in (100, 250):
        resp = api.post("/v1/refunds", {"payment": payment.id, "amount": amount})
        assert resp.status_code == 200, resp.json()
        assert sm.replay_events(payment) == state_of(payment)

    assert state_of(payment) == {"status": "succeeded", "amount_capturable": 0,
                                 "amount_captured": 700, "amount_refunded": 350}
    assert sm.replay_events(payment) == state_of(payment)
    log = list(payment.events.order_by("id").values_list("from_status", "to_status"))
    assert log[0] == ("", "requires_confirmation")
    for (_, to), (frm, _) in itertools.pairwise(log):
        assert frm == to  # every event starts where the previous one ended
    assert ("processing", "requires_capture") in log
    assert ("processing", "succeeded") in log


@pytest.mark.parametrize(("number", "fields", "then"), [
    ("4242424242424242", {}, None),
    ("4242424242424242", {"capture_method": "manual"}, "cancel"),
    ("4000000000000002", {}, None),
    ("4000000000000507", {}, None),
    ("4000000000000408", {}, None),
])
def test_replay_matches_after_other_flows(api, number, fields, then):
    resp = pay(api, number, **fields)
    payment_id = (resp.json().get("payment") or resp.json())["id"]
    if then:
        assert api.post(f"/v1/payments/{payment_id}/{then}", {}).status_code == 200
    payment = Payment.objects.get(pk=payment_id)
    assert sm.replay_events(payment) == state_of(payment)


def test_replay_detects_a_broken_log(merchant):
    payment = new_payment(merchant)
    with transaction.atomic():
        sm.transition_payment(payment, S.PROCESSING, event="test.move")
    PaymentEvent.objects.create(payment=payment, type="forged", from_status=S.REQUIRES_CAPTURE,
                                to_status=S.SUCCEEDED)
    with pytest.raises(ValueError):
        sm.replay_events(payment)


# --- database constraints -------------------------------------------------------------------
def test_amounts_constraint_rejects_refunded_above_captured(merchant):
    payment = new_payment(merchant, S.SUCCEEDED, captured=600)
    with pytest.raises(IntegrityError, match="payment_amounts_consistent"):
        with transaction.atomic():
            Payment.objects.filter(pk=payment.pk).update(
                amount_refunded=F("amount_captured") + 1)
    # the boundary itself is fine
    Payment.objects.filter(pk=payment.pk).update(amount_refunded=600)
    assert row(payment)["amount_refunded"] == 600


@pytest.mark.parametrize("values", [
    {"amount_captured": 1001},
    {"amount_captured": -1},
    {"amount_refunded": -1},
    {"amount": 0},
])
def test_amounts_constraint_rejects_other_impossible_amounts(merchant, values):
    payment = new_payment(merchant, S.SUCCEEDED, captured=500)
    with pytest.raises(IntegrityError, match="payment_amounts_consistent"):
        with transaction.atomic():
            Payment.objects.filter(pk=payment.pk).update(**values)


def test_amounts_constraint_holds_through_the_state_machine(merchant):
    payment = new_payment(merchant, S.SUCCEEDED, captured=500)
    before_events = events(payment)
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            sm.transition_payment(payment, None, event="refund.succeeded",
                                  updates={"amount_refunded": 501})
    assert row(payment)["amount_refunded"] == 0
    assert events(payment) == before_events


def _account(merchant) -> ProviderAccount:
    return ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")


@pytest.mark.parametrize(("first", "second"), [
    (AttemptStatus.AUTHORIZED, AttemptStatus.AUTHORIZED),
    (AttemptStatus.AUTHORIZED, AttemptStatus.CAPTURED),
    (AttemptStatus.CAPTURED, AttemptStatus.CAPTURED),
    (AttemptStatus.CAPTURED, AttemptStatus.AUTHORIZED),
])
def test_at_most_one_successful_attempt_per_payment(merchant, first, second):
    payment = new_payment(merchant, S.PROCESSING)
    account = _account(merchant)
    PaymentAttempt.objects.create(payment=payment, provider_account=account, status=first)
    with pytest.raises(IntegrityError, match="one_successful_attempt_per_payment"):
        with transaction.atomic():
            PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                          status=second)
    assert payment.attempts.count() == 1


def test_unsuccessful_attempts_are_not_limited(merchant):
    payment = new_payment(merchant, S.PROCESSING)
    account = _account(merchant)
    for status in (AttemptStatus.PENDING, AttemptStatus.DECLINED, AttemptStatus.DECLINED,
                   AttemptStatus.FAILED, AttemptStatus.FAILED, AttemptStatus.UNKNOWN,
                   AttemptStatus.UNKNOWN, AttemptStatus.VOIDED, AttemptStatus.VOIDED):
        PaymentAttempt.objects.create(payment=payment, provider_account=account, status=status)
    winner = PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                           status=AttemptStatus.AUTHORIZED)
    # a later attempt turning successful while one already is: refused by the database
    loser = payment.attempts.filter(status=AttemptStatus.UNKNOWN).first()
    loser.status = AttemptStatus.CAPTURED
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            loser.save()
    # once the first is voided, another may succeed
    winner.status = AttemptStatus.VOIDED
    winner.save()
    loser.save()
    assert payment.attempts.filter(status__in=["authorized", "captured"]).count() == 1


def test_successful_attempts_on_different_payments_are_independent(merchant):
    account = _account(merchant)
    for _ in range(2):
        payment = new_payment(merchant, S.SUCCEEDED, captured=1000)
        PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                      status=AttemptStatus.CAPTURED)
    assert PaymentAttempt.objects.filter(payment__merchant=merchant,
                                         status=AttemptStatus.CAPTURED).count() == 2



# --- operator flag --------------------------------------------------------------------------
def test_flagging_tells_the_merchant_once_and_clearing_records_who_and_why(merchant):
    payment = new_payment(merchant, S.UNRESOLVED)
    for _ in range(2):  # raised twice (two sync passes): one flag, one merchant event
        with transaction.atomic():
            sm.flag_for_operator(payment.pk, "payment.flagged_for_operator", actor="status_sync",
                                 data={"why": "gave up"})
    payment.refresh_from_db()
    assert payment.needs_operator is True
    [attention] = [m for m in outbox(merchant) if m.type == "payment.needs_attention"]
    assert attention.object_id == payment.id
    assert attention.payload["data"]["object"]["status"] == S.UNRESOLVED

    with transaction.atomic():
        assert sm.clear_operator_flag(payment.pk, actor="user:alice", reason="checked") is True
    with transaction.atomic():
        assert sm.clear_operator_flag(payment.pk, actor="user:alice", reason="again") is False
    payment.refresh_from_db()
    assert payment.needs_operator is False
    cleared = payment.events.get(type="payment.operator_flag_cleared")
    assert (cleared.actor, cleared.data["reason"]) == ("user:alice", "checked")
    assert sm.replay_events(payment)["status"] == S.UNRESOLVED

    with transaction.atomic():  # flagged again later: the merchant hears it again
        sm.flag_for_operator(payment.pk, "payment.flagged_for_operator", actor="status_sync",
                             data={"why": "gave up"})
    assert [m.type for m in outbox(merchant)].count("payment.needs_attention") == 2
