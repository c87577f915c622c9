"""Provider webhooks: store each authentic event at once, apply it afterwards.

`provider_events_receive` runs in the webhook request: it stores the events (a redelivery of
an event already stored changes nothing) and asks for a processing pass. `process_due`, run
by the periodic sync job (and nudged right after the request), claims stored events with
SKIP LOCKED and applies each through the same services that apply a provider's immediate
answer or a status lookup, so a payment changes state in one way only:

- authorization → `attempts.settle` (an attempt whose outcome was unknown);
- capture, cancel → `modification_settle`; refund → `refund_settle`;
- release (Adyen's technical cancel) → `release.release_settle`, which decides an attempt
  whose release was requested from its release and authorization events together.

An event for an attempt still `pending` (our request is in flight: the webhook overtook the
answer) waits and is tried again. An event that contradicts what we recorded is never applied
blindly: the payment is flagged for an operator with an event saying why.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from payments import metrics
from payments.events import EventType
from payments.models import (
    AttemptStatus,
    Modification,
    ModificationStatus,
    PaymentAttempt,
    ProviderWebhookEvent,
    Refund,
    RefundStatus,
)
from payments.services import attempts, authorization, release
from payments.services.attempts import CLAIM_SECONDS
from payments.services.modifications import modification_settle
from payments.services.nudge import nudge
from payments.services.payment_methods import card_for_payment
from payments.services.refunds import refund_settle
from providers import base
from providers.models import ProviderAccount

logger = logging.getLogger(__name__)
ACTOR = "provider_webhook"
RETRY_SECONDS = 30  # an event that cannot apply yet is tried again after this


NotYet = release.NotYet  # the event cannot be applied yet: it is tried again later


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
        transaction.on_commit(lambda: nudge(0))
    return new


def claim_due_events(*, limit: int = 100, now: dt.datetime | None = None) -> list[int]:
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
    for event_id in claim_due_events(limit=limit):
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
        # back off: 30 s, 1 min, 2 min … at most an hour apart, never given up
        wait = min(RETRY_SECONDS * 2 ** min(event.tries, 7), 3600)
        ProviderWebhookEvent.objects.filter(pk=event.pk).update(
            tries=event.tries + 1, next_try_at=timezone.now() + dt.timedelta(seconds=wait))
        if event.tries + 1 == 10:
            logger.warning("provider event %s (%s %s) still cannot be applied after 10 tries",
                           event.pk, event.raw_type, event.reference)
        return False
    done = ProviderWebhookEvent.objects.filter(pk=event.pk, processed_at__isnull=True).update(
        tries=event.tries + 1, next_try_at=None, processed_at=timezone.now(), outcome=outcome)
    if done:  # (a worker whose claim expired meanwhile may have finished it too)
        metrics.provider_webhook_events.labels(provider=event.account.provider,
                                               kind=event.kind, outcome=outcome).inc()
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
    applied = False
    for _ in range(3):  # re-read when a racing worker changed the attempt meanwhile
        if attempt.status == AttemptStatus.PENDING:
            raise NotYet  # our own request is still waiting for its answer
        if attempt.release_requested_at is not None:
            return release.release_settle(attempt.id, actor=ACTOR)  # the release decides
        if attempt.status != AttemptStatus.UNKNOWN:
            break
        authorization.apply_lookup(attempt, release.authorization_result(attempt, event),
                                 card=card_for_payment(attempt.payment),
                                 actor=ACTOR)
        applied = True
        attempt = PaymentAttempt.objects.select_related(
            "payment", "payment__payment_method").get(pk=attempt.pk)
    if attempt.status == AttemptStatus.UNKNOWN:
        raise NotYet
    if event.success:  # ours, or an extra charge under the reference: reversed at once
        outcome = release.release_settle(attempt.id, actor=ACTOR)
        return "applied" if applied and outcome == "already_known" else outcome
    charged = attempt.status not in (AttemptStatus.DECLINED, AttemptStatus.FAILED)
    if not charged or event.provider_reference not in (attempt.provider_reference, ""):
        return "applied" if applied else "already_known"
    return release.flag_mismatch(attempt.payment, event=event, actor=ACTOR,  # ours, refused?
                                 recorded=f"{attempt.status} {attempt.provider_reference}")


def _release(event: ProviderWebhookEvent) -> str:
    attempt = _attempt(event, event.reference.removesuffix(base.RELEASE_SUFFIX))
    if attempt is None:
        return "unknown_reference"
    return release.release_settle(attempt.id, actor=ACTOR)


def _modification(event: ProviderWebhookEvent) -> str:
    mod = _find(Modification.objects.filter(attempt__provider_account=event.account), event)
    if mod is None:
        reversal = _reversal_of(event)
        return _reversal(event, reversal) if reversal else _unmatched(event)
    if mod.status in (ModificationStatus.PENDING, ModificationStatus.UNKNOWN):
        modification_settle(modification=mod, succeeded=event.success, actor=ACTOR,
                            provider_reference=event.operation_reference)
        return "applied"
    if (mod.status == ModificationStatus.SUCCEEDED) == event.success:
        return "already_known"
    return release.flag_mismatch(mod.payment, event=event, actor=ACTOR,
                                 recorded=f"{mod.kind} {mod.status}")


def _refund(event: ProviderWebhookEvent) -> str:
    refund = _find(Refund.objects.filter(payment__attempts__provider_account=event.account)
                   .distinct(), event)
    if refund is None:
        reversal = _reversal_of(event)
        return _reversal(event, reversal) if reversal else _unmatched(event)
    if refund.status in (RefundStatus.PENDING, RefundStatus.UNRESOLVED):
        refund_settle(refund=refund, succeeded=event.success, actor=ACTOR,
                      provider_reference=event.operation_reference,
                      failure_code="" if event.success else "refund_failed")
        return "applied"
    if (refund.status == RefundStatus.SUCCEEDED) == event.success:
        return "already_known"
    return release.flag_mismatch(refund.payment, event=event, actor=ACTOR,
                                 recorded=f"refund {refund.status}")


def _reversal_of(event: ProviderWebhookEvent) -> PaymentAttempt | None:
    """The attempt whose extra charge this event's operation reversed (double-charge
    compensation): named in our reference (Adyen echoes it), or, when the event names the
    charge by its attempt (Checkout.com), recognised by the provider's id for the operation,
    which `attempts.compensate` records."""
    attempt_id = attempts.reversed_attempt_id(event.reference)
    if attempt_id is not None:
        return _attempt(event, attempt_id)
    attempt = _attempt(event, event.reference)
    if attempt is None or not event.operation_reference:
        return None
    reversed_here = attempt.payment.events.filter(
        type=EventType.DUPLICATE_CHARGE_REVERSED,
        data__operation_reference=event.operation_reference).exists()
    return attempt if reversed_here else None


def _reversal(event: ProviderWebhookEvent, attempt: PaymentAttempt) -> str:
    """The provider's word on a void or refund of an extra charge. Accepted reversals were
    counted when accepted; a declined one needs a person: the customer may still be charged
    twice."""
    if event.success:
        return "already_known"
    return release.flag_mismatch(attempt.payment, event=event, actor=ACTOR,
                                 recorded="reversed")


IN_FLIGHT = {"capture": [ModificationStatus.PENDING, ModificationStatus.UNKNOWN],
             "cancel": [ModificationStatus.PENDING, ModificationStatus.UNKNOWN],
             "refund": [RefundStatus.PENDING, RefundStatus.UNRESOLVED]}


def _unmatched(event: ProviderWebhookEvent) -> str:
    """A capture, void, refund or reversal event we cannot match by our id nor by the
    provider's id for the operation (Checkout.com names the payment by our attempt id and the
    action by its own id, which we only learn from the provider's answer)."""
    attempt = _attempt(event, event.reference)
    if attempt is None:
        return "unknown_reference"
    payment = attempt.payment
    if attempt.status in (AttemptStatus.PENDING, AttemptStatus.UNKNOWN):
        raise NotYet  # the authorization decides first
    psp = event.provider_reference
    if psp and psp != attempt.provider_reference:  # about another charge under the attempt
        if attempts.is_reversed(payment, psp):
            return "already_known"  # an extra charge we reversed
        raise NotYet  # its authorization (an extra charge, to reverse) is applied first
    if event.kind not in IN_FLIGHT:  # a reversal we did not send (e.g. made by hand)
        return release.flag_mismatch(payment, event=event, actor=ACTOR,
                                     recorded=f"{attempt.status}; no reversal of ours")
    if event.kind == "capture" and payment.capture_method == "automatic" and \
            attempt.status == AttemptStatus.CAPTURED:
        if event.success:
            return "already_known"  # the capture of an automatically captured payment
        return release.flag_mismatch(payment, event=event, actor=ACTOR, recorded="captured")
    rows: QuerySet[Refund] | QuerySet[Modification]
    if event.kind == "refund":
        rows = Refund.objects.filter(payment=payment, provider_reference="")
    else:
        rows = Modification.objects.filter(attempt=attempt, kind=event.kind,
                                           provider_reference="")
    if rows.filter(status__in=IN_FLIGHT[event.kind]).exists():
        raise NotYet  # its answer (with the provider's id) or status sync will place it
    settled = "succeeded" if event.success else "failed"
    if rows.filter(status=settled, amount=event.amount).exists():
        return "already_known"  # settled by status sync, which had no id to record
    # nothing of ours explains it: an operator looks (a decline must never be dropped)
    return release.flag_mismatch(payment, event=event, actor=ACTOR,
                                 recorded=f"no {event.kind} of ours matches")


_Operation = TypeVar("_Operation", Modification, Refund)


def _find(queryset: QuerySet[_Operation], event: ProviderWebhookEvent) -> _Operation | None:
    found = queryset.filter(pk=event.reference).first() if event.reference else None
    if found is None and event.operation_reference:
        found = queryset.filter(provider_reference=event.operation_reference).first()
    return found


APPLY = {"authorization": _authorization, "release": _release, "capture": _modification,
         "cancel": _modification, "refund": _refund, "reverse": _modification}
