"""Amounts in each provider's own minor units (issue #8, #6): the per-provider tables, the
shared conversion both ways, and what is refused before anything is sent."""

from __future__ import annotations

import iso4217
import pytest

from providers.adyen.currencies import WIRE as ADYEN
from providers.amounts import AmountNotRepresentable, WireCurrencies, WireUnit
from providers.base import ProviderBadRequest
from providers.checkout.currencies import WIRE as CHECKOUT
from providers.registry import WIRE_CURRENCIES, amount_problem
from providers.stripe.currencies import WIRE as STRIPE

# (table, currency, ISO minor units, the provider's wire amount) — every currency where a
# provider differs from ISO 4217, or restricts what ISO allows, plus a plain one each.
CONVERSIONS = [
    # Stripe: ISK and UGX two-decimal (decimals 00); MGA zero-decimal; HUF/TWD two-decimal
    # for charges; three-decimal as ISO; the other zero-decimal currencies as ISO.
    (STRIPE, "ISK", 1000, 100000),
    (STRIPE, "UGX", 5, 500),
    (STRIPE, "MGA", 1500, 15),
    (STRIPE, "HUF", 1050, 1050),
    (STRIPE, "TWD", 1050, 1050),
    (STRIPE, "KWD", 1250, 1250),
    (STRIPE, "BHD", 1000, 1000),
    (STRIPE, "JOD", 990, 990),
    (STRIPE, "OMR", 10, 10),
    (STRIPE, "TND", 5000, 5000),
    (STRIPE, "JPY", 500, 500),
    (STRIPE, "CLP", 1000, 1000),
    (STRIPE, "KRW", 1000, 1000),
    (STRIPE, "USD", 1050, 1050),
    # Adyen: CLP and ISK in hundredths, CVE and IDR whole units.
    (ADYEN, "ISK", 1000, 100000),
    (ADYEN, "CLP", 1000, 100000),
    (ADYEN, "IDR", 1500000, 15000),
    (ADYEN, "CVE", 12300, 123),
    (ADYEN, "KWD", 1005, 1005),
    (ADYEN, "JPY", 500, 500),
    (ADYEN, "EUR", 1050, 1050),
    # Checkout.com: CLP divided by 100, the full-amount list as ISO, three-decimal as ISO.
    (CHECKOUT, "CLP", 1000, 100000),
    (CHECKOUT, "ISK", 1000, 1000),
    (CHECKOUT, "UGX", 1000, 1000),
    (CHECKOUT, "JPY", 500, 500),
    (CHECKOUT, "KWD", 1250, 1250),
    (CHECKOUT, "IQD", 1000, 1000),
    (CHECKOUT, "LYD", 2500, 2500),
    (CHECKOUT, "MGA", 1050, 1050),
    (CHECKOUT, "EUR", 1050, 1050),
]


@pytest.mark.parametrize("table,currency,iso,wire", CONVERSIONS,
                         ids=[f"{t.provider}-{c}" for t, c, _, _ in CONVERSIONS])
def test_converts_both_ways(table, currency, iso, wire):
    assert table.to_wire(iso, currency) == wire
    assert table.from_wire(wire, currency) == iso
    assert table.to_wire(iso, currency.lower()) == wire  # Stripe sends lower case
    assert table.problem(iso, currency) is None


# (table, currency, ISO minor units): amounts the provider cannot take.
UNREPRESENTABLE = [
    (STRIPE, "KWD", 1005),  # three-decimal: the last digit must be 0
    (STRIPE, "BHD", 1),
    (STRIPE, "JOD", 999),
    (STRIPE, "OMR", 12345),
    (STRIPE, "TND", 7),
    (STRIPE, "MGA", 1050),  # zero-decimal at Stripe, two-decimal in ISO
    (STRIPE, "IQD", 1005),  # not a Stripe three-decimal currency: Stripe's default, two
    (ADYEN, "IDR", 12345),  # whole rupiah only at Adyen
    (ADYEN, "CVE", 150),
    (CHECKOUT, "KWD", 1005),  # "the last digit must always be a 0"
    (CHECKOUT, "BHD", 1001),
    (CHECKOUT, "IQD", 3),
    (CHECKOUT, "JOD", 11),
    (CHECKOUT, "LYD", 19),
    (CHECKOUT, "OMR", 101),
    (CHECKOUT, "TND", 1),
    (CHECKOUT, "CLP", 10_000_000),  # 1000000000 on the wire: more than nine digits
    (CHECKOUT, "EUR", 1_000_000_000),
]


@pytest.mark.parametrize("table,currency,iso", UNREPRESENTABLE,
                         ids=[f"{t.provider}-{c}-{a}" for t, c, a in UNREPRESENTABLE])
def test_unrepresentable_amounts_are_refused_with_a_clear_error(table, currency, iso):
    with pytest.raises(AmountNotRepresentable) as excinfo:
        table.to_wire(iso, currency)
    error = excinfo.value
    assert isinstance(error, ProviderBadRequest)
    assert error.code == "amount_not_representable"
    assert table.provider in error.message and currency in error.message
    assert table.problem(iso, currency) == error.message


def test_messages_name_the_rule_in_major_units():
    assert STRIPE.problem(1005, "KWD") == (
        "Stripe only takes KWD amounts in steps of 0.01 KWD and cannot charge 1.005 KWD.")
    assert ADYEN.problem(12345, "IDR") == (
        "Adyen only takes IDR amounts in whole IDR and cannot charge 123.45 IDR.")
    assert "at most 9 digits" in CHECKOUT.problem(10_000_000, "CLP")


@pytest.mark.parametrize("table,currency,wire", [
    (STRIPE, "ISK", 105),  # a fraction of a króna: never asked for
    (ADYEN, "CLP", 1),
    (CHECKOUT, "CLP", 150),
])
def test_a_wire_amount_that_is_no_whole_iso_unit_is_not_guessed(table, currency, wire):
    with pytest.raises(AmountNotRepresentable):
        table.from_wire(wire, currency)
    assert table.from_wire_or_zero(wire, currency) == 0


def test_unknown_currency_is_refused_not_guessed():
    with pytest.raises(AmountNotRepresentable):
        ADYEN.to_wire(100, "XXX")
    with pytest.raises(AmountNotRepresentable):
        STRIPE.to_wire(100, "XAU")  # a unit without minor unit in ISO


@pytest.mark.parametrize("provider", sorted(WIRE_CURRENCIES))
def test_every_table_row_cites_its_doc_and_is_a_real_currency(provider):
    table = WIRE_CURRENCIES[provider]
    for code, unit in table.units.items():
        assert unit.source.startswith("https://"), code
        assert iso4217.Currency(code).exponent is not None, code
        assert unit.step >= 1 and unit.exponent in (0, 2, 3), code


def test_defaults_follow_each_providers_doc():
    # Stripe and Checkout.com: two-decimal unless listed; Adyen: ISO 4217 unless listed.
    assert STRIPE.unit("EUR") == WireUnit(2) and CHECKOUT.unit("EUR") == WireUnit(2)
    assert ADYEN.unit("KWD") == WireUnit(3) and ADYEN.unit("JPY") == WireUnit(0)
    assert STRIPE.to_wire(1050, "LYD") == 105  # ISO 3, Stripe's default 2


def test_amount_problem_by_provider_type():
    assert amount_problem("stripe", 1005, "KWD") is not None
    assert amount_problem("adyen", 1005, "KWD") is None
    assert amount_problem("checkout", 1005, "KWD") is not None
    assert amount_problem("adyen", 12345, "IDR") is not None
    assert amount_problem("stripe", 1000, "ISK") is None
    assert amount_problem("elsewhere", 1, "KWD") is None  # no table: nothing to refuse


def test_a_table_without_rows_is_iso_4217():
    iso = WireCurrencies(provider="Plain")
    assert iso.to_wire(1050, "KWD") == 1050 and iso.to_wire(1000, "ISK") == 1000
