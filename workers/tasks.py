"""Periodic jobs. Each task is a thin wrapper around one service."""

from django.db import DatabaseError

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


@app.task(name="switchyard.stats.aggregate_provider_hours", ignore_result=True, acks_late=True,
          reject_on_worker_lost=True, autoretry_for=(DatabaseError,), max_retries=3,
          retry_backoff=60, retry_backoff_max=600, retry_jitter=True)
def aggregate_provider_hours() -> dict[str, object]:
    """Hourly provider stats per account and hour (volume, outcomes, latency percentiles) and
    routing's priors. One transaction under an advisory lock: a second run at once skips, a
    run again recomputes the same numbers; a database error rolls back whole and is retried
    with backoff."""
    from payments.services.provider_stats import provider_stats_aggregate

    run = provider_stats_aggregate()
    return {"skipped": run.skipped, "hours": run.hours, "rows": run.rows,
            "priors": run.priors}
