"""Captures, voids and refunds that a provider accepts now and confirms later (Adyen,
Checkout.com), and their settlement."""

import pytest

from payments import state_machine as sm
from payments.models import Modification, Payment, Refund
from payments.services.modifications import modification_settle
from payments.services.refunds import refund_settle, refundable_amount
from providers import accounts
from providers.base import ModificationResult, OutcomeUnknown
from tests.conftest import pay

pytestmark = pytest.mark.django_db


def provider_with(monkeypatch, **operations):
    """Make every account's adapter use `operations` (name → function(request)) and its
    real sandbox adapter for the rest."""
    real_get_adapter = accounts.get_adapter

    class Adapter:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return operations.get(name) or getattr(self.real, name)

    monkeypatch.setattr(accounts, "get_adapter", lambda config: Adapter(real_get_adapter(config)))


@pytest.fixture
def async_provider(monkeypatch):
    """Every modification is accepted, not done: the provider will confirm it later."""
    sent = []

    def accept(request):
        sent.append(request)
        return ModificationResult(provider_reference=f"psp_{request.reference}", pending=True)

    provider_with(monkeypatch, capture=accept, cancel=accept, refund=accept)
    return sent


def authorized(api) -> Payment:
    resp = pay(api, capture_method="manual")
    assert resp.json()["status"] == "requires_capture"
    return Payment.objects.get(pk=resp.json()["id"])


def assert_log_matches(payment: Payment):
    payment.refresh_from_db()
    state = sm.replay_events(payment)
    assert state["status"] == payment.status
    assert state["amount_captured"] == payment.amount_captured


def test_pending_capture_keeps_the_payment_processing_until_confirmed(api, async_provider):
    payment = authorized(api)
    resp = api.post(f"/v1/payments/{payment.id}/capture", {"amount_to_capture": 800})
    assert resp.status_code == 200
    assert resp.json()["status"] == "processing"
    assert resp.json()["amount_captured"] == 0
    [mod] = Modification.objects.filter(payment=payment)
    assert (mod.kind, mod.status, mod.amount) == ("capture", "pending", 800)
    assert async_provider[0].reference == mod.id  # the provider idempotency key
    assert mod.provider_reference == f"psp_{mod.id}"
    # nothing else can happen to the payment while the capture is in flight
    assert api.post(f"/v1/payments/{payment.id}/capture").status_code == 409
    assert api.post(f"/v1/payments/{payment.id}/cancel").status_code == 409

    modification_settle(modification=mod, succeeded=True, actor="webhook")
    body = api.get(f"/v1/payments/{payment.id}").json()
    assert (body["status"], body["amount_captured"], body["amount_capturable"]) == (
        "succeeded", 800, 0)
    assert body["attempts"][0]["status"] == "captured"
    # a second confirmation (webhook and status sync both report it) changes nothing
    modification_settle(modification=mod, succeeded=True, actor="status_sync")
    assert Payment.objects.get(pk=payment.id).amount_captured == 800
    assert_log_matches(payment)


def test_refused_pending_capture_returns_to_requires_capture(api, async_provider):
    payment = authorized(api)
    api.post(f"/v1/payments/{payment.id}/capture")
    mod = Modification.objects.get(payment=payment)
    modification_settle(modification=mod, succeeded=False, actor="webhook")
    payment.refresh_from_db()
    assert payment.status == "requires_capture"
    assert payment.last_error["code"] == "capture_failed"
    assert Modification.objects.get(pk=mod.pk).status == "failed"
    # and it can be captured again, with a new modification (a new idempotency key)
    assert api.post(f"/v1/payments/{payment.id}/capture").json()["status"] == "processing"
    assert Modification.objects.filter(payment=payment).count() == 2
    assert_log_matches(payment)


def test_pending_void_then_confirmed(api, async_provider):
    payment = authorized(api)
    resp = api.post(f"/v1/payments/{payment.id}/cancel",
                    {"cancellation_reason": "requested_by_customer"})
    assert resp.json()["status"] == "processing"
    mod = Modification.objects.get(payment=payment)
    assert mod.kind == "cancel"
    modification_settle(modification=mod, succeeded=True, actor="webhook")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_capturable) == ("canceled", 0)
    assert payment.cancellation_reason == "requested_by_customer"
    assert payment.attempts.get().status == "voided"
    assert_log_matches(payment)


def test_capture_with_unknown_outcome_is_unresolved_then_settled(api, monkeypatch):
    def lost(request):
        raise OutcomeUnknown("read timeout")

    provider_with(monkeypatch, capture=lost)
    payment = authorized(api)
    resp = api.post(f"/v1/payments/{payment.id}/capture")
    assert resp.status_code == 202
    assert resp.json()["status"] == "unresolved"
    mod = Modification.objects.get(payment=payment)
    assert mod.status == "unknown"
    modification_settle(modification=mod, succeeded=True, actor="status_sync")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("succeeded", 1050)
    assert_log_matches(payment)


def test_pending_refund_reserves_its_amount_until_confirmed(api, async_provider):
    payment = Payment.objects.get(pk=pay(api).json()["id"])
    resp = api.post("/v1/refunds", {"payment": payment.id, "amount": 600})
    assert resp.status_code == 200
    refund = Refund.objects.get(pk=resp.json()["id"])
    assert refund.status == "pending" and refund.provider_reference == f"psp_{refund.id}"
    payment.refresh_from_db()
    assert payment.amount_refunded == 0
    assert refundable_amount(payment) == 450  # the pending 600 is reserved
    too_much = api.post("/v1/refunds", {"payment": payment.id, "amount": 500})
    assert too_much.status_code == 400

    refund_settle(refund=refund, succeeded=True, actor="webhook")
    payment.refresh_from_db()
    assert payment.amount_refunded == 600
    assert Refund.objects.get(pk=refund.pk).status == "succeeded"
    refund_settle(refund=refund, succeeded=True, actor="webhook")  # duplicate: no effect
    assert Payment.objects.get(pk=payment.pk).amount_refunded == 600


def test_refused_pending_refund_releases_the_reservation(api, async_provider):
    payment = Payment.objects.get(pk=pay(api).json()["id"])
    refund = Refund.objects.get(
        pk=api.post("/v1/refunds", {"payment": payment.id}).json()["id"])
    assert refundable_amount(Payment.objects.get(pk=payment.pk)) == 0
    refund_settle(refund=refund, succeeded=False, actor="webhook", failure_code="declined")
    refund.refresh_from_db()
    assert (refund.status, refund.failure_code) == ("failed", "declined")
    payment.refresh_from_db()
    assert payment.amount_refunded == 0
    assert refundable_amount(payment) == 1050


def test_a_confirmation_that_arrives_during_the_call_is_not_overwritten(api, monkeypatch):
    """The webhook can beat the provider's own HTTP answer: its final word stands."""
    def capture_confirmed_meanwhile(request):
        mod = Modification.objects.get(pk=request.reference)
        modification_settle(modification=mod, succeeded=True, actor="webhook")
        return ModificationResult(provider_reference="psp_late", pending=True)

    provider_with(monkeypatch, capture=capture_confirmed_meanwhile)
    payment = authorized(api)
    resp = api.post(f"/v1/payments/{payment.id}/capture")
    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    mod = Modification.objects.get(payment=payment)
    assert mod.status == "succeeded"
    assert_log_matches(payment)


def test_a_refund_confirmation_during_the_call_is_not_overwritten(api, monkeypatch):
    def refund_confirmed_meanwhile(request):
        refund_settle(refund=Refund.objects.get(pk=request.reference), succeeded=True,
                      actor="webhook")
        return ModificationResult(provider_reference="psp_late", pending=True)

    provider_with(monkeypatch, refund=refund_confirmed_meanwhile)
    payment = Payment.objects.get(pk=pay(api).json()["id"])
    resp = api.post("/v1/refunds", {"payment": payment.id, "amount": 300})
    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    payment.refresh_from_db()
    assert payment.amount_refunded == 300
