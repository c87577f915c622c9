"""Which adapter serves a provider account."""

from providers.base import AccountConfig, Adapter, ProviderUnavailable
from providers.sandbox.simulator import SandboxAdapter


def get_adapter(account: AccountConfig) -> Adapter:
    if account.base_url.startswith("sandbox://"):
        return SandboxAdapter(account.provider)
    # The real provider adapters (Stripe, Adyen, Checkout.com) are not built yet: refusing
    # before any request is sent is provably safe, so the caller sees "nothing was charged".
    raise ProviderUnavailable(f"No adapter for provider {account.provider!r} at a real URL yet.")
