"""Adyen webhooks at the provider layer: HMAC signing and checking (docs/providers.md 2.8),
parsing into normalized events, and the sandbox's technical cancel (`POST /v71/cancels`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import pytest

from providers.adyen import webhooks
from providers.adyen.adapter import AdyenAdapter
from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    Card,
    InvalidWebhook,
    ModificationRequest,
    OutcomeUnknown,
)
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.catalog import BASE_PATHS, SANDBOX_CREDENTIALS, app_for
from providers.sandboxes.models import SandboxCharge, SandboxNotification
from providers.sandboxes.transport import SANDBOX_HOST, SandboxTransport

KEY = "0123456789abcdef" * 4  # a made-up test key
ITEM = {"eventCode": "AUTHORISATION", "success": "true", "pspReference": "7914073381342284",
        "merchantAccountCode": "TestMerchant", "merchantReference": "TestPayment-1407325143704",
        "amount": {"value": 1130, "currency": "EUR"}, "reason": "unsigned, not covered"}


def signed(item: dict, key: str = KEY) -> dict:
    return {**item, "additionalData": {"hmacSignature": webhooks.sign(item, key)}}


def delivery(*items: dict, live: str = "false") -> bytes:
    return json.dumps({"live": live, "notificationItems": [
        {"NotificationRequestItem": i} for i in items]}).encode()


def test_the_signature_is_base64_hmac_sha256_of_the_eight_fields_with_the_hex_key():
    text = webhooks.signing_string(ITEM)
    assert text == ("7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:"
                    "AUTHORISATION:true")  # originalReference missing → empty
    expected = base64.b64encode(hmac.new(bytes.fromhex(KEY), text.encode(),
                                         hashlib.sha256).digest()).decode()
    assert webhooks.sign(ITEM, KEY) == expected


@pytest.mark.parametrize("field,value", [
    ("pspReference", "7914073381342285"), ("merchantReference", "other"),
    ("amount", {"value": 1131, "currency": "EUR"}), ("amount", {"value": 1130, "currency": "USD"}),
    ("eventCode", "REFUND"), ("success", "false"), ("merchantAccountCode", "Other"),
    ("originalReference", "X")])
def test_every_signed_field_is_covered(field, value):
    tampered = {**signed(ITEM), field: value}
    assert not webhooks.is_valid(tampered, [KEY])


def test_unsigned_fields_do_not_matter_and_any_listed_key_verifies():
    item = {**signed(ITEM), "reason": "changed", "eventDate": "2030-01-01T00:00:00+01:00"}
    assert webhooks.is_valid(item, [KEY])
    assert webhooks.is_valid(item, ["00" * 32, "not hex", KEY])
    assert not webhooks.is_valid(item, ["00" * 32])
    assert not webhooks.is_valid(ITEM, [KEY])  # no signature at all


def test_parse_normalizes_authorisations_and_modifications():
    refused = signed({**ITEM, "success": "false", "reason": "Not enough balance",
                      "pspReference": "8814073381342299"})
    capture = signed({**ITEM, "eventCode": "CAPTURE", "pspReference": "CAPTUREPSP000001",
                      "originalReference": "7914073381342284", "merchantReference": "mod_1"})
    failed = signed({**ITEM, "eventCode": "REFUND_FAILED", "pspReference": "REFUNDPSP0000001",
                     "originalReference": "7914073381342284", "merchantReference": "re_1"})
    other = signed({**ITEM, "eventCode": "CHARGEBACK", "pspReference": "CHARGEBACK000001"})
    ok, no, cap, ref, chb = webhooks.parse(delivery(signed(ITEM), refused, capture, failed,
                                                    other), hmac_keys=[KEY], livemode=False)
    assert (ok.kind, ok.success, ok.provider_reference, ok.amount, ok.currency) == (
        "authorization", True, "7914073381342284", 1130, "EUR")
    assert (no.success, no.decline_code) == (False, "insufficient_funds")
    assert (cap.kind, cap.reference, cap.provider_reference, cap.operation_reference) == (
        "capture", "mod_1", "7914073381342284", "CAPTUREPSP000001")
    assert (ref.kind, ref.success) == ("refund", False)  # REFUND_FAILED is a failure
    assert chb.kind == "other"
    assert len({e.event_id for e in (ok, no, cap, ref, chb)}) == 5


@pytest.mark.parametrize("body,keys,status", [
    (b"not json", [KEY], 400),
    (b"{}", [KEY], 400),
    (json.dumps({"live": "false", "notificationItems": [{"x": 1}]}).encode(), [KEY], 400),
    (delivery(signed(ITEM), live="true"), [KEY], 400),
    (delivery(signed(ITEM)), [], 401),
    (delivery(signed(ITEM), signed(ITEM, "00" * 32)), [KEY], 401),
    # malformed items are refused before anything trips over them (none is authentic yet)
    (delivery({**ITEM, "amount": [1]}), [KEY], 400),
    (delivery({**ITEM, "amount": "x"}), [KEY], 400),
    (delivery({**ITEM, "amount": {"value": "1130", "currency": "EUR"}}), [KEY], 400),
    (delivery({**ITEM, "additionalData": "s"}), [KEY], 400),
    (delivery({**ITEM, "success": True}), [KEY], 400),
    (delivery({**ITEM, "eventCode": 5}), [KEY], 400),
    (delivery("not an object"), [KEY], 400),
    (b"[" * 100_000 + b"]" * 100_000, [KEY], 400),  # nested too deep for the parser
])
def test_parse_refuses_what_it_cannot_trust(body, keys, status):
    with pytest.raises(InvalidWebhook) as caught:
        webhooks.parse(body, hmac_keys=keys, livemode=False)
    assert caught.value.status == status and caught.value.message


def test_items_of_another_merchant_account_are_refused():
    other = signed({**ITEM, "merchantAccountCode": "AnotherMerchant"})
    assert webhooks.parse(delivery(signed(ITEM)), hmac_keys=[KEY], livemode=False,
                          merchant_account="TestMerchant")
    with pytest.raises(InvalidWebhook, match="AnotherMerchant") as caught:
        webhooks.parse(delivery(signed(ITEM), other), hmac_keys=[KEY], livemode=False,
                       merchant_account="TestMerchant")
    assert caught.value.status == 400


# --- the sandbox's technical cancel -----------------------------------------------------------
@pytest.fixture
def adapter(db):
    client = httpx.Client(base_url=SANDBOX_HOST + BASE_PATHS["adyen"],
                          transport=SandboxTransport(app_for("adyen")))
    yield AdyenAdapter(AccountConfig(name="adyen-test", provider="adyen", livemode=False,
                                     credentials=SANDBOX_CREDENTIALS["adyen"]), client)
    client.close()


@pytest.fixture
def endpoint(db):
    sandbox_webhooks.register("adyen", SANDBOX_CREDENTIALS["adyen"]["merchant_account"],
                              "/provider_webhooks/acct_test", KEY)


def request_for(reference: str, number: str = "4242424242424242",
                capture: bool = False) -> AuthorizeRequest:
    return AuthorizeRequest(reference=reference, amount=1050, currency="EUR",
                            card=Card(number, 12, 2034, "visa"), capture=capture)


def notifications(event_code: str) -> list[dict]:
    return [json.loads(n.body)["notificationItems"][0]["NotificationRequestItem"]
            for n in SandboxNotification.objects.filter(event_code=event_code)]


def test_release_cancels_an_authorisation_by_our_reference(adapter, endpoint):
    auth = adapter.authorize(request_for("att_release_1"))
    result = adapter.release(request_for("att_release_1"))
    assert result.pending and result.provider_reference
    assert SandboxCharge.objects.get(reference="att_release_1").status == "canceled"
    [item] = notifications("TECHNICAL_CANCEL")
    assert (item["success"], item["originalReference"], item["merchantReference"]) == (
        "true", auth.provider_reference, "att_release_1-release")
    assert webhooks.is_valid(item, [KEY])
    assert adapter.release(request_for("att_release_1")) == result  # idempotent replay
    assert len(notifications("TECHNICAL_CANCEL")) == 1


def test_release_of_nothing_succeeds_and_of_a_capture_fails(adapter, endpoint):
    adapter.release(request_for("att_never_seen"))
    adapter.authorize(request_for("att_captured", capture=True))
    adapter.release(request_for("att_captured", capture=True))
    nothing, captured = notifications("TECHNICAL_CANCEL")
    assert nothing["success"] == "true" and "originalReference" not in nothing
    assert captured["success"] == "false"
    assert SandboxCharge.objects.get(reference="att_captured").status == "captured"


def test_the_sandbox_signs_every_webhook_it_queues(adapter, endpoint):
    auth = adapter.authorize(request_for("att_hooks"))
    adapter.capture(ModificationRequest(reference="mod_hooks", amount=1050, currency="EUR",
                                        provider_reference=auth.provider_reference))
    [authorisation] = notifications("AUTHORISATION")
    [capture] = notifications("CAPTURE")
    assert authorisation["merchantReference"] == "att_hooks"
    assert (capture["originalReference"], capture["merchantReference"]) == (
        auth.provider_reference, "mod_hooks")
    assert all(webhooks.is_valid(i, [KEY]) for i in (authorisation, capture))
    with pytest.raises(OutcomeUnknown):
        adapter.authorize(request_for("att_hang", number="4000000000000606"))
    assert not [i for i in notifications("AUTHORISATION")
                if i["merchantReference"] == "att_hang"]  # never processed: no webhook


@pytest.mark.parametrize("capture,action,status", [(False, "cancel", "canceled"),
                                                   (True, "refund", "captured")])
def test_reverse_cancels_or_refunds_whichever_applies(adapter, endpoint, capture, action,
                                                      status):
    auth = adapter.authorize(request_for(f"att_rev_{action}", capture=capture))
    result = adapter.reverse(ModificationRequest(
        reference=f"att_rev_{action}-reversal-{auth.provider_reference}", amount=1050,
        currency="EUR", provider_reference=auth.provider_reference))
    assert result.pending
    charge = SandboxCharge.objects.get(reference=f"att_rev_{action}")
    assert charge.status == status
    assert charge.amount_refunded == (1050 if capture else 0)
    [item] = notifications("CANCEL_OR_REFUND")
    assert (item["success"], item["originalReference"], item["pspReference"]) == (
        "true", auth.provider_reference, result.provider_reference)
    assert item["additionalData"]["modification.action"] == action
    assert webhooks.is_valid(item, [KEY])
    [event] = webhooks.parse(json.dumps({"live": "false", "notificationItems": [
        {"NotificationRequestItem": item}]}).encode(), hmac_keys=[KEY], livemode=False)
    assert event.kind == "reverse" and event.success


@pytest.mark.django_db(transaction=True)
def test_in_process_deliveries_use_a_host_the_app_allows(settings, endpoint):
    from providers.sandboxes.webhooks import _post

    settings.ALLOWED_HOSTS = [".switchyard.example"]
    # our receiver answers (401: no such account, refused as a bad signature is), not
    # Django's DisallowedHost 400
    assert _post("/provider_webhooks/acct_missing", '{"live": "false"}') == "401"
