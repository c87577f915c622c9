"""Hourly provider stats (payments.services.provider_stats): the numbers against known
attempts, idempotency, catching up, two runs at once, the latency recorded at the provider
call, and routing's use of the result."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from payments.models import (
    AttemptStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    ProviderHourlyStats,
)
from payments.services import attempts, provider_stats
from payments.services.provider_calls import CallKind, CallOutcome
from payments.services.provider_stats import HOUR, hour_start, nearest_rank
from providers.base import ProviderUnavailable, SoftDecline
from providers.resilience.breaker import BreakerOpen
from providers.resilience.limits import RATE_LIMITED
from providers.routing import stats as routing_stats
from tests.factories import ProviderAccountFactory
from tests.threads import race

A = AttemptStatus
NOW = dt.datetime(2026, 3, 10, 14, 20, tzinfo=dt.UTC)  # runs "at" 14:20: 14:00 is not over
H = hour_start(NOW) - 2 * HOUR  # 12:00-13:00, a completed hour


def attempt(account, status, *, at, latency=None, decline_code="", error_code=""):
    payment = Payment.objects.create(merchant=account.merchant, livemode=False, amount=1000,
                                     currency="USD", status=PaymentStatus.PROCESSING)
    row = PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                        status=status, latency_ms=latency,
                                        decline_code=decline_code, error_code=error_code)
    PaymentAttempt.objects.filter(pk=row.pk).update(created_at=at)  # (auto_now_add)
    return row


def stored(account):
    fields = (*provider_stats.COUNTED, "hour", "latency_p50_ms", "latency_p95_ms",
              "latency_p99_ms")
    return list(ProviderHourlyStats.objects.filter(provider_account=account)
                .order_by("hour").values(*fields))


@pytest.fixture
def account(db):
    return ProviderAccountFactory()


def plant_known_hour(account):
    """One hour of every kind of outcome; latencies 50…400 and 5000 ms."""
    minute = dt.timedelta(minutes=1)
    for i, status in enumerate((A.AUTHORIZED, A.CAPTURED, A.VOIDED, A.REVERSED)):
        attempt(account, status, at=H + i * minute, latency=100 * (i + 1))
    attempt(account, A.DECLINED, at=H + 5 * minute, latency=50, decline_code="processing_error")
    attempt(account, A.DECLINED, at=H + 6 * minute, latency=60,
            decline_code="insufficient_funds")
    attempt(account, A.FAILED, at=H + 7 * minute, latency=70, error_code="provider_unavailable")
    attempt(account, A.FAILED, at=H + 8 * minute, error_code="breaker_open")  # never sent
    # the provider's own 429 (it answered: a latency) is its error, not our refusal
    attempt(account, A.FAILED, at=H + 9 * minute, latency=80,
            error_code="provider_rate_limited")
    attempt(account, A.FAILED, at=H + 10 * minute, latency=90,
            error_code="provider_bad_request")
    attempt(account, A.UNKNOWN, at=H + 59 * minute, latency=5000)
    attempt(account, A.PENDING, at=H + 59 * minute + dt.timedelta(seconds=59.9))


def test_the_numbers_of_a_known_hour(account):
    plant_known_hour(account)
    attempt(account, A.CAPTURED, at=H + HOUR + dt.timedelta(minutes=30), latency=10)
    attempt(account, A.CAPTURED, at=hour_start(NOW), latency=10)  # the hour still running
    attempt(account, A.CAPTURED, at=H - dt.timedelta(seconds=1), latency=10)  # the hour before
    other = ProviderAccountFactory(merchant=account.merchant)
    attempt(other, A.DECLINED, at=H, latency=20, decline_code="try_again_later")

    run = provider_stats.provider_stats_aggregate(now=NOW)

    assert not run.skipped and run.end == hour_start(NOW)
    rows = stored(account)
    assert [r["hour"] for r in rows] == [H - HOUR, H, H + HOUR]  # not the running hour
    known = rows[1]
    assert {k: v for k, v in known.items() if k != "hour"} == {
        "attempts": 12, "approved": 4, "declined_soft": 1,
        "declined_hard": 2,  # insufficient_funds, and the malformed request
        "errors": 2,  # provider_unavailable, the provider's 429
        "refused": 1, "unknown": 1, "pending": 1,
        "latency_samples": 10,
        # nearest rank of 50 60 70 80 90 100 200 300 400 5000
        "latency_p50_ms": 90, "latency_p95_ms": 5000, "latency_p99_ms": 5000,
    }
    row = ProviderHourlyStats.objects.get(provider_account=account, hour=H)
    assert row.decided == 9 and row.success_rate == pytest.approx(4 / 9)
    assert stored(other)[0]["declined_soft"] == 1
    assert run.rows == 4


def test_postgres_percentiles_are_the_nearest_rank_ones(account):
    values = [7, 3, 250, 41, 41, 9, 1200, 18, 66, 5, 30, 800, 2]
    for i, value in enumerate(values):
        attempt(account, A.CAPTURED, at=H + dt.timedelta(minutes=i), latency=value)
    provider_stats.provider_stats_aggregate(now=NOW)
    row = stored(account)[0]
    assert (row["latency_p50_ms"], row["latency_p95_ms"], row["latency_p99_ms"]) == \
        nearest_rank(values, (0.5, 0.95, 0.99)) == (30, 1200, 1200)
    assert nearest_rank([], (0.5, 0.95, 0.99)) == (None, None, None)
    assert nearest_rank([4], (0.5, 0.95, 0.99)) == (4, 4, 4)


def test_running_again_gives_the_same_table(account):
    plant_known_hour(account)
    provider_stats.provider_stats_aggregate(now=NOW)
    first = stored(account)
    again = provider_stats.provider_stats_aggregate(now=NOW)
    assert stored(account) == first
    assert ProviderHourlyStats.objects.count() == 1
    assert again.rows == 1 and again.deleted == 0


def test_outcomes_settled_later_are_recomputed(account, settings):
    settings.PROVIDER_STATS_RECOMPUTE_HOURS = 3
    unknown = attempt(account, A.UNKNOWN, at=H, latency=900)
    provider_stats.provider_stats_aggregate(now=NOW)
    assert stored(account)[0]["unknown"] == 1
    PaymentAttempt.objects.filter(pk=unknown.pk).update(status=A.CAPTURED)
    provider_stats.provider_stats_aggregate(now=NOW + HOUR)  # H is 3 hours back: recomputed
    assert (stored(account)[0]["unknown"], stored(account)[0]["approved"]) == (0, 1)


def test_a_missed_day_is_caught_up(account, settings):
    settings.PROVIDER_STATS_RECOMPUTE_HOURS = 2
    settings.PROVIDER_STATS_CATCHUP_HOURS = 48
    start = hour_start(NOW) - 40 * HOUR
    attempt(account, A.CAPTURED, at=start, latency=10)
    provider_stats.provider_stats_aggregate(now=start + HOUR + dt.timedelta(minutes=5))
    assert [r["hour"] for r in stored(account)] == [start]
    for hours_later in (5, 20, 30):  # while beat was down
        attempt(account, A.CAPTURED, at=start + hours_later * HOUR, latency=10)
    attempt(account, A.CAPTURED, at=hour_start(NOW) - 60 * HOUR, latency=10)  # past catch-up

    run = provider_stats.provider_stats_aggregate(now=NOW)
    assert run.start == start + HOUR  # from the hour after the last one stored
    assert [r["hour"] for r in stored(account)] == [
        start, start + 5 * HOUR, start + 20 * HOUR, start + 30 * HOUR]


def test_first_run_looks_back_the_catch_up_window_only(account, settings):
    settings.PROVIDER_STATS_CATCHUP_HOURS = 24
    attempt(account, A.CAPTURED, at=hour_start(NOW) - 25 * HOUR, latency=10)
    attempt(account, A.CAPTURED, at=hour_start(NOW) - 24 * HOUR, latency=10)
    run = provider_stats.provider_stats_aggregate(now=NOW)
    assert run.start == hour_start(NOW) - 24 * HOUR and run.hours == 24
    assert [r["hour"] for r in stored(account)] == [hour_start(NOW) - 24 * HOUR]


# --- two runs at once ---------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_run_while_another_holds_the_lock_changes_nothing():
    account = ProviderAccountFactory()
    plant_known_hour(account)
    held, release = threading.Event(), threading.Event()

    def holder():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [provider_stats.LOCK_KEY])
                held.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        run = provider_stats.provider_stats_aggregate(now=NOW)
        assert run.skipped
        assert not ProviderHourlyStats.objects.exists()
    finally:
        release.set()
        thread.join(30)
    assert not provider_stats.provider_stats_aggregate(now=NOW).skipped
    assert stored(account)[0]["attempts"] == 12


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_leave_the_right_table():
    account = ProviderAccountFactory()
    plant_known_hour(account)
    for _ in range(3):
        runs: list = []

        def run(runs: list = runs) -> None:
            runs.append(provider_stats.provider_stats_aggregate(now=NOW))

        errors = race(run, run)
        assert errors == []
        assert len(runs) == 2 and any(not r.skipped for r in runs)
        rows = stored(account)
        assert len(rows) == 1 and rows[0]["attempts"] == 12 and rows[0]["approved"] == 4
    for alias in connections:
        connections[alias].close()


# --- latency recorded at the provider call, and routing's prior ------------------------------
@pytest.mark.django_db
def test_a_payment_records_its_calls_latency(api, merchant):
    from tests.conftest import make_card

    created = api.post("/v1/payments", {"amount": 700, "currency": "USD", "confirm": True,
                                        "payment_method": make_card(api, "4242424242424242")})
    assert created.status_code == 200, created.json()
    (row,) = PaymentAttempt.objects.filter(payment_id=created.json()["id"])
    assert row.status in (A.AUTHORIZED, A.CAPTURED)
    assert row.latency_ms is not None and row.latency_ms >= 0


@pytest.mark.parametrize("error, latency", [
    (BreakerOpen("open"), None),  # refused by our breaker: never sent, no provider latency
    (ProviderUnavailable("limited", code=RATE_LIMITED), None),  # by our limiter
    (ProviderUnavailable("429", code=RATE_LIMITED, raw_code="429"), 35),  # by the provider
    (SoftDecline("no", code="card_declined", decline_code="processing_error"), 35),
])
def test_the_answer_records_the_latency_of_calls_that_were_sent(account, error, latency):
    payment = Payment.objects.create(merchant=account.merchant, livemode=False, amount=1000,
                                     currency="USD", status=PaymentStatus.PROCESSING)
    row = PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                        status=A.PENDING)
    kind = CallKind.DECLINED if isinstance(error, SoftDecline) else CallKind.UNAVAILABLE
    attempts.record_answer(payment, row, CallOutcome(kind, error=error, latency_ms=35),
                           actor="test")
    row.refresh_from_db()
    assert row.latency_ms == latency


def test_routing_scores_a_thin_window_with_the_hourly_prior(account, settings):
    settings.ROUTING_MIN_SAMPLES = 5
    good = ProviderAccountFactory(merchant=account.merchant)
    for i in range(10):  # account: 4 of 10 approved; good: 9 of 10
        attempt(account, A.CAPTURED if i < 4 else A.DECLINED, at=H + i * dt.timedelta(minutes=1),
                latency=10, decline_code="" if i < 4 else "processing_error")
        attempt(good, A.CAPTURED if i < 9 else A.FAILED, at=H, latency=10,
                error_code="" if i < 9 else "provider_unavailable")
    # hard declines are the card's fault: left out of the prior
    attempt(good, A.DECLINED, at=H, latency=10, decline_code="insufficient_funds")
    fresh = ProviderAccountFactory(merchant=account.merchant)

    run = provider_stats.provider_stats_aggregate(now=NOW)
    assert run.priors == 2
    rates = routing_stats.success_rates([account, good, fresh])
    assert (rates[account.id].basis, rates[account.id].rate) == ("hourly", pytest.approx(0.4))
    assert (rates[good.id].basis, rates[good.id].rate) == ("hourly", pytest.approx(0.9))
    assert (rates[fresh.id].basis, rates[fresh.id].rate) == ("neutral", 0.9)

    for _ in range(5):  # a full window outranks the prior
        routing_stats.record_outcome(account, "approved")
    assert routing_stats.success_rates([account])[account.id].basis == "window"
    assert routing_stats.success_rates([account])[account.id].rate == 1.0


def test_the_success_rate_strategy_orders_by_the_prior(account, settings):
    from providers.models import RoutingRule
    from providers.routing.context import RoutingContext
    from providers.routing.engine import route

    settings.ROUTING_EXPLORATION_RATE = 0.0
    settings.ROUTING_MIN_SAMPLES = 5
    weak = ProviderAccountFactory(merchant=account.merchant, name="weak", priority=1)
    strong = ProviderAccountFactory(merchant=account.merchant, name="strong", priority=2)
    for i in range(10):
        attempt(weak, A.CAPTURED if i < 5 else A.FAILED, at=H, latency=10,
                error_code="provider_unavailable")
        attempt(strong, A.CAPTURED, at=H, latency=10)
    RoutingRule.objects.create(merchant=account.merchant, livemode=False,
                               strategy="success_rate", accounts=["weak", "strong"])
    context = RoutingContext(merchant_id=account.merchant_id, livemode=False, amount=1000,
                             currency="USD")
    before = route(context)
    assert [a.name for a in before.candidates] == ["weak", "strong"]  # neutral: by priority

    provider_stats.provider_stats_aggregate(now=NOW)
    decision = route(context)
    assert [a.name for a in decision.candidates] == ["strong", "weak"]
    assert [c["basis"] for c in decision.record["candidates"]] == ["hourly", "hourly"]
    assert [c["score"] for c in decision.record["candidates"]] == [1.0, 0.5]


def test_priors_lapse_when_not_handed_over_again(account):
    routing_stats.set_priors({account.id: routing_stats.Prior(approved=3, samples=100)}, ttl=1)
    assert routing_stats.success_rates([account])[account.id].basis == "hourly"
    routing_stats.set_priors({account.id: routing_stats.Prior(approved=3, samples=100)}, ttl=0)
    assert routing_stats.success_rates([account])[account.id].basis == "neutral"


def test_no_row_without_attempts_and_the_health_series(account):
    attempt(account, A.CAPTURED, at=H, latency=10)
    provider_stats.provider_stats_aggregate(now=NOW)
    series = provider_stats.provider_health(account=account, hours=48, now=NOW)
    assert len(series) == 48 and series[-1][0] == hour_start(NOW) - HOUR
    assert [hour for hour, row in series if row is not None] == [H]
    assert timezone.is_aware(series[0][0])
