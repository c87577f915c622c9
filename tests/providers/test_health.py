"""Periodic health probes of provider accounts, their Celery task and their admin columns."""

from __future__ import annotations

import time

import pytest

from providers import health
from providers.base import OutcomeUnknown, ProviderBadRequest, ProviderUnavailable
from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_for
from providers.sandboxes.models import SandboxCondition
from tests.conftest import admin_change_url
from tests.factories import ProviderAccountFactory
from workers.celery import app
from workers.tasks import probe_accounts

pytestmark = pytest.mark.django_db


class ProbeStub:
    def __init__(self, error: BaseException | None = None, delay: float = 0.0):
        self.error = error
        self.delay = delay
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error


@pytest.fixture
def probe_with(monkeypatch):
    def install(error=None, delay=0.0):
        adapter = ProbeStub(error, delay)
        monkeypatch.setattr(health, "adapter_for", lambda account: adapter)
        return adapter

    return install


def reload(account: ProviderAccount) -> ProviderAccount:
    return ProviderAccount.objects.get(pk=account.pk)


def test_a_healthy_probe_records_latency(probe_with):
    account = ProviderAccountFactory()
    probe_with(delay=0.05)
    health.probe_account(account)
    account = reload(account)
    assert account.healthy is True
    assert account.health_checked_at is not None
    assert 50 <= account.health_latency_ms < 1000
    assert account.health_error == ""


def test_a_failing_probe_records_why(probe_with):
    account = ProviderAccountFactory()
    probe_with(ProviderUnavailable("Could not connect to stripe: ConnectError.",
                                   raw_code="ConnectError"))
    health.probe_account(account)
    account = reload(account)
    assert account.healthy is False
    assert account.health_error == ("provider_unavailable: Could not connect to stripe: "
                                     "ConnectError.")
    assert account.health_latency_ms is not None


def test_refused_credentials_are_unhealthy(probe_with):
    account = ProviderAccountFactory()
    probe_with(ProviderBadRequest("Invalid API key."))
    health.probe_account(account)
    assert reload(account).healthy is False
    assert breaker_for(account).fail_counter == 0  # the provider answered: it is up


def test_an_adapter_bug_is_unhealthy_and_recorded(probe_with):
    account = ProviderAccountFactory()
    probe_with(KeyError("status"))
    health.probe_account(account)
    account = reload(account)
    assert account.healthy is False
    assert account.health_error == "probe_error: KeyError"


def test_a_probe_recovers_from_unhealthy(probe_with):
    account = ProviderAccountFactory()
    probe_with(OutcomeUnknown("timed out"))
    health.probe_account(account)
    assert reload(account).healthy is False
    probe_with()
    health.probe_account(account)
    account = reload(account)
    assert account.healthy is True
    assert account.health_error == ""


def test_failing_probes_trip_the_breaker_and_an_open_breaker_is_not_probed(probe_with):
    account = ProviderAccountFactory(breaker_fail_max=2, breaker_reset_timeout=30)
    adapter = probe_with(OutcomeUnknown("timed out"))
    health.probe_account(account)
    health.probe_account(account)
    assert breaker_for(account).current_state == "open"
    health.probe_account(account)
    assert adapter.probes == 2
    account = reload(account)
    assert account.healthy is False
    assert account.health_error.startswith("breaker_open: ")
    assert account.health_latency_ms is None  # the provider was not contacted


def test_the_probe_is_the_half_open_trial_that_recovers_an_idle_account(probe_with):
    account = ProviderAccountFactory(breaker_fail_max=1, breaker_reset_timeout=1)
    probe_with(ProviderUnavailable("down"))
    health.probe_account(account)
    assert breaker_for(account).current_state == "open"
    time.sleep(1.1)
    probe_with()
    health.probe_account(account)
    assert breaker_for(account).current_state == "closed"
    assert reload(account).healthy is True


def sandbox_account(merchant, provider: str) -> ProviderAccount:
    """One of the merchant's sandbox accounts, with credentials, as create_merchant makes it."""
    return ProviderAccount.objects.get(merchant=merchant, livemode=False, provider=provider)


def test_probe_against_the_sandbox_measures_its_latency(merchant):
    account = sandbox_account(merchant, "stripe")
    SandboxCondition.objects.update_or_create(provider="stripe", defaults={"latency_ms": 60})
    health.probe_account(account)
    account = reload(account)
    assert account.healthy is True
    assert account.health_latency_ms >= 60


@pytest.mark.parametrize("provider", ["stripe", "adyen", "checkout"])
def test_probe_against_a_sandbox_outage_is_unhealthy(merchant, provider):
    account = sandbox_account(merchant, provider)
    health.probe_account(account)
    assert reload(account).healthy is True
    SandboxCondition.objects.update_or_create(provider=provider, defaults={"outage": True})
    health.probe_account(account)
    account = reload(account)
    assert account.healthy is False
    assert account.health_error.startswith("provider_unavailable")


def test_probe_all_probes_every_enabled_account(probe_with):
    adapter = probe_with()
    enabled = [ProviderAccountFactory(), ProviderAccountFactory()]
    disabled = ProviderAccountFactory(enabled=False)
    expected = ProviderAccount.objects.filter(enabled=True).count()
    assert health.probe_all() == expected
    assert adapter.probes == expected
    assert all(reload(account).healthy for account in enabled)
    assert reload(disabled).health_checked_at is None


def test_one_failing_account_does_not_stop_the_others(probe_with, monkeypatch):
    probe_with()
    first, second = ProviderAccountFactory(), ProviderAccountFactory()
    real_probe = health.probe_account

    def probe(account):
        if account.pk == min(first.pk, second.pk):
            raise RuntimeError("database hiccup")
        real_probe(account)

    monkeypatch.setattr(health, "probe_account", probe)
    health.probe_all()
    assert reload(max([first, second], key=lambda a: a.pk)).healthy is True


def test_the_task_runs_eagerly_and_probes(probe_with):
    probe_with()
    account = ProviderAccountFactory()
    assert probe_accounts.delay().get() >= 1
    assert reload(account).healthy is True


def test_the_probe_task_is_scheduled_every_minute():
    entries = [entry for entry in app.conf.beat_schedule.values()
               if entry["task"] == "switchyard.providers.probe_accounts"]
    assert len(entries) == 1
    assert entries[0]["schedule"] == 60.0


def test_the_admin_shows_health_and_breaker_state(admin_client, probe_with):
    probe_with()
    account = ProviderAccountFactory(name="stripe-health")
    health.probe_account(account)
    listing = admin_client.get("/admin/providers/provideraccount/")
    assert listing.status_code == 200
    body = listing.content.decode()
    for column in ("column-healthy", "column-health_latency_ms", "column-health_checked_at",
                   "column-breaker"):
        assert column in body
    detail = admin_client.get(admin_change_url(account))
    assert detail.status_code == 200
    assert "closed" in detail.content.decode()
