"""Hourly provider stats: per provider account and UTC hour, the authorization attempts
started in that hour by outcome, and their latency percentiles (`ProviderHourlyStats`).

Run by the hourly beat task `switchyard.stats.aggregate_provider_hours` (workers/tasks.py):

- Which hours: the completed hours from the last one stored (catching up after a beat that
  was down, at most PROVIDER_STATS_CATCHUP_HOURS back), and always the last
  PROVIDER_STATS_RECOMPUTE_HOURS again: attempts that were pending or unknown settle later.
- One transaction per run, under a Postgres advisory lock taken with try: a second run at
  the same time returns at once (`skipped`), changing nothing. Each account-hour is an upsert
  (INSERT … ON CONFLICT DO UPDATE) of numbers recomputed from the attempts, so running it
  again gives the same table; rows of the recomputed hours that no attempt supports any
  more are deleted. A run that fails rolls back whole: no half-written hour.
- After the commit, routing gets each account's rate over the last ROUTING_PRIOR_HOURS
  (`providers.routing.stats.set_priors`): its score while its rolling window is thin.

What counts as what (the attempt's status when the hour is computed):
- approved: authorized, captured, voided or reversed (the provider approved it; voided and
  reversed are what happened after);
- declined_soft: declined with a soft decline code (providers.routing.retry.DECLINE_CLASSES);
  declined_hard: any other decline, and requests the provider rejected as malformed;
- refused: never sent, our circuit breaker or limiter refused it (no latency recorded);
- errors: failed otherwise (the provider did not process it, or an unknown outcome later
  found not charged);
- unknown, pending: no final answer yet.
success rate = approved / decided, decided = approved + declines + errors. Routing's prior
leaves hard declines out (the card's fault, not the provider's) and counts unknown outcomes
as failures, as its rolling rate does.

Latency: `PaymentAttempt.latency_ms`, measured around the provider call
(payments.services.provider_calls); percentiles are nearest-rank (Postgres percentile_disc).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from payments.models import AttemptStatus, PaymentAttempt, ProviderHourlyStats
from providers.models import ProviderAccount
from providers.outcomes import SOFT
from providers.resilience.breaker import BreakerOpen
from providers.resilience.limits import CONCURRENCY_LIMITED, RATE_LIMITED
from providers.routing import retry as retry_rules
from providers.routing import stats as routing_stats

logger = logging.getLogger(__name__)
A = AttemptStatus
UTC = dt.UTC
HOUR = dt.timedelta(hours=1)

LOCK_KEY = zlib.crc32(b"switchyard.stats.aggregate_provider_hours")
PERCENTILES = (0.5, 0.95, 0.99)
APPROVED_STATUSES = (A.AUTHORIZED, A.CAPTURED, A.VOIDED, A.REVERSED)
SOFT_DECLINE_CODES = tuple(sorted(code for code, kind in retry_rules.DECLINE_CLASSES.items()
                                  if kind == SOFT))
BAD_REQUEST = "provider_bad_request"
# Our own refusals carry these codes and no latency (a provider's own 429 has one)
REFUSAL_CODES = (BreakerOpen.code, RATE_LIMITED, CONCURRENCY_LIMITED)
COUNTED = ("attempts", "approved", "declined_soft", "declined_hard", "errors", "refused",
           "unknown", "pending", "latency_samples")
STORED = (*COUNTED, "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "computed_at")


@dataclass(frozen=True)
class AggregationRun:
    skipped: bool  # another run held the lock: nothing done
    start: dt.datetime | None = None  # hours [start, end) computed
    end: dt.datetime | None = None
    rows: int = 0  # account-hours written
    deleted: int = 0  # account-hours no attempt supports any more
    priors: int = 0  # accounts whose prior routing got

    @property
    def hours(self) -> int:
        if self.start is None or self.end is None:
            return 0
        return int((self.end - self.start) / HOUR)


def hour_start(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def provider_stats_aggregate(*, now: dt.datetime | None = None) -> AggregationRun:
    """Compute and store the hourly stats of the hours due (see the module), then hand routing
    its priors. Safe to run at any time, twice at once, and again."""
    now = now or timezone.now()
    end = hour_start(now)
    with transaction.atomic():
        if not _try_lock():
            logger.info("provider stats: another run holds the lock; skipped")
            return AggregationRun(skipped=True)
        start = _first_hour_due(end)
        rows = _compute(start, end, computed_at=now)
        ProviderHourlyStats.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["provider_account", "hour"],
            update_fields=list(STORED))
        deleted, _ = (ProviderHourlyStats.objects.filter(hour__gte=start, hour__lt=end)
                      .exclude(computed_at=now).delete())
    priors = routing_priors(end=end)
    routing_stats.set_priors(priors)
    run = AggregationRun(skipped=False, start=start, end=end, rows=len(rows), deleted=deleted,
                         priors=len(priors))
    logger.info("provider stats: %d hour(s) from %s, %d account-hour(s) written, %d deleted, "
                "%d prior(s) for routing", run.hours, start.isoformat(), run.rows, run.deleted,
                run.priors)
    return run


def routing_priors(*, end: dt.datetime, hours: int | None = None
                   ) -> dict[str, routing_stats.Prior]:
    """Each account's outcomes over the `hours` (ROUTING_PRIOR_HOURS) completed hours before
    `end`, in routing's terms: approved / (approved + soft declines + errors + unknown)."""
    hours = settings.ROUTING_PRIOR_HOURS if hours is None else hours
    sums = (ProviderHourlyStats.objects.filter(hour__gte=end - hours * HOUR, hour__lt=end)
            .values("provider_account_id").order_by()
            .annotate(a=Sum("approved"), s=Sum("declined_soft"), e=Sum("errors"),
                      u=Sum("unknown")))
    return {row["provider_account_id"]: routing_stats.Prior(
        approved=row["a"], samples=row["a"] + row["s"] + row["e"] + row["u"]) for row in sums}


def provider_health(*, account: ProviderAccount, hours: int = 48,
                    now: dt.datetime | None = None) -> list[tuple[dt.datetime,
                                                                  ProviderHourlyStats | None]]:
    """The account's last `hours` completed hours, oldest first, each with its stats (None:
    no attempt that hour, or not computed yet)."""
    end = hour_start(now or timezone.now())
    start = end - hours * HOUR
    found = {row.hour: row for row in ProviderHourlyStats.objects.filter(
        provider_account=account, hour__gte=start, hour__lt=end)}
    return [(hour, found.get(hour)) for hour in (start + i * HOUR for i in range(hours))]


# --- internals --------------------------------------------------------------------------------
def _try_lock() -> bool:
    """The run's advisory lock, released with the transaction (Postgres; elsewhere, the
    embedded default, one process: no lock needed)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _first_hour_due(end: dt.datetime) -> dt.datetime:
    oldest: dt.datetime = end - settings.PROVIDER_STATS_CATCHUP_HOURS * HOUR
    start: dt.datetime = end - settings.PROVIDER_STATS_RECOMPUTE_HOURS * HOUR
    latest: dt.datetime | None = ProviderHourlyStats.objects.aggregate(
        latest=Max("hour"))["latest"]
    if latest is None:
        start = oldest
    elif latest + HOUR < start:
        start = latest + HOUR
    return max(start, oldest)


def _compute(start: dt.datetime, end: dt.datetime, *,
             computed_at: dt.datetime) -> list[ProviderHourlyStats]:
    attempts = PaymentAttempt.objects.filter(created_at__gte=start, created_at__lt=end)
    declined = Q(status=A.DECLINED)
    soft = declined & Q(decline_code__in=SOFT_DECLINE_CODES)
    refused = Q(status=A.FAILED, error_code__in=REFUSAL_CODES, latency_ms__isnull=True)
    bad_request = Q(status=A.FAILED, error_code=BAD_REQUEST)
    counts = (attempts.annotate(hour=TruncHour("created_at", tzinfo=UTC))
              .values("provider_account_id", "hour").order_by()
              .annotate(attempts=Count("id"),
                        approved=Count("id", filter=Q(status__in=APPROVED_STATUSES)),
                        declined_soft=Count("id", filter=soft),
                        declined_hard=Count("id", filter=(declined & ~soft) | bad_request),
                        refused=Count("id", filter=refused),
                        errors=Count("id", filter=Q(status=A.FAILED) & ~refused & ~bad_request),
                        unknown=Count("id", filter=Q(status=A.UNKNOWN)),
                        pending=Count("id", filter=Q(status=A.PENDING)),
                        latency_samples=Count("latency_ms")))
    latencies = _latency_percentiles(start, end)
    rows = []
    for row in counts:
        key = (row["provider_account_id"], row["hour"].astimezone(UTC))
        p50, p95, p99 = latencies.get(key, (None, None, None))
        rows.append(ProviderHourlyStats(
            provider_account_id=key[0], hour=key[1], computed_at=computed_at,
            latency_p50_ms=p50, latency_p95_ms=p95, latency_p99_ms=p99,
            **{name: row[name] for name in COUNTED}))
    # one order for every run: two runs' row locks are taken in the same order
    rows.sort(key=lambda r: (r.provider_account_id, r.hour))
    return rows


Percentiles = tuple[int | None, int | None, int | None]


def _latency_percentiles(start: dt.datetime, end: dt.datetime
                         ) -> dict[tuple[str, dt.datetime], Percentiles]:
    """(account id, hour) → (p50, p95, p99) of the attempts' latency, nearest-rank."""
    if connection.vendor == "postgresql":
        table = PaymentAttempt._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT provider_account_id,
                           date_trunc('hour', created_at AT TIME ZONE 'UTC'),
                           percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY latency_ms)
                    FROM {table}
                    WHERE created_at >= %s AND created_at < %s AND latency_ms IS NOT NULL
                    GROUP BY 1, 2""",  # noqa: S608 - the table name is the model's own
                [list(PERCENTILES), start, end])
            return {(account_id, hour.replace(tzinfo=UTC)): (values[0], values[1], values[2])
                    for account_id, hour, values in cursor.fetchall()}
    grouped: dict[tuple[str, dt.datetime], list[int]] = defaultdict(list)
    for account_id, created_at, latency in (
            PaymentAttempt.objects.filter(created_at__gte=start, created_at__lt=end,
                                          latency_ms__isnull=False)
            .values_list("provider_account_id", "created_at", "latency_ms").order_by()):
        if latency is not None:  # (filtered out above; for the type checker)
            grouped[(account_id, hour_start(created_at))].append(latency)
    return {key: nearest_rank(values, PERCENTILES) for key, values in grouped.items()}


def nearest_rank(values: Iterable[int], fractions: Sequence[float]) -> Percentiles:
    """The nearest-rank percentiles (Postgres' percentile_disc): for fraction p of n sorted
    values, the ceil(p·n)-th (at least the first)."""
    ordered = sorted(values)
    if not ordered:
        return (None, None, None)
    picked = [ordered[max(1, math.ceil(p * len(ordered))) - 1] for p in fractions]
    return (picked[0], picked[1], picked[2])
