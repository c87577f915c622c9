"""How Adyen counts each currency on its wire (for `providers.amounts`).

Source: Adyen's "Currency codes and minor units" page,
https://docs.adyen.com/development-resources/currency-codes: amounts are in minor units
"given the number of decimals" in its table, which follows ISO 4217 except where marked
"differs from standard": "For CLP, CVE, IDR, and ISK the standard has a different number of
decimals than shown in our currency codes table above. When submitting amounts in minor units,
the decimals in the table on this page are leading." Every other currency: ISO 4217's.
"""

from providers.amounts import WireCurrencies, WireUnit

_SOURCE = "https://docs.adyen.com/development-resources/currency-codes"

UNITS: dict[str, WireUnit] = {
    "CLP": WireUnit(2, source=_SOURCE),  # ISO 0: 1000 CLP → 100000
    "CVE": WireUnit(0, source=_SOURCE),  # ISO 2: only whole escudos
    "IDR": WireUnit(0, source=_SOURCE),  # ISO 2: only whole rupiah
    "ISK": WireUnit(2, source=_SOURCE),  # ISO 0: 1000 ISK → 100000
}

WIRE = WireCurrencies(provider="Adyen", units=UNITS)
