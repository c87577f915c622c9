"""Settlement reports at the provider boundary: what a provider says it settled on one day.

Every adapter offers `fetch_settlement(day)` (optional in the `Adapter` protocol: reconciliation
asks `supports_settlement`), which fetches the provider's own report in its real format and
returns a `SettlementReport` of `SettlementLine`s (docs/providers.md 1.9, 2.9, 3.9):

- Stripe: balance transactions created that UTC day (`GET /v1/balance_transactions`,
  `created[gte]`/`created[lt]`, `expand[]=data.source`, paged with `starting_after`);
- Adyen: the settlement details report CSV of the batch closed that day;
- Checkout.com: the Reconciliation API's payments (`GET /reporting/payments`, `from`/`to`,
  paged with `_links.next`), one line per action that moved money.

Amounts are ISO 4217 minor units (`providers.amounts`), positive; the direction is in `kind`.
`payments.services.reconciliation` matches the lines to our records; nothing here knows them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from providers.amounts import WireCurrencies, iso_exponent
from providers.base import ProviderBadRequest

# SettlementLine.kind: money the provider booked for a payment
CAPTURE = "capture"  # a charge captured (with its authorization, or a capture afterwards)
REFUND = "refund"
# … and lines that are not about one of our captures or refunds: recorded, never matched
CHARGEBACK = "chargeback"
FEE = "fee"  # an account-level fee line (not a payment's own fee)
OTHER = "other"  # payouts, adjustments, reserves, …
PAYMENT_KINDS = frozenset({CAPTURE, REFUND})

# SettlementLine.status
SETTLED = "settled"  # the money moved (booked, available or paid out)
PENDING = "pending"  # booked but not yet available (Stripe's balance transaction `pending`)
DECLINED = "declined"  # the provider lists the action as declined (not approved)


@dataclass(frozen=True)
class SettlementLine:
    """One line of a provider's settlement report, normalized.

    References, as far as the provider's report carries them:
    - `our_reference`: our id of the operation as we sent it (a capture's or refund's
      reference; for a capture made with the authorization, the attempt id);
    - `payment_reference`: our attempt id, as the payment's merchant reference;
    - `provider_reference`: the provider's id of the payment (pi_…, pspReference, pay_…);
    - `operation_reference`: the provider's id of the capture or refund (ch_…/re_…, the
      modification's pspReference, act_…).
    """

    line_id: str  # unique within the report (txn_…, a psp and type, an action id)
    kind: str  # CAPTURE | REFUND | CHARGEBACK | FEE | OTHER
    amount_minor: int  # gross, positive, ISO minor units of `currency`
    currency: str
    fee_minor: int = 0  # the provider's fee for this line, ISO minor units of `fee_currency`
    fee_currency: str = ""
    status: str = SETTLED
    our_reference: str = ""
    payment_reference: str = ""
    provider_reference: str = ""
    operation_reference: str = ""
    occurred_at: dt.datetime | None = None
    raw_type: str = ""  # the provider's own name for the line (charge, Settled, Capture…)


@dataclass(frozen=True)
class SettlementReport:
    """One day's report of one account: `source` names what was read (for operators)."""

    day: dt.date
    source: str
    lines: tuple[SettlementLine, ...] = field(default_factory=tuple)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC day."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def major_to_minor(value: Any, currency: str, *, what: str = "amount") -> int:
    """A report's major-unit decimal ("10.50", 10.5, "-0.003") → ISO minor units (1050),
    rounded half up (fees can carry fractions of a minor unit). ProviderBadRequest for a
    value that is not a number."""
    return round_minor(decimal_major(value, what=what), currency)


def decimal_major(value: Any, *, what: str = "amount") -> Decimal:
    """A report's decimal as a Decimal: a float goes through its shortest text (0.1, not
    0.1000000000000000055…), so a JSON number reads as it was written."""
    if value is None or value == "":
        return Decimal(0)
    if isinstance(value, bool):
        raise ProviderBadRequest(f"Unreadable {what} {value!r} in the settlement report.")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).replace(",", ""))
    except InvalidOperation:
        raise ProviderBadRequest(f"Unreadable {what} {value!r} in the settlement report.") \
            from None
    if not amount.is_finite():
        raise ProviderBadRequest(f"Unreadable {what} {value!r} in the settlement report.")
    return amount


def round_minor(amount: Decimal, currency: str) -> int:
    """Major units → ISO minor units, half up (a sum of fee lines is rounded once)."""
    return int(amount.scaleb(iso_exponent(currency)).quantize(Decimal(1),
                                                                rounding=ROUND_HALF_UP))


def wire_fee_to_minor(wire: WireCurrencies, fee: int, currency: str) -> int:
    """A fee in a provider's wire units → ISO minor units, rounded half up: a fee is the
    provider's own computation and may be a fraction of the ISO unit (2.9 % of 1000 ISK is
    29.30 on Stripe's wire, which counts ISK in hundredths), unlike a charged amount."""
    shift = wire.unit(currency).exponent - iso_exponent(currency)
    return int(Decimal(fee).scaleb(-shift).quantize(Decimal(1), rounding=ROUND_HALF_UP))
