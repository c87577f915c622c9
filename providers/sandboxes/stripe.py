"""Stripe sandbox: a WSGI app speaking Stripe's wire format (docs/providers.md section 1) over the
shared sandbox ledger, so the Stripe adapter can run unchanged against it or against Stripe.

Reproduced:
- Auth: `Authorization: Bearer <key>` or HTTP Basic with the key as user name; any non-empty
  key is accepted (test mode); none → 401 in Stripe's error shape. `Stripe-Version` is checked
  for format and echoed; every answer has a `Request-Id`.
- Form-encoded bodies with brackets and indexed arrays; unknown parameters → 400
  `Received unknown parameter: …` (as Stripe does); JSON answers; Stripe's error envelope
  `{"error": {type, code, decline_code, message, param, doc_url, …}}`.
- Amounts in Stripe's own minor units, recorded as received (the ledger holds what Stripe
  would charge: 1000 ISK is 100000). ISK and UGX amounts not divisible by 100 → 400
  `invalid_charge_amount_no_decimal_compatible` (Stripe's message); three-decimal amounts not
  ending in 0 → 400 (code and wording ours: Stripe's are unverified); both before execution,
  on PaymentIntents, captures and refunds (providers/stripe/currencies.py).
- `POST /v1/payment_methods` (type=card), `GET /v1/payment_methods/{id}`; test tokens
  (`pm_card_visa`, `pm_card_chargeDeclined`, …) are accepted as `payment_method` too.
- `POST /v1/payment_intents` with `confirm=true` (the only flow the sandbox supports), by
  `payment_method` or inline `payment_method_data[card][…]`; without `payment_method_types`
  or `automatic_payment_methods[allow_redirects]=never` a `return_url` is required, as on
  Stripe. Approved → 200 PaymentIntent `requires_capture`/`succeeded`; declined → 402
  `card_error` with `code`/`decline_code` and the PaymentIntent (`requires_payment_method`,
  `last_payment_error`) in `error.payment_intent`.
- capture (`amount_to_capture`), cancel (`cancellation_reason`), `POST /v1/refunds`
  (`payment_intent` or `charge`, `amount`), `GET /v1/payment_intents/{id}`,
  `GET /v1/refunds/{id}`, `GET /v1/refunds` (list, `payment_intent`/`charge` filters),
  `GET /v1/payment_intents` (list, newest first, `limit`,
  `starting_after`, `created[…]`), `GET /v1/payment_intents/search` (`metadata['k']:'v'`,
  `status:'…'`, `currency:'…'`, `amount:N`, joined by AND; immediately consistent, unlike
  Stripe's), wrong states → 400 `payment_intent_unexpected_state` / `amount_too_large` /
  `charge_already_refunded`.
- Idempotency (docs/providers.md 1.5): every POST with `Idempotency-Key` (≤ 255 chars) runs once;
  the saved answer — 2xx, 402 declines and 4xx raised after execution began — is replayed
  with `Idempotent-Replayed: true`; the same key with other parameters → 400
  `idempotency_error`; the same key while the first request runs → 409
  `idempotency_key_in_use`. Nothing is saved for answers given before execution began:
  parameter validation errors, unknown objects (404) and 503s.
- Faults: an outage (`sandbox_fault --outage on`) and card 4000000000000507 answer 503
  `api_error` with `Stripe-Should-Retry: true`, before processing (nothing saved, nothing
  charged: the retry-safe "not processed" signal the adapter relies on); added latency;
  card …0408 commits the charge, saves the answer, then drops the connection; card …0606
  hangs before committing.
- Webhooks (docs/providers.md 1.8), queued in the request that changes the ledger
  (`providers.sandboxes.webhooks`), for every endpoint of the Stripe account the API key
  names (`account_for_key`: the sandbox knows an account by its key, as Stripe does):
  `payment_intent.amount_capturable_updated` (manual capture) or `payment_intent.succeeded`
  (automatic) for an approved PaymentIntent, `payment_intent.payment_failed` for a declined
  one — …0408's too, whose answer is lost —, `payment_intent.succeeded` for a capture,
  `payment_intent.canceled` for a cancel, `refund.created` and `charge.refunded` for a
  refund. Each is an Event object with `request.idempotency_key` (the key of the request
  that caused it), signed `Stripe-Signature: t=…,v1=…` under the endpoint's `whsec_…`
  secret at every delivery attempt (`delivery_headers`), as Stripe signs each attempt.
- Settlement: `GET /v1/balance_transactions` (`type` charge/refund, `amount`/`fee`/`net` in
  minor units, refunds negative, `source` ch_…/re_…, `expand[]=data.source` for the charge or
  refund with its `payment_intent`; `created[…]`, `type`, `source`, `limit`,
  `starting_after`) built from `ledger.settlement` (the key's account only: planted
  faults, `ledger.plant_settlement_fault`, apply), and `GET /v1/balance`.

Not reproduced (documented limits): unconfirmed PaymentIntents, 3-D Secure, multicapture,
canceling a declined PaymentIntent, refunds that fail later (and their refund.updated /
refund.failed events), Search lag, payouts, other event types, the Events API and the
endpoints API (endpoints are set up by `providers.sandboxes.webhooks.connect_account`),
idempotency keys scoped per account (they are global here: Switchyard's keys are unique ids),
24 h key expiry. Details the ledger does not keep (description, payment_method, the
cancellation reason) appear only in the answer to the request that set them.

PaymentMethods live in SandboxIdempotencyRecord rows (provider "stripe:pm", key = the pm id),
since the ledger has no table for them. No card number is stored: a test card's number is
kept (they are public), any other card becomes a surrogate with its last four digits, which
the ledger approves like any unknown card.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import string
from datetime import UTC, datetime, timedelta

from django.db.models import JSONField
from django.utils import timezone

from providers import crypto
from providers.base import ProviderError
from providers.sandboxes import ledger
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.cards import TEST_CARDS
from providers.sandboxes.models import SandboxCharge, SandboxIdempotencyRecord, SandboxOperation
from providers.sandboxes.wsgi import IdempotencyPolicy, Request, Response, idempotent, make_app
from providers.stripe.currencies import WIRE
from providers.stripe.webhooks import signature_header

PROVIDER = "stripe"
PM_STORE = "stripe:pm"  # SandboxIdempotencyRecord.provider of stored PaymentMethods
DEFAULT_VERSION = "2026-06-24.dahlia"
REFERENCE_KEY = "switchyard_attempt"

_PI_STATUS = {"authorized": "requires_capture", "captured": "succeeded",
              "canceled": "canceled", "declined": "requires_payment_method"}
_LEDGER_STATUS = {v: k for k, v in _PI_STATUS.items()}
_DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "processing_error": "An error occurred while processing your card. Try again in a "
                        "little bit.",
    "incorrect_cvc": "Your card's security code is incorrect.",
}
# Stripe's test PaymentMethod tokens (docs/providers.md 1.10) → the test card they stand for.
TEST_TOKENS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedProcessingError": "4000000000000119",
}
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?\Z")
_SEARCH_CLAUSE = re.compile(
    r"""\s*(?:metadata\[(?P<q1>['"])(?P<key>\w{1,40})(?P=q1)\]|(?P<field>status|currency|amount))"""
    r"""\s*:\s*(?:(?P<q2>['"])(?P<text>[^'"]*)(?P=q2)|(?P<number>\d+))\s*\Z""")


# --- errors and answers -----------------------------------------------------------------
class NotStarted(Response):
    """An answer Stripe gives before it starts executing: never saved under the key."""


class Invalid(Exception):
    """A parameter error (400 invalid_request_error), found before execution."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class Missing(Exception):
    """An object that does not exist (404 resource_missing), found before execution."""

    def __init__(self, kind: str, object_id: str, param: str = "id"):
        super().__init__(object_id)
        self.kind, self.object_id, self.param = kind, object_id, param


class CardError(Exception):
    """A card refused while creating the PaymentMethod (402 card_error)."""

    def __init__(self, code: str, message: str, param: str):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _answer(request: Request, status: int, body: object, *, cls: type[Response] = Response,
            headers: dict | None = None, drop_connection: bool = False) -> Response:
    base = {"Request-Id": "req_" + _random(14),
            "Stripe-Version": request.headers.get("stripe-version") or DEFAULT_VERSION}
    return cls(status, body, {**base, **(headers or {})}, drop_connection=drop_connection)


def _error(request: Request, status: int, kind: str, message: str, *, code: str | None = None,
           param: str | None = None, started: bool = True, headers: dict | None = None,
           **extra) -> Response:
    error: dict = {"type": kind, "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        error["param"] = param
    error.update({k: v for k, v in extra.items() if v is not None})
    return _answer(request, status, {"error": error}, cls=Response if started else NotStarted,
                   headers=headers)


def unavailable(request: Request) -> Response:
    """503 before processing: Stripe's retry-safe signal, nothing saved, nothing charged."""
    return _error(request, 503, "api_error",
                  "Stripe is temporarily unavailable and did not process this request. It is "
                  "safe to retry it.", started=False, headers={"Stripe-Should-Retry": "true"})


def _endpoint(handler):
    """Turn the handler's validation exceptions into Stripe's pre-execution answers."""
    def run(request: Request, **groups) -> Response:
        try:
            return handler(request, **groups)
        except Invalid as exc:
            return _error(request, 400, "invalid_request_error", exc.message, code=exc.code,
                          param=exc.param, started=False)
        except Missing as exc:
            return _error(request, 404, "invalid_request_error",
                          f"No such {exc.kind}: '{exc.object_id}'", code="resource_missing",
                          param=exc.param, started=False)
        except CardError as exc:
            return _error(request, 402, "card_error", exc.message, code=exc.code,
                          param=exc.param)
        except ledger.ServiceUnavailable:
            return unavailable(request)
    return run


def _post(handler):
    """A POST endpoint: Stripe's idempotency around the validated handler."""
    endpoint = _endpoint(handler)

    def run(request: Request, **groups) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() not in (
                "", "application/x-www-form-urlencoded"):
            return _error(request, 400, "invalid_request_error",
                          "Invalid request: the body must be application/x-www-form-urlencoded.",
                          started=False)
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= 255:
            return _error(request, 400, "invalid_request_error",
                          "Idempotency-Key must be between 1 and 255 characters long.",
                          started=False)
        policy = IdempotencyPolicy(
            store=lambda response: not isinstance(response, NotStarted),
            in_flight=lambda: _error(
                request, 409, "invalid_request_error",
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                f"going through): {key}. Please try again later.",
                code="idempotency_key_in_use", started=False,
                headers={"Stripe-Should-Retry": "true"}),
            mismatch=lambda: _error(
                request, 400, "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.", started=False),
            replay_headers={"Idempotent-Replayed": "true"},
        )
        return idempotent(PROVIDER, key, request, policy, lambda: endpoint(request, **groups))
    return run


# --- parameters -------------------------------------------------------------------------
def _only(params: dict, allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise Invalid(f"Received unknown parameter: {name}", param=name)


def _int(params: dict, name: str, *, required: bool = False, minimum: int = 1) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise Invalid(f"Missing required param: {name}.", param=name,
                          code="parameter_missing")
        return None
    if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,18}", value):
        raise Invalid(f"Invalid integer: {value}", param=name)
    number = int(value)
    if number < minimum:
        raise Invalid(f"This value must be greater than or equal to {minimum}.", param=name)
    return number


def _bool(params: dict, name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise Invalid(f"Invalid boolean: {value}", param=name)
    return value == "true"


def _choice(params: dict, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = params.get(name, default)
    if value is not None and value not in choices:
        raise Invalid(f"Invalid {name}: must be one of {', '.join(choices)}", param=name)
    return value


def _string(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"Invalid string: {name} must be a string", param=name)
    return value


def _metadata(params: dict) -> dict[str, str]:
    metadata = params.get("metadata", {})
    if metadata == "":
        return {}
    if not isinstance(metadata, dict):
        raise Invalid("Invalid object", param="metadata")
    if len(metadata) > 50:
        raise Invalid("Metadata can have at most 50 keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 40 or not isinstance(value, str) or len(value) > 500:
            raise Invalid("Metadata keys must be at most 40 characters and values strings of "
                          "at most 500 characters.", param=f"metadata[{key}]")
    return metadata


def _list(params: dict, name: str) -> list:
    value = params.get(name)
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def _wire_amount(amount: int | None, currency: str, param: str) -> None:
    """Stripe's own amount rules (providers/stripe/currencies.py): ISK and UGX are two-decimal
    with decimals always 00, three-decimal amounts end in 0. Refused before execution."""
    if amount is None:
        return
    code = currency.upper()
    try:
        step = WIRE.unit(code).step
    except ProviderError:
        return  # not a currency at all: Stripe's own currency error is not this sandbox's job
    if amount % step == 0:
        return
    if step == 100:  # Stripe's answer, quoted in its ISK notice (support.stripe.com)
        raise Invalid(f"Invalid amount. Currency {code} has become effectively zero-decimal and "
                      "charged amounts must be evenly divisible by 100. See "
                      "https://stripe.com/docs/currencies#special-cases for more information.",
                      param=param, code="invalid_charge_amount_no_decimal_compatible")
    # Three-decimal currencies: the code and wording of Stripe's refusal are unverified.
    raise Invalid(f"Invalid amount. {code} amounts must be rounded to the nearest ten (the last "
                  "digit must be 0). See https://stripe.com/docs/currencies#three-decimal for "
                  "more information.", param=param, code="invalid_charge_amount")


def _currency(params: dict) -> str:
    value = params.get("currency")
    if not value:
        raise Invalid("Missing required param: currency.", param="currency",
                      code="parameter_missing")
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise Invalid(f"Invalid currency: {value}", param="currency")
    return value.lower()


# --- cards and PaymentMethods -----------------------------------------------------------
def _luhn(number: str) -> bool:
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(number)):
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if "51" <= number[:2] <= "55" or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def _card(card: object, prefix: str) -> dict:
    """Validate raw card fields; returns what the sandbox keeps (never the number itself,
    unless it is a public test card)."""
    if not isinstance(card, dict):
        raise Invalid(f"Missing required param: {prefix}.", param=prefix,
                      code="parameter_missing")
    _only(card, {"number", "exp_month", "exp_year", "cvc"})
    for name in ("number", "exp_month", "exp_year"):
        if not card.get(name):
            raise Invalid(f"Missing required param: {prefix}[{name}].", param=f"{prefix}[{name}]",
                          code="parameter_missing")
    number = str(card["number"]).replace(" ", "")
    if not number.isdigit() or not 12 <= len(number) <= 19 or not _luhn(number):
        raise CardError("incorrect_number", "Your card number is incorrect.",
                        f"{prefix}[number]")
    month, year = _int(card, "exp_month"), _int(card, "exp_year")
    if not 1 <= month <= 12:
        raise CardError("invalid_expiry_month", "Your card's expiration month is invalid.",
                        f"{prefix}[exp_month]")
    year = year + 2000 if year < 100 else year
    today = timezone.now()
    if (year, month) < (today.year, today.month):
        raise CardError("invalid_expiry_year", "Your card's expiration year is invalid.",
                        f"{prefix}[exp_year]")
    cvc = card.get("cvc")
    if cvc is not None and not re.fullmatch(r"\d{3,4}", str(cvc)):
        raise CardError("invalid_cvc", "Your card's security code is invalid.",
                        f"{prefix}[cvc]")
    return {"number": number if number in TEST_CARDS else "0" * (len(number) - 4) + number[-4:],
            "brand": _brand(number), "last4": number[-4:], "exp_month": month,
            "exp_year": year, "cvc": bool(cvc)}


def _payment_method_object(pm_id: str, card: dict, billing_details: dict, metadata: dict,
                           created: int) -> dict:
    return {
        "id": pm_id, "object": "payment_method", "type": "card", "created": created,
        "customer": None, "livemode": False, "metadata": metadata,
        "billing_details": {"name": billing_details.get("name"),
                            "email": billing_details.get("email"),
                            "phone": billing_details.get("phone"),
                            "address": {k: None for k in ("city", "country", "line1", "line2",
                                                          "postal_code", "state")}},
        "card": {"brand": card["brand"], "last4": card["last4"],
                 "exp_month": card["exp_month"], "exp_year": card["exp_year"],
                 "funding": "credit", "country": "US",
                 "checks": {"cvc_check": "pass" if card["cvc"] else None,
                            "address_line1_check": None, "address_postal_code_check": None}},
    }


def _store_payment_method(card: dict, billing_details: dict, metadata: dict) -> dict:
    pm_id = "pm_" + _random(24)
    obj = _payment_method_object(pm_id, card, billing_details, metadata, _now())
    # The simulated provider keeps the number as a provider would: encrypted (AES-GCM, the
    # PaymentMethod id bound in), never in clear in a table.
    key_id, sealed = crypto.encrypt(card["number"], associated=f"sandbox:{pm_id}")
    SandboxIdempotencyRecord.objects.create(
        provider=PM_STORE, key=pm_id, fingerprint="", status_code=200, completed=True,
        body=json.dumps({"payment_method": obj, "key": key_id,
                         "number": base64.b64encode(sealed).decode()}))
    return obj


def _load_payment_method(pm_id: str, param: str = "payment_method") -> tuple[dict, str]:
    """(the PaymentMethod object, the number the ledger decides on)."""
    if pm_id in TEST_TOKENS:
        number = TEST_TOKENS[pm_id]
        card = {"number": number, "brand": _brand(number), "last4": number[-4:],
                "exp_month": 12, "exp_year": timezone.now().year + 5, "cvc": False}
        return _payment_method_object(pm_id, card, {}, {}, 0), number
    record = SandboxIdempotencyRecord.objects.filter(provider=PM_STORE, key=pm_id).first()
    if record is None:
        raise Missing("PaymentMethod", pm_id, param)
    stored = json.loads(record.body)
    number = crypto.decrypt(stored["key"], base64.b64decode(stored["number"]),
                            associated=f"sandbox:{pm_id}")
    return stored["payment_method"], number


def create_payment_method(request: Request) -> Response:
    params = request.form()
    _only(params, {"type", "card", "billing_details", "metadata", "expand"})
    if params.get("type") != "card":
        raise Invalid("Invalid type: this sandbox supports type=card.", param="type")
    billing = params.get("billing_details") or {}
    if not isinstance(billing, dict):
        raise Invalid("Invalid object", param="billing_details")
    card = _card(params.get("card"), "card")
    return _answer(request, 200, _store_payment_method(card, billing, _metadata(params)))


def get_payment_method(request: Request, pm_id: str) -> Response:
    return _answer(request, 200, _load_payment_method(pm_id, "id")[0])


# --- PaymentIntents ---------------------------------------------------------------------
def _charge(intent_id: str, param: str = "intent") -> SandboxCharge:
    try:
        return ledger.get_charge(PROVIDER, intent_id)
    except ledger.UnknownCharge:
        raise Missing("payment_intent", intent_id, param) from None


def _charge_id(charge: SandboxCharge) -> str:
    return "ch_" + charge.provider_reference.removeprefix("pi_")


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def _last_payment_error(charge: SandboxCharge) -> dict:
    code = {"expired_card": "expired_card", "processing_error": "processing_error",
            "incorrect_cvc": "incorrect_cvc"}.get(charge.decline_code, "card_declined")
    error = {"type": "card_error", "code": code,
             "message": _DECLINE_MESSAGES.get(charge.decline_code, "Your card was declined."),
             "charge": _charge_id(charge),
             "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"}
    if code != "processing_error":
        error["decline_code"] = charge.decline_code
    return error


def _capture_method(charge: SandboxCharge) -> str:
    """What the ledger lets us infer: a capture operation or a still-open authorization
    means manual; an immediately captured charge means automatic."""
    if charge.status in ("authorized", "canceled") or charge.operations.filter(
            kind="capture").exists():
        return "manual"
    return "automatic"


def _intent(charge: SandboxCharge, **known) -> dict:
    """The PaymentIntent object of a ledger charge; `known` adds what only the current
    request knows (capture_method, description, payment_method, cancellation_reason)."""
    status = _PI_STATUS[charge.status]
    declined = charge.status == "declined"
    intent = {
        "id": charge.provider_reference, "object": "payment_intent",
        "amount": charge.amount,
        "amount_capturable": charge.amount if charge.status == "authorized" else 0,
        "amount_received": charge.amount_captured,
        "canceled_at": None, "cancellation_reason": None,
        "capture_method": _capture_method(charge),
        "client_secret": f"{charge.provider_reference}_secret_"
                         + hashlib.sha256(charge.provider_reference.encode()).hexdigest()[:24],
        "confirmation_method": "automatic",
        "created": _ts(charge.created_at),
        "currency": charge.currency.lower(),
        "description": None,
        "last_payment_error": _last_payment_error(charge) if declined else None,
        "latest_charge": _charge_id(charge),
        "livemode": False,
        "metadata": charge.metadata or {},
        "next_action": None,
        "payment_method": None,
        "payment_method_types": ["card"],
        "status": status,
    }
    if charge.status == "canceled":
        cancel = charge.operations.filter(kind="cancel").order_by("-created_at").first()
        intent["canceled_at"] = _ts(cancel.created_at) if cancel else None
    intent.update({k: v for k, v in known.items() if v is not None})
    if declined:
        intent["payment_method"] = None  # Stripe detaches a declined PaymentMethod
    return intent


_INTENT_PARAMS = {
    "amount", "currency", "payment_method", "payment_method_data", "payment_method_types",
    "automatic_payment_methods", "confirm", "capture_method", "metadata", "description",
    "error_on_requires_action", "return_url", "off_session", "statement_descriptor",
    "statement_descriptor_suffix", "receipt_email", "expand", "use_stripe_sdk",
}


def create_payment_intent(request: Request) -> Response:
    params = request.form()
    _only(params, _INTENT_PARAMS)
    amount = _int(params, "amount", required=True)
    currency = _currency(params)
    _wire_amount(amount, currency, "amount")
    capture_method = _choice(params, "capture_method", ("automatic", "automatic_async",
                                                        "manual"), "automatic")
    metadata = _metadata(params)
    description = _string(params, "description")
    _bool(params, "error_on_requires_action")
    if not _bool(params, "confirm"):
        raise Invalid("This sandbox only creates PaymentIntents with confirm=true.",
                      param="confirm")
    types = _list(params, "payment_method_types")
    automatic = params.get("automatic_payment_methods") or {}
    if types and automatic:
        raise Invalid("You may only specify one of these parameters: automatic_payment_methods, "
                      "payment_method_types.", param="automatic_payment_methods")
    if types and "card" not in types:
        raise Invalid("This sandbox only supports the card payment method type.",
                      param="payment_method_types")
    if not types and not params.get("return_url") and (
            not isinstance(automatic, dict) or automatic.get("allow_redirects") != "never"):
        raise Invalid(
            "This PaymentIntent is configured to accept payment methods enabled in your "
            "Dashboard. Because some of these payment methods might redirect your customer off "
            "of your page, you must provide a `return_url`. If you don't want to accept "
            "redirect-based payment methods, set `automatic_payment_methods[enabled]` to `true` "
            "and `automatic_payment_methods[allow_redirects]` to `never` when creating Setup "
            "Intents and Payment Intents.", param="return_url")
    pm_id, inline = _string(params, "payment_method"), params.get("payment_method_data")
    if bool(pm_id) == bool(inline):
        raise Invalid("Provide exactly one of payment_method or payment_method_data to confirm.",
                      param="payment_method")
    if inline:
        if not isinstance(inline, dict) or inline.get("type") != "card":
            raise Invalid("Invalid payment_method_data[type]: this sandbox supports card.",
                          param="payment_method_data[type]")
        _only(inline, {"type", "card", "billing_details", "metadata"})
        card = _card(inline.get("card"), "payment_method_data[card]")
        payment_method = _store_payment_method(card, inline.get("billing_details") or {}, {})
        number = card["number"]
    else:
        payment_method, number = _load_payment_method(pm_id)

    authorization = ledger.authorize(  # ServiceUnavailable → 503, Hang → no answer at all
        PROVIDER, reference=metadata.get(REFERENCE_KEY, "")[:80], amount=amount,
        currency=currency.upper(), number=number, capture=capture_method != "manual",
        brand=payment_method["card"]["brand"], metadata=metadata,
        merchant_account=account_for_key(_api_key(request)))
    charge = authorization.charge
    intent = _intent(charge, capture_method=capture_method, description=description,
                     payment_method=payment_method["id"])
    # A dropped connection (card …0408) loses the answer, not the PaymentIntent nor its event.
    _notify(request, charge, {"authorized": "payment_intent.amount_capturable_updated",
                              "captured": "payment_intent.succeeded",
                              "declined": "payment_intent.payment_failed"}[charge.status],
            intent)
    if charge.status == "declined":
        error = {**intent["last_payment_error"], "payment_intent": intent,
                 "payment_method": payment_method}
        return _answer(request, 402, {"error": error},
                       drop_connection=authorization.drop_connection)
    return _answer(request, 200, intent, drop_connection=authorization.drop_connection)


def get_payment_intent(request: Request, intent_id: str) -> Response:
    _only(request.query, {"expand[]", "expand[0]", "client_secret"})
    return _answer(request, 200, _intent(_charge(intent_id)))


def _unexpected_state(request: Request, charge: SandboxCharge, action: str,
                      allowed: str) -> Response:
    status = _PI_STATUS[charge.status]
    return _error(request, 400, "invalid_request_error",
                  f"This PaymentIntent could not be {action} because it has a status of "
                  f"{status}. Only a PaymentIntent with one of the following statuses may be "
                  f"{action}: {allowed}.", code="payment_intent_unexpected_state",
                  payment_intent=_intent(charge))


def capture_payment_intent(request: Request, intent_id: str) -> Response:
    params = request.form()
    _only(params, {"amount_to_capture", "final_capture", "expand"})
    amount = _int(params, "amount_to_capture")
    if not _bool(params, "final_capture", True):
        raise Invalid("This sandbox does not support multicapture (final_capture=false).",
                      param="final_capture")
    charge = _charge(intent_id)
    _wire_amount(amount, charge.currency, "amount_to_capture")
    if charge.status == "authorized" and amount is not None and amount > charge.amount:
        return _error(request, 400, "invalid_request_error",
                      f"The amount_to_capture ({amount}) must be less than or equal to the "
                      f"PaymentIntent's amount_capturable ({charge.amount}).",
                      code="amount_too_large", param="amount_to_capture")
    try:
        ledger.modify(PROVIDER, "capture", intent_id, amount=amount,
                      reference=request.headers.get("idempotency-key", "")[:80])
    except ledger.InvalidState:
        return _unexpected_state(request, _charge(intent_id), "captured", "requires_capture")
    charge = _charge(intent_id)
    _notify(request, charge, "payment_intent.succeeded", _intent(charge))
    return _answer(request, 200, _intent(charge))


def cancel_payment_intent(request: Request, intent_id: str) -> Response:
    params = request.form()
    _only(params, {"cancellation_reason", "expand"})
    reason = _choice(params, "cancellation_reason", ("duplicate", "fraudulent",
                                                     "requested_by_customer", "abandoned"),
                     None)
    _charge(intent_id)
    try:
        ledger.modify(PROVIDER, "cancel", intent_id, amount=None,
                      reference=request.headers.get("idempotency-key", "")[:80])
    except ledger.InvalidState:
        return _unexpected_state(request, _charge(intent_id), "canceled",
                                 "requires_payment_method, requires_capture, "
                                 "requires_confirmation, requires_action, processing")
    intent = _intent(_charge(intent_id), cancellation_reason=reason)
    _notify(request, _charge(intent_id), "payment_intent.canceled", intent)
    return _answer(request, 200, intent)


def _page(request: Request, queryset, *, id_field: str, key):
    """Stripe's list pagination (newest first, `limit`, `starting_after`) over a queryset."""
    limit = _int(request.query, "limit") or 10
    if limit > 100:
        raise Invalid("This value must be less than or equal to 100.", param="limit")
    items = list(queryset)
    after = request.query.get("starting_after")
    if after:
        ids = [key(item) for item in items]
        if after not in ids:
            raise Missing(id_field, after, "starting_after")
        items = items[ids.index(after) + 1:]
    return items[:limit], len(items) > limit


def _created_bounds(query: dict) -> tuple[datetime | None, datetime | None]:
    """created[gte|gt|lte|lt] (unix seconds) → [since, until) for the ledger."""
    since = until = None
    for op in ("gte", "gt", "lte", "lt"):
        value = _int(query, f"created[{op}]", minimum=0)
        if value is None:
            continue
        moment = datetime.fromtimestamp(value, tz=UTC)
        if op in ("gt", "lte"):
            moment += timedelta(seconds=1)
        if op in ("gte", "gt"):
            since = moment if since is None else max(since, moment)
        else:
            until = moment if until is None else min(until, moment)
    return since, until


def _charges():
    return SandboxCharge.objects.filter(provider=PROVIDER).order_by("-created_at", "-id")


def list_payment_intents(request: Request) -> Response:
    _only(request.query, {"limit", "starting_after", "created[gte]", "created[gt]",
                          "created[lte]", "created[lt]"})
    charges = _charges()
    since, until = _created_bounds(request.query)
    if since is not None:
        charges = charges.filter(created_at__gte=since)
    if until is not None:
        charges = charges.filter(created_at__lt=until)
    page, has_more = _page(request, charges, id_field="payment_intent",
                           key=lambda c: c.provider_reference)
    return _answer(request, 200, {"object": "list", "url": "/v1/payment_intents",
                                  "has_more": has_more, "data": [_intent(c) for c in page]})


# Names a metadata key must not take in an ORM path (they would read as lookups/transforms).
_JSON_LOOKUPS = frozenset(JSONField.get_lookups()) | {"key"}


def search_payment_intents(request: Request) -> Response:
    _only(request.query, {"query", "limit", "page", "expand[]", "expand[0]"})
    query = request.query.get("query")
    if not query:
        raise Invalid("Missing required param: query.", param="query", code="parameter_missing")
    charges = _charges()
    for clause in re.split(r"\s+AND\s+", query.strip()):
        match = _SEARCH_CLAUSE.match(clause)
        if match is None:
            raise Invalid(f"We could not parse your search query: {clause!r}. This sandbox "
                          "supports metadata['key']:'value', status, currency and amount "
                          "clauses joined by AND.", param="query")
        value = match["text"] if match["text"] is not None else match["number"]
        if match["key"]:
            key = match["key"]
            if key.isidentifier() and key not in _JSON_LOOKUPS:
                charges = charges.filter(**{f"metadata__{key}": value})
            else:  # a key that reads as a lookup ("contains") or a path: compare in Python
                ids = [c.pk for c in charges if (c.metadata or {}).get(key) == value]
                charges = charges.filter(pk__in=ids)
        elif match["field"] == "status":
            charges = charges.filter(status=_LEDGER_STATUS.get(value, "-"))
        elif match["field"] == "currency":
            charges = charges.filter(currency=value.upper())
        elif not value.isdigit():
            raise Invalid("amount must be an integer in a search query.", param="query")
        else:
            charges = charges.filter(amount=int(value))
    limit = _int(request.query, "limit") or 10
    if limit > 100:
        raise Invalid("This value must be less than or equal to 100.", param="limit")
    found = list(charges[:limit + 1])
    return _answer(request, 200, {
        "object": "search_result", "url": "/v1/payment_intents/search",
        "has_more": len(found) > limit, "next_page": None,
        "data": [_intent(c) for c in found[:limit]]})


# --- refunds ----------------------------------------------------------------------------
def _refund_object(op: SandboxOperation, **known) -> dict:
    charge = op.charge
    return {
        "id": op.provider_reference, "object": "refund", "amount": op.amount,
        "balance_transaction": _txn_id("refund", op.provider_reference),
        "charge": _charge_id(charge), "created": _ts(op.created_at),
        "currency": charge.currency.lower(), "metadata": op.metadata or {}, "payment_intent":
        charge.provider_reference, "reason": None, "receipt_number": None,
        "status": "succeeded", "failure_reason": None,
        "destination_details": {"type": "card", "card": {"type": "refund"}},
        **{k: v for k, v in known.items() if v is not None},
    }


def create_refund(request: Request) -> Response:
    params = request.form()
    _only(params, {"payment_intent", "charge", "amount", "reason", "metadata", "expand"})
    amount = _int(params, "amount")
    reason = _choice(params, "reason", ("duplicate", "fraudulent", "requested_by_customer"),
                     None)
    metadata = _metadata(params)
    intent_id, charge_id = _string(params, "payment_intent"), _string(params, "charge")
    if bool(intent_id) == bool(charge_id):
        raise Invalid("One of the following params should be provided for this request: "
                      "payment_intent or charge.", param="payment_intent")
    if charge_id:
        try:
            charge = ledger.get_charge(PROVIDER, "pi_" + charge_id.removeprefix("ch_"))
        except ledger.UnknownCharge:
            raise Missing("charge", charge_id, "charge") from None
    else:
        charge = _charge(intent_id, "payment_intent")
    _wire_amount(amount, charge.currency, "amount")
    try:
        op = ledger.modify(PROVIDER, "refund", charge.provider_reference, amount=amount,
                           reference=request.headers.get("idempotency-key", "")[:80],
                           metadata=metadata)
    except ledger.InvalidState:
        charge.refresh_from_db()
        remaining = charge.amount_captured - charge.amount_refunded
        if charge.status != "captured":
            return _error(request, 400, "invalid_request_error",
                          f"This PaymentIntent does not have a successful charge to refund: "
                          f"its status is {_PI_STATUS[charge.status]}.",
                          code="payment_intent_unexpected_state", param="payment_intent")
        if remaining == 0:
            return _error(request, 400, "invalid_request_error",
                          f"Charge {_charge_id(charge)} has already been refunded.",
                          code="charge_already_refunded")
        return _error(request, 400, "invalid_request_error",
                      f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                      f"({remaining}).", code="amount_too_large", param="amount")
    refund = _refund_object(op, reason=reason, metadata=metadata)
    _notify(request, op.charge, "refund.created", refund)
    _notify(request, op.charge, "charge.refunded", _charge_object(op.charge))
    return _answer(request, 200, refund)


def list_refunds(request: Request) -> Response:
    """`GET /v1/refunds` (newest first), optionally of one PaymentIntent or charge."""
    _only(request.query, {"limit", "starting_after", "payment_intent", "charge",
                          "created[gte]", "created[gt]", "created[lte]", "created[lt]"})
    ops = SandboxOperation.objects.select_related("charge").filter(
        provider=PROVIDER, kind="refund").order_by("-created_at", "-id")
    intent_id, charge_id = request.query.get("payment_intent"), request.query.get("charge")
    if intent_id:
        ops = ops.filter(charge__provider_reference=intent_id)
    if charge_id:
        ops = ops.filter(charge__provider_reference="pi_" + charge_id.removeprefix("ch_"))
    since, until = _created_bounds(request.query)
    if since is not None:
        ops = ops.filter(created_at__gte=since)
    if until is not None:
        ops = ops.filter(created_at__lt=until)
    page, has_more = _page(request, ops, id_field="refund", key=lambda op: op.provider_reference)
    return _answer(request, 200, {"object": "list", "url": "/v1/refunds", "has_more": has_more,
                                  "data": [_refund_object(op) for op in page]})


def get_refund(request: Request, refund_id: str) -> Response:
    op = SandboxOperation.objects.select_related("charge").filter(
        provider=PROVIDER, kind="refund", provider_reference=refund_id).first()
    if op is None:
        raise Missing("refund", refund_id)
    return _answer(request, 200, _refund_object(op))


# --- webhooks (docs/providers.md 1.8) ---------------------------------------------------
def account_for_key(secret_key: str) -> str:
    """The sandbox's id for the Stripe account an API key belongs to: Stripe knows the account
    by its key, so the sandbox does too (each sandbox account gets a key of its own,
    `providers.sandboxes.webhooks.SETUP`)."""
    return "acct_" + hashlib.sha256(b"sandbox-account\n" + secret_key.encode()).hexdigest()[:16]


def _notify(request: Request, charge: SandboxCharge, event_type: str, obj: dict) -> None:
    """Queue an Event for every endpoint of the charge's account. The body is fixed now (a
    redelivery is the same event); its signature is made at each attempt
    (`delivery_headers`)."""
    event = {
        "id": "evt_" + _random(24), "object": "event", "api_version": DEFAULT_VERSION,
        "created": _now(), "livemode": False, "pending_webhooks": 1, "type": event_type,
        "data": {"object": obj},
        "request": {"id": "req_" + _random(14),
                    "idempotency_key": request.headers.get("idempotency-key")},
    }
    raw = json.dumps(event, separators=(",", ":"))
    sandbox_webhooks.queue(PROVIDER, charge.merchant_account, event_type,
                           lambda endpoint: (raw, {}))


def delivery_headers(body: str, key: str) -> dict[str, str]:
    """Stripe signs every delivery attempt when it sends it: `t` is the attempt's time."""
    return {"Stripe-Signature": signature_header(body.encode(), key)}


def _charge_object(charge: SandboxCharge) -> dict:
    """The Charge of a PaymentIntent (metadata copied from it, as Stripe does). Its `refunds`
    list is left out, as in API versions since 2022-11-15 unless expanded."""
    return {"id": _charge_id(charge), "object": "charge", "amount": charge.amount,
            "amount_captured": charge.amount_captured,
            "amount_refunded": charge.amount_refunded,
            "captured": charge.amount_captured > 0,
            "refunded": 0 < charge.amount_captured == charge.amount_refunded,
            "currency": charge.currency.lower(), "payment_intent": charge.provider_reference,
            "metadata": charge.metadata or {}, "livemode": False,
            "status": "failed" if charge.status == "declined" else "succeeded",
            "created": _ts(charge.created_at)}


# --- settlement -------------------------------------------------------------------------
def _txn_id(kind: str, operation_reference: str) -> str:
    """Stable per ledger row, so that pagination and reconciliation see the same ids."""
    return "txn_" + hashlib.sha256(f"{kind}:{operation_reference}".encode()).hexdigest()[:24]


def _balance_transaction(row: dict, expand_source: bool) -> dict:
    refund = row["type"] == "refund"
    amount = -row["amount"] if refund else row["amount"]
    currency = row["currency"].lower()
    created = _ts(row["created_at"])
    if refund:
        source: object = row["operation_reference"]
        if expand_source:
            op = SandboxOperation.objects.select_related("charge").get(
                provider=PROVIDER, provider_reference=row["operation_reference"])
            source = _refund_object(op)
    else:
        charge = ledger.get_charge(PROVIDER, row["provider_reference"])
        source = _charge_id(charge)
        if expand_source:
            source = _charge_object(charge)
    return {
        "id": _txn_id(row["type"], row["operation_reference"]),
        "object": "balance_transaction",
        "amount": amount, "fee": row["fee"], "net": amount - row["fee"],
        "currency": currency,
        "fee_details": [{"amount": row["fee"], "application": None, "currency": currency,
                         "description": "Stripe processing fees", "type": "stripe_fee"}]
        if row["fee"] else [],
        "type": row["type"] if refund else "charge",
        "reporting_category": "refund" if refund else "charge",
        "source": source, "status": "available",
        "created": created, "available_on": created + 2 * 86400,
        "exchange_rate": None, "description": None,
    }


def _settlement_rows(request: Request, since=None, until=None) -> list[dict]:
    """The ledger's captures and refunds of the account the API key names (each Stripe
    account sees its own balance), newest first, as Stripe lists balance transactions."""
    rows = ledger.settlement(PROVIDER, since=since, until=until,
                             merchant_account=account_for_key(_api_key(request)))
    return sorted(rows, key=lambda r: (r["created_at"], r["operation_reference"]), reverse=True)


def list_balance_transactions(request: Request) -> Response:
    expands = [v for k, v in request.query.items() if k.startswith("expand")]
    _only(request.query, {"limit", "starting_after", "created[gte]", "created[gt]",
                          "created[lte]", "created[lt]", "type", "source", "currency",
                          *(k for k in request.query if k.startswith("expand"))})
    if any(e != "data.source" for e in expands):
        raise Invalid("This sandbox can only expand data.source.", param="expand")
    since, until = _created_bounds(request.query)
    kind = _choice(request.query, "type", ("charge", "refund", "payment", "adjustment",
                                           "payout"), None)
    txns = [_balance_transaction(row, False) for row in _settlement_rows(request, since, until)]
    if kind:
        txns = [t for t in txns if t["type"] == kind]
    if request.query.get("source"):
        txns = [t for t in txns if t["source"] == request.query["source"]]
    if request.query.get("currency"):
        txns = [t for t in txns if t["currency"] == request.query["currency"].lower()]
    page, has_more = _page(request, txns, id_field="balance_transaction", key=lambda t: t["id"])
    if expands:
        by_id = {_txn_id(r["type"], r["operation_reference"]): r
                 for r in _settlement_rows(request, since, until)}
        page = [_balance_transaction(by_id[t["id"]], True) for t in page]
    return _answer(request, 200, {"object": "list", "url": "/v1/balance_transactions",
                                  "has_more": has_more, "data": page})


def get_balance(request: Request) -> Response:
    totals: dict[str, int] = {}
    for row in _settlement_rows(request):
        net = -row["amount"] if row["type"] == "refund" else row["amount"] - row["fee"]
        currency = row["currency"].lower()
        totals[currency] = totals.get(currency, 0) + net
    available = [{"amount": amount, "currency": currency, "source_types": {"card": amount}}
                 for currency, amount in sorted(totals.items())] or [
        {"amount": 0, "currency": "usd", "source_types": {"card": 0}}]
    pending = [{"amount": 0, "currency": a["currency"], "source_types": {"card": 0}}
               for a in available]
    return _answer(request, 200, {"object": "balance", "livemode": False,
                                  "available": available, "pending": pending})


# --- the app ----------------------------------------------------------------------------
def _api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


def before(request: Request) -> Response | None:
    """Authentication, API version, then the provider's conditions (latency, outage)."""
    if not _api_key(request):
        return _error(request, 401, "invalid_request_error",
                      "You did not provide an API key. You need to provide your API key in the "
                      "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                      "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                      "details, or we can help at https://support.stripe.com/.", started=False)
    version = request.headers.get("stripe-version")
    if version is not None and not _VERSION.match(version):
        return _error(request, 400, "invalid_request_error",
                      f"Invalid Stripe API version: {version}", started=False)
    try:
        ledger.before_request(PROVIDER)
    except ledger.ServiceUnavailable:
        return unavailable(request)
    return None


def not_found(request: Request) -> Response:
    return _error(request, 404, "invalid_request_error",
                  f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                  "https://stripe.com/docs or we can help at https://support.stripe.com/.",
                  started=False)


def _random(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def _now() -> int:
    return _ts(timezone.now())


_ID = r"(?P<{}>[A-Za-z0-9_]+)"

app = make_app([
    ("POST", r"/v1/payment_methods", _post(create_payment_method)),
    ("GET", r"/v1/payment_methods/" + _ID.format("pm_id"), _endpoint(get_payment_method)),
    ("POST", r"/v1/payment_intents", _post(create_payment_intent)),
    ("GET", r"/v1/payment_intents", _endpoint(list_payment_intents)),
    ("GET", r"/v1/payment_intents/search", _endpoint(search_payment_intents)),
    ("GET", r"/v1/payment_intents/" + _ID.format("intent_id"), _endpoint(get_payment_intent)),
    ("POST", r"/v1/payment_intents/" + _ID.format("intent_id") + "/capture",
     _post(capture_payment_intent)),
    ("POST", r"/v1/payment_intents/" + _ID.format("intent_id") + "/cancel",
     _post(cancel_payment_intent)),
    ("POST", r"/v1/refunds", _post(create_refund)),
    ("GET", r"/v1/refunds", _endpoint(list_refunds)),
    ("GET", r"/v1/refunds/" + _ID.format("refund_id"), _endpoint(get_refund)),
    ("GET", r"/v1/balance", _endpoint(get_balance)),
    ("GET", r"/v1/balance_transactions", _endpoint(list_balance_transactions)),
], not_found=not_found, before=before)
