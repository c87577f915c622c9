"""Operator commands: create_merchant, seed_demo, issue_api_key, revoke_api_key."""

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from payments.audit import cli_actor
from payments.models import APIKey, AuditLog, Merchant
from payments.services.merchants import api_key_authenticate, hash_key
from providers.models import ProviderAccount

KEY_RE = re.compile(r"sk_(test|live)_[A-Za-z0-9_-]{20,}")


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_create_merchant_prints_each_key_once_and_stores_only_hashes():
    output = run("create_merchant", "Acme")
    keys = KEY_RE.findall(output)
    assert sorted(keys) == ["live", "test"]
    raw_keys = [m.group() for m in KEY_RE.finditer(output)]
    merchant = Merchant.objects.get(name="Acme")
    stored = set(APIKey.objects.filter(merchant=merchant).values_list("key_hash", flat=True))
    assert stored == {hash_key(k) for k in raw_keys}
    for raw in raw_keys:
        assert not APIKey.objects.filter(key_hash=raw).exists()
        assert api_key_authenticate(raw)[0].merchant == merchant
    accounts = ProviderAccount.objects.filter(merchant=merchant)
    assert sorted((a.name, a.provider, a.livemode) for a in accounts) == [
        ("adyen-sandbox", "adyen", False),
        ("checkout-sandbox", "checkout", False),
        ("stripe-sandbox", "stripe", False),
    ]


@pytest.mark.django_db
def test_create_merchant_sandbox_accounts_only_when_asked(settings, monkeypatch):
    """--sandbox defaults to SANDBOXES_ENABLED (docs/api.md: on a dev or test install the
    merchant gets the three sandbox accounts); --no-sandbox and production give none; asking
    where the sandboxes are not installed is refused."""
    run("create_merchant", "Bare", "--no-sandbox")
    assert not ProviderAccount.objects.filter(merchant__name="Bare").exists()
    run("create_merchant", "Asked", "--sandbox")
    assert ProviderAccount.objects.filter(merchant__name="Asked").count() == 3

    settings.SANDBOXES_ENABLED = False  # as in production
    output = run("create_merchant", "Production")
    assert not ProviderAccount.objects.filter(merchant__name="Production").exists()
    assert "provider_account add" in output
    monkeypatch.setattr("providers.transports._REGISTRY", {})  # the app not installed
    with pytest.raises(CommandError, match="SANDBOXES_ENABLED"):
        run("create_merchant", "Refused", "--sandbox")
    assert not Merchant.objects.filter(name="Refused").exists()
    with pytest.raises(CommandError, match="SANDBOXES_ENABLED"):
        run("seed_demo")


@pytest.mark.django_db
def test_create_merchant_refuses_duplicates_and_blank_names():
    run("create_merchant", "Acme")
    with pytest.raises(CommandError):
        run("create_merchant", "Acme")
    with pytest.raises(CommandError):
        run("create_merchant", "  ")


@pytest.mark.django_db
def test_seed_demo_is_rerunnable_and_prints_a_working_key_and_curl():
    first = run("seed_demo")
    second = run("seed_demo")
    assert Merchant.objects.filter(name="Demo Shop").count() == 1
    for output in (first, second):
        key = KEY_RE.search(output).group()
        assert key.startswith("sk_test_")
        assert api_key_authenticate(key) is not None
        # the curl command follows $BASE, which the printed export line sets
        assert "BASE=http://127.0.0.1:" in output
        assert "curl -s $BASE/v1/payment_methods" in output


@pytest.mark.django_db
def test_revoke_api_key_by_prefix_stops_authentication(api, merchant_keys):
    _, test_key, _ = merchant_keys
    assert api.get("/v1/payments").status_code == 200
    key = APIKey.objects.get(key_hash=hash_key(test_key))
    run("revoke_api_key", key.id)
    assert api_key_authenticate(test_key) is None
    assert api.get("/v1/payments").status_code == 401
    with pytest.raises(CommandError):
        run("revoke_api_key", "key_nope")


@pytest.mark.django_db
def test_create_merchant_is_audited_with_the_keys_by_prefix_only():
    output = run("create_merchant", "Audited", "--reason", "onboarding ticket 42")
    merchant = Merchant.objects.get(name="Audited")
    row = AuditLog.objects.get(object_type="merchant", object_id=merchant.pk)
    assert row.actor == cli_actor() and row.actor.startswith("cli:")
    assert (row.action, row.reason, row.outcome) == ("merchant.create", "onboarding ticket 42",
                                                    "ok")
    prefixes = sorted(APIKey.objects.filter(merchant=merchant).values_list("prefix", flat=True))
    assert sorted(row.after["api_keys"]) == prefixes
    assert len(row.after["provider_accounts"]) == 3
    for raw in (m.group() for m in KEY_RE.finditer(output)):
        assert raw not in json.dumps([row.before, row.after, row.reason])


@pytest.mark.django_db
def test_revoke_api_key_is_audited_with_its_reason(merchant_keys):
    key = APIKey.objects.filter(merchant=merchant_keys[0], livemode=True).get()
    run("revoke_api_key", key.prefix, "--reason", "pasted in a public channel")
    row = AuditLog.objects.filter(object_id=key.pk).get()
    assert (row.actor, row.action, row.reason) == (
        cli_actor(), "api_key.revoke", "pasted in a public channel")
    assert row.before == {"revoked_at": None} and row.after["revoked_at"]
    assert "already revoked" in run("revoke_api_key", key.pk)
    assert AuditLog.objects.filter(object_id=key.pk).first().outcome.startswith("unchanged")


@pytest.mark.django_db
def test_seed_demo_is_audited():
    run("seed_demo")
    run("seed_demo")
    assert list(AuditLog.objects.filter(reason="seed_demo").order_by("id").values_list(
        "action", flat=True)) == ["merchant.create", "api_key.create"]


@pytest.mark.django_db
def test_issue_api_key_gives_a_working_key_once_and_audits_it(merchant_keys):
    """A merchant whose key leaked gets a new one, then the old one is revoked: the new key
    works, only its hash is stored, and the audit row names it by id and prefix."""
    merchant, old_key, _ = merchant_keys
    output = run("issue_api_key", merchant.id, "--mode", "live", "--reason", "key leaked")
    (raw,) = [m.group() for m in KEY_RE.finditer(output)]
    assert raw.startswith("sk_live_")
    key, _ = api_key_authenticate(raw)
    assert key.merchant == merchant and key.livemode
    assert not APIKey.objects.filter(key_hash=raw).exists()
    row = AuditLog.objects.get(action="api_key.create", object_id=key.pk)
    assert (row.actor, row.reason) == (cli_actor(), "key leaked")
    assert raw not in json.dumps(row.after)
    run("revoke_api_key", APIKey.objects.get(key_hash=hash_key(old_key)).pk)
    assert api_key_authenticate(old_key) is None and api_key_authenticate(raw) is not None
    with pytest.raises(CommandError):
        run("issue_api_key", "mer_nope")
