"""Amounts through the merchant API on each provider's sandbox (issue #8, #6): an ISK payment
charges what it says on every provider, and an amount a provider cannot represent is routed
elsewhere or answered with a clear 400 — never a 500, a confusing decline or a wrong charge."""

import pytest

from payments.models import Payment
from providers.models import ProviderAccount
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card

pytestmark = pytest.mark.django_db

# account → what the provider's ledger holds for 1000 ISK (ISO minor units: ISK has none)
ISK_1000 = {"stripe-sandbox": 100000, "adyen-sandbox": 100000, "checkout-sandbox": 1000}


@pytest.mark.parametrize("account", list(ISK_1000))
def test_1000_isk_charges_1000_isk_on_each_provider(api, account):
    resp = api.post("/v1/payments", {"amount": 1000, "currency": "ISK", "confirm": True,
                                     "provider": account, "payment_method": make_card(api)})
    assert resp.status_code == 200, resp.json()
    payment = resp.json()
    assert (payment["status"], payment["amount"], payment["amount_captured"]) == (
        "succeeded", 1000, 1000)
    charge = SandboxCharge.objects.get(reference=payment["attempts"][0]["id"])
    # what the provider was asked to charge, in its own units: 1000 krónur, not 10
    assert (charge.currency, charge.amount, charge.amount_captured) == (
        "ISK", ISK_1000[account], ISK_1000[account])

    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 300})
    assert refund.status_code == 200, refund.json()
    assert refund.json()["amount"] == 300
    charge.refresh_from_db()
    assert charge.amount_refunded == ISK_1000[account] * 3 // 10


def test_manual_capture_in_isk_captures_the_right_amount(api):
    resp = api.post("/v1/payments", {"amount": 1000, "currency": "ISK", "confirm": True,
                                     "capture_method": "manual", "provider": "stripe-sandbox",
                                     "payment_method": make_card(api)})
    assert resp.status_code == 200 and resp.json()["status"] == "requires_capture"
    captured = api.post(f"/v1/payments/{resp.json()['id']}/capture", {"amount_to_capture": 700})
    assert captured.status_code == 200, captured.json()
    assert captured.json()["amount_captured"] == 700
    charge = SandboxCharge.objects.get(reference=resp.json()["attempts"][0]["id"])
    assert charge.amount_captured == 70000


def test_an_account_that_cannot_represent_the_amount_is_skipped(api):
    """1.005 KWD: Stripe and Checkout.com take three-decimal amounts ending in 0 only."""
    resp = api.post("/v1/payments", {"amount": 1005, "currency": "KWD", "confirm": True,
                                     "payment_method": make_card(api)})
    assert resp.status_code == 200, resp.json()
    routing = resp.json()["routing"]
    assert routing["selected"] == "adyen-sandbox"
    assert {(s["account"], s["reason"]) for s in routing["skipped"]} == {
        ("stripe-sandbox", "amount_not_representable"),
        ("checkout-sandbox", "amount_not_representable")}
    assert SandboxCharge.objects.get().amount == 1005  # at Adyen, as ISO


def test_no_account_can_represent_the_amount_is_a_clear_400(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant, name="adyen-sandbox").update(
        enabled=False)
    resp = api.post("/v1/payments", {"amount": 1005, "currency": "KWD", "confirm": True,
                                     "payment_method": make_card(api)})
    assert resp.status_code == 400, resp.json()
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "amount_not_representable", "amount")
    assert "stripe-sandbox" in error["message"] and "checkout-sandbox" in error["message"]
    assert "1.005 KWD" in error["message"]
    assert not SandboxCharge.objects.exists()
    assert Payment.objects.count() == 0  # the 400 changes nothing, as for other routing 400s


def test_a_pinned_account_that_cannot_represent_the_amount_is_a_400(api):
    resp = api.post("/v1/payments", {"amount": 12345, "currency": "IDR", "confirm": True,
                                     "provider": "adyen-sandbox",
                                     "payment_method": make_card(api)})
    assert resp.status_code == 400, resp.json()
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("amount_not_representable", "amount")
    assert "adyen-sandbox" in error["message"] and "whole IDR" in error["message"]
    assert not SandboxCharge.objects.exists()
    # the same amount goes through an account whose provider can charge it
    resp = api.post("/v1/payments", {"amount": 12345, "currency": "IDR", "confirm": True,
                                     "provider": "stripe-sandbox",
                                     "payment_method": make_card(api)})
    assert resp.status_code == 200, resp.json()
