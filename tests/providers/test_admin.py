"""Provider accounts in the admin: credentials are write-only and validated."""

import json

import pytest
from django.contrib.auth.models import User

from providers.models import ProviderAccount
from tests.conftest import admin_change_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("ops", "ops@example.invalid", "pw-not-secret")
    client.force_login(user)
    return client


def form_data(account: ProviderAccount, **changes) -> dict:
    data = {"merchant": account.merchant_id, "name": account.name, "provider": account.provider,
            "livemode": "on" if account.livemode else "", "base_url": account.base_url,
            "enabled": "on", "priority": account.priority, "currencies": json.dumps([]),
            "fees": json.dumps({}), "connect_timeout": 3, "read_timeout": 10,
            "breaker_fail_max": 5, "breaker_reset_timeout": 30, "rate_limit_per_second": "",
            "concurrency_limit": "", "new_credentials": ""}
    data.update(changes)
    return data


def test_change_page_never_shows_credentials(staff_client, merchant):
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    account.set_credentials({"secret_key": "sk_test_do_not_show_me"})
    account.save()
    page = staff_client.get(admin_change_url(account))
    assert page.status_code == 200
    assert b"sk_test_do_not_show_me" not in page.content
    assert b"secret_key" in page.content  # which keys are set is shown


def test_new_credentials_are_encrypted_and_empty_keeps_the_old(staff_client, merchant):
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    url = admin_change_url(account)
    resp = staff_client.post(url, form_data(
        account, base_url="https://api.stripe.com",
        new_credentials='{"secret_key": "sk_test_rotated"}'))
    assert resp.status_code == 302, resp.content[:2000]
    account.refresh_from_db()
    assert account.get_credentials() == {"secret_key": "sk_test_rotated"}
    assert b"sk_test_rotated" not in bytes(account.credentials_encrypted)
    resp = staff_client.post(url, form_data(account, priority=7))
    assert resp.status_code == 302
    account.refresh_from_db()
    assert account.priority == 7
    assert account.get_credentials() == {"secret_key": "sk_test_rotated"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"new_credentials": "{not json"}, b"Not valid JSON"),
    ({"new_credentials": '["a"]'}, b"string keys and values"),
    ({"base_url": "https://api.stripe.com", "new_credentials": '{"other": "x"}'},
     b"secret_key"),
    ({"livemode": "on"}, b"cannot point at a sandbox"),
])
def test_invalid_settings_are_refused(staff_client, merchant, changes, message):
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    resp = staff_client.post(admin_change_url(account),
                             form_data(account, **changes))
    assert resp.status_code == 200
    assert message in resp.content


def test_change_page_opens_for_ids_that_look_admin_quoted(staff_client, merchant):
    """The admin unquotes ``_XX``: an id like ``acct_2B…`` must still open its own page."""
    account = ProviderAccount.objects.get(merchant=merchant, name="stripe-sandbox")
    clone = ProviderAccount.objects.create(
        id="acct_2BUN6CBZ1T8cH6JHFGl1OXLn", merchant=merchant, name="quoted-id",
        provider=account.provider, base_url=account.base_url)
    page = staff_client.get(admin_change_url(clone))
    assert page.status_code == 200
    assert b"quoted-id" in page.content
