"""Checkout.com sandbox: the unified Payments API (docs/providers.md section 3) over the shared ledger.

Speaks what `CheckoutAdapter` uses, in Checkout.com's wire format:

- `Authorization: Bearer <key>` (any non-empty key; anything else → 401), JSON both ways,
  a `Cko-Request-Id` response header and `{request_id, error_type, error_codes[]}` error bodies.
- `POST /payments`: card source; 201 with `approved`, `status` (`Authorized`, `Captured`,
  `Card Verified` for amount 0, `Declined`), `response_code`, `response_summary`; 422 for invalid
  data. Amounts are Checkout.com's own minor units, recorded as received (the ledger holds
  what Checkout.com would charge: 1000 CLP is 100000): more than nine digits, or a
  three-decimal amount not ending in 0, is 422 `amount_invalid`
  (providers/checkout/currencies.py). A `reference` over 50 characters is 422
  `reference_invalid`, on payments and actions alike. The test cards of docs/api.md answer with
  realistic Checkout.com response codes so that
  they normalize exactly (providers/outcomes.py): …0002 → 20005, …9995 → 20051, …0069 → 20054,
  …9987 → 30041, …0119 → 20068 (soft). …0507 → 503 before processing; …0408 → the payment is
  recorded (and its 201 cached), then the connection drops; …0606 → nothing recorded, no answer.
- `POST /payments/{id}/captures|voids|refunds`: 202 `{action_id, reference, _links}` (accepted;
  at Checkout.com the outcome is confirmed later by a webhook or by `GET /payments/{id}/actions`;
  the sandbox applies it at once, so the action is already listed). 403 when the action is not
  allowed in the payment's state, 404 for an unknown payment, 422 for invalid data or an amount
  beyond the balance.
- `GET /payments/{id}` (with `balances`), `GET /payments/{id}/actions` (a bare JSON array,
  newest first) and `GET /payments?reference=&limit=&skip=` → `{limit, skip, total_count,
  data}`, newest first: the lookup by our reference.
- `GET /financial-actions?payment_id=|action_id=&limit=&pagination_token=` → `{count, limit,
  data, _links}` built from `ledger.settlement`: one item per capture/refund with `payment_id`,
  `action_id`, `action_type`, `reference`, `processed_on` and a `breakdown` of decimal
  major-unit amounts (gross line, then the sandbox's fee split into a variable and a fixed
  line; debits negative), latest first. Declined, voided and uncaptured payments do not appear.
- `GET /reporting/payments?from=&to=&limit=&after=` (the Reconciliation API of Checkout.com's
  previous platform, docs/providers.md 3.9) → `{count, data, _links}`: each payment with an
  action that moved money in the window, its `actions[]` and their fee `breakdown[]`
  (decimal major units), paged by `_links.next`; built from `ledger.settlement`, planted
  faults included.
- Webhooks (docs/providers.md 3.8): `payment_approved` / `payment_declined` for every processed
  payment (…0408's too), `payment_captured` for one captured with its authorization, and
  `payment_captured` / `payment_voided` / `payment_refunded` for every action, sent to the endpoints of the payment's processing channel (`providers.sandboxes.
  webhooks`), signed with `Cko-Signature` over the exact bytes sent.
- Idempotency (`Cko-Idempotency-Key`, docs/providers.md 3.5): only 2xx results are stored and
  replayed (same status, same body); a 4xx/5xx is not stored, so a retry with the same key is
  executed again.
- Faults: `ledger.before_request` latency, and an outage → 503 before processing anything.

Our choices where Checkout.com's behaviour is (unverified) — do not mistake them for facts:
a request whose key is still in flight gets 409 `idempotency_key_in_use` (Checkout.com may
answer 429 "duplicate request detected"); the same key with a different body gets 409
`idempotency_key_reused` (undocumented at Checkout.com); 503 bodies use `error_type
"service_unavailable"`; 401/403/404 bodies use the error shape above (the real ones may be
empty); the error codes for limits, filters and amounts beyond the balance are plausible names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode

import iso4217

from providers.checkout.currencies import WIRE
from providers.checkout.webhooks import sign
from providers.sandboxes import ledger
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.models import SandboxCharge
from providers.sandboxes.wsgi import IdempotencyPolicy, Request, Response, idempotent, make_app

PROVIDER = "checkout"
DEFAULT_HOST = "https://api.sandbox.checkout.com"

APPROVED = ("10000", "Approved")
# The ledger's decline codes (docs/api.md test cards) → Checkout.com response code and summary.
RESPONSE_CODES = {
    "generic_decline": ("20005", "Declined - Do not honour"),
    "insufficient_funds": ("20051", "Insufficient Funds"),
    "expired_card": ("20054", "Expired Card"),
    "lost_card": ("30041", "Lost Card - Pick Up"),
    "processing_error": ("20068", "Response received too late / timeout"),
}
ACTION_TYPES = {"capture": "Capture", "cancel": "Void", "refund": "Refund"}
PAYMENT_TYPES = {"Regular", "Recurring", "MOTO", "Installment", "PayLater", "Unscheduled"}
MAX_REFERENCE = 50  # `reference` of a payment and of its actions


# --- responses ------------------------------------------------------------------------------
def _request_id() -> str:
    return str(uuid.uuid4())


def _ok(status: int, body, *, drop_connection: bool = False) -> Response:
    return Response(status, body, {"Cko-Request-Id": _request_id()},
                    drop_connection=drop_connection)


def _error(status: int, error_type: str, *codes: str, headers: dict | None = None) -> Response:
    request_id = _request_id()
    body = {"request_id": request_id, "error_type": error_type, "error_codes": list(codes)}
    return Response(status, body, {"Cko-Request-Id": request_id, **(headers or {})})


def _unavailable() -> Response:
    return _error(503, "service_unavailable", "service_unavailable")


IDEMPOTENCY = IdempotencyPolicy(
    store=lambda response: 200 <= response.status < 300,
    in_flight=lambda: _error(409, "request_conflict", "idempotency_key_in_use"),
    mismatch=lambda: _error(409, "request_conflict", "idempotency_key_reused"),
)


# --- rendering the ledger in Checkout.com's shapes ------------------------------------------
def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _digest_id(prefix: str, seed: str) -> str:
    digest = base64.b32encode(hashlib.sha256(seed.encode()).digest()).decode().lower()
    return prefix + digest[:26]


def _authorization_action_id(charge: SandboxCharge) -> str:
    # As at Checkout.com, the authorization action shares the payment id's suffix.
    return "act_" + charge.provider_reference.removeprefix("pay_")


def _capture_action_id(charge: SandboxCharge) -> str:
    """The Capture action: the explicit capture, or the one implied by `capture: true`."""
    op = charge.operations.filter(kind="capture").order_by("created_at", "id").first()
    return op.provider_reference if op else _digest_id("act_", charge.provider_reference + ":c")


def _auth_code(charge: SandboxCharge) -> str:
    return str(int(hashlib.sha256(charge.provider_reference.encode()).hexdigest(), 16))[-6:]


def _response_code(charge: SandboxCharge) -> tuple[str, str]:
    if charge.status == "declined":
        return RESPONSE_CODES.get(charge.decline_code, RESPONSE_CODES["generic_decline"])
    return APPROVED


def _status(charge: SandboxCharge) -> str:
    if charge.status == "declined":
        return "Declined"
    if charge.status == "canceled":
        return "Voided"
    if charge.status == "authorized":
        return "Card Verified" if charge.amount == 0 else "Authorized"
    refunded = charge.amount_refunded
    if refunded and refunded >= charge.amount_captured:
        return "Refunded"
    if refunded:
        return "Partially Refunded"
    if charge.amount_captured < charge.amount:
        return "Partially Captured"
    return "Captured"


def _balances(charge: SandboxCharge) -> dict:
    approved = charge.status != "declined"
    authorized = charge.status == "authorized"
    refundable = charge.amount_captured - charge.amount_refunded if charge.status == "captured" \
        else 0
    return {
        "total_authorized": charge.amount if approved else 0,
        "total_voided": charge.amount if charge.status == "canceled" else 0,
        "available_to_void": charge.amount if authorized else 0,
        "total_captured": charge.amount_captured,
        "available_to_capture": charge.amount if authorized else 0,
        "total_refunded": charge.amount_refunded,
        "available_to_refund": refundable,
    }


def _base_url(request: Request) -> str:
    host = request.headers.get("host")
    return f"http://{host}" if host else DEFAULT_HOST


def _links(request: Request, charge: SandboxCharge) -> dict:
    href = f"{_base_url(request)}/payments/{charge.provider_reference}"
    links = {"self": {"href": href}, "actions": {"href": href + "/actions"}}
    if charge.status == "authorized":
        links["capture"] = {"href": href + "/captures"}
        links["void"] = {"href": href + "/voids"}
    if _balances(charge)["available_to_refund"]:
        links["refund"] = {"href": href + "/refunds"}
    return links


def _scheme(number: str) -> str:
    if number.startswith(("34", "37")):
        return "Amex"
    if number[:1] == "5" or number[:1] == "2":
        return "Mastercard"
    if number[:1] == "4":
        return "Visa"
    return "Unknown"


def _payment_created(request: Request, charge: SandboxCharge, source: dict) -> dict:
    """The 201 body of POST /payments."""
    code, summary = _response_code(charge)
    approved = charge.status != "declined"
    body = {
        "id": charge.provider_reference,
        "action_id": _authorization_action_id(charge),
        "amount": charge.amount,
        "currency": charge.currency,
        "approved": approved,
        "status": _status(charge),
        "response_code": code,
        "response_summary": summary,
        "reference": charge.reference,
        "processed_on": _ts(charge.created_at),
        "source": {
            "id": _digest_id("src_", charge.provider_reference),
            "type": "card",
            "expiry_month": source["expiry_month"],
            "expiry_year": source["expiry_year"],
            "scheme": charge.card_brand,
            "last4": charge.card_last4,
            "bin": source["number"][:6],
        },
        "risk": {"flagged": False},
        "_links": _links(request, charge),
    }
    if approved:
        body["auth_code"] = _auth_code(charge)
    return body


def _payment_details(request: Request, charge: SandboxCharge) -> dict:
    """GET /payments/{id}, and each item of GET /payments?reference=."""
    return {
        "id": charge.provider_reference,
        "requested_on": _ts(charge.created_at),
        "source": {"id": _digest_id("src_", charge.provider_reference), "type": "card",
                   "scheme": charge.card_brand, "last4": charge.card_last4},
        "amount": charge.amount,
        "currency": charge.currency,
        "payment_type": "Regular",
        "reference": charge.reference,
        "status": _status(charge),
        "approved": charge.status != "declined",
        "balances": _balances(charge),
        "risk": {"flagged": False},
        "metadata": charge.metadata,
        "_links": _links(request, charge),
    }


def _action(action_id: str, kind: str, amount: int, reference: str, when: datetime,
            response: tuple[str, str] = APPROVED) -> dict:
    return {"id": action_id, "type": kind, "processed_on": _ts(when), "amount": amount,
            "approved": response[0].startswith("10"),
            "response_code": response[0], "response_summary": response[1],
            "reference": reference}


def _actions(charge: SandboxCharge) -> list[dict]:
    """Every action on the payment, newest first (GET /payments/{id}/actions)."""
    authorization = _action(_authorization_action_id(charge), "Authorization", charge.amount,
                            charge.reference, charge.created_at, _response_code(charge))
    if authorization["approved"]:
        authorization["auth_code"] = _auth_code(charge)
    history = [authorization]
    operations = list(charge.operations.order_by("created_at", "id"))
    if charge.status == "captured" and not any(op.kind == "capture" for op in operations):
        history.append(_action(_capture_action_id(charge), "Capture", charge.amount_captured,
                               charge.reference, charge.created_at))
    history += [_action(op.provider_reference, ACTION_TYPES[op.kind], op.amount, op.reference,
                        op.created_at) for op in operations]
    return history[::-1]


# --- validation -----------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _luhn(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _valid_currency(value) -> bool:
    if not isinstance(value, str) or len(value) != 3 or value != value.upper():
        return False
    try:
        iso4217.Currency(value)
    except ValueError:
        return False
    return True


def _valid_reference(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_REFERENCE


def _valid_wire_amount(amount: int, currency) -> bool:
    """Checkout.com's amount rules (providers/checkout/currencies.py): at most nine digits,
    and the currency's step (three-decimal amounts end in 0: "1001 is invalid")."""
    if len(str(amount)) > (WIRE.max_digits or 18):
        return False
    if not isinstance(currency, str) or not _valid_currency(currency):
        return True  # the currency's own error says what is wrong
    return amount % WIRE.unit(currency).step == 0


def _source_errors(source) -> list[str]:
    if not isinstance(source, dict):
        return ["source_required"]
    if source.get("type") != "card":
        return ["source_type_invalid"]
    errors = []
    number = source.get("number")
    if number in (None, ""):
        errors.append("card_number_required")
    elif not (isinstance(number, str) and number.isdigit() and 12 <= len(number) <= 19
              and _luhn(number)):
        errors.append("card_number_invalid")
    month, year = source.get("expiry_month"), source.get("expiry_year")
    if month is None:
        errors.append("card_expiry_month_required")
    elif not (_is_int(month) and 1 <= month <= 12):
        errors.append("card_expiry_month_invalid")
    if year is None:
        errors.append("card_expiry_year_required")
    elif not (_is_int(year) and 1000 <= year <= 9999):
        errors.append("card_expiry_year_invalid")
    if not errors:
        now = datetime.now(UTC)
        if (year, month) < (now.year, now.month):
            errors.append("card_expired")
    cvv = source.get("cvv")
    if cvv is not None and not (isinstance(cvv, str) and cvv.isdigit() and 3 <= len(cvv) <= 4):
        errors.append("cvv_invalid")
    if "name" in source and not isinstance(source["name"], str):
        errors.append("card_holder_name_invalid")
    return errors


def _payment_errors(body: dict) -> list[str]:
    errors = _source_errors(body.get("source"))
    amount = body.get("amount")
    if amount is None:
        errors.append("amount_required")
    elif not (_is_int(amount) and amount >= 0
              and _valid_wire_amount(amount, body.get("currency"))):
        errors.append("amount_invalid")
    currency = body.get("currency")
    if currency is None:
        errors.append("currency_required")
    elif not _valid_currency(currency):
        errors.append("currency_invalid")
    if "capture" in body and not isinstance(body["capture"], bool):
        errors.append("capture_invalid")
    if "reference" in body and not _valid_reference(body["reference"]):
        errors.append("reference_invalid")
    if "payment_type" in body and body["payment_type"] not in PAYMENT_TYPES:
        errors.append("payment_type_invalid")
    channel = body.get("processing_channel_id")
    if not channel:
        errors.append("processing_channel_id_required")
    elif not (isinstance(channel, str) and channel.startswith("pc_")):
        errors.append("processing_channel_id_invalid")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        errors.append("metadata_invalid")
    description = body.get("description")
    if description is not None and not (isinstance(description, str) and len(description) <= 100):
        errors.append("description_invalid")
    return errors


# --- handlers -------------------------------------------------------------------------------
def _before(request: Request) -> Response | None:
    try:
        ledger.before_request(PROVIDER)
    except ledger.ServiceUnavailable:
        return _unavailable()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "unauthorized", "authentication_required",
                      headers={"WWW-Authenticate": "Bearer"})
    return None


def _idempotency_key(request: Request) -> str | None:
    return request.headers.get("cko-idempotency-key") or None


def request_payment(request: Request) -> Response:
    return idempotent(PROVIDER, _idempotency_key(request), request, IDEMPOTENCY,
                      lambda: _request_payment(request))


def _request_payment(request: Request) -> Response:
    body = request.json()
    if not isinstance(body, dict):
        return _error(422, "request_invalid", "request_body_invalid")
    errors = _payment_errors(body)
    if errors:
        return _error(422, "request_invalid", *errors)
    source = body["source"]
    try:
        authorization = ledger.authorize(
            PROVIDER, reference=body.get("reference", ""), amount=body["amount"],
            currency=body["currency"], number=source["number"],
            capture=body.get("capture", True), brand=_scheme(source["number"]),
            metadata=body.get("metadata") or {},
            merchant_account=body["processing_channel_id"])
    except ledger.ServiceUnavailable:
        return _unavailable()  # nothing recorded; a 5xx is not stored under the key
    # ledger.Hang propagates: nothing recorded, the key is released, the caller times out.
    charge = authorization.charge
    code, summary = _response_code(charge)
    approved = charge.status != "declined"
    _notify(charge, "payment_approved" if approved else "payment_declined",
            action_id=_authorization_action_id(charge), amount=charge.amount,
            response=(code, summary))
    if charge.status == "captured":  # captured with the authorization: its own event follows
        _notify(charge, "payment_captured", action_id=_capture_action_id(charge),
                amount=charge.amount_captured)
    # A dropped connection (card …0408) loses the answer, not the payment nor its webhook.
    return _ok(201, _payment_created(request, charge, source),
               drop_connection=authorization.drop_connection)


# --- webhooks (docs/providers.md 3.8) --------------------------------------------------------------
WEBHOOK_TYPES = {"capture": "payment_captured", "cancel": "payment_voided",
                 "refund": "payment_refunded"}


def _notify(charge: SandboxCharge, event_type: str, *, action_id: str, amount: int,
            response: tuple[str, str] = APPROVED) -> None:
    """Queue the event for every endpoint of the payment's processing channel, each signed
    (Cko-Signature over the exact body bytes we will send) with that endpoint's key."""
    event = {"id": _digest_id("evt_", f"{event_type}:{action_id}"), "type": event_type,
             "version": "1.0.33", "created_on": _ts(datetime.now(UTC)),
             "data": {"id": charge.provider_reference, "action_id": action_id,
                      "reference": charge.reference, "amount": amount,
                      "currency": charge.currency, "response_code": response[0],
                      "response_summary": response[1], "balances": _balances(charge),
                      "metadata": charge.metadata, "processed_on": _ts(datetime.now(UTC))}}

    def body_for(endpoint) -> tuple[str, dict]:
        raw = json.dumps(event, separators=(",", ":"))
        return raw, {"Cko-Signature": sign(raw.encode(), endpoint.hmac_key)}

    sandbox_webhooks.queue(PROVIDER, charge.merchant_account, event_type, body_for)


def list_payments(request: Request) -> Response:
    reference = request.query.get("reference")
    if not reference:
        return _error(422, "request_invalid", "reference_required")
    limit, skip = _int_param(request, "limit", 10), _int_param(request, "skip", 0)
    if limit is None or not 1 <= limit <= 100:
        return _error(422, "request_invalid", "limit_invalid")
    if skip is None or skip < 0:
        return _error(422, "request_invalid", "skip_invalid")
    charges = ledger.find_by_reference(PROVIDER, reference)
    return _ok(200, {"limit": limit, "skip": skip, "total_count": len(charges),
                     "data": [_payment_details(request, c) for c in charges[skip:skip + limit]]})


def get_payment(request: Request, payment_id: str) -> Response:
    charge = _charge(payment_id)
    if charge is None:
        return _not_found()
    return _ok(200, _payment_details(request, charge))


def get_actions(request: Request, payment_id: str) -> Response:
    charge = _charge(payment_id)
    if charge is None:
        return _not_found()
    return _ok(200, _actions(charge))


def capture(request: Request, payment_id: str) -> Response:
    return _modification(request, payment_id, "capture")


def void(request: Request, payment_id: str) -> Response:
    return _modification(request, payment_id, "cancel")


def refund(request: Request, payment_id: str) -> Response:
    return _modification(request, payment_id, "refund")


def _modification(request: Request, payment_id: str, kind: str) -> Response:
    return idempotent(PROVIDER, _idempotency_key(request), request, IDEMPOTENCY,
                      lambda: _modify(request, payment_id, kind))


def _modify(request: Request, payment_id: str, kind: str) -> Response:
    body = request.json()
    if not isinstance(body, dict):
        return _error(422, "request_invalid", "request_body_invalid")
    amount = None if kind == "cancel" else body.get("amount")
    if amount is not None and not (_is_int(amount) and amount > 0):
        return _error(422, "request_invalid", "amount_invalid")
    reference = body.get("reference", "")
    if not _valid_reference(reference):
        return _error(422, "request_invalid", "reference_invalid")
    charge = _charge(payment_id)
    if charge is None:
        return _not_found()
    if amount is not None and not _valid_wire_amount(amount, charge.currency):
        return _error(422, "request_invalid", "amount_invalid")
    allowed = {"capture": charge.status == "authorized", "cancel": charge.status == "authorized",
               "refund": charge.status == "captured"}[kind]
    if not allowed:
        return _error(403, "action_not_allowed", f"{ACTION_TYPES[kind].lower()}_not_allowed")
    balances = _balances(charge)
    available = {"capture": balances["available_to_capture"],
                 "refund": balances["available_to_refund"]}.get(kind)
    if amount is not None and amount > available:
        return _error(422, "request_invalid", "amount_exceeds_balance")
    try:
        operation = ledger.modify(PROVIDER, kind, payment_id, amount=amount, reference=reference)
    except ledger.InvalidState:  # a concurrent action changed the payment meanwhile
        return _error(403, "action_not_allowed", f"{ACTION_TYPES[kind].lower()}_not_allowed")
    except ledger.UnknownCharge:
        return _not_found()
    _notify(operation.charge, WEBHOOK_TYPES[kind], action_id=operation.provider_reference,
            amount=operation.amount)
    href = f"{_base_url(request)}/payments/{payment_id}"
    return _ok(202, {"action_id": operation.provider_reference, "reference": reference,
                     "_links": {"payment": {"href": href}}})


def financial_actions(request: Request) -> Response:
    """GET /financial-actions: Checkout.com's Financial Actions API over ledger.settlement."""
    payment_id, action_id = request.query.get("payment_id"), request.query.get("action_id")
    if not payment_id and not action_id:
        return _error(422, "request_invalid", "payment_id_or_action_id_required")
    limit = _int_param(request, "limit", 100)
    if limit is None or not 1 <= limit <= 100:
        return _error(422, "request_invalid", "limit_invalid")
    offset = _decode_token(request.query.get("pagination_token"))
    if offset is None:
        return _error(422, "request_invalid", "pagination_token_invalid")
    items = []
    for row in ledger.settlement(PROVIDER):
        if payment_id and row["provider_reference"] != payment_id:
            continue
        item = _financial_action(row)
        if action_id and item["action_id"] != action_id:
            continue
        items.append((row["created_at"], item))
    items.sort(key=lambda pair: pair[0], reverse=True)  # latest first, as documented
    page = [item for _, item in items[offset:offset + limit]]
    query = {k: v for k, v in (("payment_id", payment_id), ("action_id", action_id)) if v}
    base = f"{_base_url(request)}/financial-actions"
    links = {"self": {"href": f"{base}?{urlencode({**query, 'limit': limit})}"}}
    if offset + limit < len(items):
        token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
        next_query = urlencode({**query, "limit": limit, "pagination_token": token})
        links["next"] = {"href": f"{base}?{next_query}"}
    return _ok(200, {"count": len(page), "limit": limit, "data": page, "_links": links})


def _financial_action(row: dict) -> dict:
    charge = ledger.get_charge(PROVIDER, row["provider_reference"])
    currency, when = row["currency"], _ts(row["created_at"])
    if row["type"] == "capture":
        action_id, action_type = _capture_action_id(charge), "Capture"
        gross_type = "Capture" if row["amount"] == charge.amount else "Partial Capture"
        breakdown = [_breakdown(gross_type, row["amount"], currency)]
        if row["fee"]:
            fixed = min(ledger.settlement_fee(0), row["fee"])  # the fee's fixed part
            breakdown += [_breakdown("Premium Variable Fee", -(row["fee"] - fixed), currency),
                          _breakdown("Gateway Fixed Fee", -fixed, currency)]
    else:
        action_id, action_type = row["operation_reference"], "Refund"
        breakdown = [_breakdown("Refund", -row["amount"], currency)]
        if row["fee"]:
            breakdown.append(_breakdown("Refund Fixed Fee", -row["fee"], currency))
    return {
        "payment_id": row["provider_reference"],
        "action_id": action_id,
        "action_type": action_type,
        "entity_id": "ent_sandbox",
        "reference": row["reference"],
        "response_code": APPROVED[0],
        "response_description": APPROVED[1],
        "processed_on": when,
        "requested_on": when,
        "breakdown": breakdown,
    }


def _breakdown(breakdown_type: str, minor: int, currency: str) -> dict:
    """A breakdown line; `minor` is in Checkout.com's units (the ledger's), the line in major
    units."""
    amount = float(Decimal(minor).scaleb(-WIRE.unit(currency).exponent))
    return {"breakdown_type": breakdown_type, "fx_rate_applied": 1.0,
            "holding_currency": currency, "holding_currency_amount": amount,
            "processing_currency": currency, "processing_currency_amount": amount,
            "transaction_currency": currency, "transaction_currency_amount": amount}


# --- the Reconciliation API (previous platform) ----------------------------------------------
REPORT_PAGE_MAX = 500  # a sandbox choice: the documented default page is 200


def reporting_payments(request: Request) -> Response:
    """GET /reporting/payments?from=&to=&limit=&after=&reference=: the payments with an
    action that moved money in [from, to) (UTC), each with those actions and their
    breakdowns (decimal major units: the gross line, then the fee lines, debits negative),
    oldest first, `limit` a page (default 200) and `_links.next` while more are left.
    `channel_name` is the payment's processing channel id here (real ones are the names
    given in the Hub). Planted faults (`ledger.plant_settlement_fault`) apply."""
    since, until = _report_time(request.query.get("from")), _report_time(request.query.get("to"))
    if since is False or until is False:
        return _error(422, "request_invalid", "date_invalid")
    limit = _int_param(request, "limit", 200)
    if limit is None or not 1 <= limit <= REPORT_PAGE_MAX:
        return _error(422, "request_invalid", "limit_invalid")
    after = _decode_token(request.query.get("after"))
    if after is None:
        return _error(422, "request_invalid", "after_invalid")
    reference = request.query.get("reference")
    payments: dict[str, list[dict]] = {}
    for row in ledger.settlement(PROVIDER, since=since or None, until=until or None):
        if reference and row["reference"] != reference:
            continue
        payments.setdefault(row["provider_reference"], []).append(row)
    items = [_report_payment(request, payment_id, rows) for payment_id, rows in payments.items()]
    page = items[after:after + limit]
    query = {k: v for k in ("from", "to", "reference") if (v := request.query.get(k))}
    base = f"{_base_url(request)}/reporting/payments"
    links = {"self": {"href": f"{base}?{urlencode({**query, 'limit': limit})}"}}
    if after + limit < len(items):
        token = base64.urlsafe_b64encode(str(after + limit).encode()).decode()
        links["next"] = {"href": f"{base}?{urlencode({**query, 'limit': limit, 'after': token})}"}
    return _ok(200, {"count": len(page), "data": page, "_links": links})


def _report_time(value: str | None):
    """An ISO 8601 time ("2019-05-17T16:48:52Z", or without the Z: UTC); None if absent,
    False if unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _report_payment(request: Request, payment_id: str, rows: list[dict]) -> dict:
    charge = ledger.get_charge(PROVIDER, payment_id)
    currency = rows[0]["currency"]  # the charge's, unless a planted fault says otherwise
    return {
        "id": payment_id, "processing_currency": currency, "payout_currency": currency,
        "requested_on": _report_ts(charge.created_at), "channel_name": charge.merchant_account,
        "reference": charge.reference, "payment_method": (charge.card_brand or "").upper(),
        "card_type": "CREDIT", "card_category": "Consumer", "issuer_country": "US",
        "merchant_country": "GB", "mid": "sandbox",
        "actions": [_report_action(charge, row) for row in rows],
        "_links": {"payments": {"href": f"{_base_url(request)}/reporting/payments/{payment_id}"}},
    }


def _report_action(charge: SandboxCharge, row: dict) -> dict:
    when, currency = _report_ts(row["created_at"]), row["currency"]

    def part(kind: str, minor: int) -> dict:
        amount = float(Decimal(minor).scaleb(-WIRE.unit(currency).exponent))
        return {"type": kind, "date": when, "processing_currency_amount": amount,
                "payout_currency_amount": amount}

    if row["type"] == "capture":
        action_id = row["operation_reference"]
        if action_id == charge.provider_reference:  # captured with its authorization
            action_id = _capture_action_id(charge)
        breakdown = [part("Captured", row["amount"])]
        if row["fee"]:
            fixed = min(ledger.settlement_fee(0), row["fee"])  # the fee's fixed part
            breakdown += [part("Premium Fee", -(row["fee"] - fixed)),
                          part("Scheme Fixed Fee", -fixed)]
        action_type = "Capture"
    else:
        action_id, action_type = row["operation_reference"], "Refund"
        breakdown = [part("Refunded", -row["amount"])]
        if row["fee"]:
            breakdown.append(part("Refund Fee", -row["fee"]))
    return {"type": action_type, "id": action_id, "processed_on": when,
            "response_code": APPROVED[0], "response_description": APPROVED[1],
            "breakdown": breakdown}


def _report_ts(value: datetime) -> str:
    """The Reconciliation API's times: UTC, milliseconds, no zone ("2019-03-08T10:29:51.922")."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{value.astimezone(UTC).microsecond // 1000:03d}"


# --- helpers --------------------------------------------------------------------------------
def _charge(payment_id: str) -> SandboxCharge | None:
    try:
        return ledger.get_charge(PROVIDER, payment_id)
    except ledger.UnknownCharge:
        return None


def _not_found() -> Response:
    return _error(404, "resource_not_found", "payment_not_found")


def _int_param(request: Request, name: str, default: int) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _decode_token(token: str | None) -> int | None:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        return None
    return offset if offset >= 0 else None


_PAYMENT = r"/payments/(?P<payment_id>[^/]+)"

app = make_app(
    [
        ("POST", r"/payments", request_payment),
        ("GET", r"/payments", list_payments),
        ("GET", _PAYMENT, get_payment),
        ("GET", _PAYMENT + r"/actions", get_actions),
        ("POST", _PAYMENT + r"/captures", capture),
        ("POST", _PAYMENT + r"/voids", void),
        ("POST", _PAYMENT + r"/refunds", refund),
        ("GET", r"/financial-actions", financial_actions),
        ("GET", r"/reporting/payments", reporting_payments),
    ],
    not_found=lambda request: _error(404, "resource_not_found"),
    before=_before,
)
