"""Checkout.com webhooks at the provider layer: `Cko-Signature` over the raw body
(docs/providers.md 3.8), parsing into normalized events, and what the sandbox sends."""

from __future__ import annotations

import json

import pytest

from providers.base import InvalidWebhook
from providers.checkout import webhooks

KEY = "made-up-signature-key-for-tests"
EVENT = {"id": "evt_test_1", "type": "payment_captured", "created_on": "2026-11-28T00:00:00Z",
         "data": {"id": "pay_test", "action_id": "act_capture_1", "reference": "att_1",
                  "amount": 1050, "currency": "EUR", "response_code": "10000",
                  "response_summary": "Approved"}}


def raw(event: dict = EVENT) -> bytes:
    return json.dumps(event).encode()


def test_the_signature_is_hex_hmac_sha256_of_the_raw_body():
    import hashlib
    import hmac

    body = raw()
    assert webhooks.sign(body, KEY) == hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert webhooks.is_valid(body, webhooks.sign(body, KEY).upper(), [KEY])  # any letter case
    assert not webhooks.is_valid(body + b" ", webhooks.sign(body, KEY), [KEY])  # raw bytes
    assert webhooks.is_valid(body, webhooks.sign(body, KEY), ["other", KEY])  # rotation
    assert not webhooks.is_valid(body, "", [KEY])


@pytest.mark.parametrize("event_type,kind,success", [
    ("payment_approved", "authorization", True), ("payment_declined", "authorization", False),
    ("payment_captured", "capture", True), ("payment_capture_declined", "capture", False),
    ("payment_voided", "cancel", True), ("payment_void_declined", "cancel", False),
    ("payment_refunded", "refund", True), ("payment_refund_declined", "refund", False),
    ("payment_capture_pending", "other", False), ("dispute_received", "other", False)])
def test_event_types_are_normalized(event_type, kind, success):
    body = raw({**EVENT, "type": event_type})
    [event] = webhooks.parse(body, signature=webhooks.sign(body, KEY), keys=[KEY])
    assert (event.kind, event.success, event.raw_type, event.event_id) == (
        kind, success, event_type, "evt_test_1")
    assert (event.reference, event.provider_reference, event.amount) == ("att_1", "pay_test",
                                                                          1050)
    assert event.operation_reference == ("" if kind == "authorization" else "act_capture_1")


def test_a_declined_payment_carries_the_normalized_decline_code():
    body = raw({**EVENT, "type": "payment_declined",
                "data": {**EVENT["data"], "response_code": "20051"}})
    [event] = webhooks.parse(body, signature=webhooks.sign(body, KEY), keys=[KEY])
    assert event.decline_code == "insufficient_funds"


@pytest.mark.parametrize("body,signature,keys,status", [
    (raw(), "", [KEY], 401),
    (raw(), webhooks.sign(raw(), "wrong"), [KEY], 401),
    (raw(), webhooks.sign(raw(), KEY), [], 401),
    (b"not json", webhooks.sign(b"not json", KEY), [KEY], 400),
    (b"[]", webhooks.sign(b"[]", KEY), [KEY], 400),
    (raw({"id": "evt", "type": "payment_approved"}),
     webhooks.sign(raw({"id": "evt", "type": "payment_approved"}), KEY), [KEY], 400),
])
def test_parse_refuses_what_it_cannot_trust(body, signature, keys, status):
    with pytest.raises(InvalidWebhook) as caught:
        webhooks.parse(body, signature=signature, keys=keys)
    assert caught.value.status == status
