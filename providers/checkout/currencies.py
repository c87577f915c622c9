"""How Checkout.com counts each currency on its wire (for `providers.amounts`).

Source: Checkout.com's "Format the amount value" page (formerly "Calculating the amount
value"), https://www.checkout.com/docs/payments/accept-payments/format-the-amount-value:
- "the full amount" (no decimals) for BIF, DJF, GNF, ISK, JPY, KMF, KRW, PYG, RWF, UGX, VUV,
  VND, XAF, XOF, XPF — all ISO 0 too;
- "divided by 1000" for BHD, IQD, JOD, KWD, LYD, OMR, TND, where "the last digit must always
  be a 0";
- "for all other currencies, the amount you specify is divided by 100", CLP included (ISO 0):
  1000 CLP is 100000. The page adds a note on CLP whose full text we could not read
  (unverified); we send whole pesos times 100, which no reading of it refuses;
- every amount: "not more than nine digits".
"""

from providers.amounts import WireCurrencies, WireUnit

_SOURCE = "https://www.checkout.com/docs/payments/accept-payments/format-the-amount-value"

UNITS: dict[str, WireUnit] = {
    **{code: WireUnit(0, source=_SOURCE + "#The_full_amount") for code in (
        "BIF", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VUV", "VND",
        "XAF", "XOF", "XPF")},
    **{code: WireUnit(3, step=10, source=_SOURCE + "#The_amount_divided_by_1000") for code in (
        "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")},
    "CLP": WireUnit(2, step=100, source=_SOURCE + "#The_amount_divided_by_100"),
}

WIRE = WireCurrencies(provider="Checkout.com", units=UNITS, default_exponent=2, max_digits=9)
