"""The merchant's events as /v1/events serves them: filters, and redelivery by hand.

An event is a `WebhookOutbox` row; its `payload` is the exact body its webhooks carry, and
what `GET /v1/events/{id}` returns. A redelivery sends that same body, with the same id.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import QuerySet

from payments.errors import InvalidRequest
from payments.events import MERCHANT_EVENT_TYPES
from payments.models import WebhookEndpoint, WebhookOutbox
from payments.services import idempotency
from payments.services.webhook_relay import endpoint_wants, event_redeliver

WILDCARD = ".*"


def event_type_filter(events: QuerySet[WebhookOutbox], value: str) -> QuerySet[WebhookOutbox]:
    """Events of one type (`payment.succeeded`), or of a family (`payment.*`, `refund.*`).
    A type no event can have is a 400, not an empty list: a typo must not look like
    "nothing happened"."""
    if value in MERCHANT_EVENT_TYPES:
        return events.filter(type=value)
    if value.endswith(WILDCARD):
        prefix = value[:-1]  # "payment."
        if any(known.startswith(prefix) for known in MERCHANT_EVENT_TYPES):
            return events.filter(type__startswith=prefix)
    families = sorted({known.split(".", 1)[0] + WILDCARD for known in MERCHANT_EVENT_TYPES})
    raise InvalidRequest(
        f"type must be an event type ({', '.join(MERCHANT_EVENT_TYPES)}) or a family of them "
        f"({', '.join(families)}).", code="parameter_invalid", param="type")


def event_created_filter(events: QuerySet[WebhookOutbox], *, gte: int | None = None,
                         lte: int | None = None) -> QuerySet[WebhookOutbox]:
    """Events created within [gte, lte] (Unix seconds, both included)."""
    if gte is not None:
        events = events.filter(created_at__gte=dt.datetime.fromtimestamp(gte, tz=dt.UTC))
    if lte is not None:
        # API times are whole seconds: include the whole of that second
        events = events.filter(created_at__lt=dt.datetime.fromtimestamp(lte + 1, tz=dt.UTC))
    return events


def _wanting_endpoints(event: WebhookOutbox) -> list[str]:
    endpoints = WebhookEndpoint.objects.filter(merchant_id=event.merchant_id,
                                               livemode=event.livemode, disabled=False)
    return [endpoint.pk for endpoint in endpoints if endpoint_wants(endpoint, event.type)]


def event_redeliver_by_hand(*, event: WebhookOutbox) -> int:
    """Send `event` again, under its own id, to every enabled endpoint that wants it (a new
    round of tries, whatever became of the last one); returns how many deliveries that is.
    Recorded on the request's Idempotency-Key with the deliveries, so that a retry of a
    request that died answers from them instead of redelivering twice."""
    with transaction.atomic():
        count = event_redeliver(event=event)
        idempotency.record_object(event)
    return count


def event_redelivery_count(event: WebhookOutbox) -> int:
    """How many deliveries a redelivery of `event` made due: its deliveries to the enabled
    endpoints that want it (the answer to a redelivery request that died)."""
    return event.deliveries.filter(endpoint_id__in=_wanting_endpoints(event)).count()
