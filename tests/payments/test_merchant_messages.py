"""Merchant-facing messages are Switchyard's own, the same on every provider: never a
provider's text, codes or retry advice (issue #8, item 15)."""

import re

import pytest
from django.core.management import call_command

from tests.conftest import make_card

pytestmark = pytest.mark.django_db

ACCOUNTS = ["stripe-sandbox", "adyen-sandbox", "checkout-sandbox"]
PROVIDER_WORDS = re.compile(r"stripe|adyen|checkout|refused\.|idempotency|\b[0-9]{3,5}\b",
                            re.IGNORECASE)


def answer(api, number: str, account: str):
    return api.post("/v1/payments", {"amount": 1050, "currency": "EUR", "confirm": True,
                                     "provider": account,
                                     "payment_method": make_card(api, number)})


@pytest.mark.parametrize("number,decline_code", [
    ("4000000000000002", "generic_decline"), ("4000000000009995", "insufficient_funds"),
    ("4000000000000069", "expired_card"), ("4000000000009987", "lost_card"),
    ("4000000000000119", "processing_error")])
def test_a_decline_reads_the_same_on_every_provider(api, number, decline_code):
    bodies = [answer(api, number, account).json() for account in ACCOUNTS]
    assert {body["error"]["decline_code"] for body in bodies} == {decline_code}
    messages = {body["error"]["message"] for body in bodies}
    last_errors = {body["payment"]["last_error"]["message"] for body in bodies}
    assert len(messages) == 1 and messages == last_errors, messages
    assert not PROVIDER_WORDS.search(messages.pop())


@pytest.mark.parametrize("account", ["stripe-sandbox", "adyen-sandbox"])
def test_a_provider_outage_reads_the_same_and_gives_no_provider_advice(api, account):
    provider = account.split("-")[0]
    call_command("sandbox_fault", "--provider", provider, "--outage", "on")
    try:
        body = answer(api, "4242424242424242", account).json()
    finally:
        call_command("sandbox_fault", "--provider", provider, "--clear")
    assert body["error"]["code"] == "provider_unavailable"
    message = body["payment"]["last_error"]["message"]
    assert not PROVIDER_WORDS.search(message), message
    assert "nothing was charged" in message
