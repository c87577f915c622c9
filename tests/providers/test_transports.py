"""The transport registry: production code reaches an in-process sandbox only through it, and
a sandbox:// account where nothing registered the scheme is refused before anything is sent."""

import pytest

from providers import transports
from providers.accounts import AccountError, validate_account
from providers.base import AccountConfig, ProviderUnavailable
from providers.http import client_for
from providers.models import SANDBOX_URL, ProviderAccount
from providers.sandboxes.transport import SandboxTransport


def config(base_url: str) -> AccountConfig:
    return AccountConfig(name="stripe-sandbox", provider="stripe", livemode=False,
                         base_url=base_url, credentials={"secret_key": "sk_test_x"},
                         connect_timeout=1.0, read_timeout=1.0, account_id="acct_x")


def test_the_sandboxes_app_registers_the_sandbox_scheme():
    assert transports.local_transport(SANDBOX_URL) is not None
    assert transports.local_transport("https://api.stripe.com") is None
    with client_for(config(SANDBOX_URL)) as client:
        assert isinstance(client._transport, SandboxTransport)


def test_without_the_sandboxes_a_sandbox_account_is_refused(monkeypatch):
    monkeypatch.setattr(transports, "_REGISTRY", {})
    assert transports.is_local(SANDBOX_URL)
    assert not transports.is_local("ftp://example.com")
    with pytest.raises(ProviderUnavailable) as caught:
        client_for(config(SANDBOX_URL))
    assert caught.value.sent is False  # provably never sent: safe to fail over
    with pytest.raises(AccountError, match="SANDBOXES_ENABLED"):
        validate_account(ProviderAccount(provider="stripe", base_url=SANDBOX_URL), {})
    with client_for(config("https://api.stripe.com")) as client:  # the network, as always
        assert str(client.base_url) == "https://api.stripe.com"


def test_an_account_has_no_sandbox_default():
    """Nothing points at a sandbox unless someone said so: no default base URL."""
    account = ProviderAccount(provider="stripe")
    assert not ProviderAccount._meta.get_field("base_url").has_default()
    assert account.base_url == "" and not account.is_sandbox
    with pytest.raises(AccountError, match="base URL"):
        validate_account(account, {"secret_key": "sk_test_x"})
