"""Operators in the admin: from the Needs-attention view to a final state, with a reason, an
audit row and the merchant's event; read-only staff see everything and change nothing."""

import datetime as dt

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.messages import get_messages
from django.db.models import F
from django.utils import timezone

from payments.models import (
    AuditLog,
    Modification,
    Payment,
    PaymentAttempt,
    Refund,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutbox,
)
from payments.services import idempotency
from tests.conftest import admin_change_url, pay
from tests.payments.test_operator import stuck_payment
from tests.payments.test_unknown_modifications import (
    authorized,
    captured,
    done_then_dropped,
    provider_with,
)

pytestmark = pytest.mark.django_db

NEEDS_ATTENTION = "/admin/payments/needs-attention/"


@pytest.fixture
def operator_client(client):
    user = User.objects.create_superuser("olivia", "olivia@example.invalid", "pw-not-secret")
    client.force_login(user)
    return client


def staff_in(client, username: str, group: str):
    """A staff user (not superuser) in one of migration 0011's groups, signed in."""
    user = User.objects.create_user(username, f"{username}@example.invalid", "pw-not-secret",
                                    is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


@pytest.fixture
def support_client(client):
    """Staff with the view permissions only: the `support` group."""
    return staff_in(client, "sam", "support")


def action_url(obj, action: str) -> str:
    return admin_change_url(obj).removesuffix("change/") + f"operator/{action}/"


def texts(resp) -> list[str]:
    return [str(m) for m in get_messages(resp.wsgi_request)]


def test_an_operator_resolves_a_stuck_payment_from_needs_attention(
        operator_client, api, settings):
    payment = stuck_payment(api, settings)
    page = operator_client.get(NEEDS_ATTENTION)
    assert page.status_code == 200
    resolve = action_url(payment, "resolve")
    assert payment.pk.encode() in page.content and resolve.encode() in page.content
    assert b"flagged for operator" in page.content  # why it is there

    form = operator_client.get(resolve)
    assert form.status_code == 200 and b"reason" in form.content
    resp = operator_client.post(resolve, {
        "outcome": "failed", "reason": "Adyen CA: no payment under the attempt id",
        "clear_flag": "on"}, REMOTE_ADDR="198.51.100.7")
    assert resp.status_code == 302 and resp["Location"] == admin_change_url(payment)
    [message] = texts(resp)
    assert "payment.failed" in message

    payment.refresh_from_db()
    assert (payment.status, payment.needs_operator) == ("failed", False)
    assert WebhookOutbox.objects.filter(object_id=payment.pk, type="payment.failed").exists()
    row = AuditLog.objects.get(action="payment.resolve")
    assert (row.actor, row.ip, row.reason, row.outcome) == (
        "user:olivia", "198.51.100.7", "Adyen CA: no payment under the attempt id", "ok")
    shown = operator_client.get(resp["Location"])  # the change page shows the message
    assert b"payment.failed" in shown.content
    assert payment.pk.encode() not in operator_client.get(NEEDS_ATTENTION).content


def test_the_payment_operators_group_may_act(client, api, settings):
    operator_client = staff_in(client, "pat", "payment operators")
    payment = stuck_payment(api, settings)
    resp = operator_client.post(action_url(payment, "clear-flag"), {"reason": "called Adyen"})
    assert resp.status_code == 302
    assert not Payment.objects.get(pk=payment.pk).needs_operator
    assert AuditLog.objects.get(action="payment.clear_flag").actor == "user:pat"


def test_a_refusal_is_an_error_message_and_changes_nothing(operator_client, api):
    payment = Payment.objects.get(pk=pay(api).json()["id"])
    resp = operator_client.post(action_url(payment, "resolve"), {
        "outcome": "failed", "reason": "looks stuck"})
    assert resp.status_code == 302
    [message] = texts(resp)
    assert "refused" in message and "succeeded" in message
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"
    assert AuditLog.objects.get(action="payment.resolve").outcome.startswith("refused: ")


def test_the_form_asks_for_a_reason_and_a_reference(operator_client, api, settings):
    payment = stuck_payment(api, settings)
    resp = operator_client.post(action_url(payment, "resolve"),
                                {"outcome": "captured", "reason": "  "})
    assert resp.status_code == 200
    assert b"A reason is required" in resp.content or b"This field is required" in resp.content
    assert b"Required when the provider charged" in resp.content
    assert Payment.objects.get(pk=payment.pk).status == "unresolved"
    assert not AuditLog.objects.filter(object_id=payment.pk).exists()


def test_support_sees_but_cannot_act(support_client, api, settings):
    payment = stuck_payment(api, settings)
    page = support_client.get(NEEDS_ATTENTION)
    assert page.status_code == 200 and payment.pk.encode() in page.content
    assert b"/operator/" not in page.content  # no action links
    change = support_client.get(admin_change_url(payment))
    assert change.status_code == 200
    assert b"/operator/" not in change.content
    assert b"Audit log" in change.content
    url = action_url(payment, "resolve")
    assert support_client.get(url).status_code == 403
    resp = support_client.post(url, {"outcome": "failed", "reason": "I can't"})
    assert resp.status_code == 403
    payment.refresh_from_db()
    assert (payment.status, payment.needs_operator) == ("unresolved", True)
    assert not AuditLog.objects.filter(object_id=payment.pk).exists()


def test_the_payment_page_is_readable(operator_client, api):
    payment = Payment.objects.get(pk=pay(api, amount=1050).json()["id"])
    page = operator_client.get(admin_change_url(payment))
    assert page.status_code == 200
    content = page.content.decode()
    assert "10.50 USD" in content
    for caption in ("Provider attempts", "Captures and voids", "Refunds", "Event log",
                    "Routing decision", "Merchant events", "payment.succeeded"):
        assert caption in content, caption
    assert f"/admin/payments/auditlog/?object_id={payment.pk}" in content
    assert action_url(payment, "refund") in content  # the actions that fit: refund
    assert action_url(payment, "resolve") not in content
    assert 'name="_save"' not in content  # read-only: no save button


def test_zero_decimal_amounts_read_in_major_units(operator_client, api):
    payment = Payment.objects.get(pk=pay(api, amount=1000, currency="JPY").json()["id"])
    changelist = operator_client.get("/admin/payments/payment/")
    assert "1,000 JPY" in changelist.content.decode()
    assert payment.pk in changelist.content.decode()


@pytest.mark.parametrize("term", ["last4", "reference", "provider_reference", "attempt"])
def test_search_finds_a_payment(operator_client, api, term):
    payment = Payment.objects.get(pk=pay(api, "5555555555554444", reference="order-77")
                                  .json()["id"])
    other = Payment.objects.get(pk=pay(api).json()["id"])
    attempt = payment.attempts.get()
    query = {"last4": "4444", "reference": "order-77",
             "provider_reference": attempt.provider_reference, "attempt": attempt.id}[term]
    content = operator_client.get("/admin/payments/payment/", {"q": query}).content.decode()
    assert payment.pk in content and other.pk not in content


def test_lists_are_newest_first(operator_client, api):
    first = pay(api).json()["id"]
    second = pay(api).json()["id"]
    content = operator_client.get("/admin/payments/payment/").content.decode()
    assert content.index(second) < content.index(first)


def test_the_admin_index_links_to_needs_attention(operator_client):
    assert NEEDS_ATTENTION.encode() in operator_client.get("/admin/").content


def test_needs_attention_lists_every_kind_of_stuck_thing(operator_client, api, merchant,
                                                         monkeypatch, settings):
    # a capture given up on by status sync
    auth_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, capture=done_then_dropped, refund=done_then_dropped)
    api.post(f"/v1/payments/{auth_id}/capture")
    Modification.objects.filter(payment_id=auth_id).update(next_sync_at=None)
    # a refund unresolved for longer than the threshold
    paid_id = captured(api, "stripe-sandbox")
    refund_id = api.post("/v1/refunds", {"payment": paid_id, "amount": 100}).json()["id"]
    long_ago = timezone.now() - dt.timedelta(
        minutes=settings.NEEDS_ATTENTION_UNRESOLVED_MINUTES + 5)
    Refund.objects.filter(pk=refund_id).update(updated_at=long_ago)
    # a wedged Idempotency-Key
    claim = idempotency.claim(merchant=merchant, livemode=False, key="wedged-key-1",
                              fingerprint="f" * 64)
    type(claim.row).objects.filter(pk=claim.row.pk).update(
        created_at=F("created_at") - dt.timedelta(hours=1))
    # an endpoint failing, another disabled by Switchyard
    failing = WebhookEndpoint(merchant=merchant, livemode=False, url="https://a.example/h",
                              enabled_events=["*"], failing_since=long_ago)
    failing.set_secrets("whsec_test_only")
    failing.save()
    disabled = WebhookEndpoint(merchant=merchant, livemode=False, url="https://b.example/h",
                               enabled_events=["*"], disabled=True,
                               disabled_reason="failing for 3 days")
    disabled.set_secrets("whsec_test_only")
    disabled.save()

    content = operator_client.get(NEEDS_ATTENTION).content.decode()
    [mod] = Modification.objects.filter(payment_id=auth_id)
    for expected in (mod.pk, action_url(mod, "settle"), refund_id,
                     action_url(Refund.objects.get(pk=refund_id), "settle"), "wedged-key-1",
                     action_url(claim.row, "release"), failing.pk, disabled.pk,
                     "failing for 3 days"):
        assert expected in content, expected


def test_settle_a_capture_from_its_page(operator_client, api, monkeypatch):
    pay_id = authorized(api, "stripe-sandbox")
    provider_with(monkeypatch, capture=done_then_dropped)
    api.post(f"/v1/payments/{pay_id}/capture")
    [mod] = Modification.objects.filter(payment_id=pay_id)
    page = operator_client.get(admin_change_url(mod))
    assert action_url(mod, "settle").encode() in page.content
    resp = operator_client.post(action_url(mod, "settle"), {
        "outcome": "done", "reason": "captured per Stripe", "provider_reference": ""})
    assert "payment.succeeded" in texts(resp)[-1]
    assert Payment.objects.get(pk=pay_id).status == "succeeded"


def test_refund_in_major_units_from_the_payment_page(operator_client, api):
    payment = Payment.objects.get(pk=captured(api, "stripe-sandbox"))
    resp = operator_client.post(action_url(payment, "refund"),
                                {"amount": "2.50", "reason": "goodwill"})
    assert "refund.succeeded" in texts(resp)[-1]
    assert Refund.objects.get(payment=payment).amount == 250
    resp = operator_client.post(action_url(payment, "refund"),
                                {"amount": "0.001", "reason": "too precise"})
    assert resp.status_code == 200 and b"decimal places" in resp.content


def test_release_a_wedged_key_and_redeliver_an_event(operator_client, api, merchant):
    claim = idempotency.claim(merchant=merchant, livemode=False, key="wedged-key-2",
                              fingerprint="f" * 64)
    type(claim.row).objects.filter(pk=claim.row.pk).update(
        created_at=F("created_at") - dt.timedelta(hours=1))
    resp = operator_client.post(action_url(claim.row, "release"), {"reason": "died, checked"})
    assert "released" in texts(resp)[-1]
    assert not type(claim.row).objects.filter(pk=claim.row.pk).exists()

    event = WebhookOutbox.objects.filter(object_id=pay(api).json()["id"]).last()
    hook = WebhookEndpoint(merchant=merchant, livemode=False, url="https://a.example/h",
                           enabled_events=["*"])
    hook.set_secrets("whsec_test_only")
    hook.save()
    resp = operator_client.post(action_url(event, "redeliver"), {"reason": "merchant asked"})
    assert event.event_id in texts(resp)[-1]
    assert WebhookDelivery.objects.filter(event=event, endpoint=hook, status="pending").exists()
    assert AuditLog.objects.get(action="event.redeliver").actor == "user:olivia"


def test_an_unknown_action_is_a_404(operator_client, api):
    payment = Payment.objects.get(pk=pay(api).json()["id"])
    assert operator_client.get(action_url(payment, "launder")).status_code == 404
    assert PaymentAttempt.objects.filter(payment=payment).count() == 1
