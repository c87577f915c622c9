"""Stripe webhooks at the provider layer: the `Stripe-Signature` scheme (docs/providers.md 1.8,
docs.stripe.com/webhooks#verify-manually), parsing Event objects into normalized events, and
what the Stripe sandbox sends."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from providers import webhooks as receivers
from providers.base import AccountConfig, AuthorizeRequest, Card, InvalidWebhook
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS
from providers.sandboxes.models import SandboxNotification
from providers.sandboxes.stripe import account_for_key, delivery_headers
from providers.stripe import webhooks
from providers.stripe.adapter import StripeAdapter

SECRET = "whsec_made_up_for_tests_only"
OLD_SECRET = "whsec_the_one_before_for_tests"
NOW = 1_900_000_000  # a fixed clock: nothing here depends on the real time

INTENT = {"id": "pi_test_1", "object": "payment_intent", "amount": 1050, "currency": "usd",
          "amount_received": 0, "capture_method": "manual", "status": "requires_capture",
          "metadata": {"switchyard_attempt": "att_test_1"}}
EVENT = {"id": "evt_test_1", "object": "event", "type": "payment_intent.amount_capturable_updated",
         "livemode": False, "created": NOW, "data": {"object": INTENT},
         "request": {"id": "req_test_1", "idempotency_key": "att_test_1"}}


def raw(event: dict = EVENT) -> bytes:
    return json.dumps(event).encode()


def header(body: bytes, *secrets: str, t: int = NOW, extra: str = "") -> str:
    signatures = ",".join(f"v1={webhooks.sign(body, s, t)}" for s in secrets or (SECRET,))
    return f"t={t},{signatures}{extra}"


def parse(body: bytes, hdr: str, *, secrets=(SECRET,), livemode: bool = False, now=NOW):
    return webhooks.parse(body, header=hdr, secrets=list(secrets), livemode=livemode, now=now)


def refused(body: bytes, hdr: str, **kwargs) -> InvalidWebhook:
    with pytest.raises(InvalidWebhook) as caught:
        parse(body, hdr, **kwargs)
    return caught.value


# --- the signature ------------------------------------------------------------------------------
def test_the_signature_is_hex_hmac_sha256_of_t_dot_raw_body_under_the_whole_secret():
    body = raw()
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert webhooks.sign(body, SECRET, NOW) == expected
    assert webhooks.signature_header(body, SECRET, NOW) == f"t={NOW},v1={expected}"


def test_a_valid_signature_is_accepted():
    body = raw()
    [event] = parse(body, header(body))
    assert (event.event_id, event.kind, event.success) == ("evt_test_1", "authorization", True)


def test_any_v1_may_match_and_other_schemes_are_ignored():
    body = raw()
    hdr = f"t={NOW},v1={webhooks.sign(body, 'whsec_other', NOW)}," \
          f"v1={webhooks.sign(body, SECRET, NOW)},v0={'0' * 64}"
    assert parse(body, hdr)


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "v0 only matches",
                                  "signed for another time"])
def test_a_signature_that_does_not_verify_is_refused(case):
    body = raw()
    hdr = {"wrong secret": header(body, "whsec_wrong"),
           "tampered body": header(body + b" "),
           "v0 only matches": f"t={NOW},v1={'0' * 64},v0={webhooks.sign(body, SECRET, NOW)}",
           "signed for another time": f"t={NOW},v1={webhooks.sign(body, SECRET, NOW - 1)}",
           }[case]
    assert refused(body, hdr).status == 401


@pytest.mark.parametrize("offset,accepted", [
    (-301, False), (-300, True), (-299, True), (299, True), (300, True), (301, False),
    (-86_400, False), (86_400, False)])
def test_the_timestamp_must_be_within_300_seconds_either_side(offset, accepted):
    body = raw()
    hdr = header(body, t=NOW + offset)  # correctly signed for that time
    if accepted:
        assert parse(body, hdr)
    else:
        assert refused(body, hdr).status == 401


@pytest.mark.parametrize("hdr", [
    "", "   ", "garbage", "t=,v1=ab", f"t=abc,v1={'a' * 64}", f"v1={'a' * 64}", f"t={NOW}",
    f"t={NOW},t={NOW},v1={'a' * 64}", f"t={NOW},v1", f"t={NOW},=x,v1={'a' * 64}",
    f"t=-{NOW},v1={'a' * 64}", f"t={NOW}{'0' * 20},v1={'a' * 64}",
    f"t={NOW}," + ",".join(["v1=" + "a" * 64] * 17)])
def test_a_missing_or_garbled_header_is_refused(hdr):
    assert refused(raw(), hdr).status == 401


def test_the_previous_secret_is_accepted_during_a_rotation():
    body = raw()
    assert parse(body, header(body, OLD_SECRET), secrets=(SECRET, OLD_SECRET))
    assert refused(body, header(body, OLD_SECRET), secrets=(SECRET, "")).status == 401
    # Stripe signs with both while both are live: either is enough
    assert parse(body, header(body, "whsec_unknown", SECRET), secrets=(SECRET, OLD_SECRET))


def test_no_secret_configured_is_refused():
    body = raw()
    assert refused(body, header(body), secrets=("", "")).status == 401


@pytest.mark.parametrize("body", [
    b"not json", b"[]", json.dumps({"id": "evt_1", "type": "x"}).encode(),
    json.dumps({**EVENT, "object": "list"}).encode(),
    json.dumps({**EVENT, "data": {"object": "pi_1"}}).encode(),
    json.dumps({**EVENT, "livemode": True}).encode()])
def test_an_authentic_body_we_cannot_take_is_a_400_after_authentication(body):
    error = refused(body, header(body))
    assert (error.status, error.authenticated) == (400, True)


def test_refusals_before_the_signature_verified_are_not_authenticated():
    body = b"not json"
    assert not refused(body, header(body, "whsec_wrong")).authenticated


def test_the_header_is_prechecked_without_any_secret():
    """`providers.webhooks.precheck` runs before the account is read."""
    body = raw()
    for hdr in ("garbage", header(body, t=NOW - 3600)):
        with pytest.raises(InvalidWebhook) as caught:
            receivers.precheck(body=body, headers={"stripe-signature": hdr})
        assert caught.value.status == 401
    receivers.precheck(body=body, headers={"stripe-signature": webhooks.signature_header(
        body, "whsec_any_secret")})  # shape and time only
    receivers.precheck(body=body, headers={})  # not Stripe's: its parser decides
    with pytest.raises(InvalidWebhook) as caught:
        receivers.precheck(body=b"nope", headers={})
    assert caught.value.status == 400


def test_stripe_is_a_receiver_using_the_accounts_webhook_secrets():
    body = raw()
    credentials = {"secret_key": "sk_test_x", "webhook_secret": "whsec_new",
                   "webhook_secret_previous": SECRET}
    signed = webhooks.signature_header(body, SECRET)  # now: the receiver's real clock
    [event] = receivers.parse(provider="stripe", livemode=False, credentials=credentials,
                              body=body, headers={"stripe-signature": signed})
    assert event.raw_type == "payment_intent.amount_capturable_updated"
    assert "stripe" in receivers.RECEIVERS


# --- events -------------------------------------------------------------------------------------
def event(event_type: str, obj: dict, *, key: str | None = "mod_test_1",
          **fields) -> list:
    body = raw({**EVENT, "type": event_type, "data": {"object": obj},
                "request": {"id": "req_1" if key else None, "idempotency_key": key}, **fields})
    return parse(body, header(body))


def intent(**fields) -> dict:
    return {**INTENT, **fields}


REFUND = {"id": "re_test_1", "object": "refund", "amount": 300, "currency": "usd",
          "payment_intent": "pi_test_1", "charge": "ch_test_1", "status": "succeeded",
          "failure_reason": None, "metadata": {"switchyard_operation": "re_ours_1"}}


def summary(e) -> tuple:
    return (e.kind, e.success, e.reference, e.provider_reference, e.operation_reference,
            e.amount, e.currency)


@pytest.mark.parametrize("event_type,obj,key,expected", [
    ("payment_intent.amount_capturable_updated", intent(), "att_test_1",
     ("authorization", True, "att_test_1", "pi_test_1", "", 1050, "USD")),
    ("payment_intent.succeeded",
     intent(capture_method="automatic", status="succeeded", amount_received=1050), "att_test_1",
     ("authorization", True, "att_test_1", "pi_test_1", "", 1050, "USD")),
    ("payment_intent.succeeded",  # a manual-capture PaymentIntent: our capture, partial
     intent(status="succeeded", amount_received=800), "mod_test_1",
     ("capture", True, "mod_test_1", "pi_test_1", "", 800, "USD")),
    ("payment_intent.succeeded",  # captured by no request of ours: names the attempt
     intent(status="succeeded", amount_received=1050), None,
     ("capture", True, "att_test_1", "pi_test_1", "", 1050, "USD")),
    ("payment_intent.canceled", intent(status="canceled"), "mod_test_2",
     ("cancel", True, "mod_test_2", "pi_test_1", "", 1050, "USD")),
    ("payment_intent.canceled", intent(status="canceled"), None,  # Stripe's own: expiry
     ("cancel", True, "att_test_1", "pi_test_1", "", 1050, "USD")),
    ("payment_intent.amount_capturable_updated", intent(status="succeeded"), None,
     ("other", False, "att_test_1", "pi_test_1", "", 1050, "USD")),
    ("payment_intent.created", intent(status="requires_payment_method"), None,
     ("other", False, "att_test_1", "pi_test_1", "", 1050, "USD")),
    ("refund.created", REFUND, "re_ours_1",
     ("refund", True, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("refund.created", {**REFUND, "status": "pending"}, "re_ours_1",
     ("other", False, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("refund.updated", {**REFUND, "status": "requires_action"}, None,
     ("other", False, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("refund.updated", {**REFUND, "status": "failed", "failure_reason": "expired_or_canceled_card"},
     None, ("refund", False, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("refund.failed", {**REFUND, "status": "failed"}, None,
     ("refund", False, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("refund.updated", {**REFUND, "status": "canceled"}, None,
     ("refund", False, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("charge.refund.updated", {**REFUND, "status": "succeeded"}, None,
     ("refund", True, "re_ours_1", "pi_test_1", "re_test_1", 300, "USD")),
    ("refund.created", {**REFUND, "metadata": {}}, "re_ours_2",  # the request names it
     ("refund", True, "re_ours_2", "pi_test_1", "re_test_1", 300, "USD")),
    ("customer.created", {"id": "cus_1", "object": "customer"}, None,
     ("other", False, "", "", "", 0, "")),
])
def test_event_types_are_normalized(event_type, obj, key, expected):
    [parsed] = event(event_type, obj, key=key)
    assert summary(parsed) == expected
    assert (parsed.event_id, parsed.raw_type) == ("evt_test_1", event_type)


@pytest.mark.parametrize("error,decline_code", [
    ({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"},
     "insufficient_funds"),
    ({"type": "card_error", "code": "expired_card", "decline_code": "expired_card"},
     "expired_card"),
    ({"type": "card_error", "code": "processing_error"}, "processing_error"),
    ({"type": "card_error", "code": "card_declined", "decline_code": "lost_card"}, "lost_card"),
    ({"type": "card_error", "code": "card_declined", "decline_code": "no_such_code"},
     "generic_decline"),
    (None, "generic_decline")])
def test_a_failed_payment_carries_the_normalized_decline_code(error, decline_code):
    obj = intent(status="requires_payment_method", last_payment_error=error)
    [parsed] = event("payment_intent.payment_failed", obj, key="att_test_1")
    assert (parsed.kind, parsed.success, parsed.reference, parsed.decline_code) == (
        "authorization", False, "att_test_1", decline_code)


def test_charge_refunded_decides_only_the_refunds_it_lists():
    charge = {"id": "ch_test_1", "object": "charge", "payment_intent": "pi_test_1",
              "amount": 1050, "amount_refunded": 500, "currency": "usd",
              "metadata": {"switchyard_attempt": "att_test_1"}}
    [other] = event("charge.refunded", charge, key="re_ours_1")
    assert (other.kind, other.reference, other.provider_reference) == (
        "other", "att_test_1", "pi_test_1")
    listed = {**charge, "refunds": {"object": "list", "data": [
        REFUND, {**REFUND, "id": "re_test_2", "status": "pending", "amount": 200,
                 "metadata": {"switchyard_operation": "re_ours_2"}}]}}
    [refund] = event("charge.refunded", listed, key="re_ours_1")
    assert summary(refund) == ("refund", True, "re_ours_1", "pi_test_1", "re_test_1", 300,
                               "USD")
    assert refund.event_id == "evt_test_1:re_test_1"


def test_amounts_are_read_in_iso_minor_units():
    [isk] = event("payment_intent.amount_capturable_updated",
                  intent(amount=100000, currency="isk"), key="att_test_1")
    assert (isk.amount, isk.currency) == (1000, "ISK")  # Stripe counts ISK in hundredths
    [odd] = event("payment_intent.amount_capturable_updated",
                  intent(amount=100050, currency="isk"), key="att_test_1")
    assert odd.amount == 0  # not a whole krona: not known, never guessed
    [junk] = event("refund.created", {**REFUND, "amount": "300", "currency": 5}, key=None)
    assert (junk.amount, junk.currency) == (0, "")


def test_an_authentic_event_with_odd_fields_is_read_not_crashed_on():
    [parsed] = event("payment_intent.payment_failed",
                     {"id": 5, "object": "payment_intent", "metadata": ["x"],
                      "last_payment_error": "oops"}, key=None)
    assert (parsed.kind, parsed.reference, parsed.provider_reference, parsed.decline_code) == (
        "authorization", "", "", "generic_decline")


# --- the sandbox --------------------------------------------------------------------------------
KEY = "sk_test_sandbox_webhooks_test"
CONFIG = AccountConfig(name="stripe-test", provider="stripe", livemode=False,
                       base_url="sandbox://local", credentials={"secret_key": KEY})


@pytest.fixture
def endpoint(db):
    sandbox_webhooks.register("stripe", account_for_key(KEY), "/provider_webhooks/acct_test",
                              SECRET)


def sent() -> list[dict]:
    return [json.loads(n.body) for n in SandboxNotification.objects.order_by("id")]


def authorize(number: str = "4242424242424242", *, capture: bool = False) -> tuple[str, str]:
    from providers.base import ProviderError

    reference = "att_" + uuid.uuid4().hex[:20]
    request = AuthorizeRequest(reference=reference, amount=1050, currency="USD",
                               card=Card(number, 12, 2034, "visa", cvc="123"), capture=capture)
    try:
        return reference, StripeAdapter(CONFIG).authorize(request).provider_reference
    except ProviderError:
        return reference, ""


@pytest.mark.django_db
def test_the_sandbox_sends_payment_intent_and_refund_events(endpoint):
    from providers.base import ModificationRequest

    adapter = StripeAdapter(CONFIG)
    manual, pi_manual = authorize()
    auto, pi_auto = authorize(capture=True)
    declined, _ = authorize("4000000000009995")
    adapter.capture(ModificationRequest("mod_capture_1", pi_manual, 800, "USD"))
    refund = adapter.refund(ModificationRequest("re_ours_1", pi_auto, 300, "USD"))
    voided, pi_voided = authorize()
    adapter.cancel(ModificationRequest("mod_cancel_1", pi_voided, 0, "USD"))
    events = sent()
    assert [e["type"] for e in events] == [
        "payment_intent.amount_capturable_updated", "payment_intent.succeeded",
        "payment_intent.payment_failed", "payment_intent.succeeded", "refund.created",
        "charge.refunded", "payment_intent.amount_capturable_updated",
        "payment_intent.canceled"]
    assert all(e["object"] == "event" and e["id"].startswith("evt_") for e in events)
    assert len({e["id"] for e in events}) == len(events)
    parsed = [parse(json.dumps(e).encode(), header(json.dumps(e).encode()))[0] for e in events]
    assert [(p.kind, p.success, p.reference) for p in parsed] == [
        ("authorization", True, manual), ("authorization", True, auto),
        ("authorization", False, declined), ("capture", True, "mod_capture_1"),
        ("refund", True, "re_ours_1"), ("other", False, auto),
        ("authorization", True, voided), ("cancel", True, "mod_cancel_1")]
    assert parsed[2].decline_code == "insufficient_funds"
    assert parsed[3].amount == 800
    assert parsed[4].operation_reference == refund.provider_reference


@pytest.mark.django_db
def test_a_dropped_connection_loses_the_answer_not_the_event(endpoint):
    reference, pi = authorize("4000000000000408", capture=True)
    assert pi == ""  # the answer never came
    [sent_event] = sent()
    assert sent_event["type"] == "payment_intent.succeeded"
    assert sent_event["data"]["object"]["metadata"]["switchyard_attempt"] == reference
    assert sent_event["request"]["idempotency_key"] == reference


@pytest.mark.django_db
def test_nothing_is_sent_when_nothing_was_processed(endpoint):
    authorize("4000000000000606")  # hangs before committing
    authorize("4000000000000507")  # 503 before processing
    assert sent() == []


@pytest.mark.django_db
def test_each_delivery_attempt_is_signed_when_it_is_sent(endpoint):
    authorize()
    notification = SandboxNotification.objects.get()
    assert notification.headers == {}  # nothing signed at queue time: a retry signs afresh
    signed = delivery_headers(notification.body, SECRET)["Stripe-Signature"]
    t, signatures = webhooks.read_header(signed)
    assert webhooks.is_valid(notification.body.encode(), t, signatures, [SECRET])


@pytest.mark.django_db
def test_events_go_only_to_the_account_whose_key_made_the_payment(endpoint):
    other = StripeAdapter(AccountConfig(
        name="other", provider="stripe", livemode=False, base_url="sandbox://local",
        credentials={"secret_key": SANDBOX_CREDENTIALS["stripe"]["secret_key"]}))
    other.authorize(AuthorizeRequest(reference="att_other_account", amount=1050,
                                     currency="USD", card=Card("4242424242424242", 12, 2034,
                                                               "visa", cvc="123"),
                                     capture=False))
    assert sent() == []
    assert account_for_key(KEY) != account_for_key("sk_test_other")
