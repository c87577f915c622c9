"""Which adapter serves a provider account: one per provider type, for its sandbox
(`sandbox://local`, in-process through providers/transports.py) and its real API alike — the
base URL decides where it goes.
And how each provider type counts amounts on its wire (`providers.amounts`)."""

from collections.abc import Callable

from providers.adyen import currencies as adyen_currencies
from providers.adyen.adapter import AdyenAdapter
from providers.amounts import WireCurrencies
from providers.base import AccountConfig, Adapter
from providers.checkout import currencies as checkout_currencies
from providers.checkout.adapter import CheckoutAdapter
from providers.stripe import currencies as stripe_currencies
from providers.stripe.adapter import StripeAdapter

# every adapter class must satisfy the contract (providers.base.Adapter)
ADAPTERS: dict[str, Callable[[AccountConfig], Adapter]] = {
    "stripe": StripeAdapter, "adyen": AdyenAdapter, "checkout": CheckoutAdapter}
WIRE_CURRENCIES: dict[str, WireCurrencies] = {
    "stripe": stripe_currencies.WIRE, "adyen": adyen_currencies.WIRE,
    "checkout": checkout_currencies.WIRE}


def get_adapter(account: AccountConfig) -> Adapter:
    return ADAPTERS[account.provider](account)


def amount_problem(provider: str, amount: int, currency: str) -> str | None:
    """Why accounts of this provider type cannot charge `amount` (ISO minor units of
    `currency`), in words for a merchant; None when they can."""
    wire = WIRE_CURRENCIES.get(provider)
    return wire.problem(amount, currency) if wire is not None else None
