"""Release: proving "no charge" at a provider that cannot be asked.

Adyen has no endpoint to read a payment, and replaying the request under its idempotency key
cannot tell a request that never arrived (the replay would even be processed as new). What
Adyen offers instead is to cancel whatever it holds under our reference (a "technical
cancel"), confirmed by its TECHNICAL_CANCEL webhook. So, after `STATUS_SYNC_RELEASE_AFTER_LOOKUPS`
replays that could not tell, status sync calls `release_start`:

1. `release_requested_at` is set on the attempt (under its lock, while it is still unknown),
   and from then on nothing replays the authorization again: a replay processed as new after
   the cancel would be a charge the cancel never saw.
2. The provider is asked to release (`release` adapter operation, idempotent, resent at every
   sync until the webhook comes).
3. `release_settle` decides the attempt from the provider's stored webhook events — the
   release's answer and, when it names a payment (`provider_reference`), that payment's
   AUTHORISATION — whichever arrives last completing the decision:
   - release succeeded, nothing was held: not charged; failover goes on within the budget;
   - release succeeded and cancelled payment X: X's AUTHORISATION says whether it had been
     authorised (now cancelled: not charged, failover goes on) or refused (a decline,
     classified as if the provider had answered at once: a hard decline ends the payment);
   - release failed and names payment X (e.g. captured already): X's AUTHORISATION decides,
     as a lookup would;
   - release failed naming nothing: the attempt stays unknown (`payment.release_failed`);
     status sync's schedule runs out and flags it for an operator.
   Once the attempt is settled, a later successful AUTHORISATION for a payment the release did
   not cancel is an extra charge: it is reversed (`attempts.compensate`), never kept.

Every decision re-checks the attempt under the payment's and the attempt's row locks (in
`attempts.settle`), so a webhook and a status sync racing settle it once.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from payments import state_machine as sm
from payments.events import EventType
from payments.models import AttemptStatus, Payment, PaymentAttempt, ProviderWebhookEvent
from payments.services import attempts, authorization
from payments.services.payment_methods import card_for_payment
from payments.services.provider_calls import call_provider
from providers import base

logger = logging.getLogger(__name__)
CHARGED = (AttemptStatus.AUTHORIZED, AttemptStatus.CAPTURED, AttemptStatus.VOIDED)


def release_start(attempt: PaymentAttempt, request: base.AuthorizeRequest, *,
                  actor: str) -> bool:
    """Mark the attempt as released-by-reference and ask the provider; False if the attempt
    was settled meanwhile (nothing is sent then)."""
    with transaction.atomic():
        payment = sm.lock_payment(attempt.payment_id)
        locked = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if locked.status != AttemptStatus.UNKNOWN:
            return False
        if locked.release_requested_at is None:
            locked.release_requested_at = timezone.now()
            locked.save(update_fields=["release_requested_at", "updated_at"])
            sm.record_event(payment, EventType.RELEASE_REQUESTED, actor=actor,
                            data={"attempt": locked.id})
    release_send(locked, request)
    return True


def release_send(attempt: PaymentAttempt, request: base.AuthorizeRequest) -> None:
    """(Re)send the release; idempotent at the provider. A failure is only logged: the next
    sync sends it again, and nothing is decided until the provider's webhook."""
    answer = call_provider(attempt.provider_account, "release", request)
    if answer.kind != "approved":
        logger.info("release of attempt %s not accepted yet: %s", attempt.id,
                    answer.error.code if answer.error else answer.kind)


def _events(attempt: PaymentAttempt, kind: str,
            references: list[str]) -> QuerySet[ProviderWebhookEvent]:
    return ProviderWebhookEvent.objects.filter(
        account_id=attempt.provider_account_id, kind=kind,
        reference__in=references).order_by("id")


class NotYet(Exception):
    """A provider event cannot be applied (completely) yet: it is tried again later."""


def release_settle(attempt_id: str, *, actor: str) -> str:
    """Decide (or check) an attempt from its stored release and authorization events;
    returns what it did, raises NotYet when it must be looked at again later. Safe to call
    any number of times, from any event of the attempt."""
    applied = False
    for _ in range(3):  # re-read when a racing worker settled the attempt meanwhile
        attempt = PaymentAttempt.objects.select_related(
            "payment", "payment__payment_method", "provider_account").get(pk=attempt_id)
        releases = list(_events(attempt, "release",
                                [attempt.id, base.release_reference(attempt.id)]))
        auths = list(_events(attempt, "authorization", [attempt.id]))
        if attempt.status != AttemptStatus.UNKNOWN:
            # settled (by us just now, or before): do the other events agree?
            outcome = _check_settled(attempt, releases, auths, actor=actor)
            return "applied" if applied and outcome == "already_known" else outcome
        if attempt.release_requested_at is None and not releases:
            raise NotYet  # unknown, no release: a lookup or its AUTHORISATION decides
        outcome = _decide(attempt, releases, auths, actor=actor)
        if outcome != "applied":
            return outcome
        applied = True
    raise NotYet


def _decide(attempt: PaymentAttempt, releases: list[ProviderWebhookEvent],
            auths: list[ProviderWebhookEvent], *, actor: str) -> str:
    if not releases:
        return "awaiting_release"
    cancelled = {e.provider_reference for e in releases if e.success and e.provider_reference}
    card = card_for_payment(attempt.payment)

    def apply(found: base.LookupResult, *, released: bool = False) -> str:
        authorization.apply_lookup(attempt, found, card=card, actor=actor, via_release=True,
                                 error_code=attempts.RELEASED if released else "")
        return "applied"

    # A charge the release did not cancel (whatever the order Adyen processed them in): the
    # attempt holds it. Never fail over then.
    held = next((a for a in auths if a.success and a.provider_reference not in cancelled),
                None)
    if held is not None:
        return apply(authorization_result(attempt, held))
    if any(e.success for e in releases):
        if not cancelled:  # nothing was held when it ran, nor reported since
            return apply(base.LookupResult(found=False), released=True)
        named = sorted(cancelled)[0]
        auth = next((a for a in auths if a.provider_reference == named), None)
        if auth is None:
            return "awaiting_authorization"  # its AUTHORISATION completes the decision
        if auth.success:  # authorised, then cancelled by the release: nothing charged
            return apply(base.LookupResult(found=False, provider_reference=named),
                         released=True)
        return apply(authorization_result(attempt, auth))  # it was refused: that decline
    # The release failed, so it cancelled nothing: an AUTHORISATION decides, as a lookup
    # would; that of the payment it names, when it names one (another psp's refusal, e.g. of
    # a replay processed as new, says nothing about it).
    named_psps = {e.provider_reference for e in releases if e.provider_reference}
    if named_psps:
        auth = next((a for a in auths if a.provider_reference in named_psps), None)
        if auth is None:
            return "awaiting_authorization"  # its AUTHORISATION will come
        return apply(authorization_result(attempt, auth))  # (a refusal: see `held`)
    if auths:
        return apply(authorization_result(attempt, auths[0]))  # (a refusal: see `held`)
    with transaction.atomic():  # nothing to go on: a person must find out
        sm.flag_for_operator(attempt.payment_id, EventType.RELEASE_FAILED, actor=actor,
                             data={"attempt": attempt.id, "reason": releases[0].reason})
    return "release_failed"


def authorization_result(attempt: PaymentAttempt,
                         auth: ProviderWebhookEvent) -> base.LookupResult:
    """An AUTHORISATION event as the answer of a lookup."""
    if not auth.success:
        return base.LookupResult(found=True, provider_reference=auth.provider_reference,
                                 status="declined", decline_code=auth.decline_code,
                                 amount=auth.amount)
    captured = attempt.payment.capture_method == "automatic"
    return base.LookupResult(found=True, provider_reference=auth.provider_reference,
                             status="captured" if captured else "authorized",
                             amount=auth.amount)


def _check_settled(attempt: PaymentAttempt, releases: list[ProviderWebhookEvent],
                   auths: list[ProviderWebhookEvent], *,
                   actor: str) -> str:
    """The attempt is settled: do the provider's events agree? A successful authorization
    the release did not cancel, other than the attempt's own charge, is an extra charge:
    reverse it (NotYet until the reversal is accepted). A release that cancelled the charge
    we keep goes to an operator."""
    cancelled = {e.provider_reference for e in releases if e.success and e.provider_reference}
    holds_own = attempt.status in CHARGED
    outcome = "already_known"
    for auth in auths:
        psp = auth.provider_reference
        if not auth.success or psp in cancelled or attempts.is_reversed(attempt.payment, psp):
            continue
        if holds_own and psp == attempt.provider_reference:
            continue  # the charge we keep (or voided)
        refused = attempts.compensate(attempt, authorization_result(attempt, auth),
                                         actor=actor) is None
        if refused:  # for good (e.g. voided by hand meanwhile): the flagged operator decides
            outcome = "reversal_refused"
        elif not attempts.is_reversed(attempt.payment, psp):
            raise NotYet  # the reversal failed for now (the payment is flagged): try again
        else:
            outcome = "reversed"
    for release in releases:
        if release.success and release.provider_reference and holds_own and \
                release.provider_reference == attempt.provider_reference:
            outcome = flag_mismatch(  # the charge we keep was cancelled
                attempt.payment, event=release, actor=actor, recorded=attempt.status)
    return outcome


def flag_mismatch(payment: Payment, *, event: ProviderWebhookEvent, actor: str,
                  recorded: str) -> str:
    """A provider event contradicts what we recorded: never applied blindly. The payment is
    flagged for an operator, with one `payment.provider_event_mismatch` event per provider
    event however often it is looked at."""
    with transaction.atomic():
        if sm.flag_for_operator(payment.pk, EventType.PROVIDER_EVENT_MISMATCH, actor=actor, data={
                "event": event.raw_type or event.kind, "event_id": event.event_id,
                "success": event.success, "reference": event.reference,
                "recorded": recorded, "reason": event.reason}, once_by=("event_id",)):
            logger.warning("provider event %s contradicts payment %s (recorded %s)",
                           event.raw_type, payment.pk, recorded)
    return "flagged_for_operator"
