from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from payments import vault
from payments.audit import cli_actor
from payments.models import AuditLog, PaymentMethod
from tests.factories import payment_method


@pytest.mark.django_db
def test_rotate_keys_reencrypts_old_cards_under_the_active_key(merchant):
    with override_settings(VAULT_ACTIVE_KEY="k1"):
        old = [payment_method(merchant) for _ in range(3)]
    current = payment_method(merchant, number="5555555555554444")
    assert {pm.key_version for pm in old} == {"k1"} and current.key_version == "k2"
    before = bytes(PaymentMethod.objects.get(pk=current.pk).encrypted_number)

    out = StringIO()
    call_command("rotate_keys", "--batch-size", "2", stdout=out)

    assert "Re-encrypted 3 card(s)" in out.getvalue()
    for pm in PaymentMethod.objects.all():
        assert pm.key_version == "k2"
        expected = "5555555555554444" if pm.pk == current.pk else "4242424242424242"
        assert vault.decrypt("k2", pm.encrypted_number, associated=pm.id) == expected
    # cards already under the active key are left alone
    assert bytes(PaymentMethod.objects.get(pk=current.pk).encrypted_number) == before


@pytest.mark.django_db
def test_rotate_keys_reencrypts_provider_credentials_too(merchant):
    from providers.models import ProviderAccount

    with override_settings(VAULT_ACTIVE_KEY="k1"):
        for account in ProviderAccount.objects.filter(merchant=merchant):
            account.set_credentials({"secret_key": f"sk_test_{account.name}"})
            account.save()
    assert set(ProviderAccount.objects.values_list("credentials_key_version", flat=True)) == {
        "k1"}
    out = StringIO()
    call_command("rotate_keys", stdout=out)
    assert "the credentials of 3 provider account(s)" in out.getvalue()
    for account in ProviderAccount.objects.filter(merchant=merchant):
        assert account.credentials_key_version == "k2"
        assert account.get_credentials() == {"secret_key": f"sk_test_{account.name}"}
    # and with the old key gone, the accounts still work
    with override_settings(VAULT_KEYS={"k2": "dGVzdC1vbmx5LXZhdWx0LWtleS10d28tMzJieXRlcyE="}):
        assert ProviderAccount.objects.first().get_credentials()



@pytest.mark.django_db
def test_rotate_keys_writes_one_audit_row_summarizing_what_it_reencrypted(merchant):
    from providers.models import ProviderAccount

    with override_settings(VAULT_ACTIVE_KEY="k1"):
        for _ in range(3):
            payment_method(merchant)
        account = ProviderAccount.objects.filter(merchant=merchant).first()
        account.set_credentials({"secret_key": "sk_test_rotate_me"})
        account.save()
    call_command("rotate_keys", "--batch-size", "2", "--reason", "yearly rotation",
                 stdout=StringIO())
    row = AuditLog.objects.get(action="vault.rotate_keys")
    assert (row.actor, row.object_id, row.reason, row.outcome) == (
        cli_actor(), "k2", "yearly rotation", "ok")
    assert row.before["under_old_keys"]["cards"] == {"k1": 3}
    assert row.before["under_old_keys"]["provider_accounts"]["k1"] >= 1
    assert row.after["cards"] == 3 and row.after["active_key"] == "k2"
    assert "sk_test_rotate_me" not in str([row.before, row.after])


@pytest.mark.django_db
def test_rotate_keys_reencrypts_webhook_signing_secrets_so_the_old_key_can_go(merchant):
    from payments.models import WebhookEndpoint

    with override_settings(VAULT_ACTIVE_KEY="k1"):
        endpoint = WebhookEndpoint(merchant=merchant, livemode=False,
                                   url="https://hooks.example.test/x", enabled_events=["*"])
        endpoint.set_secrets("whsec_current_test_value", previous="whsec_previous_test_value")
        endpoint.save()
    call_command("rotate_keys", stdout=StringIO())
    endpoint.refresh_from_db()
    assert endpoint.secrets_key_version == "k2"
    with override_settings(VAULT_KEYS={"k2": "dGVzdC1vbmx5LXZhdWx0LWtleS10d28tMzJieXRlcyE="}):
        assert endpoint.stored_secrets() == {"current": "whsec_current_test_value",
                                             "previous": "whsec_previous_test_value"}
    row = AuditLog.objects.get(action="vault.rotate_keys")
    assert row.before["under_old_keys"]["webhook_endpoints"] == {"k1": 1}
    assert row.after["webhook_endpoints"] == 1
