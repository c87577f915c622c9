"""Cleanup jobs: abandoned payments expire, old logs are pruned.

Each job works in batches, one transaction per batch, rows claimed with
`SELECT … FOR UPDATE SKIP LOCKED`: any number of runs can go at once (none takes a row
another holds), and a run that dies mid-way leaves whole batches done and the rest for the
next run. Each stops after `CLEANUP_PASS_SECONDS` and returns what it did; the next run
goes on.

What is never deleted: payments and their event log (`PaymentEvent`), refunds, the audit
log, a merchant event that is not relayed yet or has a delivery still pending, a provider
webhook event that is not applied yet.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import state_machine as sm
from payments.events import EventType
from payments.models import (
    DeliveryStatus,
    Payment,
    PaymentStatus,
    ProviderWebhookEvent,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookOutbox,
)

logger = logging.getLogger(__name__)

ACTOR = "cleanup"
# The cancellation_reason of a payment that expired unconfirmed (Stripe's word for it).
ABANDONED = "abandoned"


def _out_of_time(started: float) -> bool:
    budget: float = settings.CLEANUP_PASS_SECONDS
    return time.monotonic() - started >= budget


# --- abandoned payments ----------------------------------------------------------------------
def payments_expire_abandoned(*, now: dt.datetime | None = None,
                              batch_size: int | None = None) -> int:
    """Cancel payments left in `requires_confirmation` for PAYMENT_EXPIRE_AFTER_SECONDS
    (`cancellation_reason: "abandoned"`; the merchant gets `payment.canceled`). Returns how
    many expired.

    A payment being confirmed meanwhile is locked by its confirmation, so it is skipped
    here, and once confirmed it is no longer `requires_confirmation`: a payment confirmed
    concurrently is never expired.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.PAYMENT_EXPIRE_AFTER_SECONDS)
    size = batch_size or settings.CLEANUP_BATCH_SIZE
    started = time.monotonic()
    expired = 0
    while True:
        with transaction.atomic():
            batch = list(
                Payment.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=PaymentStatus.REQUIRES_CONFIRMATION, created_at__lt=cutoff)
                .order_by("created_at")[:size])
            for payment in batch:
                # locked above, and in requires_confirmation: the transition cannot refuse
                sm.transition_payment(
                    payment, PaymentStatus.CANCELED, event=EventType.CANCELED, actor=ACTOR,
                    updates={"cancellation_reason": ABANDONED},
                    data={"reason": ABANDONED,
                          "expire_after_seconds": settings.PAYMENT_EXPIRE_AFTER_SECONDS})
        expired += len(batch)
        if len(batch) < size or _out_of_time(started):
            return expired


# --- retention -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pruned:
    """What one retention pass deleted."""

    events: int = 0
    deliveries: int = 0
    delivery_attempts: int = 0
    provider_events: int = 0


def merchant_events_prune(*, now: dt.datetime | None = None,
                          batch_size: int | None = None) -> Pruned:
    """Delete merchant events (`/v1/events`) older than WEBHOOK_EVENT_RETENTION_DAYS with
    their deliveries and delivery attempts, except an event not relayed yet or with a
    delivery still pending (being retried, or redelivered by hand): it stays until that
    delivery ends."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS)
    size = batch_size or settings.CLEANUP_BATCH_SIZE
    started = time.monotonic()
    events = deliveries = attempts = 0
    while True:
        with transaction.atomic():
            candidates = list(
                WebhookOutbox.objects.select_for_update(skip_locked=True)
                .filter(created_at__lt=cutoff, relayed_at__isnull=False)
                .exclude(deliveries__status=DeliveryStatus.PENDING)
                .order_by("created_at", "id").values_list("id", flat=True)[:size])
            # Lock their deliveries and look again: a redelivery by hand may have made one
            # pending since (a new delivery cannot appear: inserting one needs a lock on its
            # event row, which this transaction holds).
            locked = list(WebhookDelivery.objects.select_for_update()
                          .filter(event_id__in=candidates).values_list("event_id", "status"))
            busy = {event_id for event_id, status in locked if status == DeliveryStatus.PENDING}
            _, by_model = WebhookOutbox.objects.filter(
                id__in=[event_id for event_id in candidates if event_id not in busy]).delete()
            events += by_model.get(WebhookOutbox._meta.label, 0)
            deliveries += by_model.get(WebhookDelivery._meta.label, 0)
            attempts += by_model.get(WebhookDeliveryAttempt._meta.label, 0)
        if len(candidates) < size or _out_of_time(started):
            return Pruned(events=events, deliveries=deliveries, delivery_attempts=attempts)


def provider_events_prune(*, now: dt.datetime | None = None,
                          batch_size: int | None = None) -> int:
    """Delete provider webhook events applied more than PROVIDER_EVENT_RETENTION_DAYS ago
    (never one still waiting to be applied). Returns how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.PROVIDER_EVENT_RETENTION_DAYS)
    size = batch_size or settings.CLEANUP_BATCH_SIZE
    started = time.monotonic()
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(ProviderWebhookEvent.objects.select_for_update(skip_locked=True)
                       .filter(processed_at__isnull=False, processed_at__lt=cutoff)
                       .order_by("processed_at").values_list("id", flat=True)[:size])
            deleted += ProviderWebhookEvent.objects.filter(id__in=ids).delete()[0]
        if len(ids) < size or _out_of_time(started):
            return deleted


def retention_prune(*, now: dt.datetime | None = None,
                    batch_size: int | None = None) -> Pruned:
    """Every retention rule, once: merchant events (with their deliveries and attempts),
    then applied provider webhook events."""
    merchant = merchant_events_prune(now=now, batch_size=batch_size)
    provider = provider_events_prune(now=now, batch_size=batch_size)
    return Pruned(events=merchant.events, deliveries=merchant.deliveries,
                  delivery_attempts=merchant.delivery_attempts, provider_events=provider)
