"""Money: integer amounts in a currency's minor unit, ISO 4217 codes, exponents from Babel."""

from __future__ import annotations

from babel.numbers import get_currency_precision, list_currencies
from django.conf import settings

from payments.errors import InvalidRequest

# Babel also lists historic and fund codes; keep only the ones in ISO 4217 use today.
_NOT_TRADED = {"XAU", "XAG", "XPT", "XPD", "XDR", "XTS", "XXX", "XBA", "XBB", "XBC", "XBD",
               "XSU", "XUA"}
CURRENCIES = frozenset(c for c in list_currencies() if len(c) == 3 and c not in _NOT_TRADED)


def currency_exponent(currency: str) -> int:
    """Decimal places of the minor unit: JPY 0, USD 2, KWD 3."""
    return get_currency_precision(currency)


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
