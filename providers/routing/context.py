"""What routing knows about a payment: plain values, so the engine never touches a Payment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RoutingContext:
    merchant_id: str
    livemode: bool
    amount: int  # minor units of `currency`
    currency: str  # ISO 4217, upper case
    card_brand: str | None = None  # visa, mastercard, amex, … (PaymentMethod.brand)
    card_bin: str | None = None  # the card's first 6–8 digits (PaymentMethod.bin)
    billing_country: str | None = None  # ISO 3166-1 alpha-2, upper case
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Accounts that must not be offered again (failover: those already tried).
    exclude_account_ids: frozenset[str] = frozenset()
