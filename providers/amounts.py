"""Amounts on the wire: our ISO 4217 minor units ↔ each provider's own minor units.

Switchyard counts every amount in its currency's ISO 4217 minor unit (exponents from the
`iso4217` package, as in `payments.money`): 1000 ISK is `1000` (ISK has no minor unit),
10.50 USD is `1050`, 1.250 KWD is `1250`. Providers mostly agree, but not always: Stripe and
Adyen count ISK in hundredths (1000 ISK is `100000` on their wire), Adyen counts IDR in whole
rupiah, Checkout.com counts CLP in hundredths; and some refuse amounts ISO allows (Stripe and
Checkout.com want three-decimal amounts to end in 0).

Each provider package declares its own table (`providers/<name>/currencies.py`: a
`WireCurrencies`, one row per currency that is not the provider's default, each row citing
the provider's doc). This module converts with it, both ways:

- `to_wire(amount, currency)`: what to send. An amount the provider cannot represent (a
  fraction of its unit, a step it refuses, too many digits) raises `AmountNotRepresentable`
  (a `ProviderBadRequest`, code `amount_not_representable`) before anything is sent; routing
  asks `problem(...)` first and skips such an account.
- `from_wire(amount, currency)`: what a provider's answer, lookup, webhook or report amount
  is in ISO minor units; `from_wire_or_zero` for places where 0 already means "not known"
  (a lookup's or an event's amount), so that one odd amount never blocks a delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import iso4217

from providers.base import ProviderBadRequest


def _pow10(exponent: int) -> int:
    """10 ** exponent for exponent >= 0: an int (`**` cannot promise the type checker one)."""
    return int(10 ** exponent)

class AmountNotRepresentable(ProviderBadRequest):
    """The provider cannot charge this amount in this currency (refused before sending)."""

    code = "amount_not_representable"


@dataclass(frozen=True)
class WireUnit:
    """How a provider counts one currency on its wire."""

    exponent: int  # decimals of the provider's wire amount (ISK at Stripe: 2)
    step: int = 1  # every wire amount must be a multiple of this (Stripe KWD: 10)
    source: str = ""  # the provider's doc this row comes from


def iso_exponent(currency: str) -> int:
    """ISO 4217 decimals of the currency's minor unit; AmountNotRepresentable for a code
    without one (unknown, or a unit such as gold)."""
    try:
        exponent = iso4217.Currency(currency.upper()).exponent
    except ValueError:
        exponent = None
    if exponent is None:
        raise AmountNotRepresentable(f"{currency!r} is not an ISO 4217 currency with a minor "
                                     "unit.", raw_code="currency")
    return exponent


@dataclass(frozen=True)
class WireCurrencies:
    """One provider's currency table. `default_exponent` None means "ISO 4217's", else the
    provider's own default (Stripe and Checkout.com: 2 for every currency they do not list).
    `max_digits`: the most digits a wire amount may have (Checkout.com: 9), if any."""

    provider: str  # its name, for messages
    units: Mapping[str, WireUnit] = field(default_factory=dict)
    default_exponent: int | None = None
    max_digits: int | None = None

    def unit(self, currency: str) -> WireUnit:
        code = currency.upper()
        if code in self.units:
            return self.units[code]
        if self.default_exponent is None:
            return WireUnit(iso_exponent(code))
        return WireUnit(self.default_exponent)

    def problem(self, amount: int, currency: str) -> str | None:
        """Why the provider cannot take `amount` (ISO minor units of `currency`), in words
        for a merchant; None when it can."""
        try:
            self.to_wire(amount, currency)
        except AmountNotRepresentable as exc:
            return exc.message
        return None

    def to_wire(self, amount: int, currency: str) -> int:
        code = currency.upper()
        iso, unit = iso_exponent(code), self.unit(code)
        shift = unit.exponent - iso
        if shift >= 0:
            wire = amount * _pow10(shift)
        else:
            factor = _pow10(-shift)
            if amount % factor:
                unit_text = (f"whole {code}" if unit.exponent == 0
                             else f"units of {_major(factor, code)} {code}")
                raise AmountNotRepresentable(
                    f"{self.provider} only takes {code} amounts in {unit_text} and cannot "
                    f"charge {_major(amount, code)} {code}.", raw_code=code)
            wire = amount // factor
        if wire % unit.step:
            raise AmountNotRepresentable(
                f"{self.provider} only takes {code} amounts in steps of "
                f"{_step_major(unit.step, unit.exponent)} {code} and cannot charge "
                f"{_major(amount, code)} {code}.", raw_code=code)
        if self.max_digits is not None and len(str(abs(wire))) > self.max_digits:
            raise AmountNotRepresentable(
                f"{self.provider} takes at most {self.max_digits} digits in an amount: "
                f"{_major(amount, code)} {code} is {wire} on its wire.", raw_code=code)
        return wire

    def from_wire(self, amount: int, currency: str) -> int:
        """A provider's wire amount in ISO minor units; AmountNotRepresentable if it is a
        fraction of the ISO unit (a provider reporting a charge we could never have asked
        for)."""
        code = currency.upper()
        shift = self.unit(code).exponent - iso_exponent(code)
        if shift <= 0:
            return amount * _pow10(-shift)
        factor = _pow10(shift)
        if amount % factor:
            raise AmountNotRepresentable(
                f"{self.provider} reported {amount} in its {code} units: not a whole number "
                f"of ISO minor units.", raw_code=code)
        return amount // factor

    def from_wire_or_zero(self, amount: int, currency: str) -> int:
        """`from_wire`, or 0 ("not known") for an amount it cannot convert."""
        try:
            return self.from_wire(amount, currency)
        except AmountNotRepresentable:
            return 0


def _major(minor: int, currency: str) -> str:
    """ISO minor units as major-unit text: 1050 KWD → "1.050"."""
    exponent = iso_exponent(currency)
    sign, digits = ("-" if minor < 0 else ""), str(abs(minor)).rjust(exponent + 1, "0")
    if not exponent:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def _step_major(step: int, wire_exponent: int) -> str:
    """A step of wire units as major-unit text: 100 at exponent 2 → "1"."""
    digits = str(step).rjust(wire_exponent + 1, "0")
    if not wire_exponent:
        return digits
    whole, fraction = digits[:-wire_exponent], digits[-wire_exponent:].rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole
