"""Reconciliation: each provider account's settlement report of a day, against our records.

`reconciliation_run(account=, day=)` reconciles one account and one UTC day; `reconcile_due()`
(the periodic job) runs every day that is due and not reconciled yet. One run:

1. **Claim** the run row (one per account and day: `ReconciliationRun`) with
   `SELECT … FOR UPDATE SKIP LOCKED` and a lease (`RECONCILIATION_LEASE_SECONDS`) under a
   token of our own, then commit: no lock is held while the provider is asked. A second
   worker on the same day skips it while the lease runs; a worker killed mid-run frees it
   when the lease runs out.
2. **Fetch** the report (`fetch_settlement(day)` of the account's adapter, directly: a report
   that cannot be read must not count against the breaker that guards payments).
3. **Match** every capture and refund line to our records by reference: our id where the
   report carries it, else the provider's id of the operation, else the payment (attempt)
   and what it holds (docs/operations/reconciliation.md, "Matching").
4. **Settle** what the report proves (a capture or refund in the provider's books) and we
   still hold as unknown or pending — an attempt of unknown outcome, a pending or unknown
   capture, a pending or unresolved refund — through the functions that apply any other
   provider answer (`attempts.settle`, `modification_settle`, `refund_settle`), each in its
   own transaction, as actor `reconciliation`. The line records what it settled.
5. **Record**, in one transaction and only while our claim holds: the report's lines and what
   each matched, and the discrepancies, one per run and kind and object (running the day
   again updates them, never duplicates them; one no longer found is resolved by the run).

Discrepancy kinds (`DiscrepancyKind`): only ours (we hold a capture or refund as succeeded,
created that day, and no report of the account has it), only theirs (a capture or refund
line that matches nothing of ours), amount, currency, status (the provider settled it; our
books do not say done), fee (the provider's fee differs from the account's fee schedule;
captures only, and only where the account has a schedule for the currency — fees are
recorded per run in every case).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from payments.events import EventType
from payments.models import (
    AttemptStatus,
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    ReconciliationLine,
    ReconciliationRun,
    ReconciliationRunStatus,
    Refund,
    RefundStatus,
)
from payments.services import attempts
from payments.services.modifications import modification_settle
from payments.services.refunds import refund_settle
from providers import base, settlement
from providers.accounts import adapter_for
from providers.models import ProviderAccount
from providers.routing.engine import expected_fee

logger = logging.getLogger(__name__)
ACTOR = "reconciliation"
K = DiscrepancyKind
RUN = ReconciliationRunStatus

# what our record must say for a settled line to agree with it
_DONE_ATTEMPT = (AttemptStatus.CAPTURED, AttemptStatus.REVERSED)
_SETTLED_LINE = (settlement.SETTLED, settlement.PENDING)  # the money moved (pending: not
# yet available in the provider's balance, still booked)


class ReconciliationFailed(Exception):
    """The run could not read the provider's report; it is recorded as failed and run again
    by a later pass."""


@dataclass(frozen=True)
class RunResult:
    account_id: str
    day: dt.date
    status: str  # completed | failed | skipped (another worker holds the run)
    lines: int = 0
    matched: int = 0
    settled: int = 0
    open_discrepancies: int = 0


# --- the periodic job --------------------------------------------------------------------
def due_days(account: ProviderAccount, *, now: dt.datetime | None = None) -> list[dt.date]:
    """The days of `account` to reconcile now, oldest first: over for
    RECONCILIATION_DELAY_HOURS, at most RECONCILIATION_CATCH_UP_DAYS back, not before the
    account existed, and not completed yet."""
    now = now or timezone.now()
    latest = (now - dt.timedelta(hours=settings.RECONCILIATION_DELAY_HOURS)).astimezone(
        dt.UTC).date() - dt.timedelta(days=1)
    earliest = max(latest - dt.timedelta(days=settings.RECONCILIATION_CATCH_UP_DAYS - 1),
                   account.created_at.astimezone(dt.UTC).date())
    done = set(ReconciliationRun.objects.filter(
        account=account, status=RUN.COMPLETED, day__gte=earliest, day__lte=latest)
        .values_list("day", flat=True))
    days = []
    day = earliest
    while day <= latest:
        if day not in done:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def supports_settlement(account: ProviderAccount) -> bool:
    try:
        return callable(getattr(adapter_for(account), "fetch_settlement", None))
    except Exception:  # a misconfigured account: its runs would fail; the probe says why
        return False


def due_runs(*, now: dt.datetime | None = None) -> list[tuple[str, dt.date]]:
    """(account id, day) of every due day of every enabled account whose provider has a
    settlement report, oldest day first per account."""
    return [(account.id, day)
            for account in ProviderAccount.objects.filter(enabled=True).order_by("id")
            if supports_settlement(account) for day in due_days(account, now=now)]


def reconcile_due(*, now: dt.datetime | None = None) -> list[RunResult]:
    """Reconcile every due day of every enabled account whose provider has a settlement
    report. A run that fails is recorded and logged; the others go on."""
    results = []
    for account in ProviderAccount.objects.filter(enabled=True).order_by("id"):
        if not supports_settlement(account):
            continue
        for day in due_days(account, now=now):
            try:
                results.append(reconciliation_run(account=account, day=day))
            except ReconciliationFailed:
                results.append(RunResult(account_id=account.id, day=day, status=RUN.FAILED))
    return results


# --- one run -------------------------------------------------------------------------------
def reconciliation_run(*, account: ProviderAccount, day: dt.date) -> RunResult:
    """Reconcile `account`'s settlement report of `day` (UTC). Skipped (status "skipped")
    while another worker holds the run; ReconciliationFailed when the report cannot be read
    (the run is recorded as failed with the reason)."""
    claim = _claim(account, day)
    if claim is None:
        logger.info("reconciliation of %s %s skipped: another worker holds it", account.id, day)
        return RunResult(account_id=account.id, day=day, status="skipped")
    run, token = claim
    try:
        fetch = getattr(adapter_for(account), "fetch_settlement", None)
        if fetch is None:
            raise TypeError(f"{account.provider} accounts have no settlement report")
        report = fetch(day)
        if not isinstance(report, settlement.SettlementReport):
            raise TypeError(f"fetch_settlement returned {type(report).__name__}")
    except Exception as exc:
        message = exc.message if isinstance(exc, base.ProviderError) else \
            f"{type(exc).__name__}: {exc}"
        _fail(run, token, message[:500])
        logger.warning("reconciliation of %s %s failed: %s", account.id, day, message)
        raise ReconciliationFailed(message) from exc
    matches = [_match(account, line) for line in report.lines]
    settled = 0
    for match in matches:
        settled += _settle(match)
    found = _discrepancies(account, day, matches)
    result = _record(run, token, report, matches, found)
    logger.info("reconciled %s %s: %d lines, %d matched, %d settled, %d open discrepancies",
                account.id, day, result.lines, result.matched, settled,
                result.open_discrepancies)
    return result


def _claim(account: ProviderAccount, day: dt.date) -> tuple[ReconciliationRun, str] | None:
    ReconciliationRun.objects.get_or_create(account=account, day=day)
    now = timezone.now()
    with transaction.atomic():
        run = (ReconciliationRun.objects.select_for_update(skip_locked=True)
               .filter(account=account, day=day).first())
        if run is None:  # another worker is claiming it right now
            return None
        if run.status == RUN.RUNNING and run.claimed_until and run.claimed_until > now:
            return None  # another worker's lease runs
        token = uuid.uuid4().hex
        run.status, run.claim_token, run.started_at = RUN.RUNNING, token, now
        run.claimed_until = now + dt.timedelta(seconds=settings.RECONCILIATION_LEASE_SECONDS)
        run.runs += 1
        run.save(update_fields=["status", "claim_token", "claimed_until", "started_at",
                                "runs", "updated_at"])
    return run, token


def _locked_if_ours(run: ReconciliationRun, token: str) -> ReconciliationRun | None:
    """The run, locked, if our claim still holds (inside a transaction)."""
    locked = ReconciliationRun.objects.select_for_update().get(pk=run.pk)
    return locked if locked.claim_token == token and locked.status == RUN.RUNNING else None


def _fail(run: ReconciliationRun, token: str, message: str) -> None:
    with transaction.atomic():
        locked = _locked_if_ours(run, token)
        if locked is None:
            return
        locked.status, locked.error, locked.finished_at = RUN.FAILED, message, timezone.now()
        locked.claim_token, locked.claimed_until = "", None
        locked.save(update_fields=["status", "error", "finished_at", "claim_token",
                                   "claimed_until", "updated_at"])


# --- matching ------------------------------------------------------------------------------
@dataclass
class Match:
    """A report line and what of ours it is about."""

    line: settlement.SettlementLine
    target: str = ""  # attempt | modification | refund | reversal | "" (nothing of ours)
    attempt: PaymentAttempt | None = None
    modification: Modification | None = None
    refund: Refund | None = None
    payment: Payment | None = None
    reversal: dict[str, Any] = field(default_factory=dict)  # the reversal event's data
    settled: str = ""

    @property
    def object_id(self) -> str:
        row = self.modification or self.refund or self.attempt
        return row.pk if row is not None else ""


def _attempts(account: ProviderAccount) -> QuerySet[PaymentAttempt]:
    return PaymentAttempt.objects.select_related("payment").filter(provider_account=account)


def _attempt_of(account: ProviderAccount,
                line: settlement.SettlementLine) -> PaymentAttempt | None:
    """The attempt a line's payment is: by our reference (the merchant reference), else by
    the provider's id of the payment."""
    if line.payment_reference:
        found = _attempts(account).filter(pk=line.payment_reference).first()
        if found is not None:
            return found
    if line.provider_reference:
        return _attempts(account).filter(provider_reference=line.provider_reference).first()
    return None


def _match(account: ProviderAccount, line: settlement.SettlementLine) -> Match:
    match = Match(line=line)
    if line.kind == settlement.CAPTURE:
        _match_capture(account, match)
    elif line.kind == settlement.REFUND:
        _match_refund(account, match)
    if match.payment is None:
        match.payment = (match.attempt.payment if match.attempt is not None else
                         match.modification.payment if match.modification is not None else
                         match.refund.payment if match.refund is not None else None)
    return match


def _match_capture(account: ProviderAccount, match: Match) -> None:
    line = match.line
    captures = Modification.objects.select_related("payment", "attempt").filter(
        attempt__provider_account=account, kind="capture")
    found = captures.filter(pk=line.our_reference).first() if line.our_reference else None
    if found is None and line.operation_reference:
        found = captures.filter(provider_reference=line.operation_reference).exclude(
            provider_reference=line.provider_reference).first()
    attempt = found.attempt if found is not None else _attempt_of(account, line)
    if found is None and attempt is not None and \
            attempt.payment.capture_method != "automatic":
        # a payment captured after its authorization: its capture (the latest, if several)
        found = captures.filter(attempt=attempt).order_by("-created_at", "-id").first()
    if found is not None:
        match.target, match.modification, match.attempt = "modification", found, found.attempt
    elif attempt is not None:
        match.target, match.attempt = "attempt", attempt


def _match_refund(account: ProviderAccount, match: Match) -> None:
    line = match.line
    refunds = Refund.objects.select_related("payment").filter(
        payment__attempts__provider_account=account).distinct()
    found = refunds.filter(pk=line.our_reference).first() if line.our_reference else None
    if found is None and line.operation_reference:
        found = refunds.filter(provider_reference=line.operation_reference).first()
    if found is not None:
        match.target, match.refund = "refund", found
        return
    # the reversal of an extra charge (double-charge compensation): named by our reference
    # (`attempts.reversal_reference`), or recognised by the provider's id of the refund
    attempt: PaymentAttempt | None = None
    reversed_id = attempts.reversed_attempt_id(line.our_reference) if line.our_reference \
        else None
    if reversed_id is not None:
        attempt = _attempts(account).filter(pk=reversed_id).first()
    attempt = attempt or _attempt_of(account, line)
    if attempt is None:
        return
    match.attempt, match.payment = attempt, attempt.payment
    events = PaymentEvent.objects.filter(payment_id=attempt.payment_id,
                                         type=EventType.DUPLICATE_CHARGE_REVERSED)
    for event in events:
        data = event.data or {}
        if (line.operation_reference and data.get("operation_reference") ==
                line.operation_reference) or (
                reversed_id is not None and data.get("provider_reference") ==
                line.provider_reference):
            match.target, match.reversal = "reversal", data
            return
    match.attempt = None  # about this payment, but no refund of ours: only theirs


# --- settling what the report proves --------------------------------------------------------
def _settle(match: Match) -> int:
    """Apply what a settled line proves to what we hold as unknown or pending; 1 if it did."""
    line = match.line
    if line.status not in _SETTLED_LINE:
        return 0
    if match.target == "attempt" and match.attempt is not None:
        attempt = match.attempt
        if PaymentAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.UNKNOWN).exists():
            attempts.settle(attempt, base.LookupResult(
                found=True, provider_reference=line.provider_reference or
                attempt.provider_reference, status="captured", amount=line.amount_minor),
                actor=ACTOR)
            if not PaymentAttempt.objects.filter(pk=attempt.pk,
                                                 status=AttemptStatus.UNKNOWN).exists():
                match.settled = "attempt_captured"
    elif match.target == "modification" and match.modification is not None:
        mod = match.modification
        if Modification.objects.filter(pk=mod.pk, status__in=[
                ModificationStatus.PENDING, ModificationStatus.UNKNOWN]).exists():
            modification_settle(modification=mod, succeeded=True, actor=ACTOR,
                                provider_reference="" if mod.provider_reference
                                else line.operation_reference)
            match.settled = "capture_succeeded"
    elif match.target == "refund" and match.refund is not None:
        refund = match.refund
        if Refund.objects.filter(pk=refund.pk, status__in=[
                RefundStatus.PENDING, RefundStatus.UNRESOLVED]).exists():
            refund_settle(refund=refund, succeeded=True, actor=ACTOR,
                          provider_reference="" if refund.provider_reference
                          else line.operation_reference)
            match.settled = "refund_succeeded"
    if match.settled:
        logger.info("reconciliation settled %s %s from %s", match.target, match.object_id,
                    line.line_id)
    return 1 if match.settled else 0


# --- discrepancies ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    kind: str
    key: str
    message: str
    payment_id: str | None = None
    object_type: str = ""
    object_id: str = ""
    line_id: str = ""
    ours: dict[str, Any] = field(default_factory=dict)
    theirs: dict[str, Any] = field(default_factory=dict)


def _theirs(line: settlement.SettlementLine) -> dict[str, Any]:
    return {"line": line.line_id, "type": line.raw_type or line.kind, "status": line.status,
            "amount": line.amount_minor, "currency": line.currency, "fee": line.fee_minor,
            "provider_reference": line.provider_reference,
            "operation_reference": line.operation_reference}


def _ours(match: Match) -> tuple[str, int, str, str]:
    """(what of ours, its amount, currency, status) as it stands now (after settling)."""
    if match.target == "modification" and match.modification is not None:
        mod = Modification.objects.select_related("payment").get(pk=match.modification.pk)
        return "modification", mod.amount, mod.payment.currency, mod.status
    if match.target == "refund" and match.refund is not None:
        refund = Refund.objects.get(pk=match.refund.pk)
        return "refund", refund.amount, refund.currency, refund.status
    assert match.attempt is not None
    attempt = PaymentAttempt.objects.select_related("payment").get(pk=match.attempt.pk)
    if match.target == "reversal":
        amount = match.reversal.get("amount") or attempt.payment.amount
        return "attempt", int(amount), attempt.payment.currency, "reversed"
    return "attempt", attempt.payment.amount, attempt.payment.currency, attempt.status


def _line_findings(account: ProviderAccount, match: Match) -> list[Found]:
    line = match.line
    if line.kind not in settlement.PAYMENT_KINDS:
        return []
    theirs = _theirs(line)
    payment_id = match.payment.pk if match.payment is not None else None
    if not match.target:
        return [Found(K.ONLY_THEIRS, f"only_theirs:{line.line_id}",
                      f"The provider settled a {line.kind} of {line.amount_minor} "
                      f"{line.currency} ({line.provider_reference or line.line_id}) that "
                      f"matches nothing of ours.", payment_id=payment_id, line_id=line.line_id,
                      theirs=theirs)]
    object_type, amount, currency, status = _ours(match)
    object_id = match.object_id
    ours: dict[str, Any] = {"object": object_id, "amount": amount, "currency": currency,
                            "status": status}

    def finding(kind: str, message: str, **more_ours: Any) -> Found:
        return Found(kind, f"{kind}:{object_id}", message, payment_id=payment_id,
                     object_type=object_type, object_id=object_id, line_id=line.line_id,
                     ours={**ours, **more_ours}, theirs=theirs)

    found = []
    done = (status == "reversed" or status in _DONE_ATTEMPT or
            status == ModificationStatus.SUCCEEDED)  # (RefundStatus.SUCCEEDED is the same)
    if line.status not in _SETTLED_LINE:
        if done:
            found.append(finding(K.STATUS_MISMATCH,
                                 f"The provider lists the {line.kind} as {line.status}; we "
                                 f"hold {object_type} {object_id} as {status}."))
    elif not done:
        what = f"{object_type} {object_id} is {status}"
        if match.target == "attempt" and line.kind == settlement.CAPTURE and \
                status == AttemptStatus.AUTHORIZED:
            what += " with no capture of ours"
        found.append(finding(K.STATUS_MISMATCH,
                             f"The provider settled a {line.kind} of {line.amount_minor} "
                             f"{line.currency}; in our books {what}."))
    if currency.upper() != line.currency.upper():
        found.append(finding(K.CURRENCY_MISMATCH,
                             f"The provider settled the {line.kind} in {line.currency}; ours "
                             f"is in {currency}."))
    elif amount != line.amount_minor:
        found.append(finding(K.AMOUNT_MISMATCH,
                             f"The provider settled {line.amount_minor} {line.currency}; ours "
                             f"is {amount} {currency}."))
    if line.kind == settlement.CAPTURE and line.fee_currency in ("", line.currency):
        expected = expected_fee(account, line.amount_minor, line.currency)
        if expected is not None and expected != line.fee_minor:
            found.append(finding(K.FEE_MISMATCH,
                                 f"The provider charged a fee of {line.fee_minor} "
                                 f"{line.currency}; the account's fee schedule says "
                                 f"{expected}.", fee=expected))
    return found


def _window(day: dt.date) -> dict[str, dt.datetime]:
    start, end = settlement.day_bounds(day)
    return {"created_at__gte": start, "created_at__lt": end}


def _only_ours(account: ProviderAccount, day: dt.date, matched: set[str]) -> list[Found]:
    """What we hold as settled that day and no report of the account has shown."""
    window = _window(day)
    # matched by this report, or by another day's (not by this day's previous run: its lines
    # are replaced by this one's)
    seen = matched | set(ReconciliationLine.objects.filter(run__account=account).exclude(
        run__day=day).exclude(matched_id="").values_list("matched_id", flat=True))
    rows: list[tuple[str, str, int, str, str]] = []  # (type, id, amount, currency, payment)
    for attempt in PaymentAttempt.objects.select_related("payment").filter(
            provider_account=account, status=AttemptStatus.CAPTURED,
            payment__capture_method="automatic", **window):
        rows.append(("attempt", attempt.pk, attempt.payment.amount, attempt.payment.currency,
                     attempt.payment_id))
    for mod in Modification.objects.select_related("payment").filter(
            attempt__provider_account=account, kind="capture",
            status=ModificationStatus.SUCCEEDED, **window):
        rows.append(("modification", mod.pk, mod.amount, mod.payment.currency, mod.payment_id))
    for refund in Refund.objects.filter(
            payment__attempts__provider_account=account,
            payment__attempts__status__in=_DONE_ATTEMPT, status=RefundStatus.SUCCEEDED,
            **window).distinct():
        rows.append(("refund", refund.pk, refund.amount, refund.currency, refund.payment_id))
    return [Found(K.ONLY_OURS, f"only_ours:{object_id}",
                  f"We hold {object_type} {object_id} ({amount} {currency}) as settled on "
                  f"{day}; the provider's report does not have it.", payment_id=payment_id,
                  object_type=object_type, object_id=object_id,
                  ours={"object": object_id, "amount": amount, "currency": currency})
            for object_type, object_id, amount, currency, payment_id in rows
            if object_id not in seen]


def _discrepancies(account: ProviderAccount, day: dt.date, matches: list[Match]) -> list[Found]:
    found: dict[str, Found] = {}
    for match in matches:
        for item in _line_findings(account, match):
            found.setdefault(item.key, item)
    matched = {m.object_id for m in matches if m.target and m.object_id}
    for item in _only_ours(account, day, matched):
        found.setdefault(item.key, item)
    return list(found.values())


# --- recording -------------------------------------------------------------------------------
def _record(run: ReconciliationRun, token: str, report: settlement.SettlementReport,
            matches: list[Match], found: list[Found]) -> RunResult:
    now = timezone.now()
    with transaction.atomic():
        locked = _locked_if_ours(run, token)
        if locked is None:  # our lease ran out and another worker took the run over
            logger.warning("reconciliation of run %s lost its claim; the other worker records "
                           "it", run.pk)
            return RunResult(account_id=run.account_id, day=run.day, status="skipped")
        locked.report_lines.all().delete()
        ReconciliationLine.objects.bulk_create([_line_row(locked, m) for m in matches])
        _upsert(locked, found, now)
        matched_ids = {m.object_id for m in matches if m.target and m.object_id}
        _resolve_found_later(locked, matched_ids, now)
        fees: dict[str, int] = {}
        for match in matches:
            if match.line.fee_minor and match.line.fee_currency:
                currency = match.line.fee_currency
                fees[currency] = fees.get(currency, 0) + match.line.fee_minor
        locked.status, locked.source, locked.error = RUN.COMPLETED, report.source[:255], ""
        locked.finished_at, locked.claim_token, locked.claimed_until = now, "", None
        locked.lines = len(matches)
        locked.matched = sum(1 for m in matches if m.target)
        locked.settled = sum(1 for m in matches if m.settled)
        locked.open_discrepancies = locked.discrepancies.filter(
            status=DiscrepancyStatus.OPEN).count()
        locked.fees = fees
        locked.save()
    return RunResult(account_id=locked.account_id, day=locked.day, status=RUN.COMPLETED,
                     lines=locked.lines, matched=locked.matched, settled=locked.settled,
                     open_discrepancies=locked.open_discrepancies)


def _line_row(run: ReconciliationRun, match: Match) -> ReconciliationLine:
    line = match.line
    return ReconciliationLine(
        run=run, line_id=line.line_id[:200], kind=line.kind[:16], raw_type=line.raw_type[:64],
        status=line.status[:16], our_reference=line.our_reference[:128],
        payment_reference=line.payment_reference[:128],
        provider_reference=line.provider_reference[:128],
        operation_reference=line.operation_reference[:128], amount=line.amount_minor,
        currency=line.currency[:3], fee=line.fee_minor, fee_currency=line.fee_currency[:3],
        occurred_at=line.occurred_at, matched_type=match.target,
        matched_id=match.object_id if match.target else "", payment=match.payment,
        settled=match.settled)


def _upsert(run: ReconciliationRun, found: Iterable[Found], now: dt.datetime) -> None:
    """One discrepancy per run and key: new ones created, known ones refreshed (an operator's
    resolution stands), and open ones this run no longer finds resolved by the run."""
    existing = {d.key: d for d in run.discrepancies.all()}
    keys = set()
    for item in found:
        keys.add(item.key)
        values = {"kind": item.kind, "payment_id": item.payment_id,
                  "object_type": item.object_type, "object_id": item.object_id,
                  "line_id": item.line_id[:200], "ours": item.ours, "theirs": item.theirs,
                  "message": item.message[:500], "last_seen_at": now}
        row = existing.get(item.key)
        if row is None:
            Discrepancy.objects.create(run=run, account_id=run.account_id, key=item.key,
                                       **values)
        else:
            Discrepancy.objects.filter(pk=row.pk).update(**values)
    for key, row in existing.items():
        if key not in keys and row.status == DiscrepancyStatus.OPEN:
            Discrepancy.objects.filter(pk=row.pk).update(
                status=DiscrepancyStatus.RESOLVED, resolved_at=now, resolved_by=ACTOR,
                resolution=f"No longer found when {run.day} was reconciled again at "
                           f"{now:%Y-%m-%d %H:%M:%S} UTC.")


def _resolve_found_later(run: ReconciliationRun, matched_ids: set[str],
                         now: dt.datetime) -> None:
    """An earlier day's "only ours" that this day's report has after all (a capture the
    provider booked after midnight, a batch that closed a day later) is resolved."""
    if not matched_ids:
        return
    Discrepancy.objects.filter(
        account_id=run.account_id, kind=K.ONLY_OURS, status=DiscrepancyStatus.OPEN,
        object_id__in=matched_ids).exclude(run=run).update(
        status=DiscrepancyStatus.RESOLVED, resolved_at=now, resolved_by=ACTOR,
        resolution=f"Found in the provider's report of {run.day}.")


def open_discrepancies() -> QuerySet[Discrepancy]:
    """Open discrepancies, oldest first (the admin's Needs-attention view)."""
    return (Discrepancy.objects.filter(status=DiscrepancyStatus.OPEN)
            .select_related("account", "run", "payment").order_by("created_at", "id"))
