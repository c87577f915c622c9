"""The embedded default (what `make run` serves): SQLite, no Redis, Celery eager. Run in a
subprocess so it really uses those settings, not the suite's Postgres and Redis."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_embedded(tmp_path, script: str, **settings: str) -> subprocess.CompletedProcess:
    """Migrate a fresh SQLite database and run `script` in `manage.py shell` on the embedded
    default's settings (plus `settings`, as environment variables)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "settings.base",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "SECRET_KEY": "test-only", "FINGERPRINT_KEY": "test-only", "VAULT_ACTIVE_KEY": "k1",
        "VAULT_KEYS": "k1=dGVzdC1vbmx5LXZhdWx0LWtleS1vbmUtMzJieXRlcyE=",
        **settings,
    })
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                   cwd=ROOT, env=env, check=True, timeout=120)
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


SCRIPT = r'''
import datetime as dt
from django.conf import settings
from django.utils import timezone
from payments.models import PaymentAttempt
from payments.services.merchants import merchant_create
from payments.services.payment_methods import payment_method_create
from payments.services.payments import payment_create
from payments.services import status_sync
from providers.sandboxes.models import SandboxCharge

merchant, _, _ = merchant_create(actor="test", name="Embedded", sandbox_accounts=True)
pm = payment_method_create(merchant=merchant, livemode=False, number="4000000000000408",
                           exp_month=12, exp_year=2034)
payment = payment_create(merchant=merchant, livemode=False, amount=700, currency="USD",
                         payment_method=pm, confirm=True)
print("after confirm:", payment.status)
settings.SANDBOX_DROP_WINDOW_SECONDS = 0  # later: the network has recovered
PaymentAttempt.objects.update(next_sync_at=timezone.now() - dt.timedelta(seconds=1))
status_sync.sync_due()
payment.refresh_from_db()
print("after sync:", payment.status, SandboxCharge.objects.count())
ok = payment_create(merchant=merchant, livemode=False, amount=700, currency="USD",
                    payment_method=payment_method_create(
                        merchant=merchant, livemode=False, number="4242424242424242",
                        exp_month=12, exp_year=2034), confirm=True)
print("approved:", ok.status)
'''


def test_embedded_default_runs_the_lifecycle_and_status_sync(tmp_path):
    result = run_embedded(tmp_path, SCRIPT, STATUS_SYNC_NUDGE="false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after confirm: unresolved" in result.stdout
    assert "after sync: succeeded 1" in result.stdout
    assert "approved: succeeded" in result.stdout


WEBHOOK_SCRIPT = r'''
import time
from payments.models import Payment
from payments.services.merchants import merchant_create
from payments.services.modifications import payment_capture
from payments.services.payment_methods import payment_method_create
from payments.services.payments import payment_create
merchant, _, _ = merchant_create(actor="test", name="Embedded webhooks", sandbox_accounts=True)
pm = payment_method_create(merchant=merchant, livemode=False, number="4242424242424242",
                           exp_month=12, exp_year=2034)
payment = payment_create(merchant=merchant, livemode=False, amount=700, currency="EUR",
                         payment_method=pm, confirm=True, capture_method="manual",
                         provider="adyen-sandbox")
payment = payment_capture(payment=payment)
print("after capture:", payment.status)
deadline = time.monotonic() + 60  # nobody calls anything: the timer threads do the work
while time.monotonic() < deadline and payment.status == "processing":
    time.sleep(0.2)
    payment = Payment.objects.get(pk=payment.pk)
print("later:", payment.status, payment.amount_captured)

# card …0606 on Adyen: two replays cannot tell, the release's webhook proves no charge
lost = payment_create(merchant=merchant, livemode=False, amount=700, currency="EUR",
                      payment_method=payment_method_create(
                          merchant=merchant, livemode=False, number="4000000000000606",
                          exp_month=12, exp_year=2034),
                      confirm=True, provider="adyen-sandbox")
print("lost:", lost.status)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and lost.status == "unresolved":
    time.sleep(0.2)
    lost = Payment.objects.get(pk=lost.pk)
print("lost later:", lost.status, lost.attempts.get().error_code)
'''


def test_embedded_default_settles_adyen_by_webhook_on_its_own(tmp_path):
    """The in-process Adyen sandbox delivers its webhooks on a timer thread, and the nudged
    sync passes apply them and run the next lookups: no worker, no test hook. A capture is
    confirmed; an unknown outcome is released and ends known."""
    result = run_embedded(tmp_path, WEBHOOK_SCRIPT, SANDBOX_WEBHOOK_DELAY_SECONDS="0.1",
                          STATUS_SYNC_SCHEDULE="1,1,1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after capture: processing" in result.stdout
    assert "later: succeeded 700" in result.stdout, result.stderr[-3000:]
    assert "lost: unresolved" in result.stdout
    assert "lost later: failed released" in result.stdout, result.stderr[-3000:]


MERCHANT_WEBHOOKS_SCRIPT = r'''
import time
from payments.models import DeliveryStatus, WebhookDelivery
from payments.services.merchants import merchant_create
from payments.services.payment_methods import payment_method_create
from payments.services.payments import payment_create
from tests.webhooks import Receiver, Reply, make_endpoint

receiver = Receiver()
receiver.plan("/hooks", Reply(500))  # the first delivery fails: retried in this process too
merchant, _, _ = merchant_create(actor="test", name="Embedded merchant webhooks", sandbox_accounts=True)
make_endpoint(merchant, receiver.url())
pm = payment_method_create(merchant=merchant, livemode=False, number="4242424242424242",
                           exp_month=12, exp_year=2034)
payment = payment_create(merchant=merchant, livemode=False, amount=700, currency="USD",
                         payment_method=pm, confirm=True, provider="stripe-sandbox")
print("payment:", payment.status)
deadline = time.monotonic() + 60  # nobody calls anything: the timer thread does the work
while time.monotonic() < deadline and (
        WebhookDelivery.objects.count() < 2
        or WebhookDelivery.objects.exclude(status=DeliveryStatus.SUCCEEDED).exists()):
    time.sleep(0.2)
print("deliveries:", sorted(WebhookDelivery.objects.values_list("status", "attempts")))
print("received:", [r.json()["type"] for r in receiver.requests])
'''


def test_embedded_default_delivers_merchant_webhooks_and_retries_on_its_own(tmp_path):
    """`make run` alone: events are relayed and delivered by an in-process timer a moment after
    the commit, and a failed delivery is retried there too (no worker, no beat)."""
    result = run_embedded(tmp_path, MERCHANT_WEBHOOKS_SCRIPT, STATUS_SYNC_NUDGE="false",
                          WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
                          WEBHOOK_RETRY_BASE_SECONDS="0.2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "payment: succeeded" in result.stdout
    assert "deliveries: [('succeeded', 1), ('succeeded', 2)]" in result.stdout, \
        result.stdout + result.stderr[-3000:]
    received = result.stdout.split("received: ")[1]
    assert received.count("payment.processing") + received.count("payment.succeeded") == 3
