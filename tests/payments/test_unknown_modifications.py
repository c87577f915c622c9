"""Captures, voids and refunds whose outcome is unknown: every provider can settle them by
asking (status sync), an error that does not prove "not done" never fails them, and what
cannot be settled within the schedule is flagged for an operator (issue #8, items 2 and 4)."""

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone

from payments.models import Modification, Payment, Refund
from payments.services import status_sync
from providers import accounts
from providers.adyen.adapter import AdyenAdapter
from providers.base import OutcomeUnknown, ProviderBadRequest, ProviderUnavailable
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card, pay

pytestmark = pytest.mark.django_db


def provider_with(monkeypatch, **operations):
    """Every account's adapter uses `operations` (name → function(real adapter, request))."""
    real_get_adapter = accounts.get_adapter

    class Adapter:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            if name in operations:
                return lambda request: operations[name](self.real, request)
            return getattr(self.real, name)

    monkeypatch.setattr(accounts, "get_adapter", lambda config: Adapter(real_get_adapter(config)))


def done_then_dropped(real, request):
    """The provider does it, then the connection drops before we read the answer."""
    getattr(real, request.operation)(request)
    raise OutcomeUnknown("No answer from the provider after sending: RemoteProtocolError.")


def never_arrived(real, request):
    raise OutcomeUnknown("No answer from the provider after sending: ReadTimeout.")


def later(minutes: float = 0, *, days: float = 0) -> dt.datetime:
    return timezone.now() + dt.timedelta(minutes=minutes, days=days)


def sent_ago(row, hours: float):
    """As if `row` had been sent `hours` earlier (and every ask of it had been too)."""
    row.refresh_from_db()
    shift = dt.timedelta(hours=hours)
    type(row).objects.filter(pk=row.pk).update(
        created_at=row.created_at - shift, updated_at=row.updated_at - shift,
        next_sync_at=row.next_sync_at - shift if row.next_sync_at else None)


def authorized(api, account: str) -> str:
    resp = pay(api, capture_method="manual", provider=account)
    assert resp.json()["status"] == "requires_capture", resp.json()
    return resp.json()["id"]


def captured(api, account: str) -> str:
    resp = pay(api, provider=account)
    assert resp.json()["status"] == "succeeded", resp.json()
    return resp.json()["id"]


def test_a_stripe_capture_whose_answer_was_lost_is_settled_by_lookup(api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, capture=done_then_dropped)
    resp = api.post(f"/v1/payments/{pay_id}/capture", {"amount_to_capture": 800})
    assert resp.json()["status"] == "unresolved", resp.json()
    [mod] = Modification.objects.filter(payment_id=pay_id)
    assert mod.status == "unknown"
    assert status_sync.sync_modifications(now=later(2)) == 1
    payment = Payment.objects.get(pk=pay_id)
    assert (payment.status, payment.amount_captured) == ("succeeded", 800)
    assert SandboxCharge.objects.get(reference=payment.attempts.get().id).amount_captured == 800


def test_a_stripe_refund_whose_answer_was_lost_is_settled_by_lookup(api, monkeypatch):
    pay_id = captured(api, "stripe-sandbox")
    provider_with(monkeypatch, refund=done_then_dropped)
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()
    assert refund["status"] == "unresolved", refund
    # its amount stays reserved while unknown
    assert api.post("/v1/refunds", {"payment": pay_id, "amount": 800}).status_code == 400
    assert status_sync.sync_modifications(now=later(2)) == 1
    assert Refund.objects.get(pk=refund["id"]).status == "succeeded"
    assert Payment.objects.get(pk=pay_id).amount_refunded == 300


def test_a_stripe_void_whose_answer_was_lost_is_settled_by_lookup(api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, cancel=done_then_dropped)
    assert api.post(f"/v1/payments/{pay_id}/cancel").json()["status"] == "unresolved"
    assert status_sync.sync_modifications(now=later(2)) == 1
    assert Payment.objects.get(pk=pay_id).status == "canceled"


def test_a_stripe_capture_that_never_arrived_fails_only_after_the_window(api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, capture=never_arrived)
    api.post(f"/v1/payments/{pay_id}/capture")
    [mod] = Modification.objects.filter(payment_id=pay_id)
    # the PaymentIntent still requires capture: within Stripe's window that proves nothing
    assert status_sync.sync_modifications(now=later(2)) == 0
    assert Modification.objects.get(pk=mod.pk).status == "unknown"
    sent_ago(mod, hours=2)
    assert status_sync.sync_modifications() == 1
    mod.refresh_from_db()
    assert mod.status == "failed"
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "requires_capture"  # the merchant may capture again
    monkeypatch.undo()
    assert api.post(f"/v1/payments/{pay_id}/capture").json()["status"] == "succeeded"


def test_a_provider_503_on_capture_and_refund_leaves_them_unknown(api):
    """A 503 that says "retry" (Stripe-Should-Retry) is not proof that nothing happened: the
    capture and the refund stay unknown and are looked up, never failed (item 4)."""
    auth_id = authorized(api, "stripe-sandbox")
    paid_id = captured(api, "stripe-sandbox")
    call_command("sandbox_fault", "--provider", "stripe", "--outage", "on")
    try:
        capture = api.post(f"/v1/payments/{auth_id}/capture")
        refund = api.post("/v1/refunds", {"payment": paid_id, "amount": 100})
    finally:
        call_command("sandbox_fault", "--provider", "stripe", "--clear")
    assert capture.json()["status"] == "unresolved", capture.json()
    assert Modification.objects.get(payment_id=auth_id).status == "unknown"
    assert refund.json()["status"] == "unresolved", refund.json()


def test_a_capture_that_never_left_fails_at_once(api, monkeypatch):
    """Nothing reached the provider (connection refused): the capture provably did not
    happen, so it fails and the payment can be captured again."""
    pay_id = authorized(api, "stripe-sandbox")

    def refused(real, request):
        raise ProviderUnavailable("Could not connect to stripe: ConnectError.",
                                  raw_code="ConnectError", sent=False)

    provider_with(monkeypatch, capture=refused)
    resp = api.post(f"/v1/payments/{pay_id}/capture")
    assert resp.status_code >= 400
    assert Payment.objects.get(pk=pay_id).status == "requires_capture"
    assert Modification.objects.get(payment_id=pay_id).status == "failed"


def test_an_adyen_capture_whose_answer_was_lost_is_replayed_and_then_pending(api, monkeypatch):
    pay_id = authorized(api, "adyen-sandbox")
    provider_with(monkeypatch, capture=done_then_dropped)
    assert api.post(f"/v1/payments/{pay_id}/capture").json()["status"] == "unresolved"
    monkeypatch.undo()
    # the replay under the same idempotency key shows Adyen has it: pending its webhook
    status_sync.sync_modifications(now=later(2))
    [mod] = Modification.objects.filter(payment_id=pay_id)
    assert mod.status == "pending"
    assert Payment.objects.get(pk=pay_id).status == "processing"
    charge = SandboxCharge.objects.get(reference=mod.attempt_id)
    assert charge.operations.filter(kind="capture").count() == 1  # done once, not twice


def test_what_cannot_be_settled_within_the_schedule_is_flagged_for_an_operator(
        api, monkeypatch):
    pay_id = captured(api, "stripe-sandbox")
    provider_with(monkeypatch, refund=done_then_dropped,
                  lookup_modification=lambda real, request: never_arrived(real, request))
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()
    assert status_sync.sync_modifications(now=later(2)) == 0
    assert not Payment.objects.get(pk=pay_id).needs_operator
    for day in (4, 30, 31):  # the provider never tells
        status_sync.sync_modifications(now=later(days=day))
    payment = Payment.objects.get(pk=pay_id)
    assert payment.needs_operator
    assert payment.events.filter(type="payment.operation_unsettled").count() == 1
    assert Refund.objects.get(pk=refund["id"]).status == "unresolved"


def test_a_partial_capture_or_refund_the_provider_cannot_represent_is_a_400(api):
    """Stripe takes three-decimal amounts ending in 0 only: 1.005 KWD is refused before
    anything is recorded or sent (issue #8, item 6, for modifications)."""
    resp = api.post("/v1/payments", {"amount": 2000, "currency": "KWD", "confirm": True,
                                     "capture_method": "manual", "provider": "stripe-sandbox",
                                     "payment_method": make_card(api)})
    assert resp.json()["status"] == "requires_capture", resp.json()
    pay_id = resp.json()["id"]
    capture = api.post(f"/v1/payments/{pay_id}/capture", {"amount_to_capture": 1005})
    assert capture.status_code == 400
    assert (capture.json()["error"]["code"], capture.json()["error"]["param"]) == (
        "amount_not_representable", "amount_to_capture")
    assert not Modification.objects.filter(payment_id=pay_id).exists()
    assert api.post(f"/v1/payments/{pay_id}/capture").json()["status"] == "succeeded"
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 15})
    assert refund.status_code == 400
    assert refund.json()["error"]["param"] == "amount"
    assert not Refund.objects.filter(payment_id=pay_id).exists()


class Died(BaseException):
    """The process dies mid-call: nothing after this line of the request runs."""


def test_a_capture_whose_process_died_before_the_provider_answered_is_settled(api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")

    def die(real, request):
        raise Died()

    provider_with(monkeypatch, capture=die)
    with pytest.raises(Died):
        api.post(f"/v1/payments/{pay_id}/capture")
    monkeypatch.undo()
    [mod] = Modification.objects.filter(payment_id=pay_id)
    assert (mod.status, mod.provider_reference) == ("pending", "")
    assert Payment.objects.get(pk=pay_id).status == "processing"
    assert status_sync.sync_modifications(now=later(2)) == 0  # within Stripe's window
    sent_ago(mod, hours=2)
    assert status_sync.sync_modifications() == 1  # never reached Stripe: not captured
    assert Payment.objects.get(pk=pay_id).status == "requires_capture"
    assert api.post(f"/v1/payments/{pay_id}/capture").json()["status"] == "succeeded"


def test_a_lookup_refused_for_our_own_reasons_proves_nothing(api, monkeypatch):
    """A 4xx about the lookup itself (credentials rotated, account misconfigured) says
    nothing about the refund: it stays unresolved, its amount reserved, and is settled once
    the provider can be asked again. Failing it would let the merchant refund twice."""
    pay_id = captured(api, "stripe-sandbox")
    provider_with(monkeypatch, refund=done_then_dropped)
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()

    def unauthorized(real, request):
        raise ProviderBadRequest("Stripe answered HTTP 401: Invalid API Key provided.",
                                 raw_code="401")

    provider_with(monkeypatch, lookup_modification=unauthorized)
    sent_ago(Refund.objects.get(pk=refund["id"]), hours=2)  # past every window
    assert status_sync.sync_modifications() == 0
    assert Refund.objects.get(pk=refund["id"]).status == "unresolved"
    assert api.post("/v1/refunds", {"payment": pay_id, "amount": 800}).status_code == 400
    monkeypatch.undo()
    Refund.objects.filter(pk=refund["id"]).update(next_sync_at=timezone.now())
    assert status_sync.sync_modifications() == 1
    settled = Refund.objects.get(pk=refund["id"])
    assert settled.status == "succeeded"
    assert settled.provider_reference.startswith("re_")  # the provider's id, as it told it


def test_an_adyen_replay_refused_for_our_own_reasons_leaves_a_pending_refund_pending(
        api, monkeypatch):
    pay_id = captured(api, "adyen-sandbox")
    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 300}).json()
    assert refund["status"] == "pending"

    def replay_refused(self, action, request, *, with_amount):
        raise ProviderBadRequest("Adyen 401 000: HTTP Status Response - Unauthorized",
                                 raw_code="000")

    monkeypatch.setattr(AdyenAdapter, "_modify", replay_refused)
    status_sync.sync_modifications(now=later(2))
    assert Refund.objects.get(pk=refund["id"]).status == "pending"


def test_operations_given_up_never_crowd_out_the_due_ones(api, monkeypatch):
    """Rows flagged for an operator leave the queue; a pass takes the most overdue first."""
    provider_with(monkeypatch, refund=done_then_dropped,
                  lookup_modification=lambda real, request: never_arrived(real, request))
    old = [api.post("/v1/refunds", {"payment": captured(api, "stripe-sandbox"),
                                    "amount": 100}).json()["id"] for _ in range(2)]
    for refund_id in old:
        sent_ago(Refund.objects.get(pk=refund_id), hours=24 * 4)
    status_sync.sync_modifications(limit=2)  # both given up: flagged, out of the queue
    assert set(Refund.objects.filter(pk__in=old).values_list("next_sync_at", flat=True)) == {
        None}
    fresh = api.post("/v1/refunds", {"payment": captured(api, "stripe-sandbox"),
                                     "amount": 100}).json()["id"]
    monkeypatch.undo()
    Refund.objects.filter(pk=fresh).update(next_sync_at=timezone.now())
    assert status_sync.sync_modifications(limit=2) == 1
    assert Refund.objects.get(pk=fresh).status == "succeeded"


def test_status_sync_must_give_up_before_adyen_forgets_an_idempotency_key(settings):
    from payments.apps import check_status_sync_window

    assert check_status_sync_window() == []
    settings.STATUS_SYNC_GIVE_UP_SECONDS = 8 * 24 * 3600
    assert [error.id for error in check_status_sync_window()] == ["payments.E001"]
