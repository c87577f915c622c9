"""Status sync: resolve unknown outcomes by asking the provider, never by charging elsewhere.

An attempt whose outcome is unknown carries `next_sync_at`. A periodic worker claims due
attempts (`claim_due`, SELECT … FOR UPDATE SKIP LOCKED) and calls `attempt_sync` for each,
which asks the provider by our reference (the attempt id); what the answer means is decided
in `payments.services.attempts`, as for an immediate answer:

- charged (authorized or captured): the payment continues as approved — unless another attempt
  of the payment already succeeded, or the payment has already ended: then this charge is
  extra and is voided or refunded at once (double-charge compensation), with an event and a
  metric;
- declined, or no charge at all: the attempt is over without a charge and failover continues
  if the payment is still within its attempt budget, else the payment fails;
- still unknown (the provider cannot tell, or is unreachable): ask again on the back-off
  schedule; when it runs out, the payment stays `unresolved` and is flagged for an operator.

A provider that cannot be asked (Adyen: no read endpoint) is asked to release whatever it holds
under the attempt after STATUS_SYNC_RELEASE_AFTER_LOOKUPS lookups that could not tell; its
webhooks then decide the attempt (`payments.services.release`). The sync pass also applies
the providers' stored webhook events first (`payments.services.provider_events`).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from payments import state_machine as sm
from payments.events import EventType
from payments.models import (
    AttemptStatus,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from payments.services import attempts, authorization, release
from payments.services.attempts import ACTOR, CLAIM_SECONDS
from payments.services.modifications import modification_accept, modification_settle
from payments.services.payment_methods import card_for_payment
from payments.services.provider_calls import CallKind, call_provider
from payments.services.provider_events import process_due
from payments.services.refunds import refund_accept, refund_settle
from providers import base, gateway
from providers.accounts import adapter_for

logger = logging.getLogger(__name__)
S = PaymentStatus


def claim_due(*, limit: int = 100, now: dt.datetime | None = None) -> list[str]:
    """Ids of unknown attempts due for a lookup, claimed so that no other worker takes them."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            PaymentAttempt.objects.select_for_update(skip_locked=True)
            .filter(status__in=[AttemptStatus.UNKNOWN, AttemptStatus.PENDING],
                    next_sync_at__lte=now)
            .order_by("next_sync_at")
            .values_list("id", flat=True)[:limit]
        )
        PaymentAttempt.objects.filter(id__in=due).update(
            next_sync_at=now + dt.timedelta(seconds=CLAIM_SECONDS))
    return due


def attempt_sync(attempt_id: str, *, actor: str = ACTOR) -> Payment:
    """Ask the provider what became of one attempt and apply the answer."""
    attempt = PaymentAttempt.objects.select_related(
        "payment", "payment__payment_method", "provider_account").get(pk=attempt_id)
    payment = attempt.payment
    if attempt.status == AttemptStatus.PENDING:
        payment = attempts.abandon(attempt, actor=actor)
        attempt.refresh_from_db()
    if attempt.status != AttemptStatus.UNKNOWN:
        return payment
    card = card_for_payment(payment)
    request = authorization.authorize_request(payment, attempt, card)
    attempt.refresh_from_db(fields=["status", "release_requested_at"])  # as late as we can
    if attempt.status != AttemptStatus.UNKNOWN:
        return Payment.objects.get(pk=attempt.payment_id)
    if attempt.release_requested_at is not None:
        # the provider's answer to the release decides now; never replay the authorization
        # again (a replay processed as new would be a charge the release never saw)
        release.release_send(attempt, request)
        return attempts.reschedule(attempt, reason="awaiting_release")
    answer = call_provider(attempt.provider_account, "lookup", request)
    if answer.kind != CallKind.APPROVED:  # the lookup itself failed: ask again later
        if attempt.sync_count + 1 >= settings.STATUS_SYNC_RELEASE_AFTER_LOOKUPS and \
                gateway.supports(attempt.provider_account, "release"):
            release.release_start(attempt, request, actor=actor)
        return attempts.reschedule(attempt, reason=answer.error.code if answer.error else "")
    if not answer.lookup.found and not _not_found_is_proof(attempt):
        # the provider may not show the charge yet: no conclusion, and no failover
        return attempts.reschedule(attempt, reason=NOT_FOUND_TOO_EARLY)
    return authorization.apply_lookup(attempt, answer.lookup, card=card, actor=actor)


NOT_FOUND_TOO_EARLY = "not_found_within_consistency_window"


def _not_found_is_proof(attempt: PaymentAttempt, *, now: dt.datetime | None = None) -> bool:
    """Does "the provider has no charge for this reference" prove that it never charged? Only
    once the provider's read-after-write window has passed since the attempt was sent."""
    window: float | None = getattr(adapter_for(attempt.provider_account),
                                   "not_found_proof_seconds", None)
    if window is None:  # an adapter that does not say: never proof; an operator decides
        return False
    age = ((now or timezone.now()) - attempt.created_at).total_seconds()
    return age >= window


def sync_due(*, limit: int = 100) -> int:
    """One pass of the periodic job: apply the providers' webhook events, sync every due
    attempt, and resume payments whose authorization loop stopped between two attempts;
    returns how many attempts."""
    try:
        process_due(limit=limit)  # first: a webhook may already have answered a lookup
    except Exception:
        logger.exception("applying provider webhook events failed")
    ids = claim_due(limit=limit)
    for attempt_id in ids:
        try:
            attempt_sync(attempt_id)
        except Exception:  # one bad attempt must not stop the others; it is retried later
            logger.exception("status sync failed for attempt %s", attempt_id)
    for payment_id in claim_stalled(limit=limit):
        try:
            resume(payment_id)
        except Exception:
            logger.exception("resuming payment %s failed", payment_id)
    try:
        sync_modifications(limit=limit)
    except Exception:
        logger.exception("syncing captures, voids and refunds failed")
    return len(ids)


def claim_stalled(*, limit: int = 100, now: dt.datetime | None = None) -> list[str]:
    """Payments left `processing` between two attempts by a process that died: no attempt
    or modification of theirs is in flight, and nothing changed for the grace period."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.STATUS_SYNC_PENDING_GRACE_SECONDS)
    in_flight = [AttemptStatus.PENDING, AttemptStatus.UNKNOWN]
    with transaction.atomic():
        stalled = list(
            Payment.objects.select_for_update(skip_locked=True)
            .filter(status=S.PROCESSING, updated_at__lt=cutoff)
            .exclude(attempts__status__in=in_flight)
            .exclude(modifications__status__in=["pending", "unknown"])
            .values_list("id", flat=True)[:limit])
        Payment.objects.filter(id__in=stalled).update(updated_at=now)  # claimed
    return stalled


def resume(payment_id: str, *, actor: str = ACTOR) -> Payment:
    """Go on with the authorization loop of a stalled payment (next candidate, or fail)."""
    payment = Payment.objects.select_related("payment_method").get(pk=payment_id)
    card = card_for_payment(payment)
    with transaction.atomic():
        sm.record_event(payment, EventType.RESUMED, actor=actor, data={})
    payment, _ = authorization.authorize(payment, card, actor=actor)
    return payment




def payment_sync(payment_id: str, *, actor: str) -> int:
    """Ask the provider now, whatever the schedule says (an operator asks, e.g. after the
    schedule ran out), about everything of one payment whose outcome is open: its unknown
    attempts (and pending ones past STATUS_SYNC_PENDING_GRACE_SECONDS: a younger one may
    still be in its call), its pending or unknown captures and voids, its pending or
    unresolved refunds. The answers are applied as status sync applies them. Returns how
    many were asked."""
    now = timezone.now()
    grace = now - dt.timedelta(seconds=settings.STATUS_SYNC_PENDING_GRACE_SECONDS)
    attempt_ids = list(PaymentAttempt.objects.filter(payment_id=payment_id).filter(
        Q(status=AttemptStatus.UNKNOWN) | Q(status=AttemptStatus.PENDING, created_at__lt=grace)
    ).order_by("created_at").values_list("id", flat=True))
    for attempt_id in attempt_ids:
        attempt_sync(attempt_id, actor=actor)
    rows: list[Modification | Refund] = [
        *Modification.objects.filter(
            payment_id=payment_id,
            status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN])
        .select_related("attempt__provider_account", "payment"),
        *Refund.objects.filter(payment_id=payment_id,
                               status__in=[RefundStatus.PENDING, RefundStatus.UNRESOLVED])
        .select_related("payment")]
    for row in rows:
        _sync_operation(row, now=timezone.now(), actor=actor, give_up=False)
    return len(attempt_ids) + len(rows)


# --- captures, voids and refunds whose outcome the provider has not confirmed ---------------
def sync_modifications(*, limit: int = 100, now: dt.datetime | None = None) -> int:
    """Ask the providers about captures, voids and refunds still pending (accepted, not yet
    confirmed) or unknown (no answer): every adapter can tell (`lookup_modification`,
    through the gateway: limits, breaker, safe retries).

    Each is due at its `next_sync_at`: MODIFICATION_SYNC_AFTER_SECONDS after it was sent, then
    with exponential back-off (at most every STATUS_SYNC_REPEAT_SECONDS); claiming one moves
    its `next_sync_at` on, so a worker that dies mid-pass leaves it due again later. One still
    unsettled STATUS_SYNC_GIVE_UP_SECONDS after it was sent is no longer asked about: the
    payment is flagged for an operator (once per operation). Returns how many were settled."""
    now = now or timezone.now()
    with transaction.atomic():
        mods = list(Modification.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN],
                            next_sync_at__lte=now)
                    .select_related("attempt__provider_account", "payment")
                    .order_by("next_sync_at")[:limit])
        refunds = list(Refund.objects.select_for_update(skip_locked=True, of=("self",))
                       .filter(status__in=[RefundStatus.PENDING, RefundStatus.UNRESOLVED],
                               next_sync_at__lte=now)
                       .select_related("payment").order_by("next_sync_at")[:limit])
        rows: list[Modification | Refund] = [*mods, *refunds]
        for row in rows:
            type(row).objects.filter(pk=row.pk).update(next_sync_at=_next_ask(row, now))
    settled = 0
    for row in rows:
        try:
            settled += _sync_operation(row, now=now)
        except Exception:  # one bad row must not stop the others; it is due again later
            logger.exception("syncing %s failed", row.pk)
    return settled


def _next_ask(row: Modification | Refund, now: dt.datetime) -> dt.datetime:
    """Exponential back-off: asked again after as long as it is old, at least
    MODIFICATION_SYNC_AFTER_SECONDS, at most STATUS_SYNC_REPEAT_SECONDS."""
    age = (now - row.created_at).total_seconds()
    interval = min(max(settings.MODIFICATION_SYNC_AFTER_SECONDS, age),
                   settings.STATUS_SYNC_REPEAT_SECONDS)
    return now + dt.timedelta(seconds=interval)


def _sync_operation(row: Modification | Refund, *, now: dt.datetime, actor: str = ACTOR,
                    give_up: bool = True) -> int:
    """Ask about one capture, void (`row` a Modification) or refund and apply the answer;
    1 if it settled. `give_up`: one past STATUS_SYNC_GIVE_UP_SECONDS is not asked but
    flagged for an operator (False: the operator asks)."""
    kind = "refund" if isinstance(row, Refund) else row.kind
    if isinstance(row, Refund):
        attempt = row.payment.attempts.filter(status=AttemptStatus.CAPTURED).first()
        if attempt is None:  # pragma: no cover - a refund exists only on a captured payment
            return 0
        unknown = row.status == RefundStatus.UNRESOLVED
    else:
        attempt = row.attempt
        unknown = row.status == ModificationStatus.UNKNOWN
    # pending without the provider's id: the process that was sending it died before the
    # provider acknowledged it, which is as unknown as a lost answer
    unknown = unknown or not row.provider_reference
    age = (now - row.created_at).total_seconds()
    if give_up and age >= settings.STATUS_SYNC_GIVE_UP_SECONDS:
        with transaction.atomic():
            sm.flag_for_operator(row.payment_id, EventType.OPERATION_UNSETTLED, actor=ACTOR,
                                 data={"operation": row.id, "kind": kind,
                                       "status": row.status},
                                 once_by=("operation",))
            type(row).objects.filter(pk=row.pk).update(next_sync_at=None)  # no more asking
        return 0
    answer, provider_reference = _ask(attempt, row, kind, unknown=unknown, age=age)
    if answer == ACCEPTED:
        if isinstance(row, Refund):
            refund_accept(refund=row, actor=actor, provider_reference=provider_reference)
        else:
            modification_accept(modification=row, actor=actor,
                                provider_reference=provider_reference)
        return 0
    if answer is None:
        return 0
    succeeded = answer is True
    if isinstance(row, Refund):
        refund_settle(refund=row, succeeded=succeeded, actor=actor,
                      provider_reference=provider_reference,
                      failure_code="" if succeeded else "refund_failed")
    else:
        modification_settle(modification=row, succeeded=succeeded, actor=actor,
                            provider_reference=provider_reference)
    return 1


ACCEPTED = "accepted"  # the provider has the operation and will confirm it later


def _ask(attempt: PaymentAttempt, row: Modification | Refund, kind: str, *, unknown: bool,
         age: float) -> tuple[bool | str | None, str]:
    """(True: done; False: provably not done; ACCEPTED: the provider has it, not final yet;
    None: cannot tell yet), and the provider's id for the operation when it told it."""
    outcome = call_provider(attempt.provider_account, "lookup_modification",
                            base.ModificationRequest(
                                reference=row.id, provider_reference=attempt.provider_reference,
                                amount=row.amount, currency=attempt.payment.currency,
                                operation=kind))
    if isinstance(outcome.error, base.OperationRefused):
        return False, ""  # the provider says it did not happen, and will not
    if outcome.kind != CallKind.APPROVED:  # unreachable, unsure, or our own request refused
        logger.info("could not confirm %s %s yet: %s", kind, row.id,
                    outcome.error.code if outcome.error else "")
        return None, ""
    if outcome.result is None:
        # not listed: a request whose answer was lost never arrived, once the provider's
        # consistency window has passed; one it accepted may still be on its way
        window = adapter_for(attempt.provider_account).not_found_proof_seconds
        return (False if unknown and age >= window else None), ""
    result = outcome.modification
    return (ACCEPTED if result.pending else True), result.provider_reference
