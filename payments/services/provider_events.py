"""Provider webhooks: store each authentic event at once, apply it afterwards.

`provider_events_receive` runs in the webhook request: it stores the events (a redelivery of
an event already stored changes nothing) and asks for a processing pass. `process_due`, run
by the periodic sync job (and nudged right after the request), claims stored events with
SKIP LOCKED and applies each through the same services that apply a provider's immediate
answer or a status lookup, so a payment changes state in one way only:

- authorization → `status_sync.apply_lookup` (an attempt whose outcome was unknown);
- capture, cancel → `modification_settle`; refund → `refund_settle`;
- release (Adyen's technical cancel) → `status_sync.apply_release`: nothing stays charged under
  the attempt's reference, so the attempt is over without a charge and failover may go on.

An event for an attempt still `pending` (our request is in flight: the webhook overtook the
answer) waits and is tried again. An event that contradicts what we recorded is never applied
blindly: the payment is flagged for an operator with an event saying why.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from payments import state_machine as sm
from payments.models import (
    AttemptStatus,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    ProviderWebhookEvent,
    Refund,
    RefundStatus,
)
from payments.services import status_sync
from payments.services.modifications import modification_settle
from payments.services.payment_methods import card_for_provider
from payments.services.refunds import refund_settle
from providers import base
from providers.models import ProviderAccount

logger = logging.getLogger(__name__)
ACTOR = "provider_webhook"
RETRY_SECONDS = 30  # an event that cannot apply yet is tried again after this
CLAIM_SECONDS = 120
REVERSAL_SUFFIX = "-reversal"  # status_sync.compensate's operation reference
RELEASE_SUFFIX = "-release"  # the adapters' reference for a release of an attempt


class NotYet(Exception):
    """The event cannot be applied yet (what it is about is still in flight)."""


def provider_events_receive(*, account: ProviderAccount,
                            events: list[base.ProviderEvent]) -> int:
    """Store a delivery's events; returns how many were new."""
    now = timezone.now()
    new = 0
    for event in events:
        try:
            with transaction.atomic():
                ProviderWebhookEvent.objects.create(
                    account=account, event_id=event.event_id[:200], kind=event.kind,
                    success=event.success, reference=event.reference[:128],
                    provider_reference=event.provider_reference[:128],
                    operation_reference=event.operation_reference[:128],
                    amount=event.amount, currency=event.currency[:3],
                    decline_code=event.decline_code[:64], reason=event.reason[:500],
                    raw_type=event.raw_type[:64], next_try_at=now)
            new += 1
        except IntegrityError:  # a redelivery: stored already
            continue
    if new:
        transaction.on_commit(lambda: status_sync.nudge(0))
    return new


def claim_due(*, limit: int = 100, now: dt.datetime | None = None) -> list[int]:
    now = now or timezone.now()
    with transaction.atomic():
        due = list(ProviderWebhookEvent.objects.select_for_update(skip_locked=True)
                   .filter(next_try_at__lte=now).order_by("next_try_at", "id")
                   .values_list("id", flat=True)[:limit])
        ProviderWebhookEvent.objects.filter(id__in=due).update(
            next_try_at=now + dt.timedelta(seconds=CLAIM_SECONDS))
    return due


def process_due(*, limit: int = 100) -> int:
    """Apply every due event; returns how many were applied (or found to need nothing)."""
    done = 0
    for event_id in claim_due(limit=limit):
        try:
            done += provider_event_apply(event_id)
        except Exception:  # one bad event must not stop the others; its claim expires
            logger.exception("applying provider event %s failed", event_id)
    return done


def provider_event_apply(event_id: int) -> bool:
    """Apply one stored event; False when it must wait (tried again later)."""
    event = ProviderWebhookEvent.objects.select_related("account").get(pk=event_id)
    if event.processed_at is not None:
        return True
    try:
        outcome = APPLY.get(event.kind, _ignore)(event)
    except NotYet:
        ProviderWebhookEvent.objects.filter(pk=event.pk).update(
            tries=event.tries + 1,
            next_try_at=timezone.now() + dt.timedelta(seconds=RETRY_SECONDS))
        return False
    ProviderWebhookEvent.objects.filter(pk=event.pk).update(
        tries=event.tries + 1, next_try_at=None, processed_at=timezone.now(), outcome=outcome)
    return True


# --- one function per event kind; each returns what it did ---------------------------------
def _ignore(event: ProviderWebhookEvent) -> str:
    return "ignored"


def _attempt(event: ProviderWebhookEvent, reference: str) -> PaymentAttempt | None:
    return (PaymentAttempt.objects.select_related("payment", "payment__payment_method")
            .filter(pk=reference, provider_account=event.account).first())


def _authorization(event: ProviderWebhookEvent) -> str:
    attempt = _attempt(event, event.reference)
    if attempt is None:
        return "unknown_reference"
    if attempt.status == AttemptStatus.PENDING:
        raise NotYet  # our own request is still waiting for its answer
    if attempt.status == AttemptStatus.UNKNOWN:
        capture = attempt.payment.capture_method == "automatic"
        found = base.LookupResult(
            found=True, provider_reference=event.provider_reference, amount=event.amount,
            status=("captured" if capture else "authorized") if event.success else "declined",
            decline_code=event.decline_code)
        status_sync.apply_lookup(attempt, found, card=card_for_provider(
            attempt.payment.payment_method), actor=ACTOR)
        return "applied"
    charged = attempt.status not in (AttemptStatus.DECLINED, AttemptStatus.FAILED)
    if event.success == charged or attempt.error_code == status_sync.RELEASED:
        return "already_known"  # (a released attempt's authorization was cancelled)
    return _mismatch(attempt.payment, event, recorded=attempt.status)


def _release(event: ProviderWebhookEvent) -> str:
    reference = event.reference.removesuffix(RELEASE_SUFFIX)
    attempt = _attempt(event, reference)
    if attempt is None:
        return "unknown_reference"
    if attempt.status in (AttemptStatus.AUTHORIZED, AttemptStatus.CAPTURED) and \
            event.success and event.provider_reference:
        # the authorization we kept (learnt meanwhile) was cancelled under it
        return _mismatch(attempt.payment, event, recorded=attempt.status)
    if attempt.status != AttemptStatus.UNKNOWN:
        return "already_known"
    if not event.success:  # e.g. already captured: status sync keeps asking
        with transaction.atomic():
            sm.record_event(attempt.payment, "payment.release_failed", actor=ACTOR,
                            data={"attempt": attempt.id, "reason": event.reason})
        return "release_failed"
    status_sync.apply_release(attempt, provider_reference=event.provider_reference,
                              actor=ACTOR)
    return "applied"


def _modification(event: ProviderWebhookEvent) -> str:
    if event.reference.endswith(REVERSAL_SUFFIX):
        return _reversal(event)
    mod = _find(Modification.objects.filter(attempt__provider_account=event.account), event)
    if mod is None:
        return "unknown_reference"
    if mod.status in (ModificationStatus.PENDING, ModificationStatus.UNKNOWN):
        modification_settle(modification=mod, succeeded=event.success, actor=ACTOR,
                            provider_reference=event.operation_reference)
        return "applied"
    if (mod.status == ModificationStatus.SUCCEEDED) == event.success:
        return "already_known"
    return _mismatch(mod.payment, event, recorded=f"{mod.kind} {mod.status}")


def _refund(event: ProviderWebhookEvent) -> str:
    if event.reference.endswith(REVERSAL_SUFFIX):
        return _reversal(event)
    refund = _find(Refund.objects.filter(payment__attempts__provider_account=event.account)
                   .distinct(), event)
    if refund is None:
        return "unknown_reference"
    if refund.status in (RefundStatus.PENDING, RefundStatus.UNRESOLVED):
        refund_settle(refund=refund, succeeded=event.success, actor=ACTOR,
                      provider_reference=event.operation_reference,
                      failure_code="" if event.success else "refund_failed")
        return "applied"
    if (refund.status == RefundStatus.SUCCEEDED) == event.success:
        return "already_known"
    return _mismatch(refund.payment, event, recorded=f"refund {refund.status}")


def _reversal(event: ProviderWebhookEvent) -> str:
    """The provider's word on a void or refund of an extra charge (double-charge
    compensation). Accepted reversals were counted when accepted; a failed one needs a
    person, since the customer may still be charged twice."""
    attempt = _attempt(event, event.reference.removesuffix(REVERSAL_SUFFIX))
    if attempt is None:
        return "unknown_reference"
    if event.success:
        return "already_known"
    return _mismatch(attempt.payment, event, recorded="reversed")


def _find(queryset, event: ProviderWebhookEvent):
    found = queryset.filter(pk=event.reference).first() if event.reference else None
    if found is None and event.operation_reference:
        found = queryset.filter(provider_reference=event.operation_reference).first()
    return found


def _mismatch(payment: Payment, event: ProviderWebhookEvent, *, recorded: str) -> str:
    with transaction.atomic():
        payment = sm.lock_payment(payment.pk)
        sm.record_event(payment, "payment.provider_event_mismatch", actor=ACTOR, data={
            "event": event.raw_type or event.kind, "success": event.success,
            "reference": event.reference, "recorded": recorded, "reason": event.reason})
        Payment.objects.filter(pk=payment.pk).update(needs_operator=True)
    logger.warning("provider event contradicts payment %s: %s success=%s, recorded %s",
                   payment.pk, event.raw_type, event.success, recorded)
    return "flagged_for_operator"


APPLY = {"authorization": _authorization, "release": _release, "capture": _modification,
         "cancel": _modification, "refund": _refund}
