"""The reconciliation job: which days are due, the beat entry, the tasks, and a run on a real
Celery worker process (our app, the Redis broker at the test REDIS_URL, this test's
database, the in-process sandboxes)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from payments.models import Discrepancy, Payment, ReconciliationRun
from payments.services.reconciliation import due_days, due_runs
from providers.models import ProviderAccount
from providers.sandboxes import ledger
from tests.conftest import pay

from .processes import start_worker, stop
from .test_logging import _wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_the_beat_runs_the_job_hourly_on_the_default_queue():
    from workers.celery import app

    entry = app.conf.beat_schedule["reconcile-settlements"]
    assert entry["task"] == "switchyard.reconciliation.run_due" and entry["schedule"] == 3600
    route = app.amqp.router.route({}, "switchyard.reconciliation.run")
    assert route["queue"].name == "default"
    assert "switchyard.reconciliation.run" in app.tasks


@pytest.mark.django_db
def test_due_days_are_the_past_days_not_completed_within_the_catch_up_window(merchant,
                                                                             settings):
    settings.RECONCILIATION_DELAY_HOURS, settings.RECONCILIATION_CATCH_UP_DAYS = 2, 3
    account = ProviderAccount.objects.get(merchant=merchant, name="adyen-sandbox")
    ProviderAccount.objects.filter(pk=account.pk).update(
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    account.refresh_from_db()
    now = dt.datetime(2026, 3, 10, 1, 30, tzinfo=dt.UTC)  # 9 March is over, not for 2 h yet
    assert due_days(account, now=now) == [dt.date(2026, 3, 6), dt.date(2026, 3, 7),
                                          dt.date(2026, 3, 8)]
    ReconciliationRun.objects.create(account=account, day=dt.date(2026, 3, 7),
                                     status="completed")
    ReconciliationRun.objects.create(account=account, day=dt.date(2026, 3, 8), status="failed")
    later = now + dt.timedelta(hours=1)  # now the 9th is due too
    assert due_days(account, now=later) == [dt.date(2026, 3, 7 - 0) + dt.timedelta(days=d)
                                            for d in (1, 2)]
    ProviderAccount.objects.filter(pk=account.pk).update(
        created_at=dt.datetime(2026, 3, 9, 12, tzinfo=dt.UTC))
    account.refresh_from_db()
    assert due_days(account, now=later) == [dt.date(2026, 3, 9)]  # not before it existed
    ProviderAccount.objects.filter(merchant=merchant).exclude(pk=account.pk).update(
        enabled=False)
    assert due_runs(now=later) == [(account.id, dt.date(2026, 3, 9))]


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_the_job_sends_a_run_per_due_day_and_each_reconciles_it(api, merchant, settings):
    """Eager (the embedded default): run_due sends yesterday's run, which reconciles it."""
    from workers.tasks import reconcile_due

    settings.RECONCILIATION_DELAY_HOURS = 0
    ProviderAccount.objects.filter(merchant=merchant).update(
        created_at=timezone.now() - dt.timedelta(days=30))
    ProviderAccount.objects.filter(merchant=merchant).exclude(name="stripe-sandbox").update(
        enabled=False)
    paid = pay(api, provider="stripe-sandbox", amount=800).json()
    payment = Payment.objects.get(pk=paid["id"])
    yesterday = timezone.now() - dt.timedelta(days=1)
    Payment.objects.filter(pk=payment.pk).update(created_at=yesterday)
    payment.attempts.update(created_at=yesterday)
    from providers.sandboxes.models import SandboxCharge
    SandboxCharge.objects.update(created_at=yesterday)

    sent = reconcile_due.delay().get()

    assert sent == settings.RECONCILIATION_CATCH_UP_DAYS
    runs = ReconciliationRun.objects.filter(status="completed")
    assert runs.count() == sent
    day = yesterday.astimezone(dt.UTC).date()
    assert runs.get(day=day).matched == 1
    assert not Discrepancy.objects.exists()
    assert reconcile_due.delay().get() == 0  # all done: nothing due until tomorrow


@pytest.mark.django_db
def test_the_command_reconciles_one_account_and_day(api, merchant, capsys):
    account = ProviderAccount.objects.get(merchant=merchant, name="checkout-sandbox")
    pay(api, provider="checkout-sandbox", amount=900)
    today = timezone.now().astimezone(dt.UTC).date().isoformat()
    call_command("reconcile", "--account", account.id, "--day", today)
    out = capsys.readouterr().out
    assert f"{account.id} {today}: completed, 1 lines, 1 matched, 0 settled, 0 open" in out


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task: sent
def test_a_real_worker_reconciles_a_day(api, merchant, tmp_path, settings):
    from workers.celery import app

    assert app.main == "switchyard" and app.conf.broker_url == settings.REDIS_URL
    account = ProviderAccount.objects.get(merchant=merchant, name="adyen-sandbox")
    pay(api, provider="adyen-sandbox", amount=1200)
    stranger = ledger.plant_unrecorded_charge(
        "adyen", merchant_account=account.get_credentials()["merchant_account"],
        amount=3300, currency="EUR")
    day = timezone.now().astimezone(dt.UTC).date()

    queue = f"test-reconciliation-{uuid.uuid4().hex[:12]}"  # ours alone
    log = tmp_path / "worker.log"
    proc = start_worker(queue, log, pool="solo")
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), 60, "worker ready", proc, log)
        app.send_task("switchyard.reconciliation.run", args=[account.id, day.isoformat()],
                      queue=queue)
        _wait_for(lambda: ReconciliationRun.objects.filter(
            account=account, day=day, status="completed").exists(), 60,
            "the run to complete", proc, log)
        _wait_for(lambda: b"reconciled " in log.read_bytes(), 10, "the task's log line",
                  proc, log)
    finally:
        stop(proc)

    run = ReconciliationRun.objects.get(account=account, day=day)
    assert (run.lines, run.matched, run.open_discrepancies) == (2, 1, 1)
    [discrepancy] = Discrepancy.objects.all()
    assert discrepancy.kind == "only_theirs"
    assert discrepancy.theirs["provider_reference"] == stranger.provider_reference
