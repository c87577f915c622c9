"""Daily settlement reports (payments.services.reports, /v1/reports): figures from real
payments (partial captures, several refunds, two currencies, a decline, a void, days apart),
fees from the account's fee schedule, a rebuilt day equal to the first build, catch-up of
missed days, two builds at once, and the API: list with filters and cursor pages, retrieve,
CSV, scoped to the caller's merchant and mode."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.utils import timezone

from payments.models import PaymentEvent, SettlementReport, SettlementReportDay
from payments.services.reports import (
    report_build_day,
    report_csv,
    reports_build_due,
)
from providers.models import ProviderAccount
from tests.conftest import assert_error, assert_invalid, make_card
from tests.threads import in_threads
from workers.tasks import build_settlement_reports

STRIPE = "stripe-sandbox"
FIGURES = ("payments_count", "amount_authorized", "captures_count", "amount_captured",
           "refunds_count", "amount_refunded", "fees", "net")


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def noon_today() -> dt.datetime:
    """A build time far from midnight: just after midnight UTC, yesterday is not over for
    SETTLEMENT_REPORT_DELAY_SECONDS yet, and a test building "up to yesterday" must not
    depend on when it runs."""
    return dt.datetime.combine(today(), dt.time(12), tzinfo=dt.UTC)


def figures(report) -> tuple:
    return tuple(getattr(report, name) for name in FIGURES)


def pay(api, pm, amount, currency="USD", *, capture_method="automatic"):
    resp = api.post("/v1/payments", {"amount": amount, "currency": currency,
                                     "payment_method": pm, "confirm": True,
                                     "provider": STRIPE, "capture_method": capture_method})
    assert resp.status_code in (200, 402), resp.json()
    body = resp.json()
    return body.get("payment", body)


def ok(resp):
    assert resp.status_code == 200, resp.json()
    return resp.json()


def move_events(payment_id: str, to: dt.datetime, *, types=None) -> None:
    events = PaymentEvent.objects.filter(payment_id=payment_id)
    if types is not None:
        events = events.filter(type__in=types)
    events.update(created_at=to)


@pytest.fixture
def fees(merchant):
    """Stripe's schedule: 2.9 % + 30 in USD, 1.5 % elsewhere."""
    ProviderAccount.objects.filter(merchant=merchant, name=STRIPE).update(fees={
        "USD": {"percent": "2.9", "fixed": 30}, "*": {"percent": "1.5", "fixed": 0}})


@pytest.fixture
def day_of_payments(api, merchant, fees):
    """A day of payments on Stripe's sandbox (see the figures in the test below)."""
    pm = make_card(api)
    automatic = pay(api, pm, 1050)  # captured at once
    partial = pay(api, pm, 2000, capture_method="manual")
    ok(api.post(f"/v1/payments/{partial['id']}/capture", {"amount_to_capture": 1500}))
    ok(api.post("/v1/refunds", {"payment": partial["id"], "amount": 500}))
    ok(api.post("/v1/refunds", {"payment": partial["id"], "amount": 300}))
    euro = pay(api, pm, 999, "EUR")
    declined = pay(api, make_card(api, "4000000000000002"), 700)
    assert declined["status"] == "failed"
    voided = pay(api, pm, 3000, capture_method="manual")
    ok(api.post(f"/v1/payments/{voided['id']}/cancel", {}))
    unconfirmed = ok(api.post("/v1/payments", {"amount": 400, "currency": "USD",
                                                "payment_method": pm}))
    return {"automatic": automatic["id"], "partial": partial["id"], "euro": euro["id"],
            "declined": declined["id"], "voided": voided["id"],
            "unconfirmed": unconfirmed["id"]}


# USD: authorized 1050 + 2000 + 3000 (the void still counts), captured 1050 + 1500,
# refunded 500 + 300; fees 2.9 % + 30 per capture: 30.45 → 30, +30 = 60; 43.5 → 44, +30 = 74
USD = (3, 6050, 2, 2550, 2, 800, 134, 2550 - 800 - 134)
# EUR: 999 captured at once; 1.5 % of 999 = 14.985 → 15
EUR = (1, 999, 1, 999, 0, 0, 15, 984)


@pytest.mark.django_db
def test_a_day_of_payments_adds_up_per_currency(merchant, day_of_payments):
    reports = report_build_day(day=today())
    assert {(r.currency, figures(r)) for r in reports} == {("USD", USD), ("EUR", EUR)}
    assert all(r.merchant == merchant and r.livemode is False and r.day == today()
               for r in reports)
    assert SettlementReportDay.objects.get(day=today()).reports == 2


@pytest.mark.django_db
def test_a_rebuilt_day_is_equal_and_replaces_in_place(api, merchant, day_of_payments):
    first = {r.currency: (r.id, figures(r)) for r in report_build_day(day=today())}
    again = {r.currency: (r.id, figures(r)) for r in report_build_day(day=today())}
    assert again == first
    assert SettlementReport.objects.count() == 2
    # an event written after the build (a refund the same day): a rebuild counts it, in
    # the same report
    ok(api.post("/v1/refunds", {"payment": day_of_payments["automatic"], "amount": 200}))
    assert build_settlement_reports.apply(kwargs={"day": today().isoformat()}).get() == {
        "days_built": 1, "reports": 2}
    rebuilt = {r.currency: (r.id, figures(r)) for r in SettlementReport.objects.all()}
    assert rebuilt == {**first, "USD": (first["USD"][0], (3, 6050, 2, 2550, 3, 1000, 134,
                                                          2550 - 1000 - 134))}


@pytest.mark.django_db
def test_each_amount_is_counted_on_the_day_its_event_was_written(api, merchant, fees):
    """Authorized one day, captured the next, refunded the day after: three reports, each
    with its part, and the payment counted once."""
    pm = make_card(api)
    payment = pay(api, pm, 2000, capture_method="manual")
    now = timezone.now()
    move_events(payment["id"], now - dt.timedelta(days=2))
    ok(api.post(f"/v1/payments/{payment['id']}/capture", {"amount_to_capture": 1000}))
    move_events(payment["id"], now - dt.timedelta(days=1),
                types=["payment.capture_started", "payment.capture_succeeded"])
    ok(api.post("/v1/refunds", {"payment": payment["id"], "amount": 400}))

    by_day = {}
    for back in (2, 1, 0):
        day = today() - dt.timedelta(days=back)
        (report,) = report_build_day(day=day)
        by_day[back] = figures(report)
    assert by_day[2] == (1, 2000, 0, 0, 0, 0, 0, 0)
    assert by_day[1] == (0, 0, 1, 1000, 0, 0, 59, 941)  # 29 + 30
    assert by_day[0] == (0, 0, 0, 0, 1, 400, 0, -400)


@pytest.mark.django_db
def test_no_fee_schedule_means_no_fee(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant).update(fees={})
    pay(api, make_card(api), 1000)
    (report,) = report_build_day(day=today())
    assert (report.fees, report.net) == (0, 1000)


@pytest.mark.django_db
def test_a_merchant_with_nothing_booked_has_no_report(api, merchant):
    ok(api.post("/v1/payments", {"amount": 400, "currency": "USD",
                                 "payment_method": make_card(api)}))
    assert report_build_day(day=today()) == []
    assert SettlementReportDay.objects.get(day=today()).reports == 0


@pytest.mark.django_db
def test_the_daily_build_catches_up_missed_days_once(api, merchant, settings, fees):
    settings.SETTLEMENT_REPORT_CATCH_UP_DAYS = 3
    settings.SETTLEMENT_REPORT_DELAY_SECONDS = 600
    pm = make_card(api)
    now = noon_today()
    for back in (1, 2, 5):  # 5 days back: past the catch-up window
        payment = pay(api, pm, 1000 * back)
        move_events(payment["id"], now - dt.timedelta(days=back))
    pay(api, pm, 77)  # today: not over yet

    assert reports_build_due(now=now) == {"days_built": 3, "reports": 2}
    assert sorted(SettlementReportDay.objects.values_list("day", flat=True)) == [
        today() - dt.timedelta(days=back) for back in (3, 2, 1)]
    assert sorted(SettlementReport.objects.values_list("day", "amount_captured")) == [
        (today() - dt.timedelta(days=2), 2000), (today() - dt.timedelta(days=1), 1000)]
    assert reports_build_due(now=now) == {"days_built": 0, "reports": 0}
    assert build_settlement_reports.apply().get()["days_built"] == 0


def test_a_day_is_built_once_it_has_been_over_for_the_delay(settings):
    from payments.services.reports import last_reportable_day

    settings.SETTLEMENT_REPORT_DELAY_SECONDS = 600
    midnight = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert last_reportable_day(midnight + dt.timedelta(minutes=9)) == dt.date(2026, 2, 28)
    assert last_reportable_day(midnight + dt.timedelta(minutes=10)) == dt.date(2026, 3, 1)


@pytest.mark.django_db(transaction=True)
def test_two_builds_at_once_build_each_day_once(api, merchant, settings, fees):
    settings.SETTLEMENT_REPORT_CATCH_UP_DAYS = 4
    pm = make_card(api)
    now = noon_today()
    for back in (1, 2, 3):
        move_events(pay(api, pm, 500 * back)["id"], now - dt.timedelta(days=back))

    results = in_threads(3, lambda i: reports_build_due(now=now))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["days_built"] for r in results) == 4
    assert sum(r["reports"] for r in results) == 3
    assert SettlementReport.objects.count() == 3
    assert SettlementReportDay.objects.count() == 4


# --- the API ---------------------------------------------------------------------------------
@pytest.fixture
def built(merchant, day_of_payments):
    return {r.currency: r for r in report_build_day(day=today())}


@pytest.mark.django_db
def test_list_retrieve_and_csv(api, built):
    usd = built["USD"]
    page = ok(api.get("/v1/reports"))
    assert page["object"] == "list" and page["has_more"] is False
    assert {r["currency"] for r in page["data"]} == {"USD", "EUR"}
    body = ok(api.get(f"/v1/reports/{usd.id}"))
    assert body == {"id": usd.id, "object": "settlement_report", "day": today().isoformat(),
                    "currency": "USD", "livemode": False, "built": int(usd.built_at.timestamp()),
                    **dict(zip(FIGURES, USD, strict=True))}
    assert body in page["data"]

    resp = api.get(f"/v1/reports/{usd.id}/csv")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "text/csv; charset=utf-8"
    assert resp["Content-Disposition"] == (
        f'attachment; filename="settlement_{today():%Y-%m-%d}_USD_{usd.id}.csv"')
    text = resp.content.decode()
    assert text == report_csv(usd)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["id", "day", "currency", "livemode", *FIGURES],
        [usd.id, today().isoformat(), "USD", "false", *map(str, USD)],
    ]
    # Accept: text/csv is fine; an Accept excluding both is 406 in the error shape
    assert api.get(f"/v1/reports/{usd.id}/csv", headers={"Accept": "text/csv"}
                   ).status_code == 200
    assert_error(api.get(f"/v1/reports/{usd.id}/csv", headers={"Accept": "image/png"}), 406,
                 "invalid_request_error", "not_acceptable")


@pytest.mark.django_db
def test_list_filters_and_pages(api, merchant, built):
    older = SettlementReport.objects.create(
        merchant=merchant, livemode=False, day=today() - dt.timedelta(days=3), currency="USD",
        payments_count=1, amount_authorized=10, built_at=timezone.now())

    def ids(params):
        return [r["id"] for r in ok(api.get("/v1/reports", params))["data"]]

    newest_first = ids({})
    assert newest_first[-1] == older.id and len(newest_first) == 3
    assert ids({"currency": "usd"}) == [built["USD"].id, older.id]
    assert ids({"day[lte]": (today() - dt.timedelta(days=1)).isoformat()}) == [older.id]
    assert set(ids({"day[gte]": today().isoformat()})) == {built["USD"].id, built["EUR"].id}
    assert ids({"day[gte]": today().isoformat(), "day[lte]": today().isoformat(),
                "currency": "EUR"}) == [built["EUR"].id]
    # cursor pages walk the same order
    walked, cursor = [], None
    while True:
        page = ok(api.get("/v1/reports", {"limit": 1, **(
            {"starting_after": cursor} if cursor else {})}))
        walked += [r["id"] for r in page["data"]]
        if not page["has_more"]:
            break
        cursor = walked[-1]
    assert walked == newest_first


@pytest.mark.django_db
@pytest.mark.parametrize("params,param", [
    ({"day[gte]": "2026-02-30"}, "day[gte]"),
    ({"day[lte]": "yesterday"}, "day[lte]"),
    ({"day[gte]": "2026-1-01"}, "day[gte]"),
    ({"currency": "US"}, "currency"),
    ({"limit": "0"}, "limit"),
    ({"merchant": "mer_x"}, "merchant"),
])
def test_invalid_list_parameters_are_400(api, params, param):
    assert_invalid(api.get("/v1/reports", params), param=param)


@pytest.mark.django_db
def test_another_merchants_reports_are_404_and_unlisted(api, other_api, live_api, built):
    usd = built["USD"]
    for client in (other_api, live_api):  # another merchant; this merchant's live mode
        assert ok(client.get("/v1/reports"))["data"] == []
        assert_error(client.get(f"/v1/reports/{usd.id}"), 404, "invalid_request_error",
                     "resource_missing")
        assert_error(client.get(f"/v1/reports/{usd.id}/csv"), 404, "invalid_request_error",
                     "resource_missing")
    assert_error(api.get("/v1/reports/rpt_nope/csv"), 404, "invalid_request_error",
                 "resource_missing")
    assert_invalid(api.get(f"/v1/reports/{usd.id}/csv", {"x": "1"}), param="x")
