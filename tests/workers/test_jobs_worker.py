"""The cleanup and report jobs run by a real Celery worker process (the project's app, the
Redis broker at the test REDIS_URL, this test's database): an abandoned payment is expired
and the merchant gets its event, yesterday's settlement report is built, and each run is
logged with its counts."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from payments.models import Payment, PaymentEvent, SettlementReport, WebhookOutbox
from tests.conftest import make_card

from .processes import start_worker, stop
from .test_logging import _wait_for, _worker_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task: sent
def test_a_real_worker_expires_abandoned_payments_and_builds_reports(api, merchant, tmp_path):
    from workers.celery import app

    assert app.main == "switchyard" and app.conf.broker_url == settings.REDIS_URL
    pm = make_card(api)
    abandoned = api.post("/v1/payments", {"amount": 700, "currency": "USD",
                                          "payment_method": pm}).json()["id"]
    Payment.objects.filter(pk=abandoned).update(created_at=timezone.now() - dt.timedelta(days=2))
    paid = api.post("/v1/payments", {"amount": 1200, "currency": "EUR", "payment_method": pm,
                                     "confirm": True}).json()
    assert paid["status"] == "succeeded"
    yesterday = timezone.now() - dt.timedelta(days=1)
    PaymentEvent.objects.filter(payment_id=paid["id"]).update(created_at=yesterday)

    queue = f"test-jobs-{uuid.uuid4().hex[:12]}"  # ours alone: no other message runs
    log = tmp_path / "worker.log"
    # (no delay: yesterday is reportable even just after midnight)
    proc = start_worker(queue, log, env={**_worker_env(), "SETTLEMENT_REPORT_DELAY_SECONDS": "0"})
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), 60, "worker ready", proc, log)
        app.send_task("switchyard.cleanup.expire_payments", queue=queue)
        app.send_task("switchyard.reports.build_settlement_reports", queue=queue)

        def expired() -> bool:
            return Payment.objects.get(pk=abandoned).status == "canceled"
        _wait_for(expired, 60, "the payment to expire", proc, log)
        _wait_for(lambda: SettlementReport.objects.exists(), 60, "the report", proc, log)
        _wait_for(lambda: b"job switchyard.reports.build_settlement_reports ok" in
                  log.read_bytes(), 30, "the report job's log line", proc, log)
    finally:
        stop(proc)

    payment = Payment.objects.get(pk=abandoned)
    assert payment.cancellation_reason == "abandoned"
    assert WebhookOutbox.objects.filter(object_id=abandoned, type="payment.canceled").count() == 1
    report = SettlementReport.objects.get()
    assert (report.merchant_id, report.currency, report.day) == (
        merchant.id, "EUR", yesterday.astimezone(dt.UTC).date())
    assert (report.payments_count, report.amount_captured) == (1, 1200)
    output = log.read_text(errors="replace")
    assert "job switchyard.cleanup.expire_payments ok in " in output
    assert "expired=1" in output
    assert "days_built=" in output and "reports=1" in output
