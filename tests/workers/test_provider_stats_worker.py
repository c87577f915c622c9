"""The hourly provider stats task on a real Celery worker (the project's app, the Redis broker
at the test REDIS_URL, this test's database), sent by name as beat sends it; and the worker
health check of docker-compose.yml (`celery inspect ping -d celery@<host>`) against it."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from payments.models import AttemptStatus, ProviderHourlyStats
from payments.services.provider_stats import HOUR, hour_start
from tests.factories import ProviderAccountFactory
from tests.payments.test_provider_stats import attempt

from .processes import start_worker, stop
from .test_logging import _wait_for, _worker_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task: sent
def test_the_beat_task_runs_on_a_worker_and_the_worker_answers_its_health_check(tmp_path):
    from workers.celery import app

    entry = app.conf.beat_schedule["aggregate-provider-stats"]
    assert entry["task"] == "switchyard.stats.aggregate_provider_hours"
    assert app.amqp.router.route({}, entry["task"])["queue"].name == "default"

    account = ProviderAccountFactory()
    last = hour_start(timezone.now()) - HOUR
    for i in range(3):
        attempt(account, AttemptStatus.CAPTURED, at=last + dt.timedelta(minutes=i),
                latency=10 * (i + 1))

    queue = f"test-stats-{uuid.uuid4().hex[:12]}"  # ours alone: no other message runs
    node = f"{queue}@{socket.gethostname()}"
    log = tmp_path / "worker.log"
    proc = start_worker(queue, log, pool="solo", hostname=node)
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), 60, "worker ready", proc, log)
        app.send_task(entry["task"], queue=queue)
        _wait_for(lambda: ProviderHourlyStats.objects.filter(provider_account=account).exists(),
                  60, "the stats row", proc, log)
        row = ProviderHourlyStats.objects.get(provider_account=account)
        assert (row.hour, row.attempts, row.approved, row.latency_p50_ms) == (last, 3, 3, 20)
        _wait_for(lambda: b"succeeded" in log.read_bytes(), 60, "the task's end", proc, log)

        # docker-compose.yml's worker health check, as the container's shell runs it
        ping = [sys.executable, "-m", "celery", "-A", "workers.celery:app", "inspect", "ping",
                "--timeout", "10"]
        alive = subprocess.run([*ping, "-d", node], cwd=ROOT, env=_worker_env(),
                               capture_output=True, text=True, timeout=120)
        assert alive.returncode == 0, alive.stdout + alive.stderr
        assert "pong" in alive.stdout
        nobody = subprocess.run([*ping, "-d", f"nobody-{queue}@{socket.gethostname()}",
                                 "--timeout", "2"], cwd=ROOT, env=_worker_env(),
                                capture_output=True, text=True, timeout=120)
        assert nobody.returncode != 0  # a worker that does not answer is unhealthy
    finally:
        stop(proc)
