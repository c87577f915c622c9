"""Money: integer amounts in a currency's minor unit, ISO 4217 codes and exponents from the
ISO 4217 table (the `iso4217` package)."""

from __future__ import annotations

from decimal import Decimal

import iso4217
from django.conf import settings

from payments.errors import InvalidRequest


def _iso_currencies() -> dict[str, int]:
    """Code → minor-unit exponent for every current ISO 4217 currency that can be charged.

    Straight from the ISO 4217 table shipped by the `iso4217` package: only currencies in use
    today (no DEM or HRK), none without a minor unit (gold, SDR, test codes), and no fund
    codes (CLF, USN…), which are units of account rather than card currencies.
    """
    funds = {
        entry.findtext("Ccy")
        for entry in iso4217.raw_xml.iter("CcyNtry")
        if (name := entry.find("CcyNm")) is not None and name.get("IsFund") == "true"
    }
    return {
        currency.code: currency.exponent
        for currency in iso4217.Currency
        if currency.exponent is not None and currency.code not in funds
    }


EXPONENTS = _iso_currencies()
CURRENCIES = frozenset(EXPONENTS)


def currency_exponent(currency: str) -> int:
    """Decimal places of the minor unit per ISO 4217: JPY 0, USD 2, KWD 3."""
    return EXPONENTS[currency]


def parse_currency(value: object, *, param: str = "currency") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("currency must be a three-letter ISO 4217 code.", param=param)
    code = value.upper()
    if len(code) != 3 or code not in CURRENCIES:
        raise InvalidRequest(
            f"Unknown currency {value!r}: use a three-letter ISO 4217 code such as USD.",
            code="currency_invalid",
            param=param,
        )
    return code


def parse_amount(value: object, *, param: str = "amount") -> int:
    """A positive whole number of minor units, no larger than MAX_PAYMENT_AMOUNT."""
    # bool is an int subclass in Python; JSON true must not become an amount of 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"{param} must be an integer in the currency's minor unit (e.g. 1050 for 10.50).",
            code="amount_invalid",
            param=param,
        )
    if value <= 0:
        raise InvalidRequest(f"{param} must be greater than zero.", code="amount_too_small",
                             param=param)
    if value > settings.MAX_PAYMENT_AMOUNT:
        raise InvalidRequest(
            f"{param} must be at most {settings.MAX_PAYMENT_AMOUNT}.",
            code="amount_too_large",
            param=param,
        )
    return value


def format_amount(amount: int, currency: str) -> str:
    """An amount in minor units as people read it, in major units with the code:
    (1050, "USD") → "10.50 USD", (1000, "JPY") → "1,000 JPY", (1500, "KWD") → "1.500 KWD".
    For operators' screens only; the API always speaks minor units."""
    exponent = EXPONENTS.get(currency.upper(), 2)
    major = Decimal(amount).scaleb(-exponent)
    return f"{major:,.{exponent}f} {currency.upper()}"
