"""Refunds through the HTTP API (docs/api.md "Refunds"): full by default, several partial ones,
their sum never above `amount_captured`, checked against the sandbox's own ledger too."""

from __future__ import annotations

import pytest

from payments.models import Payment, Refund
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card, pay


# --- helpers ------------------------------------------------------------------------------
def paid(api, amount=1000, **fields) -> dict:
    resp = pay(api, amount=amount, **fields)
    assert resp.status_code == 200, resp.json()
    assert resp.json()["status"] == "succeeded"
    return resp.json()


def refund(api, payment_id: str, **fields):
    return api.post("/v1/refunds", {"payment": payment_id, **fields})


def refunded_ok(api, payment_id: str, **fields) -> dict:
    resp = refund(api, payment_id, **fields)
    assert resp.status_code == 200, resp.json()
    assert resp.json()["status"] == "succeeded"
    return resp.json()


def payment_json(api, payment_id: str) -> dict:
    resp = api.get(f"/v1/payments/{payment_id}")
    assert resp.status_code == 200
    return resp.json()


def charge_of(payment: dict) -> SandboxCharge:
    [attempt] = [a for a in payment["attempts"] if a["status"] == "captured"]
    return SandboxCharge.objects.get(reference=attempt["id"])


def assert_error(resp, status, code, *, param="__any__"):
    assert resp.status_code == status, resp.json()
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert error["code"] == code, error
    if param != "__any__":
        assert error["param"] == param, error
    return error


# --- refunds ------------------------------------------------------------------------------
def test_full_refund_by_default(api):
    payment = paid(api, amount=1000, currency="EUR")
    body = refunded_ok(api, payment["id"])
    assert body["id"].startswith("re_")
    assert body["object"] == "refund"
    assert body["payment"] == payment["id"]
    assert body["amount"] == 1000
    assert body["currency"] == "EUR"
    assert body["reason"] is None
    assert body["metadata"] == {}
    assert body["livemode"] is False
    assert isinstance(body["created"], int)

    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == 1000
    assert after["amount_captured"] == 1000
    # a refund does not change the payment's status (refunds are separate objects)
    assert after["status"] == "succeeded"
    charge = charge_of(after)
    assert charge.amount_refunded == 1000


def test_several_partial_refunds(api):
    payment = paid(api, amount=1000)
    first = refunded_ok(api, payment["id"], amount=300)
    second = refunded_ok(api, payment["id"], amount=200, reason="duplicate",
                         metadata={"ticket": "T-1"})
    assert (first["amount"], second["amount"]) == (300, 200)
    assert second["reason"] == "duplicate"
    assert second["metadata"] == {"ticket": "T-1"}
    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == 500
    assert charge_of(after).amount_refunded == 500

    third = refunded_ok(api, payment["id"], amount=500)  # exactly what is left
    assert third["amount"] == 500
    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == 1000 == after["amount_captured"]
    assert charge_of(after).amount_refunded == 1000


def test_refunds_never_exceed_the_captured_amount(api):
    payment = paid(api, amount=1000)
    refunded_ok(api, payment["id"], amount=400)
    refunded_ok(api, payment["id"], amount=400)

    resp = refund(api, payment["id"], amount=201)
    assert_error(resp, 400, "amount_too_large", param="amount")
    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == 800
    assert charge_of(after).amount_refunded == 800
    assert Refund.objects.filter(payment_id=payment["id"]).count() == 2

    # the default amount is what is left
    rest = refunded_ok(api, payment["id"])
    assert rest["amount"] == 200

    for extra in ({}, {"amount": 1}):
        resp = refund(api, payment["id"], **extra)
        assert_error(resp, 400, "charge_already_refunded", param="payment")
    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == 1000
    assert charge_of(after).amount_refunded == 1000
    assert Refund.objects.filter(payment_id=payment["id"]).count() == 3


def test_refund_larger_than_the_payment_is_rejected(api):
    payment = paid(api, amount=1000)
    resp = refund(api, payment["id"], amount=1001)
    assert_error(resp, 400, "amount_too_large", param="amount")
    assert payment_json(api, payment["id"])["amount_refunded"] == 0
    assert not Refund.objects.filter(payment_id=payment["id"]).exists()


@pytest.mark.parametrize("amount", [0, -1, "100", 1.5, True])
def test_refund_amount_must_be_a_positive_integer(api, amount):
    payment = paid(api, amount=1000)
    resp = refund(api, payment["id"], amount=amount)
    assert resp.status_code == 400, resp.json()
    assert resp.json()["error"]["param"] == "amount"
    assert not Refund.objects.filter(payment_id=payment["id"]).exists()


def _payment_in(api, state: str) -> dict:
    if state == "requires_capture":
        body = pay(api, capture_method="manual").json()
    elif state == "requires_confirmation":
        body = api.post("/v1/payments", {"amount": 1000, "currency": "USD",
                                         "payment_method": make_card(api)}).json()
    elif state == "failed":
        body = pay(api, "4000000000000002").json()["payment"]
    elif state == "canceled":
        body = pay(api, capture_method="manual").json()
        body = api.post(f"/v1/payments/{body['id']}/cancel", {}).json()
    elif state == "unresolved":
        body = pay(api, "4000000000000408").json()
    assert body["status"] == state
    return body


@pytest.mark.parametrize("state", ["requires_capture", "requires_confirmation", "failed",
                                   "canceled", "unresolved"])
def test_refund_of_a_payment_that_is_not_succeeded_is_a_state_conflict(api, state):
    payment = _payment_in(api, state)
    resp = refund(api, payment["id"])
    assert_error(resp, 409, "payment_state_invalid")
    resp = refund(api, payment["id"], amount=100)
    assert_error(resp, 409, "payment_state_invalid")
    assert not Refund.objects.filter(payment_id=payment["id"]).exists()
    after = payment_json(api, payment["id"])
    assert after["status"] == state
    assert after["amount_refunded"] == 0


def test_refund_of_a_partially_captured_payment_is_limited_to_the_captured_amount(api):
    payment = pay(api, amount=1000, capture_method="manual").json()
    captured = api.post(f"/v1/payments/{payment['id']}/capture",
                        {"amount_to_capture": 600}).json()
    assert captured["amount_captured"] == 600

    resp = refund(api, payment["id"], amount=601)
    assert_error(resp, 400, "amount_too_large", param="amount")
    body = refunded_ok(api, payment["id"])  # default: all that was captured
    assert body["amount"] == 600
    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == 600
    assert charge_of(after).amount_refunded == 600
    assert_error(refund(api, payment["id"], amount=1), 400, "charge_already_refunded")


def test_retrieve_refund(api, other_api, live_api):
    payment = paid(api)
    created = refunded_ok(api, payment["id"], amount=100, reason="requested_by_customer")
    resp = api.get(f"/v1/refunds/{created['id']}")
    assert resp.status_code == 200
    assert resp.json() == created
    for client in (other_api, live_api):
        assert_error(client.get(f"/v1/refunds/{created['id']}"), 404, "resource_missing")
    assert_error(api.get("/v1/refunds/re_doesnotexist"), 404, "resource_missing")


def test_list_refunds_of_a_payment(api):
    one = paid(api)
    two = paid(api)
    r1 = refunded_ok(api, one["id"], amount=100)
    r2 = refunded_ok(api, one["id"], amount=200)
    r3 = refunded_ok(api, two["id"], amount=300)

    listed = api.get("/v1/refunds", {"payment": one["id"]}).json()
    assert listed["object"] == "list"
    assert listed["has_more"] is False
    assert [r["id"] for r in listed["data"]] == [r2["id"], r1["id"]]  # newest first
    assert [r["id"] for r in api.get("/v1/refunds", {"payment": two["id"]}).json()["data"]] == [
        r3["id"]]
    everything = api.get("/v1/refunds").json()["data"]
    assert {r["id"] for r in everything} == {r1["id"], r2["id"], r3["id"]}
    assert api.get("/v1/refunds", {"payment": "pay_unknown"}).json()["data"] == []

    page = api.get("/v1/refunds", {"payment": one["id"], "limit": 1}).json()
    assert [r["id"] for r in page["data"]] == [r2["id"]]
    assert page["has_more"] is True
    assert_error(api.get("/v1/refunds", {"status": "succeeded"}), 400, "parameter_unknown",
                 param="status")


def test_refund_list_is_scoped_to_the_merchant(api, other_api):
    payment = paid(api)
    refunded_ok(api, payment["id"], amount=100)
    assert other_api.get("/v1/refunds").json()["data"] == []
    assert other_api.get("/v1/refunds", {"payment": payment["id"]}).json()["data"] == []


def test_refund_of_another_merchants_payment_is_missing(api, other_api):
    payment = paid(api)
    resp = refund(other_api, payment["id"])
    assert_error(resp, 404, "resource_missing", param="payment")
    assert_error(refund(api, "pay_unknown"), 404, "resource_missing", param="payment")
    assert payment_json(api, payment["id"])["amount_refunded"] == 0


@pytest.mark.parametrize("reason", ["requested_by_customer", "duplicate", "fraudulent"])
def test_refund_reasons_are_accepted(api, reason):
    payment = paid(api)
    body = refunded_ok(api, payment["id"], amount=10, reason=reason)
    assert body["reason"] == reason
    assert api.get(f"/v1/refunds/{body['id']}").json()["reason"] == reason


@pytest.mark.parametrize("reason", ["because", "", "Duplicate", None, 1])
def test_bad_refund_reason_is_rejected(api, reason):
    payment = paid(api)
    resp = refund(api, payment["id"], reason=reason)
    assert_error(resp, 400, "parameter_invalid", param="reason")
    assert not Refund.objects.filter(payment_id=payment["id"]).exists()
    assert Payment.objects.get(pk=payment["id"]).amount_refunded == 0


def test_refund_rejects_unknown_fields(api):
    payment = paid(api)
    resp = refund(api, payment["id"], amount=100, note="x")
    assert_error(resp, 400, "parameter_unknown", param="note")
    assert not Refund.objects.filter(payment_id=payment["id"]).exists()


def test_refund_ledger_matches_after_mixed_refunds(api):
    payment = paid(api, amount=5000)
    amounts = [1000, 1, 2499, 500]
    for amount in amounts:
        refunded_ok(api, payment["id"], amount=amount)
    after = payment_json(api, payment["id"])
    assert after["amount_refunded"] == sum(amounts)
    charge = charge_of(after)
    assert charge.amount_refunded == sum(amounts)
    assert charge.operations.filter(kind="refund").count() == len(amounts)
    stored = Payment.objects.get(pk=payment["id"])
    assert stored.amount_refunded == sum(
        r.amount for r in Refund.objects.filter(payment=stored, status="succeeded"))
