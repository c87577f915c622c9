"""Which adapter serves a provider account: one per provider type, for its sandbox
(`sandbox://local`, in-process) and its real API alike — the base URL decides where it goes."""

from providers.adyen.adapter import AdyenAdapter
from providers.base import AccountConfig, Adapter
from providers.checkout.adapter import CheckoutAdapter
from providers.stripe.adapter import StripeAdapter

ADAPTERS = {"stripe": StripeAdapter, "adyen": AdyenAdapter, "checkout": CheckoutAdapter}


def get_adapter(account: AccountConfig) -> Adapter:
    return ADAPTERS[account.provider](account)
