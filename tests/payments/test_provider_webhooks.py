"""Provider webhooks end to end: the Adyen sandbox sends signed webhooks to
`/provider_webhooks/<account>`, Switchyard stores and applies them.

They settle what Adyen confirms only by webhook (captures, voids, refunds), resolve unknown
authorizations (AUTHORISATION), and prove "no charge" through a technical cancel by our
reference (TECHNICAL_CANCEL), which lets failover go on."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from payments.models import (
    Modification,
    Payment,
    PaymentAttempt,
    ProviderWebhookEvent,
    Refund,
)
from payments.services import attempts, provider_events, status_sync
from providers.adyen.webhooks import sign
from providers.models import ProviderAccount
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.models import SandboxCharge, SandboxCondition, SandboxNotification
from tests.conftest import pay
from tests.threads import race


def deliver() -> int:
    """Time passes: the sandbox delivers its webhooks and the worker applies them.

    A delivery is a real in-process WSGI request, which ends by closing the database
    connection as every request does: tests that deliver commit for real
    (`transaction=True`)."""
    delivered = sandbox_webhooks.deliver_due()
    provider_events.process_due()
    return delivered


def adyen(merchant) -> ProviderAccount:
    return ProviderAccount.objects.get(merchant=merchant, name="adyen-sandbox")


def item(account: ProviderAccount, **fields) -> dict:
    """A NotificationRequestItem signed with the account's key."""
    credentials = account.get_credentials()
    body = {"eventCode": "AUTHORISATION", "success": "true", "pspReference": "PSP0000000000001",
            "merchantAccountCode": credentials["merchant_account"],
            "merchantReference": "att_unknown", "amount": {"value": 1050, "currency": "EUR"},
            **fields}
    return {**body, "additionalData": {"hmacSignature": sign(body, credentials["hmac_key"])}}


def post(account: ProviderAccount, *items: dict, live: str = "false", **headers):
    body = {"live": live, "notificationItems": [{"NotificationRequestItem": i} for i in items]}
    return APIClient().post(f"/provider_webhooks/{account.id}", json.dumps(body),
                            content_type="application/json", **headers)


# --- unknown authorizations -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_commit_then_drop_is_resolved_by_the_authorisation_webhook(api):
    resp = pay(api, "4000000000000408", currency="EUR", provider="adyen-sandbox")
    assert resp.status_code == 202 and resp.json()["status"] == "unresolved"
    assert deliver() == 1
    payment = Payment.objects.get(pk=resp.json()["id"])
    assert payment.status == "succeeded" and payment.amount_captured == 1050
    [attempt] = payment.attempts.all()
    charge = SandboxCharge.objects.get(reference=attempt.id)
    assert attempt.status == "captured" and attempt.provider_reference == \
        charge.provider_reference
    assert attempt.next_sync_at is None  # no lookup needed any more
    event = ProviderWebhookEvent.objects.get()
    assert (event.raw_type, event.outcome) == ("AUTHORISATION", "applied")
    assert payment.events.filter(actor="provider_webhook").exists()
    assert REGISTRY.get_sample_value("switchyard_provider_webhook_events_total", {
        "provider": "adyen", "kind": "authorization", "outcome": "applied"}) >= 1


@pytest.mark.django_db(transaction=True)
def test_timeout_before_commit_is_released_and_then_fails_when_pinned(api):
    resp = pay(api, "4000000000000606", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    assert attempt.status == "unknown"
    assert deliver() == 0  # never processed: Adyen sends nothing
    status_sync.attempt_sync(attempt.id)  # the replay cannot tell
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert not payment.events.filter(type="payment.release_requested").exists()
    status_sync.attempt_sync(attempt.id)  # still cannot tell: release by our reference
    assert payment.events.filter(type="payment.release_requested").count() == 1
    assert Payment.objects.get(pk=payment.pk).status == "unresolved"
    assert deliver() == 1  # TECHNICAL_CANCEL
    payment.refresh_from_db()
    attempt.refresh_from_db()
    assert payment.status == "failed"
    assert payment.last_error["code"] == "provider_not_processed"
    assert "cancel" in payment.last_error["message"]
    assert (attempt.status, attempt.error_code) == ("failed", attempts.RELEASED)
    assert SandboxCharge.objects.filter(reference=attempt.id).count() == 0
    assert ProviderWebhookEvent.objects.get().raw_type == "TECHNICAL_CANCEL"


@pytest.mark.django_db(transaction=True)
def test_after_a_release_failover_goes_on_within_the_budget(api, merchant):
    attempt = lost_on_adyen_first(api, merchant)  # unpinned
    assert attempt.provider_account.provider == "adyen"
    status_sync.attempt_sync(attempt.id)
    status_sync.attempt_sync(attempt.id)
    deliver()
    payment = Payment.objects.get(pk=attempt.payment_id)
    # adyen holds nothing, so the next provider was tried (the card times out there too)
    assert [(a.provider_account.provider, a.status) for a in payment.attempts.all()] == [
        ("adyen", "failed"), ("stripe", "unknown")]
    assert payment.status == "unresolved"


def hidden_charge(attempt: PaymentAttempt, *, status: str) -> SandboxCharge:
    """What Adyen recorded under the attempt's reference although no replay of ours saw it,
    with its AUTHORISATION webhook queued (delivered with the others, in order)."""
    from providers.sandboxes.adyen import _notify

    charge = SandboxCharge.objects.create(
        provider="adyen", provider_reference=f"HIDDEN{attempt.id[-10:].upper()}",
        reference=attempt.id, amount=1050, currency="EUR", status=status,
        amount_captured=1050 if status == "captured" else 0,
        decline_code="stolen_card" if status == "declined" else "")
    _notify(attempt.provider_account.get_credentials()["merchant_account"], "AUTHORISATION",
            success=status != "declined", psp=charge.provider_reference, reference=attempt.id,
            amount=1050, currency="EUR", reason="Blocked Card" if status == "declined" else "")
    return charge


def release(attempt: PaymentAttempt) -> None:
    """Two replays that cannot tell: the second asks Adyen to release by our reference."""
    status_sync.attempt_sync(attempt.id)
    status_sync.attempt_sync(attempt.id)
    assert PaymentAttempt.objects.get(pk=attempt.pk).release_requested_at is not None


def failed_over_after_release(api, merchant) -> PaymentAttempt:
    """A manual-capture payment lost on Adyen, released with nothing held, failed over."""
    attempt = lost_on_adyen_first(api, merchant, capture_method="manual")
    release(attempt)
    assert deliver() == 1  # TECHNICAL_CANCEL: nothing held; failover to stripe
    return attempt


def lost_on_adyen_first(api, merchant, **fields) -> PaymentAttempt:
    """A routed payment whose first attempt, on Adyen (moved first), times out before Adyen
    commits it (card …0606): its unknown attempt."""
    ProviderAccount.objects.filter(pk=adyen(merchant).pk).update(priority=1)
    resp = pay(api, "4000000000000606", currency="EUR", **fields)
    return PaymentAttempt.objects.get(payment_id=resp.json()["id"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("authorisation_first", [True, False])
def test_a_release_cancels_an_authorisation_the_replays_could_not_see(api, merchant,
                                                                      authorisation_first):
    """Adyen did authorise under our reference: the technical cancel voids it, and whichever
    of its two webhooks comes last decides: not charged, so failover goes on."""
    attempt = lost_on_adyen_first(api, merchant, capture_method="manual")
    if authorisation_first:  # the AUTHORISATION was late, but left before the release
        hidden_charge(attempt, status="authorized")
        release(attempt)
    else:  # authorised before the release, but its webhook comes after the release's
        SandboxCharge.objects.create(
            provider="adyen", provider_reference=f"HIDDEN{attempt.id[-10:].upper()}",
            reference=attempt.id, amount=1050, currency="EUR", status="authorized")
        release(attempt)
        SandboxCharge.objects.filter(reference=attempt.id).delete()
        hidden_charge(attempt, status="canceled")  # the same psp; its AUTHORISATION, last
    assert deliver() == 2
    charge = SandboxCharge.objects.get(reference=attempt.id)
    attempt.refresh_from_db()
    assert charge.status == "canceled"
    assert (attempt.status, attempt.error_code) == ("failed", attempts.RELEASED)
    assert attempt.provider_reference == charge.provider_reference
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert [a.provider_account.provider for a in payment.attempts.all()] == ["adyen", "stripe"]
    assert not payment.needs_operator


@pytest.mark.django_db(transaction=True)
def test_a_refusal_the_release_names_is_a_decline_not_a_failover(api, merchant):
    attempt = lost_on_adyen_first(api, merchant)
    hidden_charge(attempt, status="declined")  # Adyen refused it: Blocked Card, a hard decline
    release(attempt)
    deliver()
    payment = Payment.objects.get(pk=attempt.payment_id)
    attempt.refresh_from_db()
    assert attempt.status == "declined" and payment.status == "failed"
    assert payment.attempts.count() == 1  # a hard decline is never tried elsewhere


@pytest.mark.django_db(transaction=True)
def test_a_capture_the_release_could_not_cancel_is_kept(api):
    resp = pay(api, "4000000000000606", currency="EUR",
               provider="adyen-sandbox")  # automatic capture
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    charge = hidden_charge(attempt, status="captured")
    release(attempt)
    deliver()  # AUTHORISATION (success), TECHNICAL_CANCEL (failed: already captured)
    attempt.refresh_from_db()
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert (attempt.status, attempt.provider_reference) == ("captured",
                                                            charge.provider_reference)
    assert payment.status == "succeeded" and payment.amount_captured == 1050
    assert SandboxCharge.objects.get(pk=charge.pk).status == "captured"


@pytest.mark.django_db(transaction=True)
def test_an_authorisation_after_the_release_is_an_extra_charge_and_is_reversed(api, merchant):
    """The release found nothing; then Adyen reports an authorisation under the reference
    (a request that reached it late): the payment has moved on, so it is reversed."""
    attempt = failed_over_after_release(api, merchant)
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == "failed"
    late = hidden_charge(attempt, status="authorized")
    assert deliver() == 1
    attempt.refresh_from_db()
    assert attempt.status == "reversed"
    assert SandboxCharge.objects.get(pk=late.pk).status == "canceled"
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.events.filter(type="payment.duplicate_charge_reversed").count() == 1
    assert deliver() == 1  # Adyen confirms the reversal (cancel or refund, as applied)
    confirmation = ProviderWebhookEvent.objects.get(raw_type="CANCEL_OR_REFUND")
    assert confirmation.success and confirmation.outcome == "already_known"


@pytest.mark.django_db(transaction=True)
def test_a_failed_release_naming_no_payment_keeps_the_attempt_unknown(api, merchant):
    resp = pay(api, "4000000000000606", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    release(attempt)
    SandboxNotification.objects.all().delete()  # Adyen's word is replaced by this one:
    account = adyen(merchant)
    tc = item(account, eventCode="TECHNICAL_CANCEL", success="false",
              pspReference="TECHCANCEL000001", merchantReference=attempt.id + "-release",
              reason="Internal error")
    assert post(account, tc).status_code == 200
    provider_events.process_due()
    attempt.refresh_from_db()
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert attempt.status == "unknown" and payment.status == "unresolved"
    assert payment.events.filter(type="payment.release_failed").count() == 1
    assert ProviderWebhookEvent.objects.get().outcome == "release_failed"
    status_sync.attempt_sync(attempt.id)  # no replay any more: only the release is resent
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == "unknown"


# --- captures, voids, refunds -----------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_capture_and_refund_are_settled_by_webhooks(api):
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    deliver()  # AUTHORISATION for an attempt we already know: nothing changes
    assert ProviderWebhookEvent.objects.get().outcome == "already_known"
    assert api.post(f"/v1/payments/{pay_id}/capture", {"amount_to_capture": 800}).json()[
        "status"] == \
        "processing"
    deliver()
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "succeeded" and payment.amount_captured == 800
    capture = payment.modifications.get()
    assert capture.status == "succeeded" and capture.provider_reference
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()
    assert refund["status"] == "pending"
    deliver()
    assert Refund.objects.get(pk=refund["id"]).status == "succeeded"
    assert api.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded"
    payment.refresh_from_db()
    assert payment.amount_refunded == 300


@pytest.mark.django_db(transaction=True)
def test_a_void_is_settled_by_the_cancellation_webhook(api):
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    assert api.post(f"/v1/payments/{pay_id}/cancel").json()["status"] == "processing"
    deliver()
    assert Payment.objects.get(pk=pay_id).status == "canceled"


@pytest.mark.django_db
def test_a_failed_capture_webhook_returns_the_payment_to_requires_capture(api, merchant):
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    api.post(f"/v1/payments/{pay_id}/capture")
    capture = Payment.objects.get(pk=pay_id).modifications.get()
    SandboxNotification.objects.all().delete()  # Adyen's own word is replaced by ours below
    assert post(adyen(merchant), item(adyen(merchant), eventCode="CAPTURE", success="false",
                                      pspReference=capture.provider_reference,
                                      originalReference="X", merchantReference=capture.id,
                                      reason="Insufficient balance")).status_code == 200
    provider_events.process_due()
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "requires_capture"
    assert payment.last_error["code"] == "capture_failed"


@pytest.mark.django_db(transaction=True)
def test_an_event_before_our_answer_waits_for_it(api, merchant):
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    PaymentAttempt.objects.filter(pk=attempt.pk).update(status="pending")  # still in flight
    deliver()
    event = ProviderWebhookEvent.objects.get()
    assert event.processed_at is None and event.tries == 1 and event.next_try_at
    PaymentAttempt.objects.filter(pk=attempt.pk).update(status="captured")  # answer arrives
    ProviderWebhookEvent.objects.update(next_try_at=event.received_at)
    provider_events.process_due()
    event.refresh_from_db()
    assert event.outcome == "already_known"


@pytest.mark.django_db
def test_a_charge_reported_for_a_declined_attempt_is_reversed(api, merchant):
    resp = pay(api, "4000000000000002", currency="EUR", provider="adyen-sandbox")  # declined
    assert resp.status_code == 402
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["payment"]["id"])
    SandboxNotification.objects.all().delete()
    account = adyen(merchant)
    charge = SandboxCharge.objects.create(provider="adyen", provider_reference="PSPAUTHORISED001",
                                          reference=attempt.id, amount=1050, currency="EUR",
                                          status="authorized")
    post(account, item(account, merchantReference=attempt.id, pspReference="PSPAUTHORISED001"))
    provider_events.process_due()
    payment = Payment.objects.get(pk=attempt.payment_id)
    attempt.refresh_from_db()
    assert payment.status == "failed" and attempt.status == "declined"  # final, unchanged
    assert SandboxCharge.objects.get(pk=charge.pk).status == "canceled"
    assert payment.events.filter(type="payment.duplicate_charge_reversed").count() == 1


@pytest.mark.django_db
def test_our_kept_charge_reported_refused_is_flagged_for_an_operator(api, merchant):
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    SandboxNotification.objects.all().delete()
    account = adyen(merchant)
    post(account, item(account, merchantReference=attempt.id, success="false",
                       pspReference=attempt.provider_reference, reason="Refused"))
    provider_events.process_due()
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.status == "succeeded" and payment.needs_operator  # not applied blindly
    assert payment.events.filter(type="payment.provider_event_mismatch").count() == 1
    provider_events.process_due()
    assert payment.events.filter(type="payment.provider_event_mismatch").count() == 1


# --- the receiver ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_delivery_is_stored_once_and_acknowledged(merchant):
    account = adyen(merchant)
    first = post(account, item(account))
    assert first.status_code == 200 and first.content == b"[accepted]"
    assert post(account, item(account)).status_code == 200  # a redelivery
    assert ProviderWebhookEvent.objects.count() == 1
    provider_events.process_due()
    assert ProviderWebhookEvent.objects.get().outcome == "unknown_reference"


@pytest.mark.django_db
def test_a_batch_is_stored_whole(merchant):
    account = adyen(merchant)
    response = post(account, item(account), item(account, pspReference="PSP0000000000002"))
    assert response.status_code == 200
    assert ProviderWebhookEvent.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", ["amount", "merchantReference", "success", "signature"])
def test_a_tampered_item_is_refused_and_nothing_is_stored(merchant, tamper):
    account = adyen(merchant)
    good, bad = item(account), item(account, pspReference="PSP0000000000002")
    if tamper == "amount":
        bad["amount"] = {"value": 1, "currency": "EUR"}
    elif tamper == "signature":
        bad["additionalData"] = {"hmacSignature": sign(bad, "00" * 32)}
    else:
        bad[tamper] = "att_other" if tamper == "merchantReference" else "false"
    response = post(account, good, bad)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "webhook_signature_invalid"
    assert ProviderWebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_previous_key_is_accepted_during_a_rotation(merchant):
    account = adyen(merchant)
    signed_with_old = item(account)
    credentials = account.get_credentials()
    account.set_credentials({**credentials, "hmac_key": sandbox_webhooks.new_hmac_key(),
                             "hmac_key_previous": credentials["hmac_key"]})
    account.save()
    assert post(account, signed_with_old).status_code == 200


@pytest.mark.django_db
def test_basic_credentials_are_checked_when_configured(merchant):
    import base64

    account = adyen(merchant)
    account.set_credentials({**account.get_credentials(), "webhook_username": "adyen",
                             "webhook_password": "s3cret-for-tests"})
    account.save()
    assert post(account, item(account)).status_code == 401
    wrong = "Basic " + base64.b64encode(b"adyen:nope").decode()
    assert post(account, item(account), HTTP_AUTHORIZATION=wrong).status_code == 401
    right = "Basic " + base64.b64encode(b"adyen:s3cret-for-tests").decode()
    assert post(account, item(account), HTTP_AUTHORIZATION=right).status_code == 200


@pytest.mark.django_db
def test_bad_deliveries_get_clear_errors(merchant):
    account = adyen(merchant)
    client = APIClient()
    url = f"/provider_webhooks/{account.id}"
    not_json = client.post(url, "nope", content_type="application/json")
    assert not_json.status_code == 400 and not_json.json()["error"]["message"]
    # nothing signed to verify: refused as an unknown account is (401, below)
    assert client.post(url, "{}", content_type="application/json").status_code == 401
    assert post(account, item(account), live="true").status_code == 400  # a test account
    assert post(account, item(account, merchantAccountCode="OtherMerchant")).status_code == 400
    assert client.get(url).status_code == 405
    assert client.post("/provider_webhooks/acct_missing", "{}",
                       content_type="application/json").status_code == 401
    stripe = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    assert post(stripe, item(account)).status_code == 401  # no Stripe-Signature
    no_key = ProviderAccount.objects.get(pk=account.pk)
    no_key.set_credentials({k: v for k, v in account.get_credentials().items()
                            if k != "hmac_key"})
    no_key.save()
    assert post(no_key, item(account)).status_code == 401
    assert ProviderWebhookEvent.objects.count() == 0


# --- refusals say nothing about the account ---------------------------------------------------
def bad_deliveries(merchant) -> list[tuple[str, bytes, dict]]:
    """(account id, body, headers) of deliveries that are not authentic, one per provider and
    way of failing."""
    from providers.checkout.webhooks import sign as cko_sign
    from providers.stripe.webhooks import signature_header

    accounts = {a.provider: a for a in ProviderAccount.objects.filter(merchant=merchant)}
    adyen_body = json.dumps({"live": "false", "notificationItems": [
        {"NotificationRequestItem": {**item(accounts["adyen"]), "success": "false"}}]}).encode()
    event = json.dumps({"id": "evt_1", "object": "event", "type": "payment_intent.created",
                        "data": {"object": {}}}).encode()
    return [
        (accounts["adyen"].id, adyen_body, {}),  # a tampered item
        (accounts["adyen"].id, b"{}", {}),  # nothing signed
        (accounts["checkout"].id, event, {"HTTP_CKO_SIGNATURE": cko_sign(event, "wrong")}),
        (accounts["checkout"].id, event, {}),
        (accounts["stripe"].id, event,
         {"HTTP_STRIPE_SIGNATURE": signature_header(event, "whsec_wrong")}),
        (accounts["stripe"].id, event, {}),  # no Stripe-Signature
    ]


@pytest.mark.django_db
def test_an_unknown_account_and_a_bad_signature_get_the_same_answer(merchant):
    client = APIClient()
    for account_id, body, headers in bad_deliveries(merchant):
        refused = client.post(f"/provider_webhooks/{account_id}", body,
                              content_type="application/json", **headers)
        unknown = client.post("/provider_webhooks/acct_doesnotexist00000000000", body,
                              content_type="application/json", **headers)
        assert (refused.status_code, refused.content, refused["Content-Type"]) == (
            unknown.status_code, unknown.content, unknown["Content-Type"]), account_id
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "webhook_signature_invalid"
    assert ProviderWebhookEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("signature", ["t=1,v1=" + "a" * 64, "garbage", ""])
def test_a_stale_or_garbled_stripe_signature_is_refused_before_any_database_read(
        merchant, django_assert_num_queries, signature):
    """Checking the header's shape and time needs no secret: no account is read for it."""
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    with django_assert_num_queries(0):
        resp = APIClient().post(f"/provider_webhooks/{account.id}", b"{}",
                                content_type="application/json",
                                HTTP_STRIPE_SIGNATURE=signature or " ")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "webhook_signature_invalid"


# --- the sandbox's deliveries ---------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_sandbox_retries_a_delivery_that_was_not_acknowledged(api, merchant):
    account = adyen(merchant)
    pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox")
    credentials = account.get_credentials()
    account.set_credentials({**credentials, "hmac_key": sandbox_webhooks.new_hmac_key()})
    account.save()  # keys out of step: our receiver refuses the signature
    assert sandbox_webhooks.deliver_due() == 0
    notification = SandboxNotification.objects.get()
    assert notification.attempts == 1 and notification.last_status == "401"
    assert notification.delivered_at is None and notification.next_attempt_at
    account.set_credentials(credentials)
    account.save()
    assert sandbox_webhooks.deliver_due() == 0  # not due yet: back-off
    SandboxNotification.objects.update(next_attempt_at=notification.created_at)
    assert sandbox_webhooks.deliver_due() == 1
    assert ProviderWebhookEvent.objects.count() == 1


# --- races (real threads, real commits) -------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_webhook_and_a_status_lookup_racing_apply_the_charge_once(api, settings):
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0  # the lookup's replay gets the answer
    resp = pay(api, "4000000000000408", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    sandbox_webhooks.deliver_due()  # stored, not applied yet
    assert race(lambda: status_sync.attempt_sync(attempt.id),
                 provider_events.process_due, provider_events.process_due) == []
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.status == "succeeded" and payment.amount_captured == 1050
    assert payment.events.filter(to_status="succeeded").count() == 1
    assert SandboxCharge.objects.filter(reference=attempt.id).count() == 1
    assert ProviderWebhookEvent.objects.get().processed_at is not None


@pytest.mark.django_db(transaction=True)
def test_redeliveries_racing_store_the_event_once(merchant):
    account = adyen(merchant)
    delivery = item(account)
    assert race(*[lambda: post(account, delivery) for _ in range(4)]) == []
    assert ProviderWebhookEvent.objects.count() == 1


# --- orders and failures around a release (second review) -------------------------------------
def signed_event(account, attempt, code: str, *, success: bool, psp: str, original: str = "",
                 reason: str = "") -> dict:
    fields = {"eventCode": code, "success": "true" if success else "false",
              "pspReference": psp, "reason": reason,
              "merchantReference": attempt.id + ("-release" if code == "TECHNICAL_CANCEL"
                                                 else "")}
    if original:
        fields["originalReference"] = original
    return item(account, **fields)


def report_charge(account, attempt, psp: str, *, status: str = "authorized") -> SandboxCharge:
    """A charge Adyen holds under the attempt's reference, and its AUTHORISATION webhook."""
    charge = SandboxCharge.objects.create(
        provider="adyen", provider_reference=psp, reference=attempt.id, amount=1050,
        currency="EUR", status=status, amount_captured=1050 if status == "captured" else 0)
    post(account, signed_event(account, attempt, "AUTHORISATION", success=True, psp=psp))
    return charge


@pytest.mark.django_db(transaction=True)
def test_a_charge_reported_with_a_release_that_found_nothing_is_kept_not_failed_over(api,
                                                                                   merchant):
    """Adyen ran the cancel first (nothing held), then the late payment; its AUTHORISATION
    is delivered first. The attempt holds that charge: no failover, nothing reversed."""
    account = adyen(merchant)
    attempt = lost_on_adyen_first(api, merchant, capture_method="manual")
    release(attempt)
    SandboxNotification.objects.all().delete()
    report_charge(account, attempt, "LATEPAYMENT00001")
    provider_events.process_due()
    post(account, signed_event(account, attempt, "TECHNICAL_CANCEL", success=True,
                               psp="TECHCANCEL000002"))
    provider_events.process_due()
    payment = Payment.objects.get(pk=attempt.payment_id)
    attempt.refresh_from_db()
    assert (attempt.status, attempt.provider_reference) == ("authorized", "LATEPAYMENT00001")
    assert payment.status == "requires_capture" and payment.attempts.count() == 1
    assert SandboxCharge.objects.get(reference=attempt.id).status == "authorized"


@pytest.mark.django_db(transaction=True)
def test_a_reversal_that_fails_is_retried_and_flagged_meanwhile(api, merchant):
    account = adyen(merchant)
    attempt = failed_over_after_release(api, merchant)
    late = report_charge(account, attempt, "LATEPAYMENT00002")
    SandboxCondition.objects.update_or_create(provider="adyen", defaults={"outage": True})
    provider_events.process_due()
    event = ProviderWebhookEvent.objects.get(raw_type="AUTHORISATION")
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert event.processed_at is None and event.tries == 1  # to be tried again
    assert payment.needs_operator
    assert payment.events.filter(type="payment.duplicate_charge_reversal_failed").exists()
    SandboxCondition.objects.filter(provider="adyen").update(outage=False)
    ProviderWebhookEvent.objects.filter(pk=event.pk).update(next_try_at=event.received_at)
    provider_events.process_due()
    event.refresh_from_db()
    assert event.outcome == "reversed"
    assert SandboxCharge.objects.get(pk=late.pk).status == "canceled"


@pytest.mark.django_db(transaction=True)
def test_two_late_charges_under_one_reference_are_both_reversed(api, merchant):
    account = adyen(merchant)
    attempt = failed_over_after_release(api, merchant)
    for psp in ("LATEPAYMENT00003", "LATEPAYMENT00004"):
        report_charge(account, attempt, psp)
    provider_events.process_due()
    assert set(SandboxCharge.objects.filter(reference=attempt.id)
               .values_list("status", flat=True)) == {"canceled"}
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.events.filter(type="payment.duplicate_charge_reversed").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_failed_release_then_an_authorisation_settles_the_attempt(api, merchant):
    account = adyen(merchant)
    resp = pay(api, "4000000000000606", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    release(attempt)
    SandboxNotification.objects.all().delete()
    post(account, signed_event(account, attempt, "TECHNICAL_CANCEL", success=False,
                               psp="TECHCANCEL000003", reason="Internal error"))
    provider_events.process_due()
    assert Payment.objects.get(pk=attempt.payment_id).needs_operator  # nothing to go on yet
    report_charge(account, attempt, "LATEPAYMENT00005", status="captured")
    provider_events.process_due()
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.status == "succeeded" and payment.amount_captured == 1050
    assert PaymentAttempt.objects.get(pk=attempt.pk).provider_reference == "LATEPAYMENT00005"


@pytest.mark.django_db(transaction=True)
def test_reversing_an_extra_charge_leaves_the_other_attempts_status_alone(api, merchant):
    """A late second charge under an attempt that kept (then voided) its own: the extra one
    is reversed, the attempt stays `voided` (terminal states are final)."""
    account = adyen(merchant)
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    api.post(f"/v1/payments/{pay_id}/cancel")
    deliver()  # AUTHORISATION, CANCELLATION
    attempt = PaymentAttempt.objects.get(payment_id=pay_id)
    assert attempt.status == "voided"
    late = report_charge(account, attempt, "LATEPAYMENT00006")
    provider_events.process_due()
    attempt.refresh_from_db()
    assert attempt.status == "voided"
    assert SandboxCharge.objects.get(pk=late.pk).status == "canceled"
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "canceled"
    assert payment.events.filter(type="payment.duplicate_charge_reversed").count() == 1


# --- Checkout.com ---------------------------------------------------------------------------
def checkout(merchant) -> ProviderAccount:
    return ProviderAccount.objects.get(merchant=merchant, name="checkout-sandbox")


@pytest.mark.django_db(transaction=True)
def test_checkout_captures_voids_and_refunds_settle_by_webhook_at_once(api, settings):
    settings.MODIFICATION_SYNC_AFTER_SECONDS = 3600  # no status sync: only the webhooks
    resp = pay(api, "4242424242424242", currency="EUR", provider="checkout-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    assert api.post(f"/v1/payments/{pay_id}/capture").json()["status"] == "processing"
    deliver()
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "succeeded" and payment.amount_captured == 1050
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 200}).json()
    assert refund["status"] == "pending"
    deliver()
    assert Refund.objects.get(pk=refund["id"]).status == "succeeded"
    other = pay(api, "4242424242424242", currency="EUR", provider="checkout-sandbox",
                capture_method="manual").json()["id"]
    api.post(f"/v1/payments/{other}/cancel")
    deliver()
    assert Payment.objects.get(pk=other).status == "canceled"
    kinds = set(ProviderWebhookEvent.objects.values_list("raw_type", "outcome"))
    assert {("payment_captured", "applied"), ("payment_refunded", "applied"),
            ("payment_voided", "applied"), ("payment_approved", "already_known")} <= kinds


@pytest.mark.django_db(transaction=True)
def test_checkout_commit_then_drop_is_resolved_by_the_approved_webhook(api):
    resp = pay(api, "4000000000000408", currency="EUR", provider="checkout-sandbox")
    assert resp.json()["status"] == "unresolved"
    assert deliver() == 2  # payment_approved, then payment_captured (automatic capture)
    payment = Payment.objects.get(pk=resp.json()["id"])
    assert payment.status == "succeeded"
    assert SandboxCharge.objects.filter(reference=payment.attempts.get().id).count() == 1


@pytest.mark.django_db
def test_checkout_deliveries_must_carry_a_valid_signature(merchant):
    from providers.checkout.webhooks import sign

    account = checkout(merchant)
    body = json.dumps({"id": "evt_x", "type": "payment_approved",
                       "data": {"id": "pay_x", "reference": "att_x"}})
    key = account.get_credentials()["webhook_secret"]
    client = APIClient()
    url = f"/provider_webhooks/{account.id}"
    bad = client.post(url, body, content_type="application/json",
                      HTTP_CKO_SIGNATURE=sign(body.encode(), "wrong"))
    assert bad.status_code == 401
    assert ProviderWebhookEvent.objects.count() == 0
    good = client.post(url, body, content_type="application/json",
                       HTTP_CKO_SIGNATURE=sign(body.encode(), key))
    assert good.status_code == 200
    assert ProviderWebhookEvent.objects.get().raw_type == "payment_approved"


def cko_post(account: ProviderAccount, event_type: str, data: dict):
    from providers.checkout.webhooks import sign

    body = json.dumps({"id": f"evt_{event_type}_{data.get('action_id', '')}",
                       "type": event_type, "data": data})
    return APIClient().post(f"/provider_webhooks/{account.id}", body,
                            content_type="application/json",
                            HTTP_CKO_SIGNATURE=sign(body.encode(),
                                                    account.get_credentials()["webhook_secret"]))


@pytest.mark.django_db(transaction=True)
def test_checkout_automatic_capture_events_are_known_and_a_declined_one_is_flagged(api,
                                                                                  merchant):
    resp = pay(api, "4242424242424242", currency="EUR",
               provider="checkout-sandbox")  # automatic capture
    payment = Payment.objects.get(pk=resp.json()["id"])
    attempt = payment.attempts.get()
    assert deliver() == 2  # payment_approved, payment_captured
    assert set(ProviderWebhookEvent.objects.values_list("raw_type", "outcome")) == {
        ("payment_approved", "already_known"), ("payment_captured", "already_known")}
    cko_post(checkout(merchant), "payment_capture_declined", {
        "id": attempt.provider_reference, "action_id": "act_declinedcapture",
        "reference": attempt.id, "amount": 1050, "response_summary": "Declined"})
    provider_events.process_due()
    payment.refresh_from_db()
    assert payment.needs_operator
    assert payment.events.filter(type="payment.provider_event_mismatch").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_checkout_event_before_our_answer_waits_then_settles(api, merchant):
    resp = pay(api, "4242424242424242", currency="EUR", provider="checkout-sandbox",
               capture_method="manual")
    pay_id = resp.json()["id"]
    api.post(f"/v1/payments/{pay_id}/capture")
    capture = Modification.objects.get(payment_id=pay_id)
    action_id = capture.provider_reference
    # as if the webhook overtook Checkout.com's 202 answer: the action id is not ours yet
    Modification.objects.filter(pk=capture.pk).update(provider_reference="")
    deliver()
    event = ProviderWebhookEvent.objects.get(raw_type="payment_captured")
    assert event.processed_at is None  # waits
    Modification.objects.filter(pk=capture.pk).update(provider_reference=action_id)
    ProviderWebhookEvent.objects.filter(pk=event.pk).update(next_try_at=event.received_at)
    provider_events.process_due()
    assert Payment.objects.get(pk=pay_id).status == "succeeded"


@pytest.mark.django_db
def test_a_declined_checkout_reversal_is_flagged_for_an_operator(api, merchant):
    """Double-charge compensation at Checkout.com: the void of the extra charge is accepted
    (202), then declined by webhook, which names the payment, not our reversal."""
    from providers.base import LookupResult

    resp = pay(api, "4242424242424242", currency="EUR", provider="checkout-sandbox",
               capture_method="manual")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    extra = SandboxCharge.objects.create(provider="checkout", provider_reference="pay_extra01",
                                         reference=attempt.id, amount=1050, currency="EUR",
                                         status="authorized")
    attempts.compensate(attempt, LookupResult(found=True, provider_reference="pay_extra01",
                                                 status="authorized", amount=1050),
                           actor="test")
    payment = Payment.objects.get(pk=attempt.payment_id)
    reversed_event = payment.events.get(type="payment.duplicate_charge_reversed")
    action_id = reversed_event.data["operation_reference"]
    assert action_id.startswith("act_")
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == "authorized"  # still kept
    cko_post(checkout(merchant), "payment_void_declined", {
        "id": extra.provider_reference, "action_id": action_id, "reference": attempt.id,
        "amount": 1050, "response_summary": "Declined"})
    provider_events.process_due()
    payment.refresh_from_db()
    assert payment.needs_operator
    assert payment.events.get(type="payment.provider_event_mismatch").data["recorded"] == \
        "reversed"


# --- fourth review ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_reversal_we_did_not_send_is_flagged_not_crashed_on(api, merchant):
    resp = pay(api, "4242424242424242", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    SandboxNotification.objects.all().delete()
    account = adyen(merchant)
    post(account, item(account, eventCode="CANCEL_OR_REFUND", pspReference="BYHANDREVERSAL01",
                       originalReference=attempt.provider_reference,
                       merchantReference=attempt.id))
    provider_events.process_due()
    event = ProviderWebhookEvent.objects.get()
    assert event.processed_at is not None and event.outcome == "flagged_for_operator"
    assert Payment.objects.get(pk=attempt.payment_id).needs_operator


@pytest.mark.django_db
def test_an_automatic_capture_still_pending_at_the_provider_counts_as_captured(api, settings):
    """Checkout.com reports `Authorized` until the capture of a `capture: true` payment
    runs: the payment succeeds, as if Checkout.com had answered at once."""
    resp = pay(api, "4000000000000408", currency="EUR", provider="checkout-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    SandboxCharge.objects.filter(reference=attempt.id).update(status="authorized",
                                                              amount_captured=0)
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    payment = status_sync.attempt_sync(attempt.id)
    assert payment.status == "succeeded"
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == "captured"


@pytest.mark.django_db(transaction=True)
def test_an_automatic_capture_event_overtaking_our_answer_waits(api):
    resp = pay(api, "4242424242424242", currency="EUR", provider="checkout-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    PaymentAttempt.objects.filter(pk=attempt.pk).update(status="pending")
    deliver()
    assert ProviderWebhookEvent.objects.filter(processed_at__isnull=True).count() == 2
    assert not Payment.objects.get(pk=attempt.payment_id).needs_operator


@pytest.mark.django_db(transaction=True)
def test_a_failed_release_naming_a_payment_waits_for_that_payments_authorisation(api,
                                                                                 merchant):
    account = adyen(merchant)
    resp = pay(api, "4000000000000606", currency="EUR", provider="adyen-sandbox")
    attempt = PaymentAttempt.objects.get(payment_id=resp.json()["id"])
    release(attempt)
    SandboxNotification.objects.all().delete()
    post(account, signed_event(account, attempt, "AUTHORISATION", success=False,
                               psp="REPLAYREFUSED001", reason="Not enough balance"))
    post(account, signed_event(account, attempt, "TECHNICAL_CANCEL", success=False,
                               psp="TECHCANCEL000004", original="NAMEDPAYMENT0001",
                               reason="already captured"))
    provider_events.process_due()
    attempt.refresh_from_db()
    assert attempt.status == "unknown"  # another psp's refusal says nothing about it
    report_charge(account, attempt, "NAMEDPAYMENT0001", status="captured")
    provider_events.process_due()
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.status == "succeeded"
    assert PaymentAttempt.objects.get(pk=attempt.pk).provider_reference == "NAMEDPAYMENT0001"


@pytest.mark.django_db(transaction=True)
def test_a_reversal_refused_for_good_is_not_retried_forever(api, merchant):
    account = adyen(merchant)
    attempt = failed_over_after_release(api, merchant)
    # a charge Adyen reports but cannot find when asked to reverse it (422 "167")
    post(account, signed_event(account, attempt, "AUTHORISATION", success=True,
                               psp="UNKNOWNTOADYEN01"))
    provider_events.process_due()
    event = ProviderWebhookEvent.objects.get(raw_type="AUTHORISATION",
                                             provider_reference="UNKNOWNTOADYEN01")
    assert event.processed_at is not None and event.outcome == "reversal_refused"
    payment = Payment.objects.get(pk=attempt.payment_id)
    assert payment.needs_operator
    assert payment.events.filter(type="payment.duplicate_charge_reversal_failed").count() == 1
