"""A request that died in flight does not wedge its Idempotency-Key (docs/api.md, "Idempotency").

A process killed mid-request leaves its key in flight. Once the key has been in flight for
longer than any request can last (IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS), a retry recovers
it: with nothing written by the dead request it runs the request afresh; with an object
written (recorded on the key in the same transaction) it answers from that object as it is
now, stores that answer, and never does the work a second time.

A killed process is simulated by KeyboardInterrupt, which no `except Exception` catches: the
dead request's writes that committed stay, nothing after them happens.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from payments.api import routing as routing_api
from payments.api import views as api_views
from payments.models import (
    IdempotencyKey,
    Modification,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    Refund,
)
from payments.services import idempotency, status_sync
from payments.services.idempotency import request_fingerprint
from payments.services.payments import payment_create
from providers import gateway
from providers.models import RoutingRule
from providers.sandboxes.models import SandboxCharge
from tests.conftest import Api, make_card
from tests.threads import in_threads

TIMEOUT = dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS)
TTL = dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)


def _charges_for(payment_id: str) -> int:
    references = PaymentAttempt.objects.filter(payment_id=payment_id).values_list("id", flat=True)
    return SandboxCharge.objects.filter(reference__in=list(references)).count()


def _key(merchant, key: str) -> IdempotencyKey:
    return IdempotencyKey.objects.get(merchant=merchant, livemode=False, key=key)


def _abandon(merchant, key: str, *, by: dt.timedelta = TIMEOUT + dt.timedelta(seconds=5)):
    """Make the key's claim look as old as one whose request died `by` ago."""
    IdempotencyKey.objects.filter(merchant=merchant, key=key).update(
        created_at=timezone.now() - by)


def _charge_then_die(monkeypatch) -> None:
    """The provider call goes through (the card is charged), then the process dies before
    the answer is recorded."""
    real_call = gateway.call

    def charge_then_die(account, operation, request):
        real_call(account, operation, request)
        raise KeyboardInterrupt("web worker killed")

    monkeypatch.setattr(gateway, "call", charge_then_die)


def _die_after(monkeypatch, module, name: str) -> None:
    """`module.name` does its work, then the process dies (before the key is completed)."""
    real = getattr(module, name)

    def then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt("web worker killed")

    monkeypatch.setattr(module, name, then_die)


@pytest.fixture
def body(api) -> dict:
    return {"amount": 1050, "currency": "USD", "payment_method": make_card(api),
            "confirm": True, "provider": "stripe-sandbox"}


# --- died before writing anything: run afresh -----------------------------------------------
@pytest.mark.django_db
def test_a_request_that_died_before_creating_anything_runs_afresh(api, merchant, body):
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="died-early", recoverable=True,
        fingerprint=request_fingerprint("POST", "/v1/payments", body))
    _abandon(merchant, "died-early")

    retry = api.post("/v1/payments", body, idempotency_key="died-early")
    assert retry.status_code == 200, retry.json()
    assert "Idempotent-Replayed" not in retry.headers
    assert "Idempotent-Recovered" not in retry.headers  # a first run, as if new
    assert retry.json()["status"] == "succeeded"
    payment = Payment.objects.get(merchant=merchant)
    assert _charges_for(payment.id) == 1
    row = _key(merchant, "died-early")
    assert row.completed_at is not None
    assert row.response_body["id"] == payment.id
    assert row.object_id == payment.id
    assert row.created_at > timezone.now() - dt.timedelta(minutes=1)  # the new claim

    replay = api.post("/v1/payments", body, idempotency_key="died-early")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == retry.json()


@pytest.mark.django_db
def test_a_capture_that_died_before_starting_runs_afresh(api, merchant):
    created = api.post("/v1/payments", {"amount": 800, "currency": "USD", "confirm": True,
                                        "payment_method": make_card(api),
                                        "capture_method": "manual"})
    pay_id = created.json()["id"]
    path = f"/v1/payments/{pay_id}/capture"
    IdempotencyKey.objects.create(merchant=merchant, livemode=False, key="cap-died",
                                  recoverable=True,
                                  fingerprint=request_fingerprint("POST", path, {}))
    _abandon(merchant, "cap-died")

    retry = api.post(path, {}, idempotency_key="cap-died")
    assert retry.status_code == 200, retry.json()
    assert retry.json()["status"] == "succeeded"
    assert Modification.objects.filter(payment_id=pay_id).count() == 1


@pytest.mark.django_db
def test_a_key_in_flight_within_the_timeout_is_still_409(api, merchant, body):
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="running", recoverable=True,
        fingerprint=request_fingerprint("POST", "/v1/payments", body))
    _abandon(merchant, "running", by=TIMEOUT - dt.timedelta(seconds=30))
    resp = api.post("/v1/payments", body, idempotency_key="running")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "idempotency_key_in_use"
    assert not Payment.objects.filter(merchant=merchant).exists()
    assert _key(merchant, "running").in_flight


@pytest.mark.django_db
def test_a_request_whose_key_was_taken_over_cannot_write(merchant, card):
    """Were the dead request only slow, the retry that took its key over fences it off: the
    transaction that would create its payment fails and rolls back."""
    row = IdempotencyKey.objects.create(merchant=merchant, livemode=False, key="slow",
                                        fingerprint="f", recoverable=True)
    with idempotency.running(row):
        IdempotencyKey.objects.filter(pk=row.pk).update(  # a retry's new claim
            created_at=timezone.now() + dt.timedelta(seconds=1))
        with pytest.raises(idempotency.IdempotencyKeyInUse):
            payment_create(merchant=merchant, livemode=False, amount=100, currency="USD",
                           payment_method=card)
    assert not Payment.objects.filter(merchant=merchant).exists()
    assert IdempotencyKey.objects.get(pk=row.pk).object_id == ""


@pytest.mark.django_db
def test_an_error_after_an_object_was_recorded_never_releases_the_key(api, merchant, body,
                                                                      monkeypatch):
    """A request that recorded its object did something, whatever its error claims: the key
    keeps that answer rather than letting a retry do the work again."""
    from payments.errors import InvalidRequest
    from payments.services import payments as payment_services

    def refuse(*args, **kwargs):
        raise InvalidRequest("refused after the payment was created")

    monkeypatch.setattr(payment_services, "_authorize", refuse)
    first = api.post("/v1/payments", body, idempotency_key="late-400")
    assert first.status_code == 400
    monkeypatch.undo()
    again = api.post("/v1/payments", body, idempotency_key="late-400")
    assert again.status_code == 400
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Payment.objects.filter(merchant=merchant).count() == 1


# --- died after creating or changing an object: answer from it ------------------------------
@pytest.mark.django_db
def test_a_request_that_died_after_creating_a_payment_is_answered_from_it(api, merchant, body,
                                                                           monkeypatch):
    _charge_then_die(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        api.post("/v1/payments", body, idempotency_key="died-late")
    monkeypatch.undo()
    payment = Payment.objects.get(merchant=merchant)
    [attempt] = payment.attempts.all()
    assert (payment.status, attempt.status) == ("processing", "pending")
    assert _charges_for(payment.id) == 1
    row = _key(merchant, "died-late")
    assert row.in_flight and row.object_id == payment.id

    # within the timeout the first request may still be running
    assert api.post("/v1/payments", body,
                    idempotency_key="died-late").status_code == 409

    _abandon(merchant, "died-late")
    old = timezone.now() - TIMEOUT
    Payment.objects.filter(pk=payment.pk).update(updated_at=old)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(created_at=old)
    retry = api.post("/v1/payments", body, idempotency_key="died-late")
    assert retry.status_code == 202, retry.json()
    assert retry.headers["Idempotent-Recovered"] == "true"
    assert "Idempotent-Replayed" not in retry.headers
    assert retry.json() == api.get(f"/v1/payments/{payment.id}").json()
    assert retry.json()["status"] == "processing"
    # no second payment, no second attempt, no second charge
    assert Payment.objects.filter(merchant=merchant).count() == 1
    assert PaymentAttempt.objects.filter(payment__merchant=merchant).count() == 1
    assert _charges_for(payment.id) == 1
    row = _key(merchant, "died-late")
    assert (row.response_status, row.response_body) == (202, retry.json())

    replay = api.post("/v1/payments", body, idempotency_key="died-late")
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == retry.json()

    # the abandoned attempt is status sync's, as for any dead process
    PaymentAttempt.objects.filter(pk=attempt.pk).update(
        next_sync_at=timezone.now() - dt.timedelta(seconds=1))
    assert status_sync.sync_due() == 1
    assert api.get(f"/v1/payments/{payment.id}").json()["status"] == "succeeded"
    assert _charges_for(payment.id) == 1


@pytest.mark.django_db
def test_a_declined_payment_whose_request_died_is_answered_with_the_decline(api, merchant):
    body = {"amount": 1050, "currency": "USD", "confirm": True,
            "payment_method": make_card(api, "4000000000000002")}
    first = api.post("/v1/payments", body, idempotency_key="died-declined")
    assert first.status_code == 402
    # as if the process had died after the payment failed, before the answer was stored
    IdempotencyKey.objects.filter(merchant=merchant, key="died-declined").update(
        completed_at=None, response_status=None, response_body=None)
    _abandon(merchant, "died-declined")

    retry = api.post("/v1/payments", body, idempotency_key="died-declined")
    assert retry.status_code == 402, retry.json()
    assert retry.headers["Idempotent-Recovered"] == "true"
    assert retry.json()["error"]["type"] == "card_error"
    assert retry.json()["error"]["decline_code"] == first.json()["error"]["decline_code"]
    assert retry.json()["payment"] == first.json()["payment"]
    assert Payment.objects.filter(merchant=merchant).count() == 1
    assert PaymentAttempt.objects.filter(payment__merchant=merchant).count() == 1


@pytest.mark.django_db
def test_a_capture_that_died_after_starting_is_answered_from_the_payment(api, merchant,
                                                                         monkeypatch):
    from payments.services import modifications

    created = api.post("/v1/payments", {"amount": 800, "currency": "USD", "confirm": True,
                                        "payment_method": make_card(api),
                                        "capture_method": "manual"})
    pay_id = created.json()["id"]
    path = f"/v1/payments/{pay_id}/capture"

    def die(*args, **kwargs):
        raise KeyboardInterrupt("web worker killed")

    monkeypatch.setattr(modifications, "modification_send", die)  # after the capture was recorded
    with pytest.raises(KeyboardInterrupt):
        api.post(path, {}, idempotency_key="cap-late")
    monkeypatch.undo()
    _abandon(merchant, "cap-late")

    retry = api.post(path, {}, idempotency_key="cap-late")
    assert retry.status_code == 202, retry.json()
    assert retry.headers["Idempotent-Recovered"] == "true"
    assert retry.json()["status"] == "processing"
    assert Modification.objects.filter(payment_id=pay_id).count() == 1  # not captured twice
    charge = SandboxCharge.objects.get(reference=Payment.objects.get(pk=pay_id).attempts.get().id)
    assert not charge.operations.filter(kind="capture").exists()


@pytest.mark.django_db
def test_a_refund_that_died_after_it_was_created_is_answered_from_it(api, merchant,
                                                                     monkeypatch):
    from payments.services import refunds

    pay_id = api.post("/v1/payments", {"amount": 800, "currency": "USD", "confirm": True,
                                       "payment_method": make_card(api)}).json()["id"]

    def die(*args, **kwargs):
        raise KeyboardInterrupt("web worker killed")

    monkeypatch.setattr(refunds, "call_provider", die)
    with pytest.raises(KeyboardInterrupt):
        api.post("/v1/refunds", {"payment": pay_id, "amount": 300}, idempotency_key="re-late")
    monkeypatch.undo()
    _abandon(merchant, "re-late")

    retry = api.post("/v1/refunds", {"payment": pay_id, "amount": 300},
                     idempotency_key="re-late")
    assert retry.status_code == 202, retry.json()  # pending: the provider may not have it
    assert retry.headers["Idempotent-Recovered"] == "true"
    refund = Refund.objects.get(payment_id=pay_id)
    assert retry.json()["id"] == refund.id
    assert retry.json()["status"] == "pending"


@pytest.mark.django_db
def test_a_vaulted_card_whose_request_died_is_answered_from_it(api, merchant, monkeypatch):
    _die_after(monkeypatch, api_views, "payment_method_create")
    card = {"type": "card", "card": {"number": "4242424242424242", "exp_month": 12,
                                     "exp_year": 2034}}
    with pytest.raises(KeyboardInterrupt):
        api.post("/v1/payment_methods", card, idempotency_key="pm-late")
    monkeypatch.undo()
    _abandon(merchant, "pm-late")

    retry = api.post("/v1/payment_methods", card, idempotency_key="pm-late")
    assert retry.status_code == 200, retry.json()
    assert retry.headers["Idempotent-Recovered"] == "true"
    pm = PaymentMethod.objects.get(merchant=merchant)
    assert retry.json()["id"] == pm.id


@pytest.mark.django_db
def test_a_routing_rule_whose_request_died_is_answered_from_it(api, merchant, monkeypatch):
    _die_after(monkeypatch, routing_api, "_saved")
    rule = {"strategy": "ordered", "accounts": ["adyen-sandbox"], "priority": 5}
    with pytest.raises(KeyboardInterrupt):
        api.post("/v1/routing_rules", rule, idempotency_key="rr-late")
    monkeypatch.undo()
    _abandon(merchant, "rr-late")

    retry = api.post("/v1/routing_rules", rule, idempotency_key="rr-late")
    assert retry.status_code == 200, retry.json()
    assert retry.headers["Idempotent-Recovered"] == "true"
    assert RoutingRule.objects.filter(merchant=merchant).count() == 1  # not created twice
    assert retry.json()["id"] == RoutingRule.objects.get(merchant=merchant).id


# --- retention ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_purge_deletes_recoverable_keys_left_in_flight_past_retention(merchant):
    for key, recoverable in (("dead-recoverable", True), ("dead-legacy", False)):
        IdempotencyKey.objects.create(merchant=merchant, livemode=False, key=key,
                                      fingerprint="f", recoverable=recoverable)
        _abandon(merchant, key, by=TTL + dt.timedelta(minutes=1))
    assert idempotency.purge_expired() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["dead-legacy"]


# --- two retries recovering at once (real threads, real Postgres) ---------------------------
def _post_in_threads(n: int, api_key: str, path: str, body: dict, key: str) -> list:
    def post(i):
        resp = Api(api_key).post(path, body, idempotency_key=key)
        return resp.status_code, resp.json(), dict(resp.headers)

    outcomes = in_threads(n, post)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, errors
    return outcomes


def _wait_for_a_lock_waiter(seconds: float = 5.0) -> None:
    """Until another session of this test database waits on a lock (bounded poll)."""
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_recover_a_wedged_key_once(api, merchant, merchant_keys, body,
                                                      monkeypatch):
    _charge_then_die(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        api.post("/v1/payments", body, idempotency_key="wedged")
    monkeypatch.undo()
    _abandon(merchant, "wedged")

    recoveries = []
    lock = threading.Lock()
    real_recover = api_views.PaymentListView.recover

    def slow_recover(view, object_id):
        with lock:
            recoveries.append(object_id)
        _wait_for_a_lock_waiter()  # the other retry reaches the key's row lock meanwhile
        return real_recover(view, object_id)

    monkeypatch.setattr(api_views.PaymentListView, "recover", slow_recover)
    results = _post_in_threads(2, merchant_keys[1], "/v1/payments", body, "wedged")

    payment = Payment.objects.get(merchant=merchant)
    assert recoveries == [payment.id]  # one recovery
    assert {status for status, _, _ in results} == {202}
    assert results[0][1] == results[1][1]  # the same answer
    assert results[0][1]["id"] == payment.id
    marks = sorted("Idempotent-Recovered" in headers for _, _, headers in results)
    assert marks == [False, True]
    replayed = [headers for _, _, headers in results if "Idempotent-Recovered" not in headers]
    assert replayed[0]["Idempotent-Replayed"] == "true"
    assert PaymentAttempt.objects.filter(payment=payment).count() == 1
    assert _charges_for(payment.id) == 1


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_key_that_died_early_run_it_once(merchant, merchant_keys,
                                                                 body):
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="wedged-early", recoverable=True,
        fingerprint=request_fingerprint("POST", "/v1/payments", body))
    _abandon(merchant, "wedged-early")

    results = _post_in_threads(5, merchant_keys[1], "/v1/payments", body, "wedged-early")

    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 409}, statuses
    assert {b["error"]["code"] for s, b, _ in results if s == 409} <= {"idempotency_key_in_use"}
    payment = Payment.objects.get(merchant=merchant)  # exactly one
    assert {b["id"] for s, b, _ in results if s == 200} == {payment.id}
    assert _charges_for(payment.id) == 1
