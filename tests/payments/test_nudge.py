"""The "sync now" nudge after an unknown outcome: it goes to the project's Celery app and
broker, and a broker that cannot take it never fails the request (issue #8, item 1)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from payments.services import nudge
from tests.conftest import make_card
from workers.celery import app

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
BROKER_DB = 9  # a Redis database no other test uses


def _use_broker(url: str) -> None:
    """Point the project's Celery app at `url`, dropping connections made to the old one."""
    app.conf.broker_url = url
    app._pool = None  # the connection and producer pools hold connections to the old one
    app.amqp._producer_pool = None


@pytest.fixture
def broker(settings):
    """Production-like sending (not eager, nudges on); restores the app's broker after."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.STATUS_SYNC_NUDGE = True
    before = app.conf.broker_url
    yield _use_broker
    _use_broker(before)


def _unknown_payment(api, key: str):
    return api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                     "provider": "stripe-sandbox",
                                     "payment_method": make_card(api, "4000000000000408")},
                    idempotency_key=key)


@pytest.mark.django_db(transaction=True)
def test_an_unknown_outcome_answers_202_when_the_broker_is_unreachable(api, broker, caplog):
    broker(UNREACHABLE)
    caplog.set_level(logging.WARNING, logger="payments.services.nudge")
    first = _unknown_payment(api, "nudge-broker-down")
    assert first.status_code == 202, first.json()
    assert first.json()["status"] == "unresolved"
    assert "nudge not enqueued" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_retry_with_the_same_key_replays_the_202(api, broker):
    broker(UNREACHABLE)
    pm = make_card(api, "4000000000000408")
    body = {"amount": 1050, "currency": "USD", "confirm": True, "provider": "stripe-sandbox",
            "payment_method": pm}
    first = api.post("/v1/payments", body, idempotency_key="nudge-replay")
    again = api.post("/v1/payments", body, idempotency_key="nudge-replay")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.django_db(transaction=True)
def test_the_nudge_reaches_the_projects_redis_broker(api, broker, settings):
    url = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    queue = redis.Redis.from_url(url)
    queue.flushdb()
    broker(url)
    try:
        assert _unknown_payment(api, "nudge-broker-up").status_code == 202
        raw = queue.lrange("payments", 0, -1)  # kombu's Redis transport: one list per queue
        assert [json.loads(m)["headers"]["task"] for m in raw] == [nudge.SYNC_TASK]
    finally:
        queue.flushdb()


def test_a_nudge_never_raises_when_the_broker_is_down(broker, caplog):
    broker(UNREACHABLE)
    caplog.set_level(logging.WARNING, logger="payments.services.nudge")
    nudge.nudge(0)  # logged, not raised
    assert "nudge not enqueued" in caplog.text


def test_a_web_process_sends_through_the_projects_celery_app():
    """Setting Django up (as gunicorn's wsgi does) makes our app Celery's current one, with
    the Redis broker: before, the default app reached for amqp://guest@localhost:5672."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.base",
           "REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": "test-only",
           "FINGERPRINT_KEY": "test-only", "VAULT_ACTIVE_KEY": "k1",
           "VAULT_KEYS": "k1=dGVzdC1vbmx5LXZhdWx0LWtleS1vbmUtMzJieXRlcyE="}
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    env.pop("CELERY_BROKER_URL", None)
    script = ("import settings.wsgi\nfrom celery import current_app as a\n"
              "print(a.main, a.conf.broker_url, a.conf.task_always_eager)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["switchyard", "redis://127.0.0.1:6379/0", "False"]
