"""/metrics (issue #12): who may read it, what it exposes, and that several processes add up.

The scrape is read as Prometheus reads it (the text format, parsed with prometheus_client's
parser); business gauges come from the database and Redis at scrape time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from payments import metrics as payment_metrics
from payments.models import Payment, WebhookDelivery, WebhookEndpoint
from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_for
from tests.conftest import pay
from tests.factories import merchant_event

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-metrics-token-0123456789"


def scrape(client: Client, **headers) -> dict[tuple[str, tuple], float]:
    resp = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert resp.status_code == 200, resp.content
    assert resp["Content-Type"].startswith("text/plain; version=")
    return samples(resp.content.decode())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# --- access ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_nobody_reads_metrics_when_neither_token_nor_allowlist_is_set(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403


@pytest.mark.django_db
def test_the_token_is_required_and_compared_exactly(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = TOKEN, []
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"switchyard_" not in missing.content
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer"):
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong).status_code == 401, wrong
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200
    assert b"switchyard_unresolved_payments" in ok.content


@pytest.mark.django_db
def test_the_allowlist_admits_addresses_and_networks_of_the_peer_only(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["10.1.0.0/16", "192.0.2.7"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.200.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.8").status_code == 403
    # a forwarded header is not the peer
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.1",
                      HTTP_X_FORWARDED_FOR="10.1.0.1").status_code == 403
    # with a token configured too, an address outside the list is asked for the token
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.1",
                      HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


# --- what it exposes -------------------------------------------------------------------------
@pytest.mark.django_db
def test_attempts_latency_and_django_metrics_after_real_payments(api, client, settings):
    settings.METRICS_TOKEN = TOKEN
    before = scrape(client)
    assert pay(api, "4242424242424242", provider="stripe-sandbox").status_code == 200
    declined = pay(api, "4000000000009995", provider="stripe-sandbox")  # insufficient funds
    assert declined.status_code == 402, declined.json()
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("switchyard_attempts_total", provider="stripe", outcome="approved",
                decline_code="") == 1
    assert grew("switchyard_attempts_total", provider="stripe", outcome="declined",
                decline_code="insufficient_funds") == 1
    assert grew("switchyard_provider_latency_seconds_count", provider="stripe",
                operation="authorize") == 2
    # django-prometheus: requests by view and status, and database queries
    assert grew("django_http_responses_total_by_status_view_method_total",
                status="402", view="payments.api.views.PaymentListView", method="POST") == 1
    assert grew("django_db_execute_total", alias="default", vendor="postgresql") > 0


def test_decline_codes_are_bounded_to_the_normalized_ones():
    assert payment_metrics.decline_code_label("insufficient_funds") == "insufficient_funds"
    assert payment_metrics.decline_code_label("stolen_card") == "stolen_card"
    assert payment_metrics.decline_code_label("51 : Insufficient funds") == "other"
    assert payment_metrics.decline_code_label("pay_123 whatever") == "other"
    assert payment_metrics.decline_code_label(None) == "other"
    assert "generic_decline" in payment_metrics.DECLINE_CODES
    assert len(payment_metrics.DECLINE_CODES) < 60


@pytest.mark.django_db
def test_business_gauges_are_read_at_scrape_time(client, settings, merchant):
    settings.METRICS_TOKEN = TOKEN
    empty = scrape(client)
    assert value(empty, "switchyard_unresolved_payments") == 0
    assert value(empty, "switchyard_unresolved_payment_oldest_age_seconds") == 0

    long_ago = time.time() - 3600
    for status in ("unresolved", "unresolved", "succeeded"):
        Payment.objects.create(merchant=merchant, livemode=False, amount=100, currency="USD",
                               status=status)
    from datetime import UTC, datetime

    Payment.objects.filter(status="unresolved").update(
        updated_at=datetime.fromtimestamp(long_ago, UTC))
    relayed = merchant_event(merchant)
    relayed.relayed_at = relayed.created_at
    relayed.save()
    pending_event = merchant_event(merchant)
    merchant_event(merchant)  # not relayed either
    endpoint = WebhookEndpoint.objects.create(merchant=merchant, livemode=False,
                                              url="https://example.com/hooks")
    WebhookDelivery.objects.create(event=pending_event, endpoint=endpoint)
    WebhookDelivery.objects.create(event=relayed, endpoint=endpoint, status="succeeded")
    WebhookDelivery.objects.filter(status="pending").update(
        created_at=datetime.fromtimestamp(long_ago, UTC))
    account = ProviderAccount.objects.get(merchant=merchant, name="adyen-sandbox")
    breaker_for(account).open()

    found = scrape(client)
    assert value(found, "switchyard_unresolved_payments") == 2
    assert 3600 <= value(found, "switchyard_unresolved_payment_oldest_age_seconds") < 3600 + 300
    assert value(found, "switchyard_outbox_backlog") == 2
    assert value(found, "switchyard_webhook_deliveries_pending") == 1
    assert 3600 <= value(found, "switchyard_webhook_delivery_oldest_pending_age_seconds") < 3900
    assert value(found, "switchyard_breaker_state", provider="adyen", account=account.id) == 2
    stripe = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    assert ("switchyard_breaker_state", (("account", stripe.id), ("provider", "stripe"))) \
        in found
    assert value(found, "switchyard_breaker_state", provider="stripe", account=stripe.id) == 0
    breaker_for(account).half_open()
    assert value(scrape(client), "switchyard_breaker_state", provider="adyen",
                 account=account.id) == 1


@pytest.mark.django_db
def test_a_scrape_survives_a_broken_source(client, settings, monkeypatch):
    """The database failing for one gauge leaves that gauge out, not the whole scrape."""
    from ops import metrics

    settings.METRICS_TOKEN = TOKEN

    def broken(self):
        raise RuntimeError("database down")

    monkeypatch.setattr(metrics.BusinessCollector, "_payments", broken)
    found = scrape(client)
    assert ("switchyard_unresolved_payments", ()) not in found
    assert ("switchyard_outbox_backlog", ()) in found


# --- several processes add up (multiprocess mode) -------------------------------------------
INCREMENT = r'''
import os, sys
import django
django.setup()
from payments import metrics
metrics.compensations.labels(provider=sys.argv[1]).inc(int(sys.argv[2]))
metrics.count_attempt(provider="adyen", outcome="declined", decline_code="lost_card")
print("counted", os.getpid(), flush=True)
if len(sys.argv) > 3:
    sys.stdin.readline()  # stay alive until told
'''


def _env(multiproc_dir: Path, **extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GUNICORN_") and k not in ("WEB_CONCURRENCY", "PORT")}
    env.update(
        DJANGO_SETTINGS_MODULE="settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir), METRICS_TOKEN=TOKEN, **extra)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.django_db
def test_gunicorn_workers_and_other_processes_add_up_in_one_scrape(tmp_path):
    """gunicorn with two workers and PROMETHEUS_MULTIPROC_DIR (as production runs it): a
    stale file of an earlier run is cleared when it starts; two other processes of the host
    (a Celery worker's pool, say) count into the same directory, one still running and one
    gone; one scrape of either gunicorn worker returns their sum and every request served."""
    metrics_dir = tmp_path / "metrics"
    # an earlier run's process: counted, then exited (its file must not survive a restart)
    subprocess.run([sys.executable, "-c", INCREMENT, "stale", "100"], cwd=ROOT, check=True,
                   env=_env(metrics_dir), capture_output=True, timeout=120)
    assert any(metrics_dir.glob("counter_*.db"))

    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py",
             "--bind", f"127.0.0.1:{port}", "settings.wsgi:application"],
            cwd=ROOT, env=_env(metrics_dir, WEB_CONCURRENCY="2", GUNICORN_THREADS="2"),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    alive = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        # the stale file is gone (the file of a dead pid)
        assert not [f for f in metrics_dir.glob("*.db") if "stale" in f.read_bytes().decode(
            "latin-1")]

        alive = subprocess.Popen([sys.executable, "-c", INCREMENT, "stripe", "3", "wait"],
                                 cwd=ROOT, env=_env(metrics_dir), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert alive.stdout.readline().startswith("counted")
        subprocess.run([sys.executable, "-c", INCREMENT, "stripe", "4"], cwd=ROOT,
                       check=True, env=_env(metrics_dir), capture_output=True, timeout=120)
        for _ in range(10):
            assert _get(f"{base}/healthz")[0] == 200

        status, text = _get(f"{base}/metrics")
        assert status == 200, text
        found = samples(text)
        assert value(found, "switchyard_compensations_total", provider="stripe") == 7
        assert value(found, "switchyard_compensations_total", provider="stale") == 0
        assert value(found, "switchyard_attempts_total", provider="adyen", outcome="declined",
                     decline_code="lost_card") == 2
        # every /healthz served, whichever worker served it (one wait-loop hit at least)
        healthz = value(found, "django_http_responses_total_by_status_view_method_total",
                        status="200", view="ops.views.liveness", method="GET")
        assert healthz >= 11
        assert _get(f"{base}/metrics", token=None)[0] == 401
    finally:
        if alive is not None:
            alive.stdin.close()
            alive.wait(timeout=30)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    pids = {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir.glob("*.db")}
    assert len(pids) >= 3, pids  # at least a gunicorn worker and the two other processes


def test_clear_dead_keeps_the_files_of_running_processes(tmp_path):
    from ops.prometheus_multiproc import clear_dead

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f"counter_{os.getpid()}.db", f"histogram_{dead.pid}.db",
                 f"gauge_livesum_{dead.pid}.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(clear_dead(str(tmp_path))) == [f"gauge_livesum_{dead.pid}.db",
                                                 f"histogram_{dead.pid}.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{os.getpid()}.db",
                                                          "notes.txt"]


@pytest.mark.django_db
def test_a_celery_worker_serves_its_pool_metrics_behind_the_same_rule(settings, tmp_path):
    """WORKER_METRICS_PORT: the worker's main process serves what its pool processes wrote
    into PROMETHEUS_MULTIPROC_DIR (here: one process that counted and exited), with the
    token rule of /metrics and without the business gauges (the web serves those)."""
    from ops import metrics

    metrics_dir = tmp_path / "metrics"
    subprocess.run([sys.executable, "-c", INCREMENT, "checkout", "5"], cwd=ROOT, check=True,
                   env=_env(metrics_dir), capture_output=True, timeout=120)
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = TOKEN, []
    calls = []

    def call(**environ):
        body = metrics.worker_app(
            {"PATH_INFO": "/metrics", "REMOTE_ADDR": "10.0.0.1", **environ},
            lambda status, headers: calls.append((status, dict(headers))))
        return calls[-1][0], b"".join(body).decode()

    assert call()[0] == "401 Unauthorized"
    assert calls[-1][1]["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert call(HTTP_AUTHORIZATION="Bearer nope")[0] == "401 Unauthorized"
    assert call(PATH_INFO="/other")[0] == "404 Not Found"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        status, text = call(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert status == "200 OK"
    found = samples(text)
    assert value(found, "switchyard_compensations_total", provider="checkout") == 5
    assert "switchyard_unresolved_payments" not in text

    port = metrics.serve_worker_metrics(port=0, address="127.0.0.1")
    assert _get(f"http://127.0.0.1:{port}/metrics", token=None)[0] == 401
    assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
