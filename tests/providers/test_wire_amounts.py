"""Each adapter sends its provider's own minor units and reads them back (issue #8, #6); each
sandbox speaks the same units as the real provider, records them as the charge, and refuses
what the real provider refuses."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC

import httpx
import pytest

from providers.adyen import webhooks as adyen_webhooks
from providers.adyen.adapter import AdyenAdapter
from providers.amounts import AmountNotRepresentable
from providers.base import AccountConfig, AuthorizeRequest, Card, ModificationRequest
from providers.checkout import webhooks as checkout_webhooks
from providers.checkout.adapter import CheckoutAdapter
from providers.http import client_for
from providers.sandboxes import adyen as adyen_sandbox
from providers.sandboxes import stripe as stripe_sandbox
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS
from providers.sandboxes.models import SandboxCharge, SandboxIdempotencyRecord
from providers.sandboxes.transport import SANDBOX_HOST, SandboxTransport
from providers.stripe.adapter import StripeAdapter

pytestmark = pytest.mark.django_db


def config(provider: str, base_url: str = "sandbox://local") -> AccountConfig:
    return AccountConfig(name=f"{provider}-test", provider=provider, livemode=False,
                         base_url=base_url, credentials=dict(SANDBOX_CREDENTIALS[provider]))


ADAPTERS = {"stripe": StripeAdapter, "adyen": AdyenAdapter, "checkout": CheckoutAdapter}


def adapter_for(provider: str):
    return ADAPTERS[provider](config(provider))


def ref(prefix: str = "att") -> str:
    return f"{prefix}_" + uuid.uuid4().hex[:24]


def auth(*, amount: int, currency: str, capture: bool = False) -> AuthorizeRequest:
    card = Card(number="4242424242424242", exp_month=12, exp_year=2034, brand="visa",
                cvc="123")
    return AuthorizeRequest(reference=ref(), amount=amount, currency=currency, card=card,
                            capture=capture)


def mod(provider_reference: str, amount: int, currency: str) -> ModificationRequest:
    return ModificationRequest(reference=ref("mod"), provider_reference=provider_reference,
                               amount=amount, currency=currency)


class Recorder:
    """An httpx transport that must never be called: proves nothing was sent."""

    def __init__(self):
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(500)


def offline(provider: str) -> tuple[object, Recorder]:
    recorder = Recorder()
    cfg = config(provider, "https://provider.invalid")
    client = httpx.Client(base_url=cfg.base_url, transport=httpx.MockTransport(recorder))
    return ADAPTERS[provider](cfg, client=client), recorder


# --- what each sandbox records as charged ------------------------------------------------------
# (provider, currency, ISO minor units, what the provider's ledger holds)
CHARGED = [
    ("stripe", "ISK", 1000, 100000),  # Stripe: ISK two-decimal, 1000 ISK is 100000
    ("stripe", "UGX", 5000, 500000),
    ("stripe", "MGA", 150000, 1500),  # zero-decimal at Stripe
    ("stripe", "KWD", 1250, 1250),
    ("adyen", "ISK", 1000, 100000),  # Adyen: ISK and CLP in hundredths
    ("adyen", "CLP", 1000, 100000),
    ("adyen", "IDR", 1500000, 15000),  # IDR in whole rupiah
    ("adyen", "CVE", 12300, 123),
    ("checkout", "ISK", 1000, 1000),  # Checkout.com: ISK as ISO, CLP divided by 100
    ("checkout", "CLP", 1000, 100000),
    ("checkout", "KWD", 1250, 1250),
]


@pytest.mark.parametrize("provider,currency,iso,wire", CHARGED,
                         ids=[f"{p}-{c}" for p, c, _, _ in CHARGED])
def test_the_sandbox_charges_the_providers_units_and_the_lookup_reads_them_back(
        provider, currency, iso, wire):
    adapter = adapter_for(provider)
    request = auth(amount=iso, currency=currency, capture=True)
    result = adapter.authorize(request)
    charge = SandboxCharge.objects.get(provider=provider,
                                       provider_reference=result.provider_reference)
    assert (charge.amount, charge.amount_captured, charge.currency) == (wire, wire, currency)
    found = adapter.lookup(request)
    assert (found.found, found.amount) == (True, iso)


@pytest.mark.parametrize("provider,currency,iso,wire", [
    ("stripe", "ISK", 1000, 100000), ("adyen", "ISK", 1000, 100000),
    ("checkout", "CLP", 1000, 100000)])
def test_partial_capture_and_refund_are_sent_in_the_providers_units(provider, currency, iso,
                                                                   wire):
    adapter = adapter_for(provider)
    result = adapter.authorize(auth(amount=iso, currency=currency))
    adapter.capture(mod(result.provider_reference, 600, currency))
    charge = SandboxCharge.objects.get(provider_reference=result.provider_reference)
    assert (charge.status, charge.amount_captured) == ("captured", wire * 6 // 10)
    adapter.refund(mod(result.provider_reference, 200, currency))
    charge.refresh_from_db()
    assert charge.amount_refunded == wire * 2 // 10


@pytest.mark.parametrize("provider,currency,amount", [
    ("stripe", "KWD", 1005), ("stripe", "MGA", 150), ("adyen", "IDR", 12345),
    ("adyen", "CVE", 150), ("checkout", "KWD", 1005), ("checkout", "CLP", 10_000_000)])
def test_an_amount_the_provider_cannot_take_is_refused_before_sending(provider, currency,
                                                                     amount):
    adapter, recorder = offline(provider)
    with pytest.raises(AmountNotRepresentable) as excinfo:
        adapter.authorize(auth(amount=amount, currency=currency))
    assert excinfo.value.code == "amount_not_representable"
    with pytest.raises(AmountNotRepresentable):
        adapter.capture(mod("pi_1" if provider == "stripe" else "pay_1", amount, currency))
    with pytest.raises(AmountNotRepresentable):
        adapter.refund(mod("pi_1" if provider == "stripe" else "pay_1", amount, currency))
    assert recorder.requests == []


# --- the sandboxes refuse what the providers refuse ----------------------------------------
@pytest.fixture
def stripe_wire():
    with httpx.Client(base_url=SANDBOX_HOST, transport=SandboxTransport(stripe_sandbox.app),
                      headers={"Authorization": "Bearer sk_test_sandbox"}) as client:
        yield client


def _intent(client: httpx.Client, amount: int, currency: str, key: str | None = None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/payment_intents", headers=headers, data={
        "amount": str(amount), "currency": currency, "payment_method": "pm_card_visa",
        "confirm": "true", "payment_method_types[0]": "card", "capture_method": "manual"})


@pytest.mark.parametrize("currency", ["isk", "ugx"])
def test_stripe_sandbox_refuses_fractional_isk_and_ugx_as_stripe_does(stripe_wire, currency):
    resp = _intent(stripe_wire, 105050, currency, key="att_isk_fraction")
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_charge_amount_no_decimal_compatible", "amount")
    assert error["message"].startswith(
        f"Invalid amount. Currency {currency.upper()} has become effectively zero-decimal "
        "and charged amounts must be evenly divisible by 100.")
    assert not SandboxCharge.objects.exists()
    # refused before execution: not saved under the key, a corrected retry goes through
    assert not SandboxIdempotencyRecord.objects.filter(key="att_isk_fraction").exists()
    assert _intent(stripe_wire, 105000, currency).status_code == 200


def test_stripe_sandbox_refuses_three_decimal_amounts_not_ending_in_zero(stripe_wire):
    resp = _intent(stripe_wire, 1005, "kwd")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "amount"
    intent = _intent(stripe_wire, 1010, "kwd").json()
    capture = stripe_wire.post(f"/v1/payment_intents/{intent['id']}/capture",
                               data={"amount_to_capture": "1005"})
    assert capture.status_code == 400
    assert capture.json()["error"]["param"] == "amount_to_capture"
    assert SandboxCharge.objects.get().status == "authorized"


@pytest.fixture
def checkout_wire():
    client = client_for(config("checkout"))
    client.headers["Authorization"] = "Bearer sk_sbox_sandbox"
    with client:
        yield client


def _payment(amount: int, currency: str) -> dict:
    return {"source": {"type": "card", "number": "4242424242424242", "expiry_month": 12,
                       "expiry_year": 2034}, "amount": amount, "currency": currency,
            "processing_channel_id": SANDBOX_CREDENTIALS["checkout"]["processing_channel_id"],
            "capture": False}


@pytest.mark.parametrize("amount,currency", [(1001, "BHD"), (1005, "KWD"), (3, "TND"),
                                             (1_000_000_000, "EUR")])
def test_checkout_sandbox_refuses_what_checkout_refuses(checkout_wire, amount, currency):
    resp = checkout_wire.post("/payments", json=_payment(amount, currency))
    assert resp.status_code == 422
    body = resp.json()
    assert (body["error_type"], body["error_codes"]) == ("request_invalid", ["amount_invalid"])
    assert not SandboxCharge.objects.exists()


def test_checkout_sandbox_refuses_an_action_amount_not_ending_in_zero(checkout_wire):
    payment = checkout_wire.post("/payments", json=_payment(1250, "KWD")).json()
    resp = checkout_wire.post(f"/payments/{payment['id']}/captures",
                              json={"amount": 1005, "reference": "mod_1"})
    assert resp.status_code == 422 and resp.json()["error_codes"] == ["amount_invalid"]
    assert SandboxCharge.objects.get().status == "authorized"


# --- amounts the providers report: webhooks and settlement -----------------------------------
def test_adyen_webhook_amounts_are_read_back_in_iso_minor_units():
    key = "ab" * 32
    item = {"eventCode": "AUTHORISATION", "success": "true", "pspReference": "PSP1",
            "merchantAccountCode": "M", "merchantReference": "att_1",
            "amount": {"value": 100000, "currency": "ISK"}}
    odd = {**item, "pspReference": "PSP2", "amount": {"value": 105, "currency": "ISK"}}
    body = {"live": "false", "notificationItems": [
        {"NotificationRequestItem": {**i, "additionalData": {
            "hmacSignature": adyen_webhooks.sign(i, key)}}} for i in (item, odd)]}
    events = adyen_webhooks.parse(json.dumps(body).encode(), hmac_keys=[key], livemode=False)
    assert [(e.amount, e.currency) for e in events] == [(1000, "ISK"), (0, "ISK")]


def test_checkout_webhook_amounts_are_read_back_in_iso_minor_units():
    event = {"id": "evt_1", "type": "payment_captured",
             "data": {"id": "pay_1", "action_id": "act_1", "reference": "att_1",
                      "amount": 100000, "currency": "CLP"}}
    body = json.dumps(event).encode()
    [parsed] = checkout_webhooks.parse(body, signature=checkout_webhooks.sign(body, "k"),
                                       keys=["k"])
    assert (parsed.amount, parsed.currency) == (1000, "CLP")


def test_adyen_settlement_report_is_in_major_units_and_parses_back_to_iso():
    adapter = adapter_for("adyen")
    result = adapter.authorize(auth(amount=1000, currency="ISK", capture=True))
    charge = SandboxCharge.objects.get(provider_reference=result.provider_reference)
    batch = adyen_sandbox.batch_number(charge.created_at.astimezone(UTC).date())
    with httpx.Client(base_url=SANDBOX_HOST,
                      transport=SandboxTransport(adyen_sandbox.app)) as client:
        report = client.get(f"/reports/download/MerchantAccount/SwitchyardSandbox/"
                            f"settlement_detail_report_batch_{batch}.csv",
                            headers={"X-API-Key": "sandbox"}).text
    [row] = csv.DictReader(io.StringIO(report))
    assert (row["Gross Currency"], row["Gross Credit (GC)"]) == ("ISK", "1000.00")
    [line] = adapter.settlement_report(batch)
    assert (line.amount, line.currency) == (1000, "ISK")


def test_checkout_financial_actions_are_in_major_units(checkout_wire):
    adapter = adapter_for("checkout")
    result = adapter.authorize(auth(amount=1000, currency="CLP", capture=True))
    actions = checkout_wire.get("/financial-actions",
                                params={"payment_id": result.provider_reference}).json()
    [action] = actions["data"]
    gross = action["breakdown"][0]
    assert (gross["transaction_currency"], gross["transaction_currency_amount"]) == (
        "CLP", 1000.0)
