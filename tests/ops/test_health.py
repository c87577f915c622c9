import pytest

from ops.logging import scrub


@pytest.mark.django_db
def test_liveness_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readiness_reports_a_broken_cache(client, monkeypatch):
    from django.core.cache import cache

    def broken(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr(cache, "set", broken)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["cache"] == "unavailable"


def test_scrub_masks_card_numbers_only():
    assert "4242424242424242" not in scrub("card 4242424242424242 declined")
    assert "4242 4242 4242 4242" not in scrub("card 4242 4242 4242 4242")
    # fails Luhn: not a card number, and masking it would make the message lie
    assert scrub("limit 137438953472") == "limit 137438953472"
    assert scrub("order 12345678901 shipped") == "order 12345678901 shipped"  # 11 digits


@pytest.mark.django_db
def test_readiness_names_an_unreachable_broker(client, monkeypatch):
    """Our Celery app's broker (not Celery's default app, whose amqp://localhost may well
    answer) is pinged; unreachable, /readyz is 503 and says which check failed."""
    from workers.celery import app

    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"database": "ok", "cache": "ok", "broker": "unavailable"}
    assert body["failing"] == ["broker"]


@pytest.mark.django_db
def test_readiness_in_the_embedded_default_says_there_is_no_broker(client, monkeypatch):
    from workers.celery import app

    monkeypatch.setitem(app.conf, "broker_url", "memory://")
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["broker"] == "not used (tasks run eagerly in this process)"


def test_readiness_in_a_fresh_embedded_default_process(tmp_path):
    """`make run`'s settings (no DATABASE_URL, no REDIS_URL: SQLite, local memory, eager
    Celery with the memory broker) in a fresh process: ready, the broker not used."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL",
                        "CELERY_TASK_ALWAYS_EAGER")}
    env.update(DJANGO_SETTINGS_MODULE="settings.base", SECRET_KEY="x" * 50,
               VAULT_KEYS="k1=dGVzdC1vbmx5LXZhdWx0LWtleS1vbmUtMzJieXRlcyE=",
               VAULT_ACTIVE_KEY="k1", FINGERPRINT_KEY="f", LOG_LEVEL="ERROR")
    code = (
        "import django, json\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        f"settings.DATABASES['default']['NAME'] = {str(tmp_path / 'db.sqlite3')!r}\n"
        "from django.test import Client\n"
        "r = Client(HTTP_HOST='localhost').get('/readyz')\n"
        "print(json.dumps([r.status_code, r.json(), settings.DATABASES['default']['ENGINE']]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    status, body, engine = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == 200, body
    assert body["checks"] == {"database": "ok", "cache": "ok",
                              "broker": "not used (tasks run eagerly in this process)"}
    # django-prometheus' wrapper of the SQLite backend
    assert engine == "django_prometheus.db.backends.sqlite3"
