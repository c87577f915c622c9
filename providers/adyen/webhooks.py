"""Adyen standard webhooks (docs/providers.md 2.8): signature checks and parsing into
`providers.base.ProviderEvent`s. Payments stores and applies them.

- A delivery is a JSON batch `{"live": "true"|"false", "notificationItems":
  [{"NotificationRequestItem": {...}}, ...]}`; every item is signed on its own.
- Signature: base64(HMAC-SHA256(hex-decoded key, signing string)), where the signing string
  joins `pspReference : originalReference : merchantAccountCode : merchantReference :
  amount.value : amount.currency : eventCode : success` with ":" (empty for a missing value).
  It sits in the item's `additionalData.hmacSignature` and is compared in constant time.
  Several keys may be accepted at once (the current and the previous one, during rotation).
- For a modification `pspReference` is the modification's id and `originalReference` the
  payment's; `merchantReference` is the reference we sent with the request (as sent: a
  reference over Adyen's 80 characters went out shortened by `providers.references.fit`,
  which keeps its start, so a reversal's still begins with `<attempt>-reversal-`).
- `amount.value` is in Adyen's minor units (`providers/adyen/currencies.py`: ISK in
  hundredths); events carry it in ISO minor units.
- The receiver answers HTTP 200 with the body `[accepted]`, which old and new Adyen
  integrations both take as an acknowledgement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from providers import outcomes
from providers.adyen.currencies import WIRE
from providers.base import InvalidWebhook, ProviderEvent, webhook_json

ACCEPTED = "[accepted]"
SIGNED_FIELDS = ("pspReference", "originalReference", "merchantAccountCode",
                 "merchantReference", "value", "currency", "eventCode", "success")

# Adyen eventCode → our event kind.
KINDS = {
    "AUTHORISATION": "authorization",
    "CAPTURE": "capture",
    "CAPTURE_FAILED": "capture",  # a capture the scheme rejected after a CAPTURE success
    "CANCELLATION": "cancel",
    "REFUND": "refund",
    "REFUND_FAILED": "refund",  # a refund the scheme rejected after a REFUND success
    "TECHNICAL_CANCEL": "release",
    "CANCEL_OR_REFUND": "reverse",  # the answer to a reversal
}
# Events that report a failure even when their `success` says "true".
FAILURE_EVENTS = frozenset({"CAPTURE_FAILED", "REFUND_FAILED"})


def signing_string(item: dict[str, Any]) -> str:
    amount = item.get("amount") or {}
    values = {**item, "value": amount.get("value", ""), "currency": amount.get("currency", "")}
    return ":".join("" if values.get(name) is None else str(values.get(name))
                    for name in SIGNED_FIELDS)


def sign(item: dict[str, Any], hex_key: str) -> str:
    """The `hmacSignature` of a NotificationRequestItem under `hex_key`."""
    try:
        key = binascii.unhexlify(hex_key)
    except (binascii.Error, ValueError):
        raise ValueError("An Adyen HMAC key is hexadecimal.") from None
    digest = hmac.new(key, signing_string(item).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def is_valid(item: dict[str, Any], hex_keys: list[str]) -> bool:
    given = str((item.get("additionalData") or {}).get("hmacSignature") or "")
    if not given:
        return False
    for key in hex_keys:
        try:
            expected = sign(item, key)
        except ValueError:
            continue
        if hmac.compare_digest(expected.encode(), given.encode()):
            return True
    return False


def parse(body: bytes, *, hmac_keys: list[str], livemode: bool,
          merchant_account: str = "") -> list[ProviderEvent]:
    """The events of one delivery, every item's signature checked; raises InvalidWebhook.
    With `merchant_account`, every item must be that merchant account's (a company-level
    webhook sending another account's events here is a configuration error, refused so that
    Adyen keeps them and someone notices)."""
    keys = [k for k in hmac_keys if k]
    if not keys:
        raise InvalidWebhook("No HMAC key is configured for this Adyen account.", status=401)
    data = webhook_json(body)
    items = data.get("notificationItems") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidWebhook("The body has no notificationItems.")
    events = []
    for wrapper in items:
        item = wrapper.get("NotificationRequestItem") if isinstance(wrapper, dict) else None
        item = _check_shape(item)
        if not is_valid(item, keys):
            raise InvalidWebhook("A notification item's HMAC signature does not verify.",
                                 status=401)
        if merchant_account and item.get("merchantAccountCode") != merchant_account:
            raise InvalidWebhook(f"A notification item is for merchant account "
                                 f"{item.get('merchantAccountCode')!r}, not this account's.",
                                 authenticated=True)
        events.append(_event(item))
    # After the items verified (the flag itself is not signed): until then, a refusal must
    # not say more than "not authentic" (providers.base.InvalidWebhook).
    if str(data.get("live", "")).lower() != ("true" if livemode else "false"):
        raise InvalidWebhook("The delivery's live flag does not match the account's mode.",
                             authenticated=True)
    return events


def _check_shape(item: object) -> dict[str, Any]:
    """The item, its types checked first: nothing below may trip over a malformed
    (unauthenticated) item."""
    if not isinstance(item, dict):
        raise InvalidWebhook("A notification item is not an object.")
    for name in ("eventCode", "pspReference"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise InvalidWebhook(f"A notification item lacks {name}.")
    for name in ("originalReference", "merchantAccountCode", "merchantReference", "success",
                 "reason"):
        if item.get(name) is not None and not isinstance(item[name], str):
            raise InvalidWebhook(f"A notification item's {name} is not a string.")
    amount = item.get("amount")
    if amount is not None and not (isinstance(amount, dict) and all(
            isinstance(amount.get(k), t) or amount.get(k) is None
            for k, t in (("value", int), ("currency", str)))):
        raise InvalidWebhook("A notification item's amount is not {value, currency}.")
    if item.get("additionalData") is not None and not isinstance(item["additionalData"], dict):
        raise InvalidWebhook("A notification item's additionalData is not an object.")
    return item


def _iso_amount(value: object, currency: str) -> int:
    """An item's amount (Adyen's minor units, e.g. ISK in hundredths) in ISO minor units; 0
    ("not known") when there is none or it cannot be converted (an unknown currency): an odd
    amount must not make Adyen retry the whole delivery for weeks."""
    if not isinstance(value, int) or isinstance(value, bool) or not currency:
        return 0
    return WIRE.from_wire_or_zero(value, currency)


def _event(item: dict[str, Any]) -> ProviderEvent:
    code = str(item["eventCode"])
    success = str(item.get("success", "")).lower() == "true" and code not in FAILURE_EVENTS
    amount = item.get("amount") or {}
    value = amount.get("value")
    kind = KINDS.get(code, "other")
    psp = str(item["pspReference"])
    original = str(item.get("originalReference") or "")
    if kind == "authorization":  # the payment itself: no modification id
        payment_psp, operation_psp = psp, ""
    else:
        payment_psp, operation_psp = original, psp
    decline_code = ""
    if kind == "authorization" and not success:  # `reason` is the refusalReason text
        decline_code = outcomes.classify_decline("adyen", "", text=str(item.get("reason") or "")
                                                 ).decline_code or ""
    return ProviderEvent(
        decline_code=decline_code, event_id=f"{code}:{psp}:{'true' if success else 'false'}",
        kind=kind, success=success,
        reference=str(item.get("merchantReference") or ""),
        provider_reference=payment_psp, operation_reference=operation_psp,
        amount=_iso_amount(value, str(amount.get("currency") or "")),
        currency=str(amount.get("currency") or ""),
        reason=str(item.get("reason") or "")[:500], raw_type=code)
