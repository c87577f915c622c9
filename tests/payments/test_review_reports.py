"""Review: a day built before it was over (the task's `day` given today's date, by an
operator or a script) must not count as built: the scheduled run builds it again once it is
over, or that day's reports miss everything booked after the early build, for good."""

from __future__ import annotations

import datetime as dt

import pytest

from payments.models import SettlementReport
from payments.services.reports import day_bounds, report_build_day, reports_build_due
from tests.conftest import make_card
from tests.payments.test_reports import move_events, pay

STRIPE = "stripe-sandbox"


@pytest.mark.django_db
def test_a_day_built_before_it_was_over_is_built_again_after_it(api, merchant, settings):
    settings.SETTLEMENT_REPORT_CATCH_UP_DAYS = 3
    settings.SETTLEMENT_REPORT_DELAY_SECONDS = 600
    day = dt.date(2026, 3, 1)
    start, end = day_bounds(day)
    pm = make_card(api)
    first = pay(api, pm, 1000)
    move_events(first["id"], start + dt.timedelta(hours=10))
    # an operator builds the day at noon, while it is still going on
    (early,) = report_build_day(day=day, now=start + dt.timedelta(hours=12))
    assert early.amount_captured == 1000
    # booked that afternoon
    second = pay(api, pm, 500)
    move_events(second["id"], start + dt.timedelta(hours=15))

    # the scheduled run after the day is over
    result = reports_build_due(now=end + dt.timedelta(minutes=15))

    report = SettlementReport.objects.get(merchant=merchant, day=day, currency="USD")
    assert report.id == early.id  # rebuilt in place
    assert (report.payments_count, report.amount_captured) == (2, 1500)
    assert result["days_built"] == 3  # the two days before it, and it again
    # and it is built now: the next run leaves it alone
    assert reports_build_due(now=end + dt.timedelta(hours=1, minutes=15)) == {
        "days_built": 0, "reports": 0}
