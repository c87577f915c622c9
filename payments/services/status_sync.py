"""Status sync: resolve unknown outcomes by asking the provider, never by charging elsewhere.

An attempt whose outcome is unknown carries `next_sync_at`. A periodic worker claims due
attempts (`claim_due`, SELECT … FOR UPDATE SKIP LOCKED) and calls `attempt_sync` for each,
which asks the provider by our reference (the attempt id) and applies the answer as if the
provider had answered at once:

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
import threading

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from payments import metrics
from payments import state_machine as sm
from payments.models import AttemptStatus, Payment, PaymentAttempt, PaymentStatus
from payments.services import authorization, release
from payments.services.payment_methods import card_for_provider
from payments.services.provider_calls import Outcome, _error_body, call_provider
from providers import base, gateway, outcomes

logger = logging.getLogger(__name__)
S = PaymentStatus
ACTOR = "status_sync"
# A claimed attempt is not handed to another worker for this long (a crashed worker's claim
# expires by itself).
CLAIM_SECONDS = 120

KEPT = (AttemptStatus.AUTHORIZED, AttemptStatus.CAPTURED)
# error_code of an attempt that ended because the provider released (cancelled) whatever it
# held under the attempt's reference
RELEASED = "released"


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
        payment = _abandoned(attempt, actor=actor)
        attempt.refresh_from_db()
    if attempt.status != AttemptStatus.UNKNOWN:
        return payment
    card = card_for_provider(payment.payment_method)
    request = authorization.authorize_request(payment, attempt, card)
    attempt.refresh_from_db(fields=["status", "release_requested_at"])  # as late as we can
    if attempt.status != AttemptStatus.UNKNOWN:
        return Payment.objects.get(pk=attempt.payment_id)
    if attempt.release_requested_at is not None:
        # the provider's answer to the release decides now; never replay the authorization
        # again (a replay processed as new would be a charge the release never saw)
        release.release_send(attempt, request)
        return _reschedule(attempt, reason="awaiting_release")
    answer = call_provider(attempt.provider_account, "lookup", request)
    if answer.kind != "approved":  # the lookup itself failed: ask again later
        if attempt.sync_count + 1 >= settings.STATUS_SYNC_RELEASE_AFTER_LOOKUPS and \
                gateway.supports(attempt.provider_account, "release"):
            release.release_start(attempt, request, actor=actor)
        return _reschedule(attempt, reason=answer.error.code if answer.error else "")
    if not answer.result.found and not _not_found_is_proof(attempt):
        # the provider may not show the charge yet: no conclusion, and no failover
        return _reschedule(attempt, reason=NOT_FOUND_TOO_EARLY)
    return apply_lookup(attempt, answer.result, card=card, actor=actor)


NOT_FOUND_TOO_EARLY = "not_found_within_consistency_window"


def _not_found_is_proof(attempt: PaymentAttempt, *, now: dt.datetime | None = None) -> bool:
    """Does "the provider has no charge for this reference" prove that it never charged? Only
    once the provider's read-after-write window has passed since the attempt was sent."""
    from providers.accounts import adapter_for

    window = getattr(adapter_for(attempt.provider_account), "not_found_proof_seconds", None)
    if window is None:  # an adapter that does not say: never proof; an operator decides
        return False
    age = ((now or timezone.now()) - attempt.created_at).total_seconds()
    return age >= window


def apply_lookup(attempt: PaymentAttempt, found: base.LookupResult, *, card: base.Card,
                 actor: str = ACTOR, error_code: str = "", via_release: bool = False) -> Payment:
    """Apply the provider's answer about an unknown attempt (lookup, webhook or release);
    `error_code` is kept on an attempt that ends without a charge. Once a release was
    requested only its outcome (`via_release`, from `payments.services.release`) decides."""
    charged = found.found and found.status in ("authorized", "captured")
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if attempt.status != AttemptStatus.UNKNOWN:
            return payment  # another worker (or a webhook) got there first
        if attempt.release_requested_at is not None and not via_release:
            return payment  # the release decides (payments.services.release)
        data = {"attempt": attempt.id,
                "lookup": found.status or ("released" if error_code == RELEASED else "not_found")}
        if charged:
            other = payment.attempts.filter(status__in=KEPT).exclude(pk=attempt.pk).first()
            if other is None and payment.status == S.UNRESOLVED:
                # as when the provider answers at once: an automatic-capture payment counts
                # as captured once approved, even while the provider's capture is pending
                # (Checkout.com reports `Authorized` until then)
                return authorization.mark_approved(
                    payment, attempt, found.provider_reference,
                    captured=found.status == "captured" or payment.capture_method == "automatic",
                    actor=actor, data=data)
            # extra charge: reverse it below, outside this transaction. The attempt stays due
            # until it is reversed, so a worker dying in between cannot leave it charged.
            attempt.provider_reference = found.provider_reference
            attempt.next_sync_at = timezone.now() + dt.timedelta(seconds=CLAIM_SECONDS)
            attempt.save()
        else:
            attempt.status = (AttemptStatus.DECLINED if found.status == "declined"
                              else AttemptStatus.FAILED)
            attempt.decline_code = found.decline_code or attempt.decline_code
            attempt.error_code = error_code or attempt.error_code
            attempt.provider_reference = found.provider_reference or attempt.provider_reference
            attempt.next_sync_at = None
            attempt.save()
            if payment.status != S.UNRESOLVED:
                return payment
            outcome = _not_charged_outcome(found, released=error_code == RELEASED)
            if authorization.may_fail_over(payment, outcome):
                sm.transition_payment(payment, S.PROCESSING, event="payment.failover",
                                      actor=actor, data=data)
            else:
                return sm.transition_payment(
                    payment, S.FAILED, event="payment.failed", actor=actor, data=data,
                    updates={"last_error": _error_body(outcome.error)})
    if charged:
        return compensate(attempt, found, actor=actor) or Payment.objects.get(pk=attempt.payment_id)
    payment, outcome = authorization.authorize(payment, card, actor=actor)
    return payment


def _abandoned(attempt: PaymentAttempt, *, actor: str) -> Payment:
    """An attempt still `pending` after the grace period: the process that sent it died
    before recording the answer. The provider may have charged: its outcome is unknown."""
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if locked.status != AttemptStatus.PENDING or payment.status != S.PROCESSING:
            return payment
        now = timezone.now()
        locked.status = AttemptStatus.UNKNOWN
        locked.unknown_since = now
        locked.save()
        return sm.transition_payment(
            payment, S.UNRESOLVED, event="payment.attempt_abandoned", actor=actor,
            data={"attempt": locked.id}, updates={"last_error": authorization.UNKNOWN_ERROR})


def _not_charged_outcome(found: base.LookupResult, *, released: bool = False) -> Outcome:
    if found.status == "declined":
        normalized = outcomes.classify_decline("stripe", found.decline_code) \
            if found.decline_code else outcomes.GENERIC_DECLINE
        return Outcome("declined", error=outcomes.error_for(
            normalized, "The provider declined the card."))
    if released:
        return Outcome("unavailable", error=base.ProviderUnavailable(
            "The provider could not tell what became of the request, so it was asked to "
            "cancel it: it holds no charge for it.", code="provider_not_processed"))
    return Outcome("unavailable", error=base.ProviderUnavailable(
        "The provider never processed the request.", code="provider_not_processed"))


REVERSAL = "-reversal-"


def reversal_reference(attempt_id: str, provider_reference: str) -> str:
    """Our reference (and idempotency key) for the reversal of one extra charge."""
    return f"{attempt_id}{REVERSAL}{provider_reference}"


def reversed_attempt_id(reference: str) -> str | None:
    """The attempt id in a reversal's reference, or None if it is not one (also the older
    form `<attempt>-reversal`, for reversals sent before references named the charge)."""
    if REVERSAL in reference:
        return reference.split(REVERSAL, 1)[0]
    return reference.removesuffix("-reversal") if reference.endswith("-reversal") else None


def is_reversed(payment: Payment, provider_reference: str) -> bool:
    return payment.events.filter(type="payment.duplicate_charge_reversed",
                                 data__provider_reference=provider_reference).exists()


def compensate(attempt: PaymentAttempt, found: base.LookupResult, *,
               actor: str) -> Payment | None:
    """Void (authorized) or refund (captured) a charge the payment must not keep. Keyed by
    the charge, so a retry (or a second worker) reverses it once; a reversal that fails is
    retried by whoever found it and flags the payment for an operator meanwhile. Returns
    None when the provider refused it for good (a 4xx: nothing to retry; the operator
    decides), else the payment."""
    operation = "cancel" if found.status == "authorized" else "refund"
    if gateway.supports(attempt.provider_account, "reverse"):
        operation = "reverse"  # cancel or refund, as applies when the provider gets to it
    payment = attempt.payment
    answer = call_provider(attempt.provider_account, operation, base.ModificationRequest(
        reference=reversal_reference(attempt.id, found.provider_reference),
        provider_reference=found.provider_reference,
        amount=found.amount or payment.amount, currency=payment.currency))
    with transaction.atomic():
        payment = sm.lock_payment(payment.pk)  # the payment first, then the attempt
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        data = {"attempt": attempt.id, "operation": operation, "outcome": answer.kind,
                "provider_reference": found.provider_reference, "amount": found.amount,
                # the provider's id for the reversal, to recognise its later confirmation
                "operation_reference": getattr(answer.result, "provider_reference", "")}
        if answer.kind == "approved":
            if locked.status == AttemptStatus.UNKNOWN or (
                    locked.status == AttemptStatus.FAILED and locked.error_code == RELEASED):
                # the extra charge was this attempt's only one; any other attempt keeps its
                # own final status (the reversed charge is in the event below)
                locked.status = AttemptStatus.REVERSED
            locked.next_sync_at = None
            locked.save()
            if not is_reversed(payment, found.provider_reference):
                sm.record_event(payment, "payment.duplicate_charge_reversed", actor=actor,
                                data=data)
                metrics.duplicate_charges_reversed.labels(
                    provider=attempt.provider_account.provider).inc()
                logger.warning("reversed an extra charge payment=%s attempt=%s provider=%s",
                               payment.id, attempt.id, attempt.provider_account.provider)
        else:  # could not reverse it yet: asked again, and an operator is told meanwhile
            sm.flag_for_operator(payment.pk, "payment.duplicate_charge_reversal_failed",
                                 actor=actor, data=data, once_by=("provider_reference",))
            if isinstance(answer.error, base.ProviderBadRequest):  # refused for good
                if locked.status == AttemptStatus.UNKNOWN:
                    locked.next_sync_at = None
                    locked.save()
                return None
            if locked.status == AttemptStatus.UNKNOWN:  # status sync asks again
                locked.next_sync_at = timezone.now() + dt.timedelta(minutes=5)
                locked.save()
    return Payment.objects.get(pk=payment.pk)


def _reschedule(attempt: PaymentAttempt, *, reason: str) -> Payment:
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if locked.status != AttemptStatus.UNKNOWN:
            return payment
        now = timezone.now()
        locked.sync_count += 1
        locked.next_sync_at = authorization.next_sync_time(
            locked.unknown_since or now, sync_count=locked.sync_count, now=now)
        locked.save()
        if locked.next_sync_at is None and not payment.events.filter(
                type="payment.flagged_for_operator", data__attempt=locked.id).exists():
            # (recorded even if the payment is flagged already for another reason)
            sm.record_event(payment, "payment.flagged_for_operator", actor=ACTOR,
                            data={"attempt": locked.id, "lookups": locked.sync_count,
                                  "reason": reason})
            Payment.objects.filter(pk=payment.pk).update(needs_operator=True)
        elif locked.next_sync_at is not None and settings.CELERY_TASK_ALWAYS_EAGER:
            # the embedded default has no beat: the next lookup is a timer in this process
            delay = (locked.next_sync_at - now).total_seconds()
            transaction.on_commit(lambda: nudge(delay))
    return Payment.objects.get(pk=attempt.payment_id)


def sync_due(*, limit: int = 100) -> int:
    """One pass of the periodic job: apply the providers' webhook events, sync every due
    attempt, and resume payments whose authorization loop stopped between two attempts;
    returns how many attempts."""
    from payments.services.provider_events import process_due

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
    card = card_for_provider(payment.payment_method)
    with transaction.atomic():
        sm.record_event(payment, "payment.resumed", actor=actor, data={})
    payment, _ = authorization.authorize(payment, card, actor=actor)
    return payment




def nudge(delay_seconds: float) -> None:
    """Ask for a sync pass soon, by task name (payments never imports workers). Nothing
    depends on it: the periodic job finds due attempts anyway, so a nudge that cannot be
    enqueued (broker down) is logged and dropped, never raised into the request that made it.
    In the embedded default (Celery eager, no worker) a timer thread runs the pass in this
    process instead."""
    if not settings.STATUS_SYNC_NUDGE:
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        timer = threading.Timer(delay_seconds + 0.5, _sync_in_thread)
        timer.daemon = True
        timer.start()
        return
    from celery import current_app

    app = current_app._get_current_object()
    if app.main != settings.TASK_APP_NAME:
        # the project's app is loaded by the workers app's ready(); Celery's unconfigured
        # default app would publish to amqp://localhost, where no worker of ours listens
        logger.error("status sync nudge skipped: the current Celery app is %r, not ours",
                     app.main)
        return
    try:
        app.send_task(SYNC_TASK, countdown=delay_seconds, retry=False)
    except Exception:  # noqa: BLE001 - an optimisation only: the periodic pass is the guarantee
        logger.warning("status sync nudge not enqueued (the periodic pass will run it)",
                       exc_info=True)


def _sync_in_thread() -> None:
    from django.db import connection

    try:
        sync_due()
    finally:
        connection.close()


SYNC_TASK = "switchyard.payments.sync_unknown_outcomes"


# --- captures, voids and refunds whose outcome the provider has not confirmed ---------------
def sync_modifications(*, limit: int = 100, now: dt.datetime | None = None) -> int:
    """Ask the providers about captures, voids and refunds still pending (accepted, not yet
    confirmed) or unknown (no answer): every adapter can tell (`lookup_modification`).

    They are asked once MODIFICATION_SYNC_AFTER_SECONDS old, then with exponential back-off
    (at most every STATUS_SYNC_REPEAT_SECONDS). One still unsettled
    STATUS_SYNC_GIVE_UP_SECONDS after it was sent is no longer asked about: the payment is
    flagged for an operator (once per operation). Returns how many were settled."""
    from payments.models import Modification, ModificationStatus, Refund, RefundStatus

    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.MODIFICATION_SYNC_AFTER_SECONDS)
    with transaction.atomic():
        mods = [m for m in Modification.objects.select_for_update(skip_locked=True).filter(
            status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN],
            updated_at__lt=cutoff).select_related("attempt__provider_account", "payment")
            [:limit] if _due(m, now)]
        refunds = [r for r in Refund.objects.select_for_update(skip_locked=True).filter(
            status__in=[RefundStatus.PENDING, RefundStatus.UNRESOLVED],
            updated_at__lt=cutoff).select_related("payment")[:limit] if _due(r, now)]
        Modification.objects.filter(pk__in=[m.pk for m in mods]).update(updated_at=now)
        Refund.objects.filter(pk__in=[r.pk for r in refunds]).update(updated_at=now)
    settled = 0
    for mod in mods:
        # pending without the provider's id: the process that was sending it died before
        # the provider acknowledged it, which is as unknown as a lost answer
        settled += _sync_operation(mod, mod.attempt, mod.kind, now=now, unknown=(
            mod.status == ModificationStatus.UNKNOWN or not mod.provider_reference))
    for refund in refunds:
        attempt = refund.payment.attempts.filter(status=AttemptStatus.CAPTURED).first()
        if attempt is None:  # pragma: no cover - a refund exists only on a captured payment
            continue
        settled += _sync_operation(refund, attempt, "refund", now=now, unknown=(
            refund.status == RefundStatus.UNRESOLVED or not refund.provider_reference))
    return settled


def _due(row, now: dt.datetime) -> bool:
    """Exponential back-off: asked again after as long as it was old when last asked (its
    last change), at least MODIFICATION_SYNC_AFTER_SECONDS, at most
    STATUS_SYNC_REPEAT_SECONDS."""
    age_then = (row.updated_at - row.created_at).total_seconds()
    interval = min(max(settings.MODIFICATION_SYNC_AFTER_SECONDS, age_then),
                   settings.STATUS_SYNC_REPEAT_SECONDS)
    return (now - row.updated_at).total_seconds() >= interval


def _sync_operation(row, attempt: PaymentAttempt, kind: str, *, unknown: bool,
                    now: dt.datetime) -> int:
    """Ask about one capture, void (`row` a Modification) or refund and apply the answer;
    1 if it settled."""
    from payments.services.modifications import modification_accept, modification_settle
    from payments.services.refunds import refund_accept, refund_settle

    is_refund = kind == "refund"
    age = (now - row.created_at).total_seconds()
    if age >= settings.STATUS_SYNC_GIVE_UP_SECONDS:
        with transaction.atomic():
            sm.flag_for_operator(row.payment_id, "payment.operation_unsettled", actor=ACTOR,
                                 data={"operation": row.id, "kind": kind,
                                       "status": row.status},
                                 once_by=("operation",))
        return 0
    answer = _ask(attempt, row, kind, unknown=unknown, age=age)
    if answer == ACCEPTED:
        if unknown:
            (refund_accept(refund=row, actor=ACTOR) if is_refund
             else modification_accept(modification=row, actor=ACTOR))
        return 0
    if answer is None:
        return 0
    if is_refund:
        refund_settle(refund=row, succeeded=answer, actor=ACTOR,
                      failure_code="" if answer else "refund_failed")
    else:
        modification_settle(modification=row, succeeded=answer, actor=ACTOR)
    return 1


ACCEPTED = "accepted"  # the provider has the operation and will confirm it later


def _ask(attempt: PaymentAttempt, row, kind: str, *, unknown: bool,
         age: float) -> bool | str | None:
    """True: done; False: provably not done; ACCEPTED: the provider has it, not final yet;
    None: cannot tell yet."""
    from providers.accounts import adapter_for

    try:
        adapter = adapter_for(attempt.provider_account)
        result = adapter.lookup_modification(base.ModificationRequest(
            reference=row.id, provider_reference=attempt.provider_reference,
            amount=row.amount, currency=attempt.payment.currency, operation=kind))
    except base.ProviderBadRequest:
        return False  # the provider refused the capture, void or refund
    except Exception:  # noqa: BLE001 - unreachable or unsure: ask again later
        logger.info("could not confirm %s %s yet", kind, row.id)
        return None
    if result is None:
        # not listed: a request whose answer was lost never arrived, once the provider's
        # consistency window has passed; one it accepted may still be on its way
        if unknown and age >= adapter.not_found_proof_seconds:
            return False
        return None
    return ACCEPTED if result.pending else True
