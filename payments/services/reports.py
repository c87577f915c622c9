"""Daily settlement reports: per merchant, mode and currency, what a UTC day booked.

Built from the payments' event log (`PaymentEvent`): every event carries the payment's
`amount_captured` and `amount_refunded` after it, so the log says when each amount moved,
whoever moved it (the API, status sync, a provider webhook, an operator). For each payment
with an event in the day, its events are walked in order:

- **a payment** is counted on the day of its first event that puts it in
  `requires_capture` or `succeeded` (authorized, or authorized and captured at once), with
  its `amount` as the amount authorized; an authorization voided later still counts;
- **a capture** is an event that raises `amount_captured`, by that much;
- **a refund** is an event that raises `amount_refunded`, by that much;
- **fees**: for each capture, the fee schedule of the provider account the payment was
  authorized on (`ProviderAccount.fees`, as routing's least-cost strategy reads it):
  amount × percent / 100 as a Decimal rounded half up to the minor unit, plus the fixed
  part; 0 where the account has no schedule for the currency. Refunds do not return fees.
  (Providers do not report their fees to Switchyard yet; reconciliation compares.)
- **net** = amount captured − amount refunded − fees.

So every amount is counted once, on the day the event that moved it was written. Every
figure is an integer in the currency's minor unit.

`report_build_day` builds one day for every merchant in one transaction (a Postgres advisory
lock per day: two builds of the same day run one after the other), replacing that day's
reports: rebuilding a day gives the same reports, with the same ids. `reports_build_due`
builds the days that have not been built, up to yesterday (once it has been over for
SETTLEMENT_REPORT_DELAY_SECONDS), at most SETTLEMENT_REPORT_CATCH_UP_DAYS back; a day built
before that (by hand, while it was still going on) counts as not built.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from payments.models import (
    Payment,
    PaymentEvent,
    PaymentStatus,
    SettlementReport,
    SettlementReportDay,
)
from providers.routing.engine import expected_fee

logger = logging.getLogger(__name__)

AUTHORIZED_STATUSES = frozenset({PaymentStatus.REQUIRES_CAPTURE, PaymentStatus.SUCCEEDED})
# the first key of the day's advisory lock (the second is the day's ordinal)
_LOCK_CLASS = 0x5359_5250  # "SYRP"
_CHUNK = 500  # payments walked per query

CSV_COLUMNS = ("id", "day", "currency", "livemode", "payments_count", "amount_authorized",
               "captures_count", "amount_captured", "refunds_count", "amount_refunded",
               "fees", "net")


@dataclass
class Totals:
    payments_count: int = 0
    amount_authorized: int = 0
    captures_count: int = 0
    amount_captured: int = 0
    refunds_count: int = 0
    amount_refunded: int = 0
    fees: int = 0

    @property
    def net(self) -> int:
        return self.amount_captured - self.amount_refunded - self.fees

    def figures(self) -> dict[str, int]:
        return {"payments_count": self.payments_count,
                "amount_authorized": self.amount_authorized,
                "captures_count": self.captures_count, "amount_captured": self.amount_captured,
                "refunds_count": self.refunds_count, "amount_refunded": self.amount_refunded,
                "fees": self.fees, "net": self.net}


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


_Event = tuple[str, dict[str, Any], dt.datetime]  # (to_status, data, created_at)


def _walk_payment(payment: Payment, events: Iterable[_Event], start: dt.datetime,
                  totals: Totals) -> None:
    """Add what `payment`'s events from `start` on booked to `totals` (`events`: the
    payment's events up to the day's end, in order)."""
    authorized = False
    captured = refunded = 0
    for to_status, data, created_at in events:
        new_captured = int(data.get("amount_captured", captured))
        new_refunded = int(data.get("amount_refunded", refunded))
        in_day = created_at >= start
        if to_status in AUTHORIZED_STATUSES and not authorized:
            authorized = True
            if in_day:
                totals.payments_count += 1
                totals.amount_authorized += payment.amount
        if in_day and new_captured > captured:
            delta = new_captured - captured
            totals.captures_count += 1
            totals.amount_captured += delta
            account = payment.provider_account
            fee = (expected_fee(account, delta, payment.currency)
                   if account is not None else None)
            totals.fees += fee or 0
        if in_day and new_refunded > refunded:
            totals.refunds_count += 1
            totals.amount_refunded += new_refunded - refunded
        if new_captured < captured or new_refunded < refunded:
            logger.warning("payment %s: an event lowers amount_captured or amount_refunded",
                           payment.pk)
        captured, refunded = new_captured, new_refunded


def report_totals(*, day: dt.date) -> dict[tuple[str, bool, str], Totals]:
    """What `day` booked, per (merchant id, livemode, currency); only keys with something."""
    start, end = day_bounds(day)
    payment_ids = sorted(set(PaymentEvent.objects.filter(created_at__gte=start, created_at__lt=end)
                             .values_list("payment_id", flat=True)))
    totals: dict[tuple[str, bool, str], Totals] = defaultdict(Totals)
    for chunk in _chunks(payment_ids, _CHUNK):
        payments = {p.pk: p for p in Payment.objects.filter(pk__in=chunk)
                    .select_related("provider_account")}
        history: dict[str, list[_Event]] = defaultdict(list)
        for payment_id, to_status, data, created_at in (
                PaymentEvent.objects.filter(payment_id__in=chunk, created_at__lt=end)
                .order_by("payment_id", "id")
                .values_list("payment_id", "to_status", "data", "created_at")):
            history[payment_id].append((to_status, data or {}, created_at))
        for payment_id in chunk:
            payment = payments[payment_id]
            key = (payment.merchant_id, payment.livemode, payment.currency)
            _walk_payment(payment, history[payment_id], start, totals[key])
    return {key: value for key, value in totals.items()
            if value.payments_count or value.captures_count or value.refunds_count}


def _lock_day(day: dt.date) -> None:
    """Hold the day's advisory lock until the transaction ends (Postgres; SQLite, the
    embedded default, serializes writers anyway)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, day.toordinal()])


def _build_locked(day: dt.date, now: dt.datetime) -> list[SettlementReport]:
    totals = report_totals(day=day)
    existing = {(r.merchant_id, r.livemode, r.currency): r
                for r in SettlementReport.objects.select_for_update().filter(day=day)}
    reports = []
    for (merchant_id, livemode, currency), figures in sorted(totals.items()):
        report = existing.pop((merchant_id, livemode, currency), None) or SettlementReport(
            merchant_id=merchant_id, livemode=livemode, day=day, currency=currency)
        for name, value in figures.figures().items():
            setattr(report, name, value)
        report.built_at = now
        report.save()
        reports.append(report)
    # a (merchant, mode, currency) that no longer books anything that day (never, unless the
    # event log changed) has no report
    SettlementReport.objects.filter(pk__in=[r.pk for r in existing.values()]).delete()
    SettlementReportDay.objects.update_or_create(day=day, defaults={"built_at": now,
                                                                    "reports": len(reports)})
    return reports


def report_build_day(*, day: dt.date, now: dt.datetime | None = None) -> list[SettlementReport]:
    """Build (or rebuild) every merchant's reports of `day`, replacing that day's reports in
    one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        _lock_day(day)
        return _build_locked(day, now)


def last_reportable_day(now: dt.datetime) -> dt.date:
    """The latest day that has been over for SETTLEMENT_REPORT_DELAY_SECONDS."""
    settled = now.astimezone(dt.UTC) - dt.timedelta(seconds=settings.SETTLEMENT_REPORT_DELAY_SECONDS)
    return settled.date() - dt.timedelta(days=1)


def _built_when_over(day: dt.date, built_at: dt.datetime) -> bool:
    """Was the day built once it had been over for SETTLEMENT_REPORT_DELAY_SECONDS? A build
    made earlier (the task given a day not over yet) missed what was booked after it."""
    return built_at >= day_bounds(day)[1] + dt.timedelta(
        seconds=settings.SETTLEMENT_REPORT_DELAY_SECONDS)


def _built_days(first: dt.date, last: dt.date) -> set[dt.date]:
    return {day for day, built_at in SettlementReportDay.objects.filter(
        day__gte=first, day__lte=last).values_list("day", "built_at")
        if _built_when_over(day, built_at)}


def reports_build_due(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Build every day not built yet, oldest first, from SETTLEMENT_REPORT_CATCH_UP_DAYS back
    to the last reportable day; each day in its own transaction. A day built before it was
    over counts as not built (it is built again, its reports replaced in place). A day
    another run is building is waited for and then skipped (built by then). Returns what it
    built."""
    now = now or timezone.now()
    last = last_reportable_day(now)
    first = last - dt.timedelta(days=settings.SETTLEMENT_REPORT_CATCH_UP_DAYS - 1)
    built = _built_days(first, last)
    days = reports = 0
    day = first
    while day <= last:
        if day not in built:
            with transaction.atomic():
                _lock_day(day)
                if day not in _built_days(day, day):
                    reports += len(_build_locked(day, now))
                    days += 1
        day += dt.timedelta(days=1)
    return {"days_built": days, "reports": reports}


def report_csv(report: SettlementReport) -> str:
    """The report as CSV: a header row, then its one row (docs/api.md, "Reports")."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow([report.id, report.day.isoformat(), report.currency,
                     "true" if report.livemode else "false", report.payments_count,
                     report.amount_authorized, report.captures_count, report.amount_captured,
                     report.refunds_count, report.amount_refunded, report.fees, report.net])
    return out.getvalue()
