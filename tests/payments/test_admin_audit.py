"""The audit log in the admin (read-only, per object), the audited admin actions with their
mandatory reason, and what the `support` and `payment operators` groups may do."""

import importlib
import json

import pytest
from django.apps import apps as global_apps
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from payments.audit import audit_record
from payments.models import APIKey, AuditLog
from providers.models import ProviderAccount, RetryRule
from providers.resilience.breaker import breaker_for
from tests.conftest import admin_change_url
from tests.providers.test_admin import form_data

pytestmark = pytest.mark.django_db

GROUPS_MIGRATION = importlib.import_module("payments.migrations.0011_permission_groups")
CHANGELIST = "/admin/payments/auditlog/"
ACCOUNTS = "/admin/providers/provideraccount/"


@pytest.fixture
def groups():
    """The groups as migration 0011 makes them. (A transactional test elsewhere in the run
    may have flushed the database, groups included: make them again, as the migration does.)"""
    GROUPS_MIGRATION.create_groups(global_apps, None)
    return {g.name: g for g in Group.objects.filter(name__in=GROUPS_MIGRATION.GROUPS)}


def member_client(client, groups, group: str, username: str):
    user = User.objects.create_user(username, f"{username}@example.invalid", "pw-not-secret",
                                    is_staff=True)
    user.groups.add(groups[group])
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser("ops", "ops@example.invalid",
                                                     "pw-not-secret"))
    return client


def act(client, changelist: str, action: str, objects, reason: str | None):
    """Run an admin action: without `reason` only its confirmation page, else confirmed."""
    data = {"action": action, "_selected_action": [o.pk for o in objects]}
    if reason is not None:
        data.update({"apply": "yes", "reason": reason})
    return client.post(changelist, data)


# --- the audit log's pages -------------------------------------------------------------------
def write(**fields):
    from django.db import transaction

    with transaction.atomic():
        return audit_record(**{"actor": "cli:ops", "action": "test.action",
                               "object_type": "thing", "object_id": "thing_1", **fields})


def test_the_audit_log_is_read_only_even_for_a_superuser(staff_client):
    row = write(before={"enabled": True}, after={"enabled": False})
    assert staff_client.get(CHANGELIST).status_code == 200
    page = staff_client.get(admin_change_url(row))
    assert page.status_code == 200
    assert b"&quot;enabled&quot;: false" in page.content  # before/after as indented JSON
    assert b'name="_save"' not in page.content
    assert staff_client.get(CHANGELIST + "add/").status_code == 403
    assert staff_client.post(admin_change_url(row), {"reason": "rewritten"}).status_code == 403
    delete_url = reverse("admin:payments_auditlog_delete", args=[row.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    staff_client.post(CHANGELIST, {"action": "delete_selected", "post": "yes",
                                   "_selected_action": [row.pk]})
    assert AuditLog.objects.filter(pk=row.pk, reason="").exists()


def test_the_list_is_newest_first_and_filters_by_object_id(staff_client):
    first = write(object_id="acct_one")
    write(object_id="acct_two", action="provider_account.disable")
    last = write(object_id="acct_one", actor="user:alice")
    rows = staff_client.get(CHANGELIST, {"object_id": "acct_one"}).context["cl"].result_list
    assert [r.pk for r in rows] == [last.pk, first.pk]
    by_actor = staff_client.get(CHANGELIST, {"actor": "user:alice"}).context["cl"].result_list
    assert [r.pk for r in by_actor] == [last.pk]
    by_action = staff_client.get(CHANGELIST, {"action": "provider_account.disable"})
    assert [r.object_id for r in by_action.context["cl"].result_list] == ["acct_two"]
    search = staff_client.get(CHANGELIST, {"q": "acct_two"}).context["cl"].result_list
    assert [r.object_id for r in search] == ["acct_two"]


# --- audited admin changes and actions -------------------------------------------------------
def test_a_credential_change_in_the_form_is_audited_without_the_secret(staff_client, merchant):
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    resp = staff_client.post(admin_change_url(account), form_data(
        account, base_url="https://api.stripe.com",
        new_credentials='{"secret_key": "sk_test_admin_rotated"}'),
        REMOTE_ADDR="192.0.2.10")
    assert resp.status_code == 302, resp.content[:2000]
    row = AuditLog.objects.filter(object_id=account.pk).first()
    assert (row.actor, row.action, row.ip) == ("user:ops", "provider_account.update",
                                               "192.0.2.10")
    assert row.before["base_url"] == "sandbox://local"
    assert row.after["base_url"] == "https://api.stripe.com"
    assert row.after["credentials"] == ["secret_key"]
    assert "sk_test_admin_rotated" not in json.dumps([row.before, row.after])
    # the account's page links to its history
    page = staff_client.get(admin_change_url(account))
    assert f"{CHANGELIST}?object_id={account.pk}".encode() in page.content


def test_routing_rule_changes_are_audited(staff_client, merchant):
    resp = staff_client.post("/admin/providers/retryrule/add/", {
        "merchant": merchant.pk, "livemode": "", "decline_code": "try_again_later",
        "retry": ""})
    assert resp.status_code == 302, resp.content[:2000]
    row = AuditLog.objects.get(action="retry_rule.create")
    assert row.after["decline_code"] == "try_again_later" and row.actor == "user:ops"
    assert "updated_at" not in row.after
    rule = RetryRule.objects.get(pk=row.object_id)
    resp = staff_client.post(admin_change_url(rule), {
        "merchant": merchant.pk, "livemode": "", "decline_code": "try_again_later",
        "retry": "on"})
    assert resp.status_code == 302, resp.content[:2000]
    change = AuditLog.objects.get(action="retry_rule.update")
    assert (change.before, change.after) == ({"retry": False}, {"retry": True})


def test_deleting_a_provider_account_is_audited(staff_client, merchant):
    account = ProviderAccount.objects.create(merchant=merchant, name="spare", provider="stripe",
                                             base_url="sandbox://local")
    resp = staff_client.post(reverse("admin:providers_provideraccount_delete",
                                     args=[account.pk]), {"post": "yes"})
    assert resp.status_code == 302
    assert not ProviderAccount.objects.filter(pk=account.pk).exists()
    row = AuditLog.objects.get(object_id=account.pk)
    assert row.action == "provider_account.delete" and row.before["name"] == "spare"


def test_disable_needs_a_reason_and_is_audited(staff_client, merchant):
    account = ProviderAccount.objects.get(merchant=merchant, name="checkout-sandbox")
    page = act(staff_client, ACCOUNTS, "disable", [account], None)
    assert page.status_code == 200 and b'name="reason"' in page.content
    refused = act(staff_client, ACCOUNTS, "disable", [account], "   ")
    assert refused.status_code == 200 and b"required" in refused.content
    assert ProviderAccount.objects.get(pk=account.pk).enabled
    assert not AuditLog.objects.filter(object_id=account.pk).exists()

    done = act(staff_client, ACCOUNTS, "disable", [account], "Checkout.com incident 7")
    assert done.status_code == 302
    assert not ProviderAccount.objects.get(pk=account.pk).enabled
    row = AuditLog.objects.get(object_id=account.pk)
    assert (row.actor, row.action, row.reason, row.ip, row.before, row.after) == (
        "user:ops", "provider_account.disable", "Checkout.com incident 7", "127.0.0.1",
        {"enabled": True}, {"enabled": False})
    act(staff_client, ACCOUNTS, "enable", [account], "incident over")
    assert ProviderAccount.objects.get(pk=account.pk).enabled


def test_reset_breaker_action(staff_client, merchant):
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    breaker_for(account).open()
    resp = act(staff_client, ACCOUNTS, "reset_breaker", [account], "provider recovered")
    assert resp.status_code == 302
    assert breaker_for(account).current_state == "closed"
    row = AuditLog.objects.get(object_id=account.pk)
    assert (row.action, row.before, row.reason) == (
        "provider_account.reset_breaker", {"breaker": "open"}, "provider recovered")


def test_revoking_a_key_in_the_admin_is_audited(staff_client, merchant):
    key = APIKey.objects.filter(merchant=merchant, livemode=True).get()
    resp = act(staff_client, "/admin/payments/apikey/", "revoke", [key], "merchant asked")
    assert resp.status_code == 302
    assert APIKey.objects.get(pk=key.pk).revoked_at is not None
    row = AuditLog.objects.get(object_id=key.pk)
    assert (row.actor, row.action, row.reason) == ("user:ops", "api_key.revoke",
                                                   "merchant asked")


# --- groups ----------------------------------------------------------------------------------
def codenames(group: Group) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


def test_migration_0011_makes_the_groups_and_is_reversible(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate([("payments", "0010_webhooks_and_audit_log")])
    assert not Group.objects.filter(name__in=GROUPS_MIGRATION.GROUPS).exists()
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    support = codenames(Group.objects.get(name="support"))
    operators = codenames(Group.objects.get(name="payment operators"))
    assert {"payments.view_payment", "payments.view_auditlog", "payments.view_apikey",
            "providers.view_provideraccount"} <= support
    assert all(".view_" in name for name in support)
    assert support <= operators
    assert operators - support == {
        "payments.change_payment", "payments.change_apikey",
        "providers.change_provideraccount", "providers.change_routingrule",
        "providers.change_retryrule"}
    assert not {name for name in operators if "auditlog" in name} - {"payments.view_auditlog"}


def test_support_can_look_but_not_change_anything(client, groups, merchant):
    support = member_client(client, groups, "support", "helpdesk")
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    key = APIKey.objects.filter(merchant=merchant, livemode=True).get()
    write(object_id=account.pk)
    rows = AuditLog.objects.count()
    assert support.get(ACCOUNTS).status_code == 200
    assert support.get(CHANGELIST, {"object_id": account.pk}).status_code == 200
    assert support.get(admin_change_url(account)).status_code == 200

    assert support.post(admin_change_url(account),
                        form_data(account, priority=1)).status_code == 403
    assert support.post(ACCOUNTS + "add/", form_data(account, name="x")).status_code == 403
    for changelist, action, obj in ((ACCOUNTS, "disable", account),
                                    (ACCOUNTS, "reset_breaker", account),
                                    ("/admin/payments/apikey/", "revoke", key)):
        act(support, changelist, action, [obj], "trying")
    account.refresh_from_db()
    assert account.enabled and account.priority != 1
    assert APIKey.objects.get(pk=key.pk).revoked_at is None
    assert AuditLog.objects.count() == rows
    assert b'value="disable"' not in support.get(ACCOUNTS).content


def test_payment_operators_may_act(client, groups, merchant):
    operator = member_client(client, groups, "payment operators", "oncall")
    account = ProviderAccount.objects.get(merchant=merchant, name="adyen-sandbox")
    assert act(operator, ACCOUNTS, "disable", [account], "maintenance").status_code == 302
    assert not ProviderAccount.objects.get(pk=account.pk).enabled
    assert AuditLog.objects.get(object_id=account.pk).actor == "user:oncall"
    assert not Permission.objects.filter(group__name="payment operators",
                                         codename__in=["change_auditlog",
                                                       "delete_auditlog"]).exists()
