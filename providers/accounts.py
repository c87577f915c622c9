"""Provider accounts as adapters see them (plain dataclasses, no ORM past this point)."""

from typing import Any

from providers.base import AccountConfig, Adapter
from providers.models import ProviderAccount
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
