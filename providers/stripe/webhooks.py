"""Stripe webhooks (docs/providers.md 1.8): the `Stripe-Signature` check and parsing of Event
objects into `providers.base.ProviderEvent`s. Payments stores and applies them.

Signature, as Stripe's libraries verify it (docs.stripe.com/webhooks#verify-manually):
- The header is comma-separated `key=value` pairs: `t=<unix seconds>,v1=<hex>,v1=<hex>,v0=…`.
  One `t`; one or more `v1` (Stripe sends several while an endpoint has more than one
  secret, during a rotation); other schemes (`v0`, test-only) are ignored.
- Expected = hex HMAC-SHA256 under the endpoint secret (the whole `whsec_…` string, as UTF-8
  bytes) of `<t>.<raw body>`; the delivery is authentic when ANY `v1` equals it, compared in
  constant time. The raw bytes, never re-serialized JSON.
- `t` must be within 300 s of now, either side: an old one is a replay, one far in the future
  is refused as well (Stripe's libraries only refuse old ones; a clock that far ahead is
  wrong, and accepting it would widen the replay window).
- Our secrets: the account's `webhook_secret` credential, and `webhook_secret_previous`
  while a rotation is under way.
The header's shape and its timestamp need no secret, so they are checked before the account
is read (`read_header`, called by `providers.webhooks.precheck`).

Events (one per delivery: `{"id": "evt_…", "object": "event", "type": …, "livemode",
"data": {"object": {…}}, "request": {"id": "req_…"|null, "idempotency_key": …|null}}`):
- `payment_intent.amount_capturable_updated` (a manual-capture PaymentIntent authorized) and
  `payment_intent.succeeded` of an automatic-capture PaymentIntent → "authorization",
  success; `payment_intent.payment_failed` → "authorization", refused, its decline code
  normalized from `last_payment_error` by `providers.outcomes` exactly as the adapter does.
  `reference` = `metadata[switchyard_attempt]` (our attempt id, which the adapter sends),
  `provider_reference` = the PaymentIntent id.
- `payment_intent.succeeded` of a manual-capture PaymentIntent → "capture";
  `payment_intent.canceled` → "cancel". Stripe has no id of its own for a capture or a void
  (the adapter records the PaymentIntent's), so `operation_reference` is empty and
  `reference` is our operation id: the `Idempotency-Key` the adapter sent with the capture or
  cancel, which Stripe echoes in `request.idempotency_key`. An event no request of ours
  caused (Stripe cancelling an expired authorization, a capture in the Dashboard: `request.id`
  null) names the attempt instead, so payments can tell that nothing of ours explains it.
- `refund.created`, `refund.updated`, `refund.failed`, `charge.refund.updated` (all carry the
  Refund) → "refund": `succeeded` a success, `failed`/`canceled` a refusal; `pending` and
  `requires_action` are not outcomes yet and are recorded as "other" (the refund's next
  event decides). `reference` = `metadata[switchyard_operation]` (our refund id, sent by
  the adapter; Stripe's later updates carry no request), else `request.idempotency_key`;
  `operation_reference` = the Refund id (`re_…`), `provider_reference` its PaymentIntent.
- `charge.refunded` carries the Charge: one "refund" event per Refund it lists with a final
  status (API versions before 2022-11-15 list them in `refunds`); without that list (our
  pinned version) it says nothing about any one refund and is recorded as "other".
- Anything else is recorded as "other".
Amounts are Stripe's minor units (`providers/stripe/currencies.py`); events carry ISO minor
units (0 when Stripe's amount is not a whole ISO unit, never a guess).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any

from providers import outcomes
from providers.base import InvalidWebhook, ProviderEvent, webhook_json
from providers.stripe.adapter import OPERATION_KEY, PROVIDER, REFERENCE_KEY
from providers.stripe.currencies import WIRE

SIGNATURE_HEADER = "stripe-signature"  # as the receiver's lower-cased headers name it
SCHEME = "v1"
TOLERANCE_SECONDS = 300
_TIMESTAMP = re.compile(r"\d{1,12}\Z")
MAX_SIGNATURES = 16  # more v1 values than any rotation needs is not a Stripe header

_AUTHORIZATION_TYPES = {"payment_intent.amount_capturable_updated",
                        "payment_intent.succeeded", "payment_intent.payment_failed"}
_REFUND_TYPES = {"refund.created", "refund.updated", "refund.failed",
                 "charge.refund.updated"}
# Refund.status → success; statuses missing here are not final ("other").
_REFUND_FINAL = {"succeeded": True, "failed": False, "canceled": False}


# --- signature --------------------------------------------------------------------------------
def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `v1` signature of a raw body sent at `timestamp` under an endpoint secret."""
    payload = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `body`, as Stripe sends it (now, if no timestamp)."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},{SCHEME}={sign(body, secret, when)}"


def read_header(header: str, *, now: float | None = None) -> tuple[int, list[str]]:
    """(t, the v1 signatures) of a `Stripe-Signature` header whose shape and timestamp are
    acceptable; InvalidWebhook (401) otherwise. Needs no secret."""
    header = (header or "").strip()
    if not header:
        raise InvalidWebhook("The Stripe-Signature header is missing.", status=401)
    timestamps, signatures = [], []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise InvalidWebhook("The Stripe-Signature header is not key=value pairs.",
                                 status=401)
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.match(timestamps[0]):
        raise InvalidWebhook("The Stripe-Signature header has no single t=<unix seconds>.",
                             status=401)
    if not signatures or len(signatures) > MAX_SIGNATURES:
        raise InvalidWebhook(f"The Stripe-Signature header has no {SCHEME} signature (or too "
                             "many).", status=401)
    timestamp = int(timestamps[0])
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise InvalidWebhook(f"The Stripe-Signature timestamp is more than "
                             f"{TOLERANCE_SECONDS} s from now.", status=401)
    return timestamp, signatures


def is_valid(body: bytes, timestamp: int, signatures: list[str], secrets: list[str]) -> bool:
    """Whether any `v1` signature is that of `body` under any of the secrets."""
    given = [s.encode() for s in signatures]
    for secret in secrets:
        if not secret:
            continue
        expected = sign(body, secret, timestamp).encode()
        # every comparison runs: constant time in which signature (if any) matches
        matches = [hmac.compare_digest(expected, candidate) for candidate in given]
        if any(matches):
            return True
    return False


# --- events -----------------------------------------------------------------------------------
def parse(body: bytes, *, header: str, secrets: list[str], livemode: bool,
          now: float | None = None) -> list[ProviderEvent]:
    """The events of one delivery, its signature checked; raises InvalidWebhook."""
    keys = [s for s in secrets if s]
    if not keys:
        raise InvalidWebhook("No webhook secret is configured for this Stripe account.",
                             status=401)
    timestamp, signatures = read_header(header, now=now)
    if not is_valid(body, timestamp, signatures, keys):
        raise InvalidWebhook("No Stripe-Signature v1 signature verifies.", status=401)
    event = webhook_json(body, authenticated=True)
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not (isinstance(obj, dict) and isinstance(event.get("id"), str) and event["id"]
            and isinstance(event.get("type"), str) and event.get("object") == "event"):
        raise InvalidWebhook("The body is not a Stripe event (id, object, type, "
                             "data.object).", authenticated=True)
    if isinstance(event.get("livemode"), bool) and event["livemode"] != livemode:
        raise InvalidWebhook("The event's livemode does not match the account's mode.",
                             authenticated=True)
    return _events(event, obj)


def _events(event: dict[str, Any], obj: dict[str, Any]) -> list[ProviderEvent]:
    kind = event["type"]
    if kind.startswith("payment_intent."):
        return [_intent_event(event, obj)]
    if kind in _REFUND_TYPES and obj.get("object") == "refund":
        return [_refund_event(event, obj, event["id"])]
    if kind == "charge.refunded":
        refunds = obj.get("refunds")
        listed = refunds.get("data") if isinstance(refunds, dict) else None
        if isinstance(listed, list):
            found = [_refund_event(event, r, f"{event['id']}:{_text(r, 'id')}")
                     for r in listed if isinstance(r, dict) and _text(r, "id")]
            decided = [e for e in found if e.kind == "refund"]
            if decided:
                return decided
    return [_other(event, obj)]


def _intent_event(event: dict[str, Any], intent: dict[str, Any]) -> ProviderEvent:
    kind, success = "other", False
    event_type = event["type"]
    manual = _text(intent, "capture_method") == "manual"
    if event_type == "payment_intent.amount_capturable_updated":
        # authorized, funds held; an update that leaves nothing capturable decides nothing
        if _text(intent, "status") == "requires_capture":
            kind, success = "authorization", True
    elif event_type == "payment_intent.succeeded":
        kind, success = ("capture" if manual else "authorization"), True
    elif event_type == "payment_intent.payment_failed":
        kind = "authorization"
    elif event_type == "payment_intent.canceled":
        kind, success = "cancel", True
    attempt = _metadata(intent, REFERENCE_KEY)
    reference = attempt
    if kind in ("capture", "cancel"):
        reference = _request_key(event) or attempt
    amount_field = "amount_received" if kind == "capture" else "amount"
    decline_code, reason = "", ""
    if kind == "authorization" and not success:
        error = intent.get("last_payment_error")
        error = error if isinstance(error, dict) else {}
        raw = _text(error, "decline_code") or _text(error, "code")
        decline = outcomes.classify_decline(PROVIDER, raw) if raw else outcomes.GENERIC_DECLINE
        decline_code, reason = decline.decline_code, _text(error, "message")
    elif kind == "cancel":
        reason = _text(intent, "cancellation_reason")
    return ProviderEvent(
        event_id=event["id"], kind=kind, success=success, reference=reference,
        provider_reference=_text(intent, "id"), operation_reference="",
        amount=_iso_amount(intent.get(amount_field), _text(intent, "currency")),
        currency=_text(intent, "currency").upper(), decline_code=decline_code,
        reason=reason[:500], raw_type=event["type"])


def _refund_event(event: dict[str, Any], refund: dict[str, Any],
                  event_id: str) -> ProviderEvent:
    status = _text(refund, "status")
    final = _REFUND_FINAL.get(status)
    return ProviderEvent(
        event_id=event_id, kind="other" if final is None else "refund",
        success=bool(final),
        reference=_metadata(refund, OPERATION_KEY) or _request_key(event),
        provider_reference=_text(refund, "payment_intent"),
        operation_reference=_text(refund, "id"),
        amount=_iso_amount(refund.get("amount"), _text(refund, "currency")),
        currency=_text(refund, "currency").upper(),
        reason=(_text(refund, "failure_reason") or status)[:500], raw_type=event["type"])


def _other(event: dict[str, Any], obj: dict[str, Any]) -> ProviderEvent:
    is_intent = obj.get("object") == "payment_intent"
    return ProviderEvent(
        event_id=event["id"], kind="other", success=False,
        reference=_metadata(obj, REFERENCE_KEY) or _request_key(event),
        provider_reference=_text(obj, "id") if is_intent else _text(obj, "payment_intent"),
        raw_type=event["type"])


# --- fields (an authentic event may still hold the unexpected: never crash on it) ------------
def _text(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    return value if isinstance(value, str) else ""


def _metadata(obj: Mapping[str, Any], key: str) -> str:
    metadata = obj.get("metadata")
    return _text(metadata, key) if isinstance(metadata, dict) else ""


def _request_key(event: Mapping[str, Any]) -> str:
    """The Idempotency-Key of the API request that caused the event ("" when Stripe acted on
    its own)."""
    request = event.get("request")
    return _text(request, "idempotency_key") if isinstance(request, dict) else ""


def _iso_amount(value: object, currency: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not currency:
        return 0
    return WIRE.from_wire_or_zero(value, currency)
