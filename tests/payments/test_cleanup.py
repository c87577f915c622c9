"""Cleanup (payments.services.cleanup): abandoned payments expire through the state machine;
merchant events, their deliveries and applied provider webhook events are pruned past their
retention, never what is still pending; two runs at once never do the same work twice; a
payment confirmed concurrently is never expired (real threads against Postgres)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from payments.events import EventType
from payments.models import (
    AuditLog,
    DeliveryStatus,
    Payment,
    PaymentEvent,
    PaymentStatus,
    ProviderWebhookEvent,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookOutbox,
)
from payments.services.cleanup import (
    merchant_events_prune,
    payments_expire_abandoned,
    provider_events_prune,
    retention_prune,
)
from tests.conftest import make_card
from tests.threads import in_threads, race
from tests.webhooks import make_endpoint, make_event
from workers.tasks import expire_payments, prune_retention

DAY = dt.timedelta(days=1)


def create_payment(api, pm: str, **fields) -> str:
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "USD", "payment_method": pm,
                                     **fields})
    assert resp.status_code == 200 and resp.json()["status"] == "requires_confirmation"
    return resp.json()["id"]


def age(payment_id: str, by: dt.timedelta) -> None:
    Payment.objects.filter(pk=payment_id).update(created_at=timezone.now() - by)


def canceled_events(payment_id: str) -> list[PaymentEvent]:
    return list(PaymentEvent.objects.filter(payment_id=payment_id, type=EventType.CANCELED))


def merchant_events(payment_id: str, event_type: str) -> list[WebhookOutbox]:
    return list(WebhookOutbox.objects.filter(object_id=payment_id, type=event_type))


# --- abandoned payments ----------------------------------------------------------------------
@pytest.mark.django_db
def test_payments_left_unconfirmed_expire_to_canceled_with_the_event(api, settings):
    pm = make_card(api)
    old, young = create_payment(api, pm), create_payment(api, pm)
    confirmed = api.post("/v1/payments", {"amount": 500, "currency": "USD",
                                          "payment_method": pm, "confirm": True}).json()["id"]
    age(old, DAY + dt.timedelta(minutes=1))
    age(young, DAY - dt.timedelta(minutes=1))
    age(confirmed, 3 * DAY)

    assert expire_payments.apply().get() == {"expired": 1}

    payment = Payment.objects.get(pk=old)
    assert payment.status == PaymentStatus.CANCELED
    assert payment.cancellation_reason == "abandoned"
    (event,) = canceled_events(old)
    assert (event.from_status, event.to_status, event.actor) == (
        "requires_confirmation", "canceled", "cleanup")
    assert event.data["reason"] == "abandoned"
    (outbox,) = merchant_events(old, "payment.canceled")
    assert outbox.payload["data"]["object"]["status"] == "canceled"
    # the merchant sees it canceled; a confirmation now is refused
    assert api.get(f"/v1/payments/{old}").json()["status"] == "canceled"
    resp = api.post(f"/v1/payments/{old}/confirm", {})
    assert resp.status_code == 409
    assert Payment.objects.get(pk=young).status == PaymentStatus.REQUIRES_CONFIRMATION
    assert Payment.objects.get(pk=confirmed).status == PaymentStatus.SUCCEEDED
    # the event log still replays to the current state
    from payments.state_machine import replay_events
    assert replay_events(payment)["status"] == "canceled"

    # idempotent: nothing more to do
    assert payments_expire_abandoned() == 0
    assert len(canceled_events(old)) == 1


@pytest.mark.django_db
def test_the_expiry_age_is_a_setting(api, settings):
    settings.PAYMENT_EXPIRE_AFTER_SECONDS = 3600
    payment = create_payment(api, make_card(api))
    age(payment, dt.timedelta(minutes=59))
    assert payments_expire_abandoned() == 0
    age(payment, dt.timedelta(minutes=61))
    assert payments_expire_abandoned() == 1


@pytest.mark.django_db
def test_expiry_works_in_batches_until_done(api):
    pm = make_card(api)
    ids = [create_payment(api, pm) for _ in range(5)]
    Payment.objects.filter(pk__in=ids).update(created_at=timezone.now() - 2 * DAY)
    assert payments_expire_abandoned(batch_size=2) == 5
    assert set(Payment.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        "canceled"}


@pytest.mark.django_db(transaction=True)
def test_two_expiry_runs_at_once_expire_each_payment_once(api):
    pm = make_card(api)
    ids = [create_payment(api, pm) for _ in range(12)]
    Payment.objects.filter(pk__in=ids).update(created_at=timezone.now() - 2 * DAY)

    results = in_threads(3, lambda i: payments_expire_abandoned(batch_size=2))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(results) == 12
    for payment_id in ids:
        assert len(canceled_events(payment_id)) == 1
        assert len(merchant_events(payment_id, "payment.canceled")) == 1


@pytest.mark.django_db(transaction=True)
def test_a_payment_being_confirmed_is_never_expired(api, monkeypatch):
    """The confirmation holds the payment's row lock while it routes: the expiry skips the
    row (SKIP LOCKED) and, once the confirmation commits, finds it no longer
    requires_confirmation."""
    from payments.services import payments as payment_service

    payment_id = create_payment(api, make_card(api))
    age(payment_id, 2 * DAY)
    locked, release = threading.Event(), threading.Event()
    real_route = payment_service._route

    def slow_route(payment, pm):
        locked.set()  # inside the confirming transaction, the row locked
        assert release.wait(30)
        return real_route(payment, pm)
    monkeypatch.setattr(payment_service, "_route", slow_route)

    answers = []

    def confirm():
        try:
            answers.append(api.post(f"/v1/payments/{payment_id}/confirm", {}))
        finally:
            connection.close()
    confirming = threading.Thread(target=confirm)
    confirming.start()
    try:
        assert locked.wait(30)
        assert payments_expire_abandoned() == 0  # skipped: being confirmed
    finally:
        release.set()
        confirming.join(60)
    assert answers[0].status_code == 200, answers[0].json()
    assert payments_expire_abandoned() == 0  # and no longer requires_confirmation
    payment = Payment.objects.get(pk=payment_id)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.cancellation_reason == ""
    assert canceled_events(payment_id) == []


@pytest.mark.django_db(transaction=True)
def test_confirmations_racing_the_expiry_each_win_or_lose_whole(api):
    """Confirmations and expiry runs at once, on the same payments: each payment is either
    confirmed (and never canceled) or expired (and its confirmation refused), never both."""
    pm = make_card(api)
    ids = [create_payment(api, pm) for _ in range(6)]
    Payment.objects.filter(pk__in=ids).update(created_at=timezone.now() - 2 * DAY)
    answers: dict[str, int] = {}

    def confirm_all():
        for payment_id in ids:
            answers[payment_id] = api.post(f"/v1/payments/{payment_id}/confirm",
                                           {}).status_code

    errors = race(confirm_all, lambda: payments_expire_abandoned(batch_size=1),
                  lambda: payments_expire_abandoned(batch_size=1))
    assert errors == []
    for payment_id in ids:
        payment = Payment.objects.get(pk=payment_id)
        types = set(PaymentEvent.objects.filter(payment_id=payment_id)
                    .values_list("type", flat=True))
        if answers[payment_id] == 200:
            assert payment.status == PaymentStatus.SUCCEEDED
            assert EventType.CANCELED not in types
        else:
            assert answers[payment_id] == 409
            assert payment.status == PaymentStatus.CANCELED
            assert payment.cancellation_reason == "abandoned"
            assert EventType.CONFIRMED not in types


# --- retention -------------------------------------------------------------------------------
def old_event(merchant, *, days: int, relayed: bool = True) -> WebhookOutbox:
    event = make_event(merchant)
    WebhookOutbox.objects.filter(pk=event.pk).update(
        created_at=timezone.now() - dt.timedelta(days=days),
        relayed_at=timezone.now() - dt.timedelta(days=days) if relayed else None)
    event.refresh_from_db()
    return event


def deliver(event, endpoint, status: str, tries: int = 2) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, status=status,
                                              attempts=tries)
    for _ in range(tries):
        WebhookDeliveryAttempt.objects.create(delivery=delivery, endpoint=endpoint,
                                              started_at=timezone.now(), status_code=500)
    return delivery


def provider_event(account, name: str, *, processed_days_ago: float | None):
    row = ProviderWebhookEvent.objects.create(
        account=account, event_id=name, kind="authorization", success=True,
        next_try_at=None if processed_days_ago is not None else timezone.now())
    if processed_days_ago is not None:
        ProviderWebhookEvent.objects.filter(pk=row.pk).update(
            processed_at=timezone.now() - dt.timedelta(days=processed_days_ago),
            outcome="applied")
    return row


@pytest.mark.django_db
def test_merchant_events_past_retention_go_with_their_deliveries(merchant, settings):
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 30
    one = make_endpoint(merchant, "https://shop.example.com/a")
    two = make_endpoint(merchant, "https://shop.example.com/b")
    finished = old_event(merchant, days=31)
    deliver(finished, one, DeliveryStatus.SUCCEEDED)
    deliver(finished, two, DeliveryStatus.FAILED, tries=3)
    no_endpoint = old_event(merchant, days=40)
    still_sending = old_event(merchant, days=31)
    deliver(still_sending, one, DeliveryStatus.SUCCEEDED)
    deliver(still_sending, two, DeliveryStatus.PENDING)  # redelivered by hand, say
    not_relayed = old_event(merchant, days=31, relayed=False)
    young = old_event(merchant, days=29)
    deliver(young, one, DeliveryStatus.SUCCEEDED)
    payment_events, audit_rows = PaymentEvent.objects.count(), AuditLog.objects.count()

    pruned = merchant_events_prune()

    assert (pruned.events, pruned.deliveries, pruned.delivery_attempts) == (2, 2, 5)
    left = set(WebhookOutbox.objects.values_list("pk", flat=True))
    assert left == {still_sending.pk, not_relayed.pk, young.pk}
    assert finished.pk not in left and no_endpoint.pk not in left
    assert WebhookDelivery.objects.filter(event=still_sending).count() == 2
    assert WebhookDeliveryAttempt.objects.filter(delivery__event=still_sending).count() == 4
    assert WebhookDelivery.objects.filter(event=young).count() == 1
    # never the payments' event log nor the audit log
    assert (PaymentEvent.objects.count(), AuditLog.objects.count()) == (payment_events,
                                                                       audit_rows)
    assert merchant_events_prune().events == 0


@pytest.mark.django_db
def test_a_pruned_event_is_gone_from_the_api(api, merchant):
    event = old_event(merchant, days=31)
    assert api.get(f"/v1/events/{event.event_id}").status_code == 200
    merchant_events_prune()
    assert api.get(f"/v1/events/{event.event_id}").status_code == 404


@pytest.mark.django_db
def test_applied_provider_events_past_retention_are_pruned(merchant, settings):
    settings.PROVIDER_EVENT_RETENTION_DAYS = 30
    account = merchant.provider_accounts.first()
    old = provider_event(account, "evt_old", processed_days_ago=31)
    recent = provider_event(account, "evt_recent", processed_days_ago=2)
    waiting = provider_event(account, "evt_waiting", processed_days_ago=None)
    ProviderWebhookEvent.objects.filter(pk=waiting.pk).update(
        received_at=timezone.now() - dt.timedelta(days=90))

    assert provider_events_prune() == 1
    assert set(ProviderWebhookEvent.objects.values_list("pk", flat=True)) == {recent.pk,
                                                                              waiting.pk}
    assert old.pk not in set(ProviderWebhookEvent.objects.values_list("pk", flat=True))


@pytest.mark.django_db
def test_the_retention_task_prunes_everything_and_reports_counts(merchant):
    endpoint = make_endpoint(merchant, "https://shop.example.com/a")
    deliver(old_event(merchant, days=31), endpoint, DeliveryStatus.SUCCEEDED, tries=1)
    provider_event(merchant.provider_accounts.first(), "evt_1", processed_days_ago=31)
    assert prune_retention.apply().get() == {"events": 1, "deliveries": 1,
                                             "delivery_attempts": 1, "provider_events": 1}
    assert retention_prune().events == 0


@pytest.mark.django_db(transaction=True)
def test_two_retention_runs_at_once_delete_each_row_once(merchant, settings):
    endpoint = make_endpoint(merchant, "https://shop.example.com/a")
    events = [old_event(merchant, days=31) for _ in range(9)]
    for event in events:
        deliver(event, endpoint, DeliveryStatus.SUCCEEDED, tries=1)
    keep = old_event(merchant, days=31)
    deliver(keep, endpoint, DeliveryStatus.PENDING)
    account = merchant.provider_accounts.first()
    for i in range(7):
        provider_event(account, f"evt_{i}", processed_days_ago=31)

    results = in_threads(3, lambda i: retention_prune(batch_size=2))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r.events for r in results) == 9
    assert sum(r.deliveries for r in results) == 9
    assert sum(r.delivery_attempts for r in results) == 9
    assert sum(r.provider_events for r in results) == 7
    assert list(WebhookOutbox.objects.values_list("pk", flat=True)) == [keep.pk]
    assert not ProviderWebhookEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_delivery_made_pending_during_the_prune_keeps_its_event(merchant, monkeypatch):
    """A redelivery by hand that lands between the prune's choice of events and its delete:
    the prune looks again under the deliveries' locks and keeps the event."""
    endpoint = make_endpoint(merchant, "https://shop.example.com/a")
    event = old_event(merchant, days=31)
    delivery = deliver(event, endpoint, DeliveryStatus.FAILED)
    real_select = WebhookDelivery.objects.select_for_update

    def redelivered_meanwhile(*args, **kwargs):
        # another connection makes the delivery pending and commits, as event_redeliver does
        def redeliver():
            try:
                WebhookDelivery.objects.filter(pk=delivery.pk).update(
                    status=DeliveryStatus.PENDING, next_attempt_at=timezone.now())
            finally:
                connection.close()
        thread = threading.Thread(target=redeliver)
        thread.start()
        thread.join(30)
        return real_select(*args, **kwargs)
    monkeypatch.setattr(WebhookDelivery.objects, "select_for_update", redelivered_meanwhile)

    assert merchant_events_prune().events == 0
    assert WebhookOutbox.objects.filter(pk=event.pk).exists()
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.PENDING

