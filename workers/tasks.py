"""Periodic jobs. Each task is a thin wrapper around one service."""

from workers.celery import app


@app.task(name="switchyard.cleanup.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    from payments.services.idempotency import purge_expired

    return purge_expired()


@app.task(name="switchyard.providers.probe_accounts", ignore_result=True)
def probe_accounts() -> int:
    from providers.health import probe_all

    return probe_all()
