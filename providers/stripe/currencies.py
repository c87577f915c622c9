"""How Stripe counts each currency on its wire (for `providers.amounts`).

Source: Stripe's "Supported currencies" page, https://docs.stripe.com/currencies ("Minor
units in API amounts", "Zero-decimal currencies", "Three-decimal currencies", "Special
cases"), and Stripe's support note on ISK, https://support.stripe.com/questions/
deprecation-of-fractional-isk-charges-and-refunds. Unless listed, a currency is two-decimal
on Stripe's wire ("Unless otherwise noted, currencies are two-decimal"): that default, not
ISO 4217's exponent, applies to anything below.
"""

from providers.amounts import WireCurrencies, WireUnit

_ZERO_DECIMAL = "https://docs.stripe.com/currencies#zero-decimal"
_THREE_DECIMAL = "https://docs.stripe.com/currencies#three-decimal"
_SPECIAL = "https://docs.stripe.com/currencies#special-cases"

UNITS: dict[str, WireUnit] = {
    # Zero-decimal: the amount is the charge, no multiplication. All ISO 0 except MGA (ISO 2:
    # an MGA amount must then be whole ariary).
    **{code: WireUnit(0, source=_ZERO_DECIMAL) for code in (
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "VND", "VUV",
        "XAF", "XOF", "XPF")},
    # UGX is in Stripe's zero-decimal list, but its special-cases row says: backwards
    # compatibility requires a two-decimal value whose decimals are always 00 (5 UGX → 500);
    # Stripe refuses anything else with `invalid_charge_amount_no_decimal_compatible`.
    "UGX": WireUnit(2, step=100, source=_SPECIAL),
    # ISK: two-decimal on the wire, decimals always 00 (5 ISK → 500); since 14 April 2023
    # Stripe refuses other amounts with `invalid_charge_amount_no_decimal_compatible`.
    "ISK": WireUnit(2, step=100, source=_SPECIAL),
    # HUF and TWD: zero-decimal for payouts only; charges take two-decimal amounts (ISO's 2).
    "HUF": WireUnit(2, source=_SPECIAL),
    "TWD": WireUnit(2, source=_SPECIAL),
    # Three-decimal: "these API calls require the least-significant (last) digit to be 0".
    **{code: WireUnit(3, step=10, source=_THREE_DECIMAL) for code in (
        "BHD", "JOD", "KWD", "OMR", "TND")},
}

# No digit limit here: Stripe documents "up to eight digits" for most currencies but larger
# ones for some (unverified which), so the limit is left to Stripe.
WIRE = WireCurrencies(provider="Stripe", units=UNITS, default_exponent=2)
