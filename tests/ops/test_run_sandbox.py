"""`manage.py run_sandbox` serves a sandbox over real HTTP in its own process, and conditions
set with `manage.py sandbox_fault` in another process reach it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from providers.base import AccountConfig, AuthorizeRequest, Card, ProviderUnavailable
from providers.registry import get_adapter
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS
from providers.sandboxes.models import SandboxCharge

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def run_sandbox(provider: str) -> Iterator[str]:
    """`manage.py run_sandbox` in its own process, on the test database; yields its URL."""
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_sandbox", "--provider", provider, "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"{provider} sandbox on http://127.0.0.1:" in line, process.stderr.read()
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def sandbox_process():
    with run_sandbox("stripe") as url:
        yield url


@pytest.mark.django_db(transaction=True)
def test_run_sandbox_serves_over_http_and_sees_faults_set_elsewhere(sandbox_process):
    adapter = get_adapter(AccountConfig(name="stripe-http", provider="stripe", livemode=False,
                                        base_url=sandbox_process,
                                        credentials=SANDBOX_CREDENTIALS["stripe"]))

    def authorize(reference: str):
        return adapter.authorize(AuthorizeRequest(
            reference=reference, amount=1234, currency="USD",
            card=Card("4242424242424242", 12, 2034, "visa"), capture=False))

    result = authorize("att_http_1")
    charge = SandboxCharge.objects.get(reference="att_http_1")
    assert charge.provider_reference == result.provider_reference
    assert (charge.status, charge.amount) == ("authorized", 1234)

    call_command("sandbox_fault", "--provider", "stripe", "--outage", "on")  # this process
    with pytest.raises(ProviderUnavailable):
        authorize("att_http_2")  # refused by the other process
    assert not SandboxCharge.objects.filter(reference="att_http_2").exists()

    call_command("sandbox_fault", "--provider", "stripe", "--clear")
    assert authorize("att_http_3").provider_reference


@pytest.mark.django_db(transaction=True)
def test_a_sandbox_over_http_sends_webhooks_to_switchyard_over_http(live_server):
    """Adyen's sandbox in its own process; its webhook goes over real HTTP to Switchyard's
    receiver (`sandbox_webhook connect`), which resolves the unknown outcome."""
    import io

    from payments.models import Payment
    from payments.services import provider_events
    from payments.services.merchants import merchant_create
    from payments.services.payment_methods import payment_method_create
    from payments.services.payments import payment_create
    from providers.models import ProviderAccount
    from providers.sandboxes import webhooks

    merchant, _, _ = merchant_create(actor="test", name="Over HTTP", sandbox_accounts=True)
    with run_sandbox("adyen") as url:
        account = ProviderAccount(merchant=merchant, name="adyen-http", provider="adyen",
                                  base_url=url)
        account.set_credentials(SANDBOX_CREDENTIALS["adyen"])
        account.save()
        out = io.StringIO()
        call_command("sandbox_webhook", "connect", "--account", account.id, "--url",
                     live_server.url, stdout=out)
        assert f"{live_server.url}/provider_webhooks/{account.id}" in out.getvalue()
        card = payment_method_create(merchant=merchant, livemode=False,
                                     number="4000000000000408", exp_month=12, exp_year=2034)
        payment = payment_create(merchant=merchant, livemode=False, amount=990,
                                 currency="EUR", payment_method=card, confirm=True,
                                 provider="adyen-http")
        assert payment.status == "unresolved"  # the connection dropped
    assert webhooks.deliver_due() == 1  # AUTHORISATION, POSTed to the live server
    provider_events.process_due()
    payment = Payment.objects.get(pk=payment.pk)
    assert payment.status == "succeeded" and payment.amount_captured == 990


@pytest.mark.django_db
def test_sandbox_webhook_command_refuses_what_cannot_work(merchant, monkeypatch):
    from django.core.management.base import CommandError

    from providers.models import ProviderAccount
    from providers.sandboxes import webhooks

    stripe = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    for args, message in [
        (["connect"], "--account"),
        (["connect", "--account", "acct_missing", "--url", "http://x"], "No provider"),
        (["connect", "--account", stripe.id, "--url", "ftp://x"], "--url"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("sandbox_webhook", *args)
    # every sandbox sends webhooks now (Stripe's since it sends Events); one that did not:
    monkeypatch.delitem(webhooks.SETUP, "stripe")
    with pytest.raises(CommandError, match="no webhooks"):
        call_command("sandbox_webhook", "connect", "--account", stripe.id, "--url", "http://x")


@pytest.mark.django_db
def test_sandbox_webhook_command_connects_a_stripe_account(merchant):
    from providers.models import ProviderAccount
    from providers.sandboxes.models import SandboxWebhookEndpoint
    from providers.sandboxes.stripe import account_for_key

    stripe = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    out = StringIO()
    call_command("sandbox_webhook", "connect", "--account", stripe.id, "--url", "http://x",
                 stdout=out)
    assert f"http://x/provider_webhooks/{stripe.id}" in out.getvalue()
    credentials = ProviderAccount.objects.get(pk=stripe.pk).get_credentials()
    endpoint = SandboxWebhookEndpoint.objects.get(url=f"http://x/provider_webhooks/{stripe.id}")
    assert endpoint.merchant_account == account_for_key(credentials["secret_key"])
    assert endpoint.hmac_key == credentials["webhook_secret"]
