"""The jobs run on schedule: a real `celery beat` process, on the project's schedule (each
entry made due every second: tests/workers/beat_app.py), sends every periodic task, and a real
worker runs each through the job wrapper; an abandoned payment is expired and yesterday's
settlement report built without anyone sending a task by hand."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
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
def test_beat_sends_every_periodic_job_and_a_worker_runs_it(api, merchant, tmp_path):
    from workers.celery import app

    assert app.conf.broker_url == settings.REDIS_URL
    pm = make_card(api)
    abandoned = api.post("/v1/payments", {"amount": 700, "currency": "USD",
                                          "payment_method": pm}).json()["id"]
    Payment.objects.filter(pk=abandoned).update(created_at=timezone.now() - dt.timedelta(days=2))
    paid = api.post("/v1/payments", {"amount": 1200, "currency": "EUR", "payment_method": pm,
                                     "confirm": True}).json()
    assert paid["status"] == "succeeded"
    PaymentEvent.objects.filter(payment_id=paid["id"]).update(
        created_at=timezone.now() - dt.timedelta(days=1))

    queue = f"test-beat-{uuid.uuid4().hex[:12]}"
    env = {**_worker_env(), "BEAT_TEST_QUEUE": queue, "SETTLEMENT_REPORT_DELAY_SECONDS": "0"}
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    worker = start_worker(queue, worker_log, env=env, concurrency=2)
    beat = None
    try:
        _wait_for(lambda: b"ready." in worker_log.read_bytes(), 60, "worker ready", worker,
                  worker_log)
        with beat_log.open("wb") as out:
            beat = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.workers.beat_app:app", "beat",
                 "--loglevel=INFO", "--max-interval=1",
                 "--schedule", str(tmp_path / "beat-schedule")],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        jobs = sorted(entry["task"] for entry in app.conf.beat_schedule.values()
                      if entry["task"] != "switchyard.providers.deliver_sandbox_webhooks")
        assert len(jobs) == 9  # every job of workers/tasks.py that beat sends
        for job in jobs:
            _wait_for(lambda job=job: f"job {job} ok in ".encode() in worker_log.read_bytes(),
                      90, f"{job} run from beat (beat log: {beat_log.read_text()[-2000:]})",
                      worker, worker_log)
        _wait_for(lambda: Payment.objects.get(pk=abandoned).status == "canceled", 30,
                  "the payment to expire", worker, worker_log)
        _wait_for(lambda: SettlementReport.objects.filter(currency="EUR").exists(), 30,
                  "yesterday's report", worker, worker_log)
    finally:
        if beat is not None:
            stop(beat)
        stop(worker)

    sent = beat_log.read_text(errors="replace")
    for job in jobs:
        assert "Sending due task" in sent and f"({job})" in sent, job
    assert WebhookOutbox.objects.filter(object_id=abandoned, type="payment.canceled").count() == 1
    report = SettlementReport.objects.get(currency="EUR")
    assert (report.merchant_id, report.amount_captured) == (merchant.id, 1200)
