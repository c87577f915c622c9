"""payments.services.webhook_relay: events fan out into one delivery per endpoint that wants
them (same merchant and mode, enabled, type named or "*"), once, however many relays run."""

from __future__ import annotations

import pytest

from payments.models import WebhookDelivery, WebhookEndpoint, WebhookOutbox
from payments.services.merchants import merchant_create
from payments.services.webhook_endpoints import webhook_endpoint_create
from payments.services.webhook_relay import endpoint_wants, relay_due
from tests.factories import merchant_event
from tests.threads import in_threads

URL = "https://93.184.215.14/hooks"  # a public address: no DNS needed


def endpoint(merchant, events: list[str], *, livemode: bool = False,
             disabled: bool = False) -> WebhookEndpoint:
    created, _ = webhook_endpoint_create(merchant_id=merchant.id, livemode=livemode, url=URL,
                                         enabled_events=events)
    if disabled:
        WebhookEndpoint.objects.filter(pk=created.pk).update(disabled=True)
    return created


def delivered(event: WebhookOutbox) -> set[str]:
    return set(WebhookDelivery.objects.filter(event=event).values_list("endpoint_id",
                                                                       flat=True))


def test_endpoint_wants():
    assert endpoint_wants(WebhookEndpoint(enabled_events=["*"]), "refund.failed")
    assert endpoint_wants(WebhookEndpoint(enabled_events=["refund.failed"]), "refund.failed")
    assert not endpoint_wants(WebhookEndpoint(enabled_events=["refund.failed"]),
                              "payment.failed")


@pytest.mark.django_db
def test_events_fan_out_to_the_matching_endpoints_only():
    merchant = merchant_create(actor="test", name="Relay shop")[0]
    other = merchant_create(actor="test", name="Other shop")[0]
    wants_it = endpoint(merchant, ["payment.succeeded", "refund.failed"])
    wants_all = endpoint(merchant, ["*"])
    endpoint(merchant, ["payment.failed"])  # another type
    endpoint(merchant, ["*"], disabled=True)
    endpoint(merchant, ["*"], livemode=True)  # the other mode
    endpoint(other, ["*"])  # another merchant
    succeeded = merchant_event(merchant, type_="payment.succeeded")
    refunded = merchant_event(merchant, type_="refund.succeeded", object_id="re_x")

    assert relay_due() == 3
    assert delivered(succeeded) == {wants_it.pk, wants_all.pk}
    assert delivered(refunded) == {wants_all.pk}
    for delivery in WebhookDelivery.objects.all():
        assert (delivery.status, delivery.attempts) == ("pending", 0)
        assert delivery.next_attempt_at is not None
    assert not WebhookOutbox.objects.filter(relayed_at__isnull=True).exists()

    # a second run finds nothing left to relay
    assert relay_due() == 0
    assert WebhookDelivery.objects.count() == 3

    # an event of the other mode goes to that mode's endpoints only
    live = merchant_event(merchant, livemode=True)
    assert relay_due() == 1
    assert WebhookEndpoint.objects.get(pk__in=delivered(live)).livemode is True


@pytest.mark.django_db
def test_an_event_no_endpoint_wants_is_relayed_with_no_delivery():
    merchant = merchant_create(actor="test", name="Quiet shop")[0]
    endpoint(merchant, ["refund.failed"])
    event = merchant_event(merchant)
    assert relay_due() == 0
    assert WebhookOutbox.objects.get(pk=event.pk).relayed_at is not None
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_relay_takes_at_most_limit_events_oldest_first():
    merchant = merchant_create(actor="test", name="Busy shop")[0]
    endpoint(merchant, ["*"])
    events = [merchant_event(merchant) for _ in range(5)]
    assert relay_due(limit=2) == 2
    assert [bool(delivered(e)) for e in events] == [True, True, False, False, False]
    assert relay_due(limit=10) == 3
    assert all(delivered(e) for e in events)


@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_make_each_delivery_once():
    merchant = merchant_create(actor="test", name="Racing shop")[0]
    endpoints = {endpoint(merchant, ["*"]).pk, endpoint(merchant, ["payment.succeeded"]).pk}
    events = [merchant_event(merchant) for _ in range(40)]

    def relay_until_done(_: int) -> int:
        # small batches, so that the two interleave batch by batch
        return sum(iter(lambda: relay_due(limit=3), 0))

    made = in_threads(2, relay_until_done)
    assert not [m for m in made if isinstance(m, BaseException)], made
    # SKIP LOCKED: each event was relayed by one of them
    assert sum(made) == 80
    assert WebhookDelivery.objects.count() == 80
    for event in events:
        assert delivered(event) == endpoints
    assert not WebhookOutbox.objects.filter(relayed_at__isnull=True).exists()
    assert relay_due() == 0
