"""The engine every sandbox provider shares: test-card behaviour, fault conditions and the
ledger (`SandboxCharge`, `SandboxOperation`). Each sandbox (providers/sandboxes/<name>.py)
translates its provider's wire format to these calls and renders the results back.
"""

from __future__ import annotations

import random
import secrets
import string
import time
from dataclasses import dataclass

from django.db import transaction

from providers.sandboxes.cards import behaviour_for
from providers.sandboxes.models import (
    SandboxCharge,
    SandboxCondition,
    SandboxOperation,
    SandboxSettlementFault,
)


class ServiceUnavailable(Exception):
    """The provider answers 503 before processing anything (outage, card 4000000000000507)."""


class Hang(Exception):
    """No answer at all and nothing recorded: the caller's read timeout fires (card …0606)."""


class DropConnection(Exception):
    """The connection drops before the response is sent; what was recorded stays (card …0408)."""


class InvalidState(Exception):
    """The charge is not in a state that allows the operation (e.g. capture after a void)."""


class UnknownCharge(Exception):
    """No charge with that provider id."""


@dataclass(frozen=True)
class Authorization:
    charge: SandboxCharge
    drop_connection: bool  # the charge is committed, then the connection drops


def current_conditions(provider: str) -> SandboxCondition:
    return SandboxCondition.objects.filter(provider=provider).first() or SandboxCondition(
        provider=provider)


def before_request(provider: str) -> SandboxCondition:
    """Apply added latency and outages; every sandbox request starts here."""
    conditions = current_conditions(provider)
    if conditions.latency_ms:
        time.sleep(conditions.latency_ms / 1000)
    if conditions.outage:
        raise ServiceUnavailable()
    return conditions


_ID_FORMATS = {
    # (prefix, length, alphabet) of each provider's ids, so the sandboxes look like the real ones
    "stripe": ("pi_", 24, string.ascii_letters + string.digits),
    "adyen": ("", 16, string.ascii_uppercase + string.digits),
    "checkout": ("pay_", 26, string.ascii_lowercase + string.digits),
}
_OPERATION_ID_FORMATS = {
    "stripe": ("re_", 24, string.ascii_letters + string.digits),
    "adyen": ("", 16, string.ascii_uppercase + string.digits),
    "checkout": ("act_", 26, string.ascii_lowercase + string.digits),
}


def _new_id(formats: dict, provider: str) -> str:
    prefix, length, alphabet = formats[provider]
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def authorize(provider: str, *, reference: str, amount: int, currency: str, number: str,
              capture: bool, brand: str = "", metadata: dict | None = None,
              conditions: SandboxCondition | None = None,
              merchant_account: str = "") -> Authorization:
    """Decide and record an authorization; raises ServiceUnavailable or Hang when the test card
    (or the provider's conditions) say nothing is recorded."""
    behaviour = behaviour_for(number)
    conditions = conditions or current_conditions(provider)
    if (behaviour.result == "approve" and conditions.soft_decline_rate
            and random.random() < conditions.soft_decline_rate):
        behaviour = behaviour_for("4000000000000119")  # the soft-decline test card
    if behaviour.result == "unavailable":
        raise ServiceUnavailable()
    if behaviour.result == "timeout_before_commit":
        raise Hang()
    if behaviour.result in ("hard_decline", "soft_decline"):
        status, decline_code = "declined", behaviour.decline_code
    else:
        status, decline_code = ("captured" if capture else "authorized"), ""
    charge = SandboxCharge.objects.create(
        provider=provider,
        provider_reference=_new_id(_ID_FORMATS, provider),
        reference=reference,
        amount=amount,
        currency=currency,
        status=status,
        decline_code=decline_code,
        amount_captured=amount if status == "captured" else 0,
        card_last4=number[-4:],
        card_brand=brand,
        metadata=metadata or {},
        merchant_account=merchant_account,
    )
    return Authorization(charge=charge,
                         drop_connection=behaviour.result == "commit_then_timeout")


def get_charge(provider: str, provider_reference: str, *, lock: bool = False) -> SandboxCharge:
    qs = SandboxCharge.objects.filter(provider=provider, provider_reference=provider_reference)
    if lock:
        qs = qs.select_for_update()
    charge = qs.first()
    if charge is None:
        raise UnknownCharge(provider_reference)
    return charge


def find_by_reference(provider: str, reference: str) -> list[SandboxCharge]:
    """Charges whose merchant reference is `reference`, newest first."""
    return list(SandboxCharge.objects.filter(provider=provider, reference=reference)
                .order_by("-created_at", "-id"))


def modify(provider: str, kind: str, provider_reference: str, *, amount: int | None,
           reference: str = "", metadata: dict | None = None) -> SandboxOperation:
    """Capture (partial releases the rest), cancel (void) or refund, atomically. `reverse`
    is Adyen's cancel-or-refund: a refund in full if the charge is captured, else a cancel;
    the operation records which."""
    with transaction.atomic():
        charge = get_charge(provider, provider_reference, lock=True)
        if kind == "reverse":
            kind = "refund" if charge.status == "captured" else "cancel"
        if kind == "capture":
            amount = charge.amount if amount is None else amount
            if charge.status != "authorized":
                raise InvalidState(f"The charge is {charge.status}; it cannot be captured.")
            if not 0 < amount <= charge.amount:
                raise InvalidState("The capture amount exceeds the authorized amount.")
            charge.status, charge.amount_captured = "captured", amount
        elif kind == "cancel":
            if charge.status != "authorized":
                raise InvalidState(f"The charge is {charge.status}; only an uncaptured "
                                   "authorization can be voided.")
            amount = charge.amount
            charge.status = "canceled"
        elif kind == "refund":
            remaining = charge.amount_captured - charge.amount_refunded
            amount = remaining if amount is None else amount
            if charge.status != "captured":
                raise InvalidState(f"The charge is {charge.status}; only a captured charge "
                                   "can be refunded.")
            if not 0 < amount <= remaining:
                raise InvalidState("The refund exceeds the amount left to refund.")
            charge.amount_refunded += amount
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        charge.save()
        return SandboxOperation.objects.create(
            provider=provider,
            provider_reference=_new_id(_OPERATION_ID_FORMATS, provider),
            reference=reference,
            charge=charge,
            kind=kind,
            amount=amount,
            metadata=metadata or {},
        )


def settlement(provider: str, *, since=None, until=None,
               merchant_account: str | None = None) -> list[dict]:
    """What a settlement report lists: every capture and refund the ledger made in
    [since, until), each at the time it was made — a charge captured with its authorization
    at the charge's time, a later capture and a refund at the operation's — with the
    sandbox's fee on captures (`settlement_fee`). `merchant_account`: only that account's
    (the sandbox's accounts share one ledger). Planted faults (`plant_settlement_fault`)
    apply. Each row: type (capture | refund), provider_reference (the charge's id),
    operation_reference (the capture's or refund's id; the charge's for a charge captured
    with its authorization), operation_merchant_reference (our reference of the operation),
    reference (the charge's merchant reference), amount, currency, fee (the provider's
    units), created_at."""
    charges = SandboxCharge.objects.filter(provider=provider, status="captured").exclude(
        operations__kind="capture")
    operations = SandboxOperation.objects.filter(
        provider=provider, kind__in=["capture", "refund"]).select_related("charge")
    if merchant_account is not None:
        charges = charges.filter(merchant_account=merchant_account)
        operations = operations.filter(charge__merchant_account=merchant_account)
    if since is not None:
        charges = charges.filter(created_at__gte=since)
        operations = operations.filter(created_at__gte=since)
    if until is not None:
        charges = charges.filter(created_at__lt=until)
        operations = operations.filter(created_at__lt=until)
    rows = []
    for charge in charges.order_by("created_at", "id"):
        rows.append({"type": "capture", "provider_reference": charge.provider_reference,
                     "operation_reference": charge.provider_reference,
                     "operation_merchant_reference": "",
                     "reference": charge.reference, "amount": charge.amount_captured,
                     "currency": charge.currency, "fee": settlement_fee(charge.amount_captured),
                     "created_at": charge.created_at})
    for op in operations.order_by("created_at", "id"):
        capture = op.kind == "capture"
        rows.append({"type": op.kind, "provider_reference": op.charge.provider_reference,
                     "operation_reference": op.provider_reference,
                     "operation_merchant_reference": op.reference,
                     "reference": op.charge.reference, "amount": op.amount,
                     "currency": op.charge.currency,
                     "fee": settlement_fee(op.amount) if capture else 0,
                     "created_at": op.created_at})
    rows.sort(key=lambda row: (row["created_at"], row["operation_reference"]))
    return _with_faults(provider, rows)


def settlement_fee(amount: int) -> int:
    """The sandboxes' pricing: 2.9 % + 30 minor units, rounded half up, on every capture;
    refunds are free."""
    return (amount * 29 + 500) // 1000 + 30


# --- planted discrepancies (tests; never a real provider's behaviour) -----------------------
def _with_faults(provider: str, rows: list[dict]) -> list[dict]:
    faults = {f.operation_reference: f for f in SandboxSettlementFault.objects.filter(
        provider=provider, operation_reference__in=[r["operation_reference"] for r in rows])}
    shown = []
    for row in rows:
        fault = faults.get(row["operation_reference"])
        if fault is None:
            shown.append(row)
            continue
        if fault.omit:
            continue
        shown.append({**row,
                      "amount": row["amount"] if fault.amount is None else fault.amount,
                      "currency": fault.currency or row["currency"],
                      "fee": row["fee"] if fault.fee is None else fault.fee})
    return shown


def plant_settlement_fault(provider: str, operation_reference: str, *, omit: bool = False,
                           amount: int | None = None, currency: str = "",
                           fee: int | None = None) -> SandboxSettlementFault:
    """Make the settlement report show the line of `operation_reference` otherwise than the
    ledger has it: left out (`omit`: a capture or refund the provider's books lack), or
    with another amount, currency or fee (the provider's units)."""
    fault, _ = SandboxSettlementFault.objects.update_or_create(
        provider=provider, operation_reference=operation_reference,
        defaults={"omit": omit, "amount": amount, "currency": currency.upper(), "fee": fee})
    return fault


def plant_unrecorded_charge(provider: str, *, merchant_account: str, amount: int,
                            currency: str, reference: str = "") -> SandboxCharge:
    """A charge the provider made and captured that the merchant's system never sent (made
    by hand in the provider's dashboard, or by another integration): its settlement line
    matches nothing of ours."""
    return SandboxCharge.objects.create(
        provider=provider, provider_reference=_new_id(_ID_FORMATS, provider),
        reference=reference, amount=amount, currency=currency.upper(), status="captured",
        amount_captured=amount, card_last4="4242", card_brand="visa",
        merchant_account=merchant_account)
