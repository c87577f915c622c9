"""Periodic jobs. Each task is a thin wrapper around one service."""

from workers.celery import app


@app.task(name="switchyard.cleanup.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    from payments.services.idempotency import purge_expired
    from payments.services.payment_methods import payment_methods_erase_stale_cvcs

    payment_methods_erase_stale_cvcs()  # the same hourly cleanup of what must not be kept
    return purge_expired()


@app.task(name="switchyard.providers.probe_accounts", ignore_result=True)
def probe_accounts() -> int:
    from providers.health import probe_all

    return probe_all()


@app.task(name="switchyard.payments.sync_unknown_outcomes", ignore_result=True)
def sync_unknown_outcomes() -> int:
    """Ask providers about due unknown outcomes (claims rows with SKIP LOCKED, so any number
    of workers can run it at once)."""
    from payments.services.status_sync import sync_due

    return sync_due()


@app.task(name="switchyard.webhooks.relay_events", ignore_result=True, acks_late=True,
          reject_on_worker_lost=True)
def relay_events() -> int:
    """Fan new merchant events out into deliveries, then send the due deliveries (both claim
    rows with SKIP LOCKED; a delivery is leased before it is sent, so a worker killed mid-send
    loses nothing: it is sent again once the lease runs out). Returns how many were sent."""
    from payments.services.webhook_delivery import deliver_due
    from payments.services.webhook_relay import relay_due

    relay_due()
    return deliver_due()


# --- reconciliation (docs/operations/reconciliation.md) -------------------------------------
RECONCILIATION_RETRIES = 5  # a day whose report cannot be read is also caught up by run_due


@app.task(name="switchyard.reconciliation.run_due", ignore_result=True)
def reconcile_due() -> int:
    """Send one `switchyard.reconciliation.run` per account and day that is due (over for
    RECONCILIATION_DELAY_HOURS, within RECONCILIATION_CATCH_UP_DAYS, not completed yet).
    Returns how many were sent."""
    from payments.services.reconciliation import due_runs

    due = due_runs()
    for account_id, day in due:
        reconcile_day.delay(account_id, day.isoformat())
    return len(due)


@app.task(bind=True, name="switchyard.reconciliation.run", acks_late=True,
          reject_on_worker_lost=True, max_retries=RECONCILIATION_RETRIES,
          soft_time_limit=600, time_limit=660)
def reconcile_day(self, account_id: str, day: str) -> str:
    """Reconcile one account's settlement report of one UTC day (`YYYY-MM-DD`). A report
    that cannot be read is retried with exponential back-off and jitter (1, 2, 4, 8, 16 min);
    a worker killed mid-run leaves the run claimed until its lease runs out, then it is run
    again (the run row makes that safe)."""
    import datetime as dt
    import random

    from payments.services.reconciliation import ReconciliationFailed, reconciliation_run
    from providers.models import ProviderAccount

    account = ProviderAccount.objects.get(pk=account_id)
    try:
        return reconciliation_run(account=account, day=dt.date.fromisoformat(day)).status
    except ReconciliationFailed as exc:
        countdown = 60 * 2 ** self.request.retries
        raise self.retry(exc=exc, countdown=random.uniform(countdown / 2, countdown)) from exc
