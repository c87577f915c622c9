"""The job wrapper (workers/jobs.py): each run logged with its counts and duration, counted
in Prometheus by outcome, retried with a bounded exponential back-off with jitter."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from workers import jobs
from workers.celery import app
from workers.tasks import (
    aggregate_provider_hours,
    build_settlement_reports,
    expire_payments,
    probe_accounts,
    prune_retention,
    purge_idempotency_keys,
    reconcile_due,
    relay_events,
    sync_unknown_outcomes,
)

JOB = "switchyard.cleanup.expire_payments"


def runs(job: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("switchyard_job_runs_total",
                                     {"job": job, "outcome": outcome}) or 0.0


def observed(job: str) -> float:
    return REGISTRY.get_sample_value("switchyard_job_duration_seconds_count", {"job": job}) or 0.0


class Flaky:
    """A service that raises `failures` times, then returns `result`."""

    def __init__(self, failures: int, result=3):
        self.failures = failures
        self.result = result
        self.calls = 0

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"database went away (call {self.calls})")
        return self.result


@pytest.fixture
def backoffs(monkeypatch):
    """The waits the wrapper chose for its retries."""
    chosen = []
    real = jobs.backoff_seconds

    def spy(retries, *, base, maximum):
        wait = real(retries, base=base, maximum=maximum)
        chosen.append((retries, base, maximum, wait))
        return wait
    monkeypatch.setattr(jobs, "backoff_seconds", spy)
    return chosen


def test_a_failing_service_is_retried_with_backoff_and_counted(monkeypatch, backoffs, caplog):
    flaky = Flaky(failures=2)
    monkeypatch.setattr("payments.services.cleanup.payments_expire_abandoned", flaky)
    before = {o: runs(JOB, o) for o in ("ok", "retried", "failed")}
    durations = observed(JOB)

    with caplog.at_level(logging.INFO, logger="workers.jobs"):
        result = expire_payments.apply()

    assert result.get() == {"expired": 3} and flaky.calls == 3
    assert runs(JOB, "retried") - before["retried"] == 2
    assert runs(JOB, "ok") - before["ok"] == 1
    assert runs(JOB, "failed") == before["failed"]
    assert observed(JOB) - durations == 3  # every run measured, failed ones too
    # retry n waits between half and all of base * 2^(n-1)
    assert [(r, b) for r, b, _, _ in backoffs] == [(0, 30.0), (1, 30.0)]
    assert 15.0 <= backoffs[0][3] <= 30.0 and 30.0 <= backoffs[1][3] <= 60.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(r.outcome == "retried" for r in warnings)
    assert "ConnectionError" in warnings[0].getMessage() and "retry in" in warnings[0].getMessage()


def test_retries_are_bounded_then_the_run_fails(monkeypatch, backoffs, caplog):
    flaky = Flaky(failures=100)
    monkeypatch.setattr("payments.services.cleanup.payments_expire_abandoned", flaky)
    before = {o: runs(JOB, o) for o in ("ok", "retried", "failed")}

    with caplog.at_level(logging.INFO, logger="workers.jobs"), \
            pytest.raises(ConnectionError):
        expire_payments.apply()

    assert expire_payments.max_retries == 3
    assert flaky.calls == 4  # the first try and three retries
    assert runs(JOB, "retried") - before["retried"] == 3
    assert runs(JOB, "failed") - before["failed"] == 1
    assert runs(JOB, "ok") == before["ok"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].outcome == "failed"
    assert "no retry left" in errors[0].getMessage()


def test_a_run_is_logged_with_its_counts_and_duration(monkeypatch, caplog):
    monkeypatch.setattr("payments.services.cleanup.payments_expire_abandoned",
                        Flaky(failures=0, result=7))
    with caplog.at_level(logging.INFO, logger="workers.jobs"):
        assert expire_payments.apply().get() == {"expired": 7}
    (record,) = [r for r in caplog.records if r.name == "workers.jobs"]
    assert record.levelno == logging.INFO
    assert record.job == JOB and record.outcome == "ok"
    assert record.counts == {"expired": 7}
    assert record.duration_seconds >= 0
    assert record.getMessage().startswith(f"job {JOB} ok in ")
    assert record.getMessage().endswith(": expired=7")


@pytest.mark.parametrize("retries,base,maximum,low,high", [
    (0, 10.0, 600.0, 5.0, 10.0),
    (3, 10.0, 600.0, 40.0, 80.0),
    (10, 10.0, 600.0, 300.0, 600.0),  # capped
])
def test_backoff_has_equal_jitter_and_a_cap(retries, base, maximum, low, high):
    waits = {jobs.backoff_seconds(retries, base=base, maximum=maximum) for _ in range(200)}
    assert all(low <= w <= high for w in waits)
    assert len(waits) > 1  # jittered


def test_counts_of_what_services_return():
    from payments.services.cleanup import Pruned

    assert jobs.counts_of(4) == {"count": 4}
    assert jobs.counts_of(None) == {}
    assert jobs.counts_of({"expired": 2}) == {"expired": 2}
    assert jobs.counts_of(Pruned(events=1)) == {"events": 1, "deliveries": 0,
                                                "delivery_attempts": 0, "provider_events": 0}


def test_every_periodic_task_runs_in_the_wrapper_and_is_scheduled():
    tasks = [purge_idempotency_keys, probe_accounts, sync_unknown_outcomes, relay_events,
             expire_payments, prune_retention, build_settlement_reports,
             aggregate_provider_hours, reconcile_due]
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    for task in tasks:
        assert task.name in scheduled, task.name
        assert task.max_retries is not None and task.max_retries >= 1, task.name
        assert task.run.job_name == task.name  # made by jobs.job
    # the sandboxes' job (test double, its own app) is the one scheduled task outside it
    wrapped = {t.name for t in tasks}
    assert scheduled - wrapped == {"switchyard.providers.deliver_sandbox_webhooks"}
    for name in ("switchyard.cleanup.expire_payments", "switchyard.cleanup.prune_retention",
                 "switchyard.reports.build_settlement_reports",
                 "switchyard.stats.aggregate_provider_hours",
                 "switchyard.reconciliation.run_due"):
        assert app.amqp.router.route({}, name)["queue"].name == "default"
