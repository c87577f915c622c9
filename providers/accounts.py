"""Provider accounts as adapters see them (plain dataclasses, no ORM past this point)."""

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


def default_order(*, merchant_id: str, livemode: bool) -> list[ProviderAccount]:
    """The merchant's enabled accounts in this mode, in priority order."""
    return list(
        ProviderAccount.objects.filter(merchant_id=merchant_id, livemode=livemode, enabled=True)
    )
