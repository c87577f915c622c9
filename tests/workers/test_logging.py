"""Worker logs scrub card numbers as web logs do (issue #8, #12), and carry the id of the
request that queued the task (issue #12).

Celery's own logging set-up empties the root logger's handlers and installs its own, which
had no card-number scrubber: a worker once printed a card number in clear. The worker now
logs through the project's LOGGING config. Shown against a real worker process (our app, the
Redis broker at the test REDIS_URL) running a real task, and in-process through the worker's
own logging set-up.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from providers.sandboxes.models import SandboxNotification, SandboxWebhookEndpoint

from .processes import start_worker, stop, wait_for, worker_env

CARD = "4242424242424242"
ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60


_worker_env, _wait_for = worker_env, wait_for  # (other worker tests import them from here)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task: sent
def test_a_real_worker_running_a_real_task_does_not_log_a_card_number(tmp_path):
    assert settings.CELERY_BROKER_URL.startswith("redis://"), settings.CELERY_BROKER_URL
    # A sandbox webhook endpoint whose URL carries a card number (a merchant pasted one into
    # a path): delivery fails (nothing listens on port 9), and the task logs the URL.
    endpoint = SandboxWebhookEndpoint.objects.create(
        provider="adyen", merchant_account="ShopECOM",
        url=f"http://127.0.0.1:9/hooks/{CARD}", hmac_key="00" * 32)
    notification = SandboxNotification.objects.create(
        endpoint=endpoint, body="{}", event_code="AUTHORISATION",
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1))

    queue = f"test-logging-{uuid.uuid4().hex[:12]}"  # ours alone: no other message runs
    log = tmp_path / "worker.log"
    proc = start_worker(queue, log)
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), STARTUP_SECONDS, "worker ready",
                  proc, log)
        from workers.celery import app

        # our app and its Redis broker, not Celery's default amqp://localhost:5672
        assert app.main == "switchyard"
        assert app.conf.broker_url == settings.REDIS_URL
        app.send_task("switchyard.providers.deliver_sandbox_webhooks", queue=queue)

        def delivered_once() -> bool:
            notification.refresh_from_db()
            return notification.attempts == 1
        _wait_for(delivered_once, 30, "the task to run", proc, log)
        _wait_for(lambda: b"retry in" in log.read_bytes(), 10, "the task's log line", proc,
                  log)
    finally:
        stop(proc)

    output = log.read_text(errors="replace")
    # the banner names the app and the broker the worker really used
    assert ".> app:         switchyard:" in output, output
    assert "transport:   redis://" in output and settings.REDIS_URL.split("@")[-1].split(
        "://")[-1] in output, output
    line = next(line for line in output.splitlines() if "retry in" in line)
    assert "sandbox webhook AUTHORISATION to http://127.0.0.1:9/hooks/[redacted]" in line
    assert CARD not in output
    assert notification.last_status == "ConnectError"


def test_the_workers_logging_setup_keeps_the_scrubber(monkeypatch):
    """In-process, through the worker's own set-up path (`app.log.setup`)."""
    from workers.celery import app

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr(app.log, "already_setup", False)
    monkeypatch.setitem(app.conf, "worker_redirect_stdouts", False)  # keep pytest's stdout
    monkeypatch.setattr(sys, "stderr", stream)  # where the console handler will write
    try:
        app.log.setup(loglevel=logging.INFO)
        logging.getLogger("workers.test").info("charging card %s", CARD)
        logging.getLogger("celery.task.test").warning("card %s in a task logger", CARD)
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    output = stream.getvalue()
    assert CARD not in output
    assert "charging card [redacted]" in output
    assert "card [redacted] in a task logger" in output


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task: sent
def test_a_task_queued_in_a_request_logs_that_requests_id_in_json(tmp_path):
    """A real worker with LOG_FORMAT=json (production's format): the task a request queued
    writes JSON lines carrying the request's id and the task's id and name, scrubbed."""
    import json

    from django.http import HttpResponse
    from django.test import RequestFactory

    from ops.request_id import RequestIdMiddleware

    endpoint = SandboxWebhookEndpoint.objects.create(
        provider="adyen", merchant_account="ShopECOM",
        url=f"http://127.0.0.1:9/hooks/{CARD}", hmac_key="00" * 32)
    notification = SandboxNotification.objects.create(
        endpoint=endpoint, body="{}", event_code="AUTHORISATION",
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1))

    queue = f"test-json-logs-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    env = _worker_env()
    env["LOG_FORMAT"] = "json"
    proc = start_worker(queue, log, env=env)
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), STARTUP_SECONDS, "worker ready",
                  proc, log)
        from workers.celery import app

        sent = []

        def view(request):  # a request that queues a task, as a nudge does
            sent.append(app.send_task("switchyard.providers.deliver_sandbox_webhooks",
                                      queue=queue))
            return HttpResponse("queued")

        response = RequestIdMiddleware(view)(
            RequestFactory().get("/", HTTP_X_REQUEST_ID="req-from-the-edge-7"))
        assert response["X-Request-Id"] == "req-from-the-edge-7"

        def delivered_once() -> bool:
            notification.refresh_from_db()
            return notification.attempts == 1
        _wait_for(delivered_once, 30, "the task to run", proc, log)
        _wait_for(lambda: b"retry in" in log.read_bytes(), 10, "the task's log line", proc,
                  log)
    finally:
        stop(proc)

    output = log.read_text(errors="replace")
    assert CARD not in output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    task_line = next(r for r in records if "retry in" in r["message"])
    assert task_line["request_id"] == "req-from-the-edge-7"
    assert task_line["task_id"] == sent[0].id
    assert task_line["task_name"] == "switchyard.providers.deliver_sandbox_webhooks"
    assert task_line["level"] == "INFO"
    assert task_line["logger"] == "providers.sandboxes.webhooks"
    assert "hooks/[redacted]" in task_line["message"]
    # Celery's own lines about the task are JSON with the id too ("... succeeded in ...")
    done = next(r for r in records if "succeeded in" in r["message"])
    assert done["request_id"] == "req-from-the-edge-7"
    assert set(task_line) >= {"time", "level", "logger", "message"}
