"""Merchant webhooks end to end: payments made through the API produce events that reach a
merchant's endpoint (a real local HTTP server), signed, in the order they happened; a capture
that Adyen settles later, by its webhook, too. The nudge after commit goes to the project's
Celery app by name."""

from __future__ import annotations

import json
import logging

import pytest
import redis

from payments.models import DeliveryStatus, WebhookDelivery
from payments.services import nudge, provider_events
from payments.services.webhook_delivery import deliver_due
from payments.services.webhook_relay import relay_due
from providers.sandboxes import webhooks as sandbox_webhooks
from tests.conftest import pay
from tests.webhooks import SECRET, Receiver, make_endpoint
from workers.celery import app
from workers.tasks import relay_events

from .test_webhook_delivery import receiver_script


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    server = Receiver()
    yield server
    server.close()


def _received(receiver: Receiver) -> list[tuple[str, str, int]]:
    """(event type, payment status in it, amount captured) of each delivery, checking each
    one's signature as a merchant would."""
    out = []
    for request in receiver.requests:
        assert receiver_script.verify(request.body, request.headers["switchyard-signature"],
                                      SECRET)
        event = request.json()
        out.append((event["type"], event["data"]["object"]["status"],
                    event["data"]["object"]["amount_captured"]))
    return out


@pytest.mark.django_db
def test_a_payment_through_the_api_is_announced_signed_and_in_order(api, merchant, receiver):
    make_endpoint(merchant, receiver.url())
    resp = pay(api, provider="stripe-sandbox")
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded"
    assert relay_events.delay().get() == 2  # the worker's task: relay, then deliver
    assert _received(receiver) == [("payment.processing", "processing", 0),
                                   ("payment.succeeded", "succeeded", 1050)]
    ids = [r.json()["data"]["object"]["id"] for r in receiver.requests]
    assert ids == [resp.json()["id"]] * 2
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {
        DeliveryStatus.SUCCEEDED}


@pytest.mark.django_db
def test_only_the_events_an_endpoint_enabled_reach_it(api, merchant, receiver):
    make_endpoint(merchant, receiver.url(), events=["payment.succeeded"])
    pay(api, provider="stripe-sandbox")
    relay_due()
    deliver_due()
    assert [t for t, _, _ in _received(receiver)] == ["payment.succeeded"]


@pytest.mark.django_db(transaction=True)
def test_a_capture_settled_later_by_adyens_webhook_is_delivered(api, merchant, receiver):
    make_endpoint(merchant, receiver.url())
    pay_id = pay(api, currency="EUR", provider="adyen-sandbox",
                 capture_method="manual").json()["id"]
    assert api.post(f"/v1/payments/{pay_id}/capture").json()["status"] == "processing"
    relay_due()
    deliver_due()
    assert _received(receiver) == [("payment.processing", "processing", 0),
                                   ("payment.requires_capture", "requires_capture", 0),
                                   ("payment.processing", "processing", 0)]
    # later: Adyen's CAPTURE webhook arrives and the sync pass applies it
    sandbox_webhooks.deliver_due()
    provider_events.process_due()
    relay_due()
    deliver_due()
    assert _received(receiver)[3:] == [("payment.succeeded", "succeeded", 1050)]


# --- the nudge ---------------------------------------------------------------------------------
BROKER_DB = 15  # this branch's Redis database (settings.test's REDIS_URL); never 9


@pytest.fixture
def broker(settings):
    """Production-like sending (not eager, the nudge on) to the project's app, on a Redis
    broker of our own; restores the app's broker after."""
    url = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.WEBHOOK_DELIVERY_DELAY_SECONDS = 0.5

    def use(broker_url: str) -> None:
        app.conf.broker_url = broker_url
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    use(url)
    nudge._sent_nudges.forget()  # no nudge of an earlier test still counts as pending
    queue = redis.Redis.from_url(url)
    queue.delete("webhooks")
    yield queue, use
    queue.delete("webhooks")
    use(before)


@pytest.mark.django_db(transaction=True)
def test_an_event_nudges_the_relay_task_by_name_after_commit(api, broker, monkeypatch):
    queue, _ = broker
    # two events in two commits: the first nudges once its commit is done; the second is
    # covered by the pass that nudge asked for (due after it), and sends none of its own
    pay(api, provider="stripe-sandbox")
    raw = queue.lrange("webhooks", 0, -1)  # kombu's Redis transport: one list per queue
    assert [json.loads(m)["headers"]["task"] for m in raw] == [nudge.WEBHOOKS_TASK]
    assert json.loads(raw[0])["headers"]["eta"]  # sent with its countdown

    monkeypatch.setattr(nudge._sent_nudges, "_due", 0.0)  # that pass has run
    pay(api, provider="stripe-sandbox")
    assert len(queue.lrange("webhooks", 0, -1)) == 2  # a later commit nudges again


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_is_down_does_not_fail_the_payment(api, broker, caplog):
    _, use = broker
    use("redis://127.0.0.1:1/0")  # nothing listens on port 1
    caplog.set_level(logging.WARNING, logger="payments.services.nudge")
    resp = pay(api, provider="stripe-sandbox")
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded"
    assert "webhook delivery nudge not enqueued" in caplog.text


def test_the_beat_runs_the_relay_on_the_webhooks_queue():
    entry = app.conf.beat_schedule["relay-webhook-events"]
    assert entry["task"] == relay_events.name == nudge.WEBHOOKS_TASK
    assert entry["options"]["expires"] < entry["schedule"]
    assert app.amqp.router.route({}, relay_events.name)["queue"].name == "webhooks"
    assert relay_events.acks_late and relay_events.reject_on_worker_lost
