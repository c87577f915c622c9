"""From merchant events to deliveries: which endpoints hear an event, and when.

An event (`WebhookOutbox` row) is written with the state change it announces. `relay_due`
fans each new event out into one `WebhookDelivery` per endpoint of the merchant (same mode,
not disabled) whose `enabled_events` name its type or `*`, and marks the event relayed, in one
transaction claimed with SKIP LOCKED: any number of workers can run it at once, and a worker
that dies mid-way leaves the event unrelayed for the next pass. Sending a delivery is
`payments.services.webhook_delivery`'s job.

`event_redeliver` (merchant API and operators) makes an event due again for every matching
endpoint, under the same event id.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from payments.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookOutbox

ALL_EVENTS = "*"


def endpoint_wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return ALL_EVENTS in endpoint.enabled_events or event_type in endpoint.enabled_events


def _matching_endpoints(event: WebhookOutbox) -> list[WebhookEndpoint]:
    endpoints = WebhookEndpoint.objects.filter(
        merchant_id=event.merchant_id, livemode=event.livemode, disabled=False)
    return [endpoint for endpoint in endpoints if endpoint_wants(endpoint, event.type)]


def relay_due(*, limit: int = 200) -> int:
    """Fan out events not relayed yet (oldest first); returns how many deliveries it made."""
    made = 0
    now = timezone.now()
    with transaction.atomic():
        events = list(WebhookOutbox.objects.select_for_update(skip_locked=True)
                      .filter(relayed_at__isnull=True).order_by("id")[:limit])
        for event in events:
            # an endpoint hears what happens after it is registered (an event still waiting
            # for the relay when it was made is older than it); older events reach it only by
            # a redelivery by hand
            deliveries = [WebhookDelivery(event=event, endpoint=endpoint,
                                          next_attempt_at=now)
                          for endpoint in _matching_endpoints(event)
                          if endpoint.created_at <= event.created_at]
            # a delivery made already (a redelivery by hand that overtook the relay) stays
            WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
            made += len(deliveries)
        WebhookOutbox.objects.filter(pk__in=[e.pk for e in events]).update(relayed_at=now)
    return made


def event_redeliver(*, event: WebhookOutbox) -> int:
    """Make `event` due now for every endpoint that wants it (the same event id, a new round
    of tries); returns how many deliveries are due."""
    now = timezone.now()
    endpoints = _matching_endpoints(event)
    with transaction.atomic():
        for endpoint in endpoints:
            WebhookDelivery.objects.update_or_create(
                event=event, endpoint=endpoint,
                defaults={"status": DeliveryStatus.PENDING, "next_attempt_at": now,
                          "first_attempt_at": None, "completed_at": None})
        if event.relayed_at is None:
            # relayed now: the relay would only find the same endpoints
            WebhookOutbox.objects.filter(pk=event.pk).update(relayed_at=now)
    return len(endpoints)

