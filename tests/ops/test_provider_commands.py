"""Operator commands for provider accounts and sandboxes (docs/api.md, "Operator commands")."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from payments.audit import cli_actor
from payments.models import AuditLog
from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_for
from providers.sandboxes.models import SandboxCondition


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def shop(merchant):
    return merchant.name


@pytest.mark.django_db
def test_add_a_live_account_with_encrypted_credentials_and_settings(shop, merchant):
    run("provider_account", "add", "--merchant", shop, "--name", "stripe-main",
        "--provider", "stripe", "--mode", "live", "--base-url", "https://api.stripe.com",
        "--credential", "secret_key=sk_live_not_a_real_key", "--currency", "USD,eur",
        "--currency", "GBP", "--fee", "USD:2.9:30", "--fee", "*:3.4:25",
        "--connect-timeout", "2", "--read-timeout", "8", "--breaker-fail-max", "3",
        "--breaker-reset-timeout", "20", "--rate-limit", "50", "--concurrency-limit", "10",
        "--priority", "5")
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-main")
    assert account.livemode and account.provider == "stripe" and account.enabled
    assert account.currencies == ["EUR", "GBP", "USD"]
    assert account.fees == {"USD": {"percent": "2.9", "fixed": 30},
                            "*": {"percent": "3.4", "fixed": 25}}
    assert (account.connect_timeout, account.read_timeout) == (2.0, 8.0)
    assert (account.breaker_fail_max, account.breaker_reset_timeout) == (3, 20)
    assert (account.rate_limit_per_second, account.concurrency_limit, account.priority) == (
        50, 10, 5)
    # encrypted at rest, readable through the model
    assert b"sk_live_not_a_real_key" not in bytes(account.credentials_encrypted)
    assert account.get_credentials() == {"secret_key": "sk_live_not_a_real_key"}


@pytest.mark.django_db
def test_list_never_prints_credentials(shop):
    run("provider_account", "add", "--merchant", shop, "--name", "adyen-eu",
        "--provider", "adyen", "--base-url", "https://checkout-test.adyen.com/v71",
        "--credential", "api_key=AQE-not-real", "--credential", "merchant_account=ShopEU")
    output = run("provider_account", "list", "--merchant", shop)
    assert "adyen-eu" in output and "stripe-sandbox" in output
    assert "credentials=api_key,merchant_account" in output
    assert "AQE-not-real" not in output and "ShopEU" not in output


@pytest.mark.django_db
def test_update_merges_credentials_and_disable_enable(shop, merchant):
    run("provider_account", "add", "--merchant", shop, "--name", "cko", "--provider",
        "checkout", "--base-url", "https://api.sandbox.checkout.com",
        "--credential", "secret_key=sk_sbox_one", "--credential", "processing_channel_id=pc_1")
    run("provider_account", "update", "--merchant", shop, "--name", "cko",
        "--credential", "secret_key=sk_sbox_two", "--read-timeout", "4")
    account = ProviderAccount.objects.get(merchant=merchant, name="cko")
    assert account.get_credentials() == {"secret_key": "sk_sbox_two",
                                         "processing_channel_id": "pc_1"}
    assert account.read_timeout == 4.0
    run("provider_account", "disable", "--merchant", shop, "--name", "cko")
    assert not ProviderAccount.objects.get(pk=account.pk).enabled
    run("provider_account", "enable", "--merchant", shop, "--name", "cko")
    assert ProviderAccount.objects.get(pk=account.pk).enabled


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    (["--provider", "stripe", "--mode", "live"], "needs --base-url"),
    (["--provider", "stripe", "--mode", "live", "--base-url", "http://api.stripe.com",
      "--credential", "secret_key=x"], "https"),
    (["--provider", "stripe", "--mode", "live", "--base-url", "sandbox://local"],
     "cannot point at a sandbox"),
    (["--provider", "stripe", "--base-url", "https://api.stripe.com"], "secret_key"),
    (["--provider", "adyen", "--base-url", "https://checkout-test.adyen.com/v71",
      "--credential", "api_key=x"], "merchant_account"),
    (["--provider", "stripe", "--base-url", "ftp://x"], "base URL"),
    (["--provider", "stripe", "--currency", "XYZ"], "XYZ"),
    (["--provider", "stripe", "--fee", "USD:abc:30"], "not a decimal"),
    (["--provider", "stripe", "--fee", "USD:2.9"], "CUR:PERCENT:FIXED"),
    (["--provider", "stripe", "--fee", "USD:120:0"], "below 100"),
    (["--provider", "stripe", "--read-timeout", "0"], "between 0 and 120"),
    (["--provider", "stripe", "--credential", "novalue"], "KEY=VALUE"),
    (["--provider", "stripe", "--rate-limit", "-1"], "negative"),
])
def test_add_rejects_bad_settings_with_a_clear_message(shop, merchant, args, message):
    with pytest.raises(CommandError, match=message):
        run("provider_account", "add", "--merchant", shop, "--name", "bad", *args)
    assert not ProviderAccount.objects.filter(merchant=merchant, name="bad").exists()


@pytest.mark.django_db
def test_unknown_merchant_account_and_duplicates_are_errors(shop):
    with pytest.raises(CommandError, match="No merchant"):
        run("provider_account", "list", "--merchant", "nobody")
    with pytest.raises(CommandError, match="No test account"):
        run("provider_account", "disable", "--merchant", shop, "--name", "missing")
    with pytest.raises(CommandError, match="already has"):
        run("provider_account", "add", "--merchant", shop, "--name", "stripe-sandbox",
            "--provider", "stripe")


@pytest.mark.django_db
def test_sandbox_account_added_without_credentials_gets_sandbox_ones(shop, merchant):
    run("provider_account", "add", "--merchant", shop, "--name", "stripe-2",
        "--provider", "stripe")
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-2")
    assert account.is_sandbox and account.get_credentials()["secret_key"]


def audit_rows(account: ProviderAccount) -> list[AuditLog]:
    return list(AuditLog.objects.filter(object_type="provider_account",
                                        object_id=account.pk).order_by("id"))


@pytest.mark.django_db
def test_every_change_is_audited_naming_changed_credentials_never_their_values(shop, merchant):
    run("provider_account", "add", "--merchant", shop, "--name", "cko", "--provider",
        "checkout", "--base-url", "https://api.sandbox.checkout.com", "--reason", "new PSP",
        "--credential", "secret_key=sk_sbox_one", "--credential", "processing_channel_id=pc_1")
    account = ProviderAccount.objects.get(merchant=merchant, name="cko")
    run("provider_account", "update", "--merchant", shop, "--name", "cko", "--reason",
        "key rotated at Checkout.com", "--credential", "secret_key=sk_sbox_two",
        "--credential", "webhook_secret=whsec_not_real", "--read-timeout", "4")
    run("provider_account", "update", "--merchant", shop, "--name", "cko", "--priority", "3")
    run("provider_account", "disable", "--merchant", shop, "--name", "cko", "--reason", "outage")
    run("provider_account", "disable", "--merchant", shop, "--name", "cko")
    run("provider_account", "enable", "--merchant", shop, "--name", "cko")

    created, rotated, reprioritized, disabled, again, enabled = audit_rows(account)
    assert all(row.actor == cli_actor() for row in audit_rows(account))
    assert created.action == "provider_account.create" and created.before is None
    assert created.reason == "new PSP"
    assert created.after["credentials"] == ["processing_channel_id", "secret_key"]
    assert created.after["base_url"] == "https://api.sandbox.checkout.com"
    assert rotated.action == "provider_account.update"
    assert rotated.reason == "key rotated at Checkout.com"
    assert rotated.before == {"read_timeout": 10.0, "credentials": ["secret_key"]}
    assert rotated.after == {"read_timeout": 4.0,
                             "credentials": ["secret_key", "webhook_secret"]}
    assert reprioritized.before == {"priority": 100} and reprioritized.after == {"priority": 3}
    assert (disabled.action, disabled.before, disabled.after, disabled.reason) == (
        "provider_account.disable", {"enabled": True}, {"enabled": False}, "outage")
    assert again.outcome.startswith("unchanged")
    assert (enabled.action, enabled.after) == ("provider_account.enable", {"enabled": True})
    stored = json.dumps([[row.before, row.after, row.reason, row.outcome]
                         for row in AuditLog.objects.all()])
    for secret in ("sk_sbox_one", "sk_sbox_two", "whsec_not_real", "pc_1"):
        assert secret not in stored


@pytest.mark.django_db
def test_a_refused_change_is_audited_as_refused_and_saves_nothing(shop, merchant):
    with pytest.raises(CommandError, match="https"):
        run("provider_account", "update", "--merchant", shop, "--name", "stripe-sandbox",
            "--mode", "test", "--base-url", "ftp://x", "--reason", "try")
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    assert account.base_url == "sandbox://local"
    row = audit_rows(account)[-1]
    assert row.action == "provider_account.update" and row.outcome.startswith("refused")


@pytest.mark.django_db
def test_reset_breaker_closes_it_for_everyone_and_is_audited(shop, merchant):
    account = ProviderAccount.objects.get(merchant=merchant, name="adyen-sandbox")
    breaker_for(account).open()
    assert breaker_for(account).current_state == "open"
    output = run("provider_account", "reset-breaker", "--merchant", shop, "--name",
                 "adyen-sandbox", "--reason", "Adyen says the incident is over")
    assert "was open" in output
    assert breaker_for(account).current_state == "closed"
    row = audit_rows(account)[-1]
    assert (row.action, row.before, row.after, row.outcome) == (
        "provider_account.reset_breaker", {"breaker": "open"}, {"breaker": "closed"}, "ok")


@pytest.mark.django_db
def test_sandbox_fault_sets_and_clears_conditions():
    run("sandbox_fault", "--provider", "adyen", "--outage", "on", "--latency-ms", "250",
        "--soft-decline-rate", "0.5")
    condition = SandboxCondition.objects.get(provider="adyen")
    assert (condition.outage, condition.latency_ms, condition.soft_decline_rate) == (
        True, 250, 0.5)
    run("sandbox_fault", "--provider", "adyen", "--outage", "off")
    assert not SandboxCondition.objects.get(provider="adyen").outage
    run("sandbox_fault", "--provider", "adyen", "--clear")
    condition = SandboxCondition.objects.get(provider="adyen")
    assert (condition.outage, condition.latency_ms, condition.soft_decline_rate) == (
        False, 0, 0.0)
    for bad in (["--latency-ms", "-5"], ["--soft-decline-rate", "1.5"]):
        with pytest.raises(CommandError):
            run("sandbox_fault", "--provider", "adyen", *bad)
