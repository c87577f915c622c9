"""Stripe webhooks end to end: the Stripe sandbox sends signed Events to
`/provider_webhooks/<account>`, Switchyard stores them and applies them through
`provider_events`, as it does Adyen's and Checkout.com's.

Stripe answers authorizations, captures, voids and refunds at once, so its events mostly
confirm what we know; they settle what we could not hear: a payment whose connection dropped
after Stripe committed it (card …0408), a capture, void or refund whose answer was lost —
without a status lookup."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from payments.models import Modification, Payment, ProviderWebhookEvent, Refund
from payments.services import provider_events
from providers.base import OutcomeUnknown
from providers.models import ProviderAccount
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.models import SandboxCharge, SandboxNotification
from providers.sandboxes.stripe import account_for_key
from providers.stripe import adapter as stripe_adapter
from providers.stripe.webhooks import signature_header
from tests.conftest import pay


def deliver() -> int:
    """Time passes: the sandbox delivers its webhooks and the worker applies them (real
    in-process requests, which close the connection: tests that deliver commit for real)."""
    delivered = sandbox_webhooks.deliver_due()
    provider_events.process_due()
    return delivered


def stripe(merchant) -> ProviderAccount:
    return ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")


@pytest.fixture
def no_lookups(monkeypatch, settings):
    """Status sync must not settle anything here: only the webhooks may."""
    settings.MODIFICATION_SYNC_AFTER_SECONDS = 3600

    def refuse(*args, **kwargs):
        raise AssertionError("a Stripe lookup was made; the webhook should have settled it")

    monkeypatch.setattr(stripe_adapter.StripeAdapter, "lookup", refuse)
    monkeypatch.setattr(stripe_adapter.StripeAdapter, "lookup_modification", refuse)


def answer_lost(monkeypatch, operation: str) -> None:
    """Stripe does `operation`, then the connection drops before we read the answer."""
    real = getattr(stripe_adapter.StripeAdapter, operation)

    def done_then_dropped(self, request):
        real(self, request)
        raise OutcomeUnknown("No answer from the provider after sending: RemoteProtocolError.")

    monkeypatch.setattr(stripe_adapter.StripeAdapter, operation, done_then_dropped)


def outcomes() -> set[tuple[str, str]]:
    return set(ProviderWebhookEvent.objects.values_list("raw_type", "outcome"))


# --- set-up ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_sandbox_stripe_account_is_connected_with_its_own_key_and_secret(merchant):
    account = stripe(merchant)
    credentials = account.get_credentials()
    assert credentials["webhook_secret"].startswith("whsec_")
    assert credentials["secret_key"].startswith("sk_test_sandbox_")  # its own Stripe account
    [endpoint] = sandbox_webhooks.SandboxWebhookEndpoint.objects.filter(provider="stripe",
                                                                         url__endswith=account.id)
    assert endpoint.merchant_account == account_for_key(credentials["secret_key"])
    assert endpoint.hmac_key == credentials["webhook_secret"]


# --- unknown authorizations -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("capture_method,status,event_type", [
    ("automatic", "succeeded", "payment_intent.succeeded"),
    ("manual", "requires_capture", "payment_intent.amount_capturable_updated")])
def test_commit_then_drop_is_resolved_by_the_webhook_not_a_lookup(api, no_lookups,
                                                                  capture_method, status,
                                                                  event_type):
    resp = pay(api, "4000000000000408", provider="stripe-sandbox",
               capture_method=capture_method)
    assert resp.status_code == 202 and resp.json()["status"] == "unresolved"
    assert deliver() == 1
    payment = Payment.objects.get(pk=resp.json()["id"])
    [attempt] = payment.attempts.all()
    charge = SandboxCharge.objects.get(reference=attempt.id)
    assert payment.status == status
    assert attempt.provider_reference == charge.provider_reference
    assert attempt.next_sync_at is None  # nothing left to ask Stripe
    assert outcomes() == {(event_type, "applied")}
    assert payment.events.filter(actor="provider_webhook").exists()


@pytest.mark.django_db(transaction=True)
def test_events_about_what_we_know_change_nothing(api, no_lookups):
    """Stripe's answers settled everything already: its events confirm it."""
    paid = pay(api, provider="stripe-sandbox", capture_method="manual").json()["id"]
    assert api.post(f"/v1/payments/{paid}/capture").json()["status"] == "succeeded"
    refund = api.post("/v1/refunds", {"payment": paid, "amount": 200}).json()
    assert refund["status"] == "succeeded"
    voided = pay(api, provider="stripe-sandbox", capture_method="manual").json()["id"]
    assert api.post(f"/v1/payments/{voided}/cancel").json()["status"] == "canceled"
    declined = pay(api, "4000000000009995", provider="stripe-sandbox")
    assert declined.status_code == 402
    before = {p.pk: (p.status, p.events.count()) for p in Payment.objects.all()}
    assert deliver() == 7
    assert {p.pk: (p.status, p.events.count()) for p in Payment.objects.all()} == before
    assert outcomes() == {
        ("payment_intent.amount_capturable_updated", "already_known"),
        ("payment_intent.succeeded", "already_known"), ("refund.created", "already_known"),
        ("charge.refunded", "ignored"), ("payment_intent.canceled", "already_known"),
        ("payment_intent.payment_failed", "already_known")}
    assert not Payment.objects.filter(needs_operator=True).exists()


# --- captures, voids and refunds whose answer was lost --------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_capture_whose_answer_was_lost_is_settled_by_the_webhook(api, monkeypatch, no_lookups):
    pay_id = pay(api, provider="stripe-sandbox", capture_method="manual").json()["id"]
    deliver()  # the authorization's event: known already
    answer_lost(monkeypatch, "capture")
    resp = api.post(f"/v1/payments/{pay_id}/capture", {"amount_to_capture": 800})
    assert resp.json()["status"] == "unresolved", resp.json()
    assert Modification.objects.get(payment_id=pay_id).status == "unknown"
    assert deliver() == 1
    payment = Payment.objects.get(pk=pay_id)
    assert (payment.status, payment.amount_captured) == ("succeeded", 800)
    assert Modification.objects.get(payment_id=pay_id).status == "succeeded"
    assert ("payment_intent.succeeded", "applied") in outcomes()


@pytest.mark.django_db(transaction=True)
def test_a_void_whose_answer_was_lost_is_settled_by_the_webhook(api, monkeypatch, no_lookups):
    pay_id = pay(api, provider="stripe-sandbox", capture_method="manual").json()["id"]
    answer_lost(monkeypatch, "cancel")
    assert api.post(f"/v1/payments/{pay_id}/cancel").json()["status"] == "unresolved"
    assert deliver() == 2
    assert Payment.objects.get(pk=pay_id).status == "canceled"
    assert ("payment_intent.canceled", "applied") in outcomes()


@pytest.mark.django_db(transaction=True)
def test_a_refund_whose_answer_was_lost_is_settled_by_the_webhook(api, monkeypatch, no_lookups):
    pay_id = pay(api, provider="stripe-sandbox").json()["id"]
    answer_lost(monkeypatch, "refund")
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()
    assert refund["status"] == "unresolved", refund
    assert deliver() == 3  # payment_intent.succeeded, refund.created, charge.refunded
    refund_row = Refund.objects.get(pk=refund["id"])
    charge = SandboxCharge.objects.get(reference=Payment.objects.get(pk=pay_id).attempts.get().id)
    assert refund_row.status == "succeeded"
    assert refund_row.provider_reference == charge.operations.get(kind="refund").provider_reference
    assert Payment.objects.get(pk=pay_id).amount_refunded == 300
    assert ("refund.created", "applied") in outcomes()


# --- redeliveries ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_redelivered_event_changes_nothing(api, merchant, no_lookups):
    resp = pay(api, "4000000000000408", provider="stripe-sandbox")
    assert deliver() == 1
    payment = Payment.objects.get(pk=resp.json()["id"])
    state = (payment.status, payment.amount_captured, payment.events.count())
    # Stripe sends it again (at least once, no ordering): signed afresh, the same event
    notification = SandboxNotification.objects.get()
    SandboxNotification.objects.update(delivered_at=None, next_attempt_at=notification.created_at)
    assert deliver() == 1
    # and once more, by hand, with a signature made now
    account = stripe(merchant)
    body = notification.body.encode()
    again = APIClient().post(f"/provider_webhooks/{account.id}", body,
                             content_type="application/json",
                             HTTP_STRIPE_SIGNATURE=signature_header(
                                 body, account.get_credentials()["webhook_secret"]))
    assert again.status_code == 200
    provider_events.process_due()
    assert ProviderWebhookEvent.objects.count() == 1
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured, payment.events.count()) == state
    assert SandboxCharge.objects.filter(reference=payment.attempts.get().id).count() == 1


# --- authentication -------------------------------------------------------------------------------
def post_event(account: ProviderAccount, event: dict, *, secret: str | None = None,
               signature: str | None = None):
    body = json.dumps(event).encode()
    if signature is None:
        signature = signature_header(body, secret or account.get_credentials()["webhook_secret"])
    return APIClient().post(f"/provider_webhooks/{account.id}", body,
                            content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)


EVENT = {"id": "evt_auth_test", "object": "event", "type": "payment_intent.created",
         "livemode": False, "data": {"object": {"id": "pi_x", "object": "payment_intent"}}}


@pytest.mark.django_db
def test_only_deliveries_signed_with_the_accounts_secret_are_stored(merchant):
    account = stripe(merchant)
    assert post_event(account, EVENT, secret="whsec_not_this_accounts").status_code == 401
    assert post_event(account, EVENT, signature="").status_code == 401
    assert ProviderWebhookEvent.objects.count() == 0
    assert post_event(account, EVENT).status_code == 200
    assert post_event(account, {**EVENT, "livemode": True}).status_code == 400  # authentic
    assert ProviderWebhookEvent.objects.get().kind == "other"


@pytest.mark.django_db
def test_the_previous_secret_is_accepted_during_a_rotation(merchant):
    account = stripe(merchant)
    old = account.get_credentials()["webhook_secret"]
    account.set_credentials({**account.get_credentials(), "webhook_secret": "whsec_rotated_new",
                             "webhook_secret_previous": old})
    account.save()
    assert post_event(account, EVENT, secret=old).status_code == 200
    assert post_event(account, {**EVENT, "id": "evt_2"},
                      secret="whsec_rotated_new").status_code == 200
    assert ProviderWebhookEvent.objects.count() == 2
