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


K2_ONLY = {"k2": "dGVzdC1vbmx5LXZhdWx0LWtleS10d28tMzJieXRlcyE="}


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_rotate_keys_runs_online_beside_writers_and_the_old_key_can_then_go(merchant,
                                                                            monkeypatch):
    """While rotate_keys runs: one thread keeps changing a provider account's credentials,
    vaulting cards and rolling a webhook secret (as the service does), another holds a row
    of each kind locked. The rotation never waits on a locked row (SKIP LOCKED), comes back
    for it once it is free, loses none of the writers' changes, and afterwards every card,
    credential and secret decrypts with the old key gone from the configuration."""
    import threading

    from django.db import connection, transaction

    from payments.models import WebhookEndpoint
    from payments.services import payment_methods as pm_service
    from payments.services.consistency import consistency_check
    from payments.services.webhook_endpoints import webhook_endpoint_roll_secret
    from providers.accounts import account_save
    from providers.models import ProviderAccount

    accounts = list(ProviderAccount.objects.filter(merchant=merchant).order_by("name"))
    with override_settings(VAULT_ACTIVE_KEY="k1"):
        cards = [payment_method(merchant, cvc="123" if i % 2 else None) for i in range(40)]
        for account in accounts:
            account.set_credentials({"secret_key": f"sk_test_{account.name}_0"})
            account.save()
        endpoints = []
        for i in range(3):
            endpoint = WebhookEndpoint(merchant=merchant, livemode=False,
                                       url=f"https://hooks.example.test/{i}",
                                       enabled_events=["*"])
            endpoint.set_secrets(f"whsec_test_{i}")
            endpoint.save()
            endpoints.append(endpoint)
    locked_card, locked_account, locked_endpoint = cards[0], accounts[1], endpoints[1]
    busy_account, busy_endpoint = accounts[0], endpoints[0]

    held = threading.Event()
    release = threading.Event()
    stop = threading.Event()
    waits = []
    written = {"credentials": None, "cards": [], "secret": None}

    def holder():
        try:
            with transaction.atomic():
                PaymentMethod.objects.select_for_update().get(pk=locked_card.pk)
                ProviderAccount.objects.select_for_update().get(pk=locked_account.pk)
                WebhookEndpoint.objects.select_for_update().get(pk=locked_endpoint.pk)
                held.set()
                assert release.wait(60), "the rotation never came back for the locked rows"
        finally:
            connection.close()

    def writer():
        try:
            n = 0
            while not stop.is_set() or n < 3:
                n += 1
                account = ProviderAccount.objects.get(pk=busy_account.pk)
                credentials = {"secret_key": f"sk_test_{account.name}_{n}"}
                account_save(account=account, credentials=credentials)
                written["credentials"] = credentials
                written["cards"].append(payment_method(merchant, number="5555555555554444").pk)
                written["secret"] = webhook_endpoint_roll_secret(
                    endpoint=WebhookEndpoint.objects.get(pk=busy_endpoint.pk),
                    actor="test")[1]
        finally:
            connection.close()

    def wait_for_locked_rows(seconds):
        waits.append(pm_service.vault_keys_by_version())
        release.set()  # the holder commits: the next pass finds the rows free

    monkeypatch.setattr(pm_service, "_wait_for_locked_rows", wait_for_locked_rows)
    threads = [threading.Thread(target=holder, daemon=True),
               threading.Thread(target=writer, daemon=True)]
    threads[0].start()
    assert held.wait(30)
    threads[1].start()
    try:
        out = StringIO()
        call_command("rotate_keys", "--batch-size", "7", stdout=out)
    finally:
        stop.set()
        release.set()
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads)

    # the first pass skipped exactly the locked rows instead of waiting for them
    assert waits, "the rotation never met a locked row"
    assert waits[0]["cards"] == {"k1": 1}
    assert waits[0]["provider_accounts"] == {"k1": 1}
    assert waits[0]["webhook_endpoints"] == {"k1": 1}
    assert "nothing is left under another key" in out.getvalue()

    with override_settings(VAULT_KEYS=K2_ONLY):
        for pm in PaymentMethod.objects.all():
            assert pm.key_version == "k2"
            assert vault.decrypt("k2", pm.encrypted_number, associated=pm.id)[-4:] == pm.last4
        for account in ProviderAccount.objects.filter(merchant=merchant):
            assert account.credentials_key_version == "k2"
            credentials = account.get_credentials()
            if account.pk == busy_account.pk:  # the writer's last change was kept
                assert credentials["secret_key"] == written["credentials"]["secret_key"]
            else:
                assert credentials == {"secret_key": f"sk_test_{account.name}_0"}
        for endpoint in WebhookEndpoint.objects.all():
            secrets = endpoint.stored_secrets()
            if endpoint.pk == busy_endpoint.pk:
                assert secrets["current"] == written["secret"]
        assert set(written["cards"]) <= set(PaymentMethod.objects.values_list("pk", flat=True))
        report = consistency_check(rules=["vault", "credentials"])
        assert report.ok, report.violations
    row = AuditLog.objects.get(action="vault.rotate_keys")
    assert row.outcome == "ok" and row.before["under_old_keys"]["cards"] == {"k1": 40}


@pytest.mark.django_db
def test_rotate_keys_fails_and_says_so_when_rows_stay_under_an_old_key(merchant, monkeypatch):
    """Rows that stay out of reach (locked throughout, or written back under an old key by a
    process still configured with it) make the command fail, with a "failed" audit row:
    the old key must not be dropped yet."""
    from django.core.management.base import CommandError

    from payments.services import payment_methods as pm_service

    with override_settings(VAULT_ACTIVE_KEY="k1"):
        payment_method(merchant)
    monkeypatch.setattr(pm_service, "payment_methods_reencrypt", lambda **kwargs: 0)
    monkeypatch.setattr(pm_service, "_wait_for_locked_rows", lambda seconds: None)
    with pytest.raises(CommandError, match="Rotation incomplete"):
        call_command("rotate_keys", "--passes", "2", stdout=StringIO())
    row = AuditLog.objects.get(action="vault.rotate_keys")
    assert row.outcome == "failed: RotationIncomplete"
    assert row.after["under_old_keys"]["cards"] == {"k1": 1}
