"""Provider accounts as adapters see them (plain dataclasses, no ORM past this point), and how
an account is checked and saved."""

from typing import Any

from django.db import transaction
from django.db.models import Model

from providers import transports
from providers.base import AccountConfig, Adapter
from providers.models import SANDBOX_URL, ProviderAccount
from providers.registry import get_adapter


def account_config(account: ProviderAccount) -> AccountConfig:
    return AccountConfig(
        name=account.name,
        provider=account.provider,
        livemode=account.livemode,
        base_url=account.base_url,
        credentials=account.get_credentials(),
        connect_timeout=account.connect_timeout,
        read_timeout=account.read_timeout,
        account_id=account.id,
    )


def adapter_for(account: ProviderAccount) -> Adapter:
    return get_adapter(account_config(account))


REQUIRED_CREDENTIALS = {
    "stripe": ("secret_key",),
    "adyen": ("api_key", "merchant_account"),
    "checkout": ("secret_key", "processing_channel_id"),
}


class AccountError(ValueError):
    """An account setting that cannot work (message says which and why)."""


def validate_account(account: ProviderAccount, credentials: dict[str, str]) -> None:
    """Check an account before it is saved: URL, mode, credentials, limits, fees."""
    if account.provider not in REQUIRED_CREDENTIALS:
        raise AccountError(f"Unknown provider {account.provider!r}.")
    url = account.base_url
    if transports.is_local(url) and transports.local_transport(url) is None:
        raise AccountError(f"Nothing serves {transports.scheme_of(url)}:// here (the sandboxes "
                           "are installed only when SANDBOXES_ENABLED is true).")
    if account.is_sandbox:
        if account.livemode:
            raise AccountError("A live account cannot point at a sandbox.")
    elif not url.startswith(("https://", "http://")):
        raise AccountError("base URL must be https://… (or http:// for a local sandbox).")
    elif account.livemode and not url.startswith("https://"):
        raise AccountError("A live account must use https.")
    if not account.is_sandbox:
        missing = [k for k in REQUIRED_CREDENTIALS[account.provider] if not credentials.get(k)]
        if missing:
            raise AccountError(f"{account.provider} needs credential(s): {', '.join(missing)}.")
    for name in ("connect_timeout", "read_timeout"):
        if not 0 < getattr(account, name) <= 120:
            raise AccountError(f"{name} must be between 0 and 120 seconds.")
    for code, fee in (account.fees or {}).items():
        if not isinstance(fee, dict) or set(fee) - {"percent", "fixed"}:
            raise AccountError(f"fee for {code} must be {{'percent': '2.9', 'fixed': 30}}.")


def fee_schedule_entry(percent: str, fixed: int) -> dict[str, Any]:
    """A fee schedule entry, checked: percent a decimal string in [0, 100), fixed ≥ 0."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(percent)
    except InvalidOperation:
        raise AccountError(f"fee percent {percent!r} is not a decimal number.") from None
    if not Decimal(0) <= value < Decimal(100):
        raise AccountError("fee percent must be at least 0 and below 100.")
    if fixed < 0:
        raise AccountError("fixed fee must not be negative.")
    return {"percent": str(value), "fixed": fixed}


def account_save(*, account: ProviderAccount, credentials: dict[str, str]) -> None:
    """Check and save an account with its credentials. An account served in-process (a
    `sandbox://` base URL) gets its transport's placeholder credentials when given none, and
    the provider-side wiring a real account gets in the provider's dashboard (its sandbox's
    webhooks to us)."""
    local = transports.local_transport(account.base_url)
    if local is not None and not credentials:
        credentials = local.placeholder_credentials(account.provider)
    validate_account(account, credentials)
    with transaction.atomic():
        account.set_credentials(credentials)
        account.save()
        if local is not None:
            local.connect_account(account)


# The test-mode accounts a merchant gets when asked for sandbox accounts (`create_merchant
# --sandbox`, `seed_demo`), in their default order.
SANDBOX_ACCOUNTS = (("stripe-sandbox", "stripe"), ("adyen-sandbox", "adyen"),
                    ("checkout-sandbox", "checkout"))


def sandbox_accounts_create(*, merchant: Model) -> list[ProviderAccount]:
    """One test-mode account per provider type on the in-process sandboxes, for `merchant`.
    AccountError when the sandboxes are not installed."""
    accounts = []
    for priority, (name, provider) in enumerate(SANDBOX_ACCOUNTS):
        account = ProviderAccount(merchant_id=merchant.pk, name=name, provider=provider,
                                  livemode=False, base_url=SANDBOX_URL,
                                  priority=(priority + 1) * 10)
        account_save(account=account, credentials={})
        accounts.append(account)
    return accounts
