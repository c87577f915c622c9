"""Failover matrix: outcome class × retriable or not × attempt budget (default order
stripe-sandbox → adyen-sandbox → checkout-sandbox)."""

import datetime as dt

import pytest
from django.core.management import call_command

from payments.models import Payment, PaymentAttempt
from payments.services import status_sync
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card

pytestmark = pytest.mark.django_db


def pay(api, number="4242424242424242", **fields):
    return api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                     "payment_method": make_card(api, number), **fields})


def attempts(resp):
    payment = resp.json().get("payment", resp.json())
    return [(a["provider"], a["status"]) for a in payment["attempts"]]


def test_provider_unavailable_fails_over_to_the_next_account(api):
    call_command("sandbox_fault", "--provider", "stripe", "--outage", "on")
    resp = pay(api)
    assert resp.status_code == 200, resp.json()
    assert resp.json()["status"] == "succeeded"
    assert attempts(resp) == [("stripe-sandbox", "failed"), ("adyen-sandbox", "captured")]
    assert resp.json()["provider"] == "adyen-sandbox"
    assert SandboxCharge.objects.exclude(status="declined").count() == 1


def test_soft_decline_fails_over_until_the_candidates_run_out(api):
    resp = pay(api, "4000000000000119")
    assert resp.status_code == 402
    assert attempts(resp) == [("stripe-sandbox", "declined"), ("adyen-sandbox", "declined"),
                              ("checkout-sandbox", "declined")]
    assert resp.json()["error"]["decline_code"] == "processing_error"


def test_the_attempt_budget_bounds_failover(api, settings):
    settings.PAYMENT_MAX_ATTEMPTS = 2
    resp = pay(api, "4000000000000119")
    assert resp.status_code == 402
    assert len(attempts(resp)) == 2


@pytest.mark.parametrize("number", ["4000000000000002", "4000000000009995",
                                    "4000000000000069", "4000000000009987"])
def test_hard_declines_never_fail_over(api, number):
    resp = pay(api, number)
    assert resp.status_code == 402
    assert attempts(resp) == [("stripe-sandbox", "declined")]


@pytest.mark.parametrize("number", ["4000000000000408", "4000000000000606"])
def test_unknown_outcomes_never_fail_over(api, number):
    resp = pay(api, number)
    assert resp.status_code == 202
    assert resp.json()["status"] == "unresolved"
    assert attempts(resp) == [("stripe-sandbox", "unknown")]


def test_a_pinned_payment_stays_on_its_account(api):
    resp = pay(api, "4000000000000119", provider="adyen-sandbox")
    assert resp.status_code == 402
    assert attempts(resp) == [("adyen-sandbox", "declined")]


def test_unavailable_everywhere_fails_with_503_and_charges_nothing(api):
    for provider in ("stripe", "adyen", "checkout"):
        call_command("sandbox_fault", "--provider", provider, "--outage", "on")
    resp = pay(api)
    # Checkout.com's outage is not provably harmless (its lookup is down too): unresolved
    assert resp.status_code == 202
    assert attempts(resp) == [("stripe-sandbox", "failed"), ("adyen-sandbox", "failed"),
                              ("checkout-sandbox", "unknown")]
    assert SandboxCharge.objects.count() == 0


def test_failover_after_a_provider_503_card_lands_nowhere(api):
    resp = pay(api, "4000000000000507")
    # Stripe's and Adyen's 503 say "not processed"; Checkout.com's does not, and its list by
    # reference proves nothing within its consistency window: the outcome stays unknown
    assert resp.status_code == 202, resp.json()
    assert attempts(resp) == [("stripe-sandbox", "failed"), ("adyen-sandbox", "failed"),
                              ("checkout-sandbox", "unknown")]
    payment = Payment.objects.get(pk=resp.json()["id"])
    # once the window has passed, status sync's lookup is proof: no charge, budget spent
    [attempt] = payment.attempts.filter(status="unknown")
    PaymentAttempt.objects.filter(pk=attempt.pk).update(
        created_at=attempt.created_at - dt.timedelta(hours=2))
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "failed"
    # every provider refused before processing: nothing was charged anywhere
    assert SandboxCharge.objects.count() == 0
    assert payment.attempts.count() == 3
