"""How the orchestration classifies what an adapter does, beyond the sandbox's test cards."""

import pytest

from payments.models import Payment
from providers import accounts
from providers.models import ProviderAccount
from providers.sandboxes import ledger
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card


def _create(api, **fields):
    body = {"amount": 1050, "currency": "USD", "payment_method": make_card(api), **fields}
    resp = api.post("/v1/payments", body)
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]


@pytest.mark.django_db
def test_a_vault_failure_before_the_call_leaves_the_payment_untouched(api, monkeypatch):
    pay_id = _create(api)

    def broken(*args, **kwargs):
        raise RuntimeError("vault key missing")

    monkeypatch.setattr("payments.services.payment_methods.vault.decrypt", broken)
    resp = api.post(f"/v1/payments/{pay_id}/confirm")
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "api_error"
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "requires_confirmation"
    assert payment.attempts.count() == 0


@pytest.mark.django_db
def test_an_account_without_an_adapter_fails_safely_and_charges_nothing(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant).update(
        base_url="https://api.example.invalid")
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                     "payment_method": make_card(api)})
    assert resp.status_code == 503
    body = resp.json()
    assert body["error"]["code"] == "provider_unavailable"
    assert body["payment"]["status"] == "failed"
    assert body["payment"]["attempts"][0]["status"] == "failed"
    assert SandboxCharge.objects.count() == 0


@pytest.mark.django_db
def test_an_unexpected_adapter_exception_counts_as_outcome_unknown(api, monkeypatch):
    def crash_after_charging(request):
        ledger.authorize("stripe", reference=request.reference, amount=request.amount,
                         currency=request.currency, number=request.card.number, capture=True)
        raise KeyError("adapter bug")

    class Buggy:
        authorize = staticmethod(crash_after_charging)

    monkeypatch.setattr(accounts, "get_adapter", lambda config: Buggy())
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                     "payment_method": make_card(api)})
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "unresolved"
    assert body["attempts"][0]["status"] == "unknown"
    assert body["last_error"]["code"] == "outcome_unknown"
    # the charge really happened: failing over would have charged the customer twice
    assert SandboxCharge.objects.filter(reference=body["attempts"][0]["id"]).count() == 1


@pytest.mark.django_db
def test_accounts_that_do_not_support_the_currency_are_skipped(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant, name="stripe-sandbox").update(
        currencies=["USD"])
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "EUR", "confirm": True,
                                     "payment_method": make_card(api)})
    assert resp.status_code == 200
    routing = resp.json()["routing"]
    assert routing["selected"] == "adyen-sandbox"
    assert routing["skipped"] == [{"account": "stripe-sandbox", "reason": "currency_unsupported"}]


@pytest.mark.django_db
def test_a_pinned_account_must_support_the_currency(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant).update(currencies=["USD"])
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "EUR", "confirm": True,
                                     "provider": "stripe-sandbox",
                                     "payment_method": make_card(api)})
    assert resp.status_code == 400
    assert (resp.json()["error"]["code"], resp.json()["error"]["param"]) == (
        "currency_unsupported", "provider")
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "EUR", "confirm": True,
                                     "payment_method": make_card(api)})
    assert resp.json()["error"]["code"] == "no_provider_account"
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_an_account_whose_credentials_cannot_be_read_fails_safely(api, merchant):
    """Nothing can be sent without credentials: a provably-not-charged failure, not an
    unknown outcome (which would leave the payment unresolved)."""
    ProviderAccount.objects.filter(merchant=merchant).update(credentials_key_version="gone")
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                     "provider": "stripe-sandbox",
                                     "payment_method": make_card(api)})
    assert resp.status_code == 503, resp.json()
    assert resp.json()["payment"]["status"] == "failed"
    assert resp.json()["payment"]["last_error"]["code"] == "provider_misconfigured"
