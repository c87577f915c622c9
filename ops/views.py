"""Liveness (the process answers) and readiness (its database, cache and broker answer)."""

from __future__ import annotations

import logging

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)

# How long the broker check may take: connecting and one round trip.
BROKER_TIMEOUT_SECONDS = 2


def liveness(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readiness(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "cache": _cache(), "broker": _broker()}
    # "ok", or a note that the check does not apply here (the embedded default's eager
    # Celery has no broker); anything else is a failure
    failing = [name for name, value in checks.items() if value == "unavailable"]
    body: dict[str, object] = {"status": "unavailable" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        _unavailable("database", exc)
        return "unavailable"


def _cache() -> str:
    try:
        cache.set("readiness-probe", "1", 5)
        return "ok" if cache.get("readiness-probe") == "1" else "unavailable"
    except Exception as exc:  # noqa: BLE001
        _unavailable("cache", exc)
        return "unavailable"


def _broker() -> str:
    """Connect to the broker of the project's Celery app (never Celery's default app, whose
    amqp://localhost may well answer) and make one round trip, within a short timeout."""
    from workers.celery import app

    if app.conf.task_always_eager and app.conf.broker_url.startswith("memory://"):
        return "not used (tasks run eagerly in this process)"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=BROKER_TIMEOUT_SECONDS)
            client = getattr(conn.default_channel, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()  # Redis: a round trip on the channel's own connection
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        _unavailable("broker", exc)
        return "unavailable"


def _unavailable(what: str, exc: Exception) -> None:
    # one line per failed probe (orchestrators probe every few seconds): no traceback
    logger.warning("readiness: %s unavailable: %s: %s", what, type(exc).__name__, exc)
