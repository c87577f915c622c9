"""`manage.py run_sandbox` serves a sandbox over real HTTP in its own process, and conditions
set with `manage.py sandbox_fault` in another process reach it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from providers.base import AccountConfig, AuthorizeRequest, Card, ProviderUnavailable
from providers.models import SandboxCharge
from providers.registry import get_adapter
from providers.sandbox.apps import SANDBOX_CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox_process():
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_sandbox", "--provider", "stripe", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "stripe sandbox on http://127.0.0.1:" in line, process.stderr.read()
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


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
