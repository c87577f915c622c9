"""Checkout.com webhooks (docs/providers.md 3.8): signature check and parsing into
`providers.base.ProviderEvent`s. Payments stores and applies them.

- One event per delivery: `{"id": "evt_…", "type": "payment_captured", "created_on": …,
  "data": {"id": "pay_…", "action_id": "act_…", "reference": "<our attempt id>", "amount",
  "currency", "response_code", "response_summary", …}}`.
- Signature: the `Cko-Signature` header is the hex HMAC-SHA256 of the raw body under the
  signature key set on the workflow's webhook action (our `webhook_secret` credential; the
  previous one is accepted during a rotation). Compared case-insensitively, in constant time,
  over the raw bytes (re-serialized JSON would differ).
- `data.reference` is the payment's reference (our attempt id, 28 characters: never shortened);
  an action is identified by `data.action_id`, which we stored when Checkout.com accepted it,
  not by the action's reference — so a reversal sent with a reference shortened to
  Checkout.com's 50 characters (`providers.references.fit`) is still recognised. Should a
  shortened reference ever be echoed, it keeps its start (`<attempt>-reversal-`), which is
  what `payments.services.attempts.reversed_attempt_id` reads.
- `data.amount` is in Checkout.com's minor units (`providers/checkout/currencies.py`); events
  carry it in ISO minor units.
- Any 2xx acknowledges; Checkout.com retries a failed delivery 8 times over about 30 hours.
"""

from __future__ import annotations

import hashlib
import hmac

from providers import outcomes
from providers.base import InvalidWebhook, ProviderEvent, webhook_json
from providers.checkout.currencies import WIRE

SIGNATURE_HEADER = "cko-signature"

# Checkout.com event type → (our kind, success); anything else is recorded as "other".
TYPES = {
    "payment_approved": ("authorization", True),
    "payment_declined": ("authorization", False),
    "payment_captured": ("capture", True),
    "payment_capture_declined": ("capture", False),
    "payment_voided": ("cancel", True),
    "payment_void_declined": ("cancel", False),
    "payment_refunded": ("refund", True),
    "payment_refund_declined": ("refund", False),
}


def sign(body: bytes, key: str) -> str:
    """The `Cko-Signature` of a raw body under `key`."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def is_valid(body: bytes, signature: str, keys: list[str]) -> bool:
    given = signature.strip().lower().encode()
    return bool(given) and any(
        hmac.compare_digest(sign(body, key).encode(), given) for key in keys if key)


def _iso_amount(value: object, currency: str) -> int:
    """`data.amount` (Checkout.com's minor units: CLP in hundredths) in ISO minor units; 0
    ("not known") when there is none or it cannot be converted, rather than refusing (and
    having Checkout.com redeliver) an otherwise good event."""
    if not isinstance(value, int) or isinstance(value, bool) or not currency:
        return 0
    return WIRE.from_wire_or_zero(value, currency)


def parse(body: bytes, *, signature: str, keys: list[str]) -> list[ProviderEvent]:
    """The event of one delivery, its signature checked; raises InvalidWebhook."""
    if not any(keys):
        raise InvalidWebhook("No webhook signature key is configured for this Checkout.com "
                             "account.", status=401)
    if not is_valid(body, signature, keys):
        raise InvalidWebhook("The Cko-Signature header does not verify.", status=401)
    event = webhook_json(body, authenticated=True)
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict) or not isinstance(event.get("id"), str) or not isinstance(
            event.get("type"), str):
        raise InvalidWebhook("The body is not a Checkout.com event (id, type, data).",
                             authenticated=True)
    kind, success = TYPES.get(event["type"], ("other", False))
    amount, currency = data.get("amount"), str(data.get("currency") or "")
    code = str(data.get("response_code") or "")
    decline_code = ""
    if kind == "authorization" and not success:
        decline_code = outcomes.classify_decline("checkout", code).decline_code or ""
    return [ProviderEvent(
        event_id=event["id"], kind=kind, success=success,
        reference=str(data.get("reference") or ""),
        provider_reference=str(data.get("id") or ""),
        operation_reference=str(data.get("action_id") or "") if kind != "authorization" else "",
        amount=_iso_amount(amount, currency), currency=currency, decline_code=decline_code,
        reason=str(data.get("response_summary") or "")[:500], raw_type=event["type"])]
