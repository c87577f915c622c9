"""Periodic jobs. Each task is a thin wrapper around one service, run through the job wrapper
(workers/jobs.py: logged with its counts and duration, counted in Prometheus, retried with
exponential back-off and jitter, bounded). docs/architecture/worker.md lists each task's
queue, schedule, retry policy and failure mode."""

from __future__ import annotations

from typing import Any

from workers.jobs import job


@job("switchyard.cleanup.purge_idempotency_keys", retry_backoff=60.0)
def purge_idempotency_keys() -> int:
    from payments.services.idempotency import purge_expired
    from payments.services.payment_methods import payment_methods_erase_stale_cvcs

    payment_methods_erase_stale_cvcs()  # the same hourly cleanup of what must not be kept
    return purge_expired()


# Jobs that beat sends every few seconds retry soon and little: the next scheduled run is
# as good as a retry.
@job("switchyard.providers.probe_accounts", ignore_result=True, max_retries=2,
     retry_backoff=5.0, retry_backoff_max=20.0)
def probe_accounts() -> int:
    from providers.health import probe_all

    return probe_all()


@job("switchyard.payments.sync_unknown_outcomes", ignore_result=True, max_retries=2,
     retry_backoff=2.0, retry_backoff_max=10.0)
def sync_unknown_outcomes() -> int:
    """Ask providers about due unknown outcomes (claims rows with SKIP LOCKED, so any number
    of workers can run it at once)."""
    from payments.services.status_sync import sync_due

    return sync_due()


@job("switchyard.webhooks.relay_events", ignore_result=True, acks_late=True,
     reject_on_worker_lost=True, max_retries=2, retry_backoff=1.0, retry_backoff_max=5.0)
def relay_events() -> int:
    """Fan new merchant events out into deliveries, then send the due deliveries (both claim
    rows with SKIP LOCKED; a delivery is leased before it is sent, so a worker killed mid-send
    loses nothing: it is sent again once the lease runs out). Returns how many were sent."""
    from payments.services.webhook_delivery import deliver_due
    from payments.services.webhook_relay import relay_due

    relay_due()
    return deliver_due()


@job("switchyard.cleanup.expire_payments", retry_backoff=30.0)
def expire_payments() -> dict[str, int]:
    """Cancel payments left in requires_confirmation past PAYMENT_EXPIRE_AFTER_SECONDS."""
    from payments.services.cleanup import payments_expire_abandoned

    return {"expired": payments_expire_abandoned()}


@job("switchyard.cleanup.prune_retention", retry_backoff=60.0)
def prune_retention() -> dict[str, Any]:
    """Delete merchant events (with deliveries and attempts) and applied provider webhook
    events past their retention."""
    from dataclasses import asdict

    from payments.services.cleanup import retention_prune

    return asdict(retention_prune())


@job("switchyard.reports.build_settlement_reports", retry_backoff=60.0,
     retry_backoff_max=1800.0)
def build_settlement_reports(day: str | None = None) -> dict[str, int]:
    """Build the daily settlement reports of every day not built yet (up to yesterday), or
    rebuild `day` (YYYY-MM-DD) when given."""
    import datetime as dt

    from payments.services.reports import report_build_day, reports_build_due

    if day is not None:
        return {"days_built": 1,
                "reports": len(report_build_day(day=dt.date.fromisoformat(day)))}
    return reports_build_due()


@job("switchyard.stats.aggregate_provider_hours", retry_backoff=60.0, retry_backoff_max=600.0,
     ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def aggregate_provider_hours() -> dict[str, object]:
    """Hourly provider stats per account and hour (volume, outcomes, latency percentiles) and
    routing's priors. One transaction under an advisory lock: a second run at once skips, a
    run again recomputes the same numbers; a failed run rolls back whole and is retried with
    backoff (the job wrapper)."""
    from payments.services.provider_stats import provider_stats_aggregate

    run = provider_stats_aggregate()
    return {"skipped": run.skipped, "hours": run.hours, "rows": run.rows,
            "priors": run.priors}
# --- reconciliation (docs/operations/reconciliation.md) -------------------------------------
@job("switchyard.reconciliation.run_due", ignore_result=True, max_retries=2, retry_backoff=30.0)
def reconcile_due() -> int:
    """Send one `switchyard.reconciliation.run` per account and day that is due (over for
    RECONCILIATION_DELAY_HOURS, within RECONCILIATION_CATCH_UP_DAYS, not completed yet).
    Returns how many were sent."""
    from payments.services.reconciliation import due_runs

    due = due_runs()
    for account_id, day in due:
        reconcile_day.delay(account_id, day.isoformat())
    return len(due)


@job("switchyard.reconciliation.run", max_retries=5, retry_backoff=60.0,
     retry_backoff_max=960.0, acks_late=True, reject_on_worker_lost=True,
     soft_time_limit=600, time_limit=660)
def reconcile_day(account_id: str, day: str) -> str:
    """Reconcile one account's settlement report of one UTC day (`YYYY-MM-DD`). A report
    that cannot be read is retried with exponential back-off and jitter (about 1, 2, 4, 8, 16
    min); a worker killed mid-run leaves the run claimed until its lease runs out, then it is
    run again (the run row makes that safe)."""
    import datetime as dt

    from payments.services.reconciliation import reconciliation_run
    from providers.models import ProviderAccount

    account = ProviderAccount.objects.get(pk=account_id)
    return reconciliation_run(account=account, day=dt.date.fromisoformat(day)).status
