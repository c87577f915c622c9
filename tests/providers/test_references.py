"""References and idempotency keys within each provider's limits (issue #8, #7): the shared
shortening, and a double-charge reversal's 68-character reference going through every
sandbox, which refuses over-long references as the real provider does."""

from __future__ import annotations

import uuid

import httpx
import pytest

from payments.services.attempts import reversal_reference, reversed_attempt_id
from providers.adyen.adapter import AdyenAdapter
from providers.base import AccountConfig, AuthorizeRequest, Card, ModificationRequest
from providers.checkout.adapter import CheckoutAdapter
from providers.http import client_for
from providers.references import fit
from providers.sandboxes import adyen as adyen_sandbox
from providers.sandboxes import stripe as stripe_sandbox
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS
from providers.sandboxes.models import SandboxCharge, SandboxIdempotencyRecord, SandboxOperation
from providers.sandboxes.transport import SANDBOX_HOST, SandboxTransport
from providers.stripe.adapter import StripeAdapter

pytestmark = pytest.mark.django_db

ADAPTERS = {"stripe": StripeAdapter, "adyen": AdyenAdapter, "checkout": CheckoutAdapter}


def attempt_id() -> str:
    return "att_" + uuid.uuid4().hex[:24]  # 28 characters, as payments' ids


def adapter_for(provider: str):
    return ADAPTERS[provider](AccountConfig(
        name=f"{provider}-test", provider=provider, livemode=False,
        base_url="sandbox://local", credentials=dict(SANDBOX_CREDENTIALS[provider])))


def charge(provider: str, *, capture: bool) -> tuple[str, str]:
    """(attempt id, provider's charge id) of a fresh charge."""
    reference = attempt_id()
    result = adapter_for(provider).authorize(AuthorizeRequest(
        reference=reference, amount=1000, currency="EUR", capture=capture,
        card=Card("4242424242424242", 12, 2034, "visa", cvc="123")))
    return reference, result.provider_reference


# --- the shortening ---------------------------------------------------------------------------
def test_a_reference_within_the_limit_is_sent_as_it_is():
    assert fit("att_123", 50) == "att_123"
    assert fit("x" * 50, 50) == "x" * 50


def test_a_longer_reference_is_shortened_deterministically_and_distinctly():
    attempt = attempt_id()
    first = reversal_reference(attempt, "pay_" + "a" * 26)
    second = reversal_reference(attempt, "pay_" + "b" * 26)
    assert len(first) == 68
    short = fit(first, 50)
    assert len(short) == 50 and short == fit(first, 50)  # a retry sends the same
    assert fit(second, 50) != short  # another charge's reversal: another reference
    # the start survives: the attempt and "-reversal-" are still readable from the echo
    assert short.startswith(f"{attempt}-reversal-")
    assert reversed_attempt_id(short) == attempt


@pytest.mark.parametrize("limit", [50, 64, 80, 255, 500])
def test_every_limit_is_kept(limit):
    reference = "ref_" + "z" * 600
    assert len(fit(reference, limit)) == limit


# --- a reversal's 68-character reference on every sandbox ------------------------------------
def _reversal(provider_reference: str, attempt: str, amount: int = 1000) -> ModificationRequest:
    reference = reversal_reference(attempt, provider_reference)
    return ModificationRequest(reference=reference, provider_reference=provider_reference,
                               amount=amount, currency="EUR")


def test_checkout_reversal_with_a_68_character_reference_goes_through():
    adapter = adapter_for("checkout")
    attempt, payment_id = charge("checkout", capture=True)
    request = _reversal(payment_id, attempt)
    assert len(request.reference) == 68

    result = adapter.refund(request)
    assert adapter.refund(request) == result  # a retry is replayed, not executed again

    [operation] = SandboxOperation.objects.filter(charge__provider_reference=payment_id)
    assert operation.reference == fit(request.reference, 50) and len(operation.reference) == 50
    assert SandboxCharge.objects.get(provider_reference=payment_id).amount_refunded == 1000
    assert SandboxIdempotencyRecord.objects.filter(key=fit(request.reference, 50)).exists()
    # the actions list is read with the reference as sent
    confirmed = adapter.lookup_modification(request)
    assert (confirmed.provider_reference, confirmed.pending) == (result.provider_reference,
                                                                 False)


def test_checkout_void_of_an_extra_authorization_with_a_68_character_reference():
    attempt, payment_id = charge("checkout", capture=False)
    adapter_for("checkout").cancel(_reversal(payment_id, attempt))
    assert SandboxCharge.objects.get(provider_reference=payment_id).status == "canceled"


@pytest.mark.parametrize("operation", ["reverse", "refund"])
def test_adyen_reversal_goes_through_and_a_longer_reference_is_shortened(operation):
    adapter = adapter_for("adyen")
    attempt, psp = charge("adyen", capture=True)
    request = _reversal(psp, attempt)
    assert getattr(adapter, operation)(request).pending is True
    [op] = SandboxOperation.objects.filter(charge__provider_reference=psp)
    assert op.reference == request.reference  # 54 characters: within Adyen's 80
    # one over every Adyen limit (reference 80, Idempotency-Key 64)
    long = ModificationRequest(reference=request.reference + "-" + "x" * 60,
                               provider_reference=psp, amount=1000, currency="EUR")
    # accepted (a reference over 80 would be a 422): the sandbox refuses this cancel of a
    # refunded charge in its webhook, as Adyen would
    assert adapter.cancel(long).pending is True


def test_adyen_authorization_with_a_reference_over_80_characters():
    adapter = adapter_for("adyen")
    request = AuthorizeRequest(reference="att_" + "y" * 90, amount=1000, currency="EUR",
                               capture=False,
                               card=Card("4242424242424242", 12, 2034, "visa", cvc="737"))
    result = adapter.authorize(request)
    recorded = SandboxCharge.objects.get(provider_reference=result.provider_reference)
    assert recorded.reference == fit(request.reference, 80)
    assert adapter.lookup(request).provider_reference == result.provider_reference


def test_stripe_reversal_with_a_68_character_reference_and_an_over_long_one():
    adapter = adapter_for("stripe")
    attempt, intent = charge("stripe", capture=True)
    request = _reversal(intent, attempt, amount=400)
    adapter.refund(request)
    assert SandboxIdempotencyRecord.objects.filter(key=request.reference).exists()
    longer = ModificationRequest(reference="re_" + "q" * 400, provider_reference=intent,
                                 amount=100, currency="EUR")
    adapter.refund(longer)
    assert SandboxIdempotencyRecord.objects.filter(key=fit(longer.reference, 255)).exists()
    assert SandboxCharge.objects.get(provider_reference=intent).amount_refunded == 500


# --- the sandboxes refuse over-long references as the providers do ---------------------------
def test_checkout_sandbox_refuses_a_reference_over_50_characters():
    attempt, payment_id = charge("checkout", capture=True)
    client = client_for(adapter_for("checkout").config)
    client.headers["Authorization"] = "Bearer sk_sbox_sandbox"
    with client:
        refund = client.post(f"/payments/{payment_id}/refunds",
                             json={"amount": 100, "reference": "r" * 51})
        payment = client.post("/payments", json={
            "source": {"type": "card", "number": "4242424242424242", "expiry_month": 12,
                       "expiry_year": 2034}, "amount": 100, "currency": "EUR",
            "reference": "r" * 51, "processing_channel_id": "pc_sandbox"})
    for resp in (refund, payment):
        assert resp.status_code == 422
        body = resp.json()
        assert (body["error_type"], body["error_codes"]) == ("request_invalid",
                                                             ["reference_invalid"])
        assert body["request_id"]
    assert SandboxCharge.objects.get(provider_reference=payment_id).amount_refunded == 0


def test_adyen_sandbox_refuses_a_reference_over_80_characters():
    attempt, psp = charge("adyen", capture=True)
    with httpx.Client(base_url=SANDBOX_HOST,
                      transport=SandboxTransport(adyen_sandbox.app)) as client:
        headers = {"X-API-Key": "sandbox-api-key"}
        refund = client.post(f"/v71/payments/{psp}/refunds", headers=headers, json={
            "merchantAccount": "SwitchyardSandbox", "reference": "r" * 81,
            "amount": {"value": 100, "currency": "EUR"}})
        cancel = client.post("/v71/cancels", headers=headers, json={
            "merchantAccount": "SwitchyardSandbox", "paymentReference": attempt,
            "reference": "r" * 81})
        key = client.post(f"/v71/payments/{psp}/refunds",
                          headers={**headers, "Idempotency-Key": "k" * 65}, json={
                              "merchantAccount": "SwitchyardSandbox", "reference": "ok",
                              "amount": {"value": 100, "currency": "EUR"}})
    for resp in (refund, cancel):
        assert resp.status_code == 422
        assert (resp.json()["errorCode"], resp.json()["errorType"]) == ("130", "validation")
    assert (key.status_code, key.json()["errorCode"]) == (422, "702")
    assert SandboxCharge.objects.get(provider_reference=psp).amount_refunded == 0


def test_stripe_sandbox_refuses_keys_and_metadata_over_its_limits():
    attempt, intent = charge("stripe", capture=True)
    with httpx.Client(base_url=SANDBOX_HOST, transport=SandboxTransport(stripe_sandbox.app),
                      headers={"Authorization": "Bearer sk_test_sandbox"}) as client:
        key = client.post("/v1/refunds", data={"payment_intent": intent, "amount": "100"},
                          headers={"Idempotency-Key": "k" * 256})
        metadata = client.post("/v1/refunds", data={
            "payment_intent": intent, "amount": "100", "metadata[switchyard_operation]":
            "m" * 501})
    for resp in (key, metadata):
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
    assert SandboxCharge.objects.get(provider_reference=intent).amount_refunded == 0
