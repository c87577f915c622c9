"""Payments follow the merchant's routing rules, move away from an outage or a degrading
provider, and record every decision (issue: routing, safe failover)."""

from collections import Counter

import pytest
from django.core.management import call_command

from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_for
from tests.conftest import make_card, pay

pytestmark = pytest.mark.django_db


def rule(api, **body):
    resp = api.post("/v1/routing_rules", body)
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]



def test_payments_follow_the_matching_rule_and_record_it(api):
    rr = rule(api, priority=1, strategy="ordered", accounts=["checkout-sandbox", "adyen-sandbox"],
              conditions={"currencies": ["EUR"], "amount_gte": 1000})
    pm = make_card(api)
    eur = pay(api, pm=pm, currency="EUR").json()
    assert eur["provider"] == "checkout-sandbox"
    assert eur["routing"]["rule"] == rr
    assert [c["account"] for c in eur["routing"]["candidates"]] == [
        "checkout-sandbox", "adyen-sandbox"]
    small = pay(api, pm=pm, amount=500, currency="EUR").json()  # below the rule's range
    assert small["routing"]["rule"] is None
    assert small["provider"] == "stripe-sandbox"  # the merchant's default order


def test_card_brand_and_metadata_conditions(api):
    rule(api, priority=1, strategy="ordered", accounts=["adyen-sandbox"],
         conditions={"card_brands": ["mastercard"]})
    rule(api, priority=2, strategy="ordered", accounts=["checkout-sandbox"],
         conditions={"metadata": {"channel": "marketplace"}})
    master = pay(api, "5555555555554444").json()
    assert master["provider"] == "adyen-sandbox"
    tagged = pay(api, metadata={"channel": "marketplace"}).json()
    assert tagged["provider"] == "checkout-sandbox"


def test_an_outage_moves_payments_to_the_next_account_and_opens_the_breaker(api, merchant):
    call_command("sandbox_fault", "--provider", "stripe", "--outage", "on")
    pm = make_card(api)
    providers = [pay(api, pm=pm).json()["provider"] for _ in range(8)]
    assert set(providers) == {"adyen-sandbox"}  # every payment succeeded elsewhere
    stripe = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    assert breaker_for(stripe).current_state == "open"
    last = pay(api, pm=pm).json()
    assert {"account": "stripe-sandbox", "reason": "breaker_open"} in last["routing"]["skipped"]
    assert [a["provider"] for a in last["attempts"]] == ["adyen-sandbox"]  # not even tried


def test_a_degrading_provider_loses_most_of_its_traffic(api, settings):
    settings.ROUTING_MIN_SAMPLES = 10
    rule(api, priority=1, strategy="success_rate",
         accounts=["stripe-sandbox", "adyen-sandbox"])
    call_command("sandbox_fault", "--provider", "stripe", "--soft-decline-rate", "1")
    pm = make_card(api)
    first_tries = Counter()
    for _ in range(60):
        body = pay(api, pm=pm).json()
        assert body["status"] == "succeeded"  # soft declines fail over
        first_tries[body["attempts"][0]["provider"]] += 1
    recent = Counter()
    for _ in range(40):
        recent[pay(api, pm=pm).json()["attempts"][0]["provider"]] += 1
    # once stripe's failures are counted, only the exploration share still tries it first
    assert recent["stripe-sandbox"] <= 8, recent


def test_every_account_in_its_breaker_open_is_a_503_and_nothing_is_created(api, merchant):
    from payments.models import Payment

    for account in ProviderAccount.objects.filter(merchant=merchant):
        breaker_for(account).open()
    resp = pay(api)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "provider_unavailable"
    assert Payment.objects.count() == 0


def test_a_merchant_retry_rule_stops_failover_on_a_soft_code(api):
    resp = api.post("/v1/retry_rules", {"decline_code": "processing_error", "retry": False})
    assert resp.status_code == 200, resp.json()
    body = pay(api, "4000000000000119").json()
    assert [a["provider"] for a in body["payment"]["attempts"]] == ["stripe-sandbox"]
