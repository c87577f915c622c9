"""Liveness (the process answers) and readiness (its database and cache answer)."""

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse


def liveness(request):
    return JsonResponse({"status": "ok"})


def readiness(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["database"] = "unavailable"
    try:
        cache.set("readiness-probe", "1", 5)
        checks["cache"] = "ok" if cache.get("readiness-probe") == "1" else "unavailable"
    except Exception:  # noqa: BLE001
        checks["cache"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)
