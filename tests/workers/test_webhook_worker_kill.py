"""A worker killed -9 in the middle of a merchant-webhook delivery loses nothing.

A real Celery worker process (the project's app, the Redis broker at the test REDIS_URL, this
test's database) runs the relay task against a receiver that takes the request and holds its
answer. Once the request is in flight, the worker is killed -9. The delivery is still pending
(neither lost nor marked delivered), held by the dead worker's lease; once the lease runs out
it is sent again and acknowledged: the receiver has seen the same event twice (at least once).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from payments.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt
from payments.services.webhook_delivery import deliver_due
from tests.webhooks import Receiver, Reply, make_endpoint, make_event

from .processes import start_worker
from .test_logging import _wait_for, _worker_env

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 2  # short, so that the test's own sender finds it due again soon


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    server = Receiver()
    yield server
    server.close()  # (releases a held request too)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task: sent
def test_a_worker_killed_mid_delivery_loses_nothing(merchant, receiver, tmp_path, settings):
    from workers.celery import app

    assert app.main == "switchyard" and app.conf.broker_url == settings.REDIS_URL
    release = threading.Event()
    receiver.plan("/hooks", Reply(200, hold=release))  # the first request hangs; then 200s
    endpoint = make_endpoint(merchant, receiver.url())
    event = make_event(merchant)

    queue = f"test-webhooks-{uuid.uuid4().hex[:12]}"  # ours alone: no other message runs
    log = tmp_path / "worker.log"
    env = {**_worker_env(), "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
           "WEBHOOK_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
           # the send must not time out on its own before the kill
           "WEBHOOK_TIMEOUT_SECONDS": "60"}
    proc = start_worker(queue, log, env=env)
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), 60, "worker ready", proc, log)
        app.send_task("switchyard.webhooks.relay_events", queue=queue)
        _wait_for(lambda: len(receiver.requests) == 1, 60, "the request in flight", proc, log)
        delivery = WebhookDelivery.objects.get(endpoint=endpoint, event=event)
        # claimed: leased (next_attempt_at pushed a lease past the claim), still pending
        assert delivery.status == DeliveryStatus.PENDING
        assert (delivery.next_attempt_at - delivery.first_attempt_at).total_seconds() == \
            LEASE_SECONDS
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool process, mid-send
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        release.set()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING  # not lost, not marked delivered
    assert delivery.attempts == 0 and delivery.completed_at is None
    assert not WebhookDeliveryAttempt.objects.exists()

    # another sender: nothing until the dead worker's lease runs out, then it sends again
    deadline = time.monotonic() + 60
    while deliver_due() == 0:
        assert time.monotonic() < deadline, "the delivery never became due again"
        time.sleep(0.2)

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 1
    assert [r.json()["id"] for r in receiver.requests] == [event.event_id] * 2
    assert WebhookDeliveryAttempt.objects.get().status_code == 200
