"""The Adyen sandbox: a WSGI app speaking Adyen's Checkout API v71 wire format
(docs/providers.md section 2) on top of the shared sandbox ledger.

What it reproduces, for everything `providers.adyen.adapter` sends:

- Paths under `/v71` (the real test base URL is `https://checkout-test.adyen.com/v71`):
  `POST /v71/payments`, `POST /v71/payments/{pspReference}/captures|cancels|refunds|reversals`,
  `POST /v71/paymentMethods`; and the settlement details report download
  `GET /reports/download/MerchantAccount/{merchantAccount}/settlement_detail_report_batch_{N}.csv`
  (on the real platform that lives on the Customer Area host, not under `/v71`).
- Auth: an `X-API-Key` header (or Basic auth) must be present, else 401 `ServiceError`
  `errorCode "000"`, `errorType "security"`. Any non-empty key is accepted. Every body must
  name a `merchantAccount`, else 403 `errorCode "901"` "Invalid Merchant Account".
- JSON bodies; errors in Adyen's `ServiceError` shape
  `{"status", "errorCode", "message", "errorType", "pspReference"}`.
- `/payments` answers HTTP 200 for approvals *and* refusals: `resultCode` `Authorised`,
  `Refused` (with `refusalReasonCode`, `refusalReason` and the issuer's ISO 8583 answer in
  `additionalData.refusalReasonRaw`, e.g. "51 : Insufficient funds") or `Error` (code 4,
  "Acquirer Error", for the soft-decline card 4000000000000119).
  `additionalData.manualCapture = "true"` leaves the payment authorised; otherwise it is
  captured. The holder-name trigger words of Adyen's test environment (`DECLINED`,
  `NOT_ENOUGH_BALANCE`, `CARD_EXPIRED`, `ERROR`, docs/providers.md 2.10) force those refusals.
- Modifications answer 201 `{"status": "received", "pspReference": <modification psp>,
  "paymentPspReference", "reference", ...}`: Adyen confirms them later by webhook (CAPTURE,
  CANCELLATION, REFUND, below). A partial capture releases the remainder. Like Adyen, the
  sandbox also accepts (201) a modification that cannot succeed (a refund of an uncaptured
  payment, a capture after a cancel or above the authorised amount) and reports
  `success: "false"` in its webhook. Only a malformed amount (422 `errorCode "137"`) or an
  unknown pspReference (422 `"167"`) is refused at once.
- `POST /v71/cancels` (cancel by our reference, "technical cancel"): `paymentReference` names
  the payment by the reference we gave it. 201 `received`; the TECHNICAL_CANCEL webhook says
  `success: "true"` when nothing stays held under the reference (an authorisation was
  cancelled, it was declined or cancelled already, or ASSUMPTION: there is no payment with
  that reference at all) and `"false"` for a captured payment (refund it instead).
- Webhooks (docs/providers.md 2.8): AUTHORISATION for every processed `/payments` (card …0408's
  too: the connection drops, the webhook still comes; none for …0606 and …0507, which are
  never processed), CAPTURE, CANCELLATION, REFUND and TECHNICAL_CANCEL, one item per
  delivery, each signed with the HMAC key of the endpoint it goes to
  (`providers.sandboxes.webhooks`: queued with the ledger change, delivered later, retried
  until acknowledged).
- Idempotency (docs/providers.md 2.5): the `Idempotency-Key` header (max 64 characters) makes a
  POST run once; later requests with the key get the stored response (echoing the
  `Idempotency-Key` header). Transient failures — the ones carrying the response header
  `transient-error: true` — are not stored, so a retry is processed as new. A duplicate
  arriving while the first is still being processed gets 422 `errorCode "704"` ("request
  already processed or in progress") with `transient-error: true` (the duplicate itself had
  no effect). The same key with a different body is undocumented at Adyen; like docs/providers.md
  we assume the stored response is returned.
- Faults: the provider-wide conditions (`sandbox_fault`: latency, outage) and the test cards
  of docs/api.md. An outage and card 4000000000000507 answer 503 with `transient-error: true`
  before anything is processed; card …0408 commits, then drops the connection (a retry with
  the same key replays the authorisation); card …0606 hangs before committing, on every
  delivery (so a replay never finds it: see the adapter's `lookup`).
- Amounts are Adyen's own minor units (providers/adyen/currencies.py), recorded as received:
  the ledger holds what Adyen would charge (1000 ISK is 100000, Adyen counting ISK in
  hundredths) and the settlement report turns them into major units with Adyen's decimals.
  A `reference` (of a payment, a modification or a cancel by reference) over 80 characters
  is refused with 422 `errorCode "130"`.
- Error codes other than 000, 702, 704, 901, 14_030, 177 (seen in Adyen's spec/docs) are
  sandbox choices in Adyen's numbering style.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import string
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from providers.adyen.currencies import WIRE
from providers.adyen.webhooks import sign
from providers.sandboxes import ledger
from providers.sandboxes import webhooks as sandbox_webhooks
from providers.sandboxes.catalog import BASE_PATHS
from providers.sandboxes.models import SandboxCharge
from providers.sandboxes.wsgi import IdempotencyPolicy, Request, Response, idempotent, make_app

PROVIDER = "adyen"
PREFIX = BASE_PATHS[PROVIDER]  # "/v71"
COMPANY_ACCOUNT = "SwitchyardSandboxCompany"
MAX_IDEMPOTENCY_KEY = 64
MAX_REFERENCE = 80  # `reference` of /payments, of modifications and of /cancels

# Our decline codes (the ledger's) → Adyen's (resultCode, refusalReasonCode, refusalReason,
# additionalData.refusalReasonRaw), as Adyen reports the test cards' issuer answers.
REFUSALS: dict[str, tuple[str, str, str, str]] = {
    "generic_decline": ("Refused", "2", "Refused", "05 : Do not honor"),
    "insufficient_funds": ("Refused", "12", "Not enough balance", "51 : Insufficient funds"),
    "expired_card": ("Refused", "6", "Expired Card", "54 : Expired card"),
    "lost_card": ("Refused", "5", "Blocked Card", "41 : Lost card"),
    # An acquirer-side failure: the issuer never answered, so there is no ISO 8583 code.
    "processing_error": ("Error", "4", "Acquirer Error", "ERROR"),
}

# Holder-name trigger words of Adyen's test platform → the test card with that behaviour.
HOLDER_TRIGGERS = {
    "DECLINED": "4000000000000002",
    "NOT_ENOUGH_BALANCE": "4000000000009995",
    "CARD_EXPIRED": "4000000000000069",
    "ERROR": "4000000000000119",
}

# Settlement details report columns, in Adyen's default order (docs/providers.md 2.9).
SETTLEMENT_COLUMNS = [
    "Company Account", "Merchant Account", "Psp Reference", "Merchant Reference",
    "Payment Method", "Creation Date", "TimeZone", "Type", "Modification Reference",
    "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate", "Net Currency",
    "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)", "Markup (NC)", "Scheme Fees (NC)",
    "Interchange (NC)", "Payment Method Variant", "Modification Merchant Reference",
    "Batch Number", "Reserved4", "Reserved5", "Reserved6", "Reserved7", "Reserved8",
    "Reserved9", "Reserved10",
]
# The sandbox closes one settlement batch per UTC day; batch 1 is this day.
BATCH_EPOCH = date(2020, 1, 1)


# --- responses ----------------------------------------------------------------------------
def _psp() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def service_error(status: int, error_code: str, message: str, error_type: str = "validation",
                  *, transient: bool = False) -> Response:
    """Adyen's `ServiceError` body; `transient` adds the header that says "nothing happened,
    retry with the same key"."""
    headers = {"transient-error": "true"} if transient else {}
    return Response(status, {"status": status, "errorCode": error_code, "message": message,
                             "errorType": error_type, "pspReference": _psp()}, headers)


def unavailable() -> Response:
    return service_error(503, "503", "Service unavailable: the request was not processed; "
                         "retry with the same Idempotency-Key.", "internal", transient=True)


def _in_flight() -> Response:
    return service_error(422, "704", "request already processed or in progress",
                         transient=True)


POLICY = IdempotencyPolicy(
    # Transient failures had no effect and are not kept: a retry is processed as new.
    store=lambda response: response.headers.get("transient-error") != "true",
    in_flight=_in_flight,
    mismatch=None,  # undocumented at Adyen; assumed: the stored response is returned
)


def _keyed(request: Request, handler) -> Response:
    """Run `handler` under Adyen's idempotency semantics and echo the key."""
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        return service_error(422, "702", "Idempotency-Key must be at most 64 characters.")
    response = idempotent(PROVIDER, key, request, POLICY, handler)
    if key is not None:
        response.headers = {**response.headers, "Idempotency-Key": key}
    return response


def _keyed_body(request: Request, work) -> Response:
    """Read the JSON body, then run `work(body)` once per Idempotency-Key."""
    body = _body(request)
    if isinstance(body, Response):
        return body
    return _keyed(request, lambda: work(body))


def _body(request: Request) -> dict | Response:
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        return service_error(415, "702", f"Unexpected input: Content-Type {content_type!r}; "
                             "send application/json.")
    body = request.json()
    if not isinstance(body, dict):
        return service_error(400, "702", "Unexpected input: the body is not a JSON object.")
    if not isinstance(body.get("merchantAccount"), str) or not body["merchantAccount"]:
        return service_error(403, "901", "Invalid Merchant Account", "security")
    return body


def _reference_too_long() -> Response:
    return service_error(422, "130", f"Field 'reference' exceeds {MAX_REFERENCE} characters.")


def _amount(body: dict) -> tuple[int, str] | Response:
    amount = body.get("amount")
    if not isinstance(amount, dict) or "value" not in amount:
        return service_error(422, "100", "Required field 'amount' is not provided.")
    value, currency = amount.get("value"), amount.get("currency")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return service_error(422, "137", "Invalid amount specified")
    if not isinstance(currency, str) or len(currency) != 3:
        return service_error(422, "138", "Invalid currency specified")
    return value, currency.upper()


# --- /payments ----------------------------------------------------------------------------
def payments(request: Request) -> Response:
    return _keyed_body(request, _authorize)


def _authorize(body: dict) -> Response:
    amount = _amount(body)
    if isinstance(amount, Response):
        return amount
    value, currency = amount
    reference = body.get("reference")
    if not isinstance(reference, str) or not reference:
        return service_error(422, "130", "Required field 'reference' is not provided.")
    if len(reference) > MAX_REFERENCE:
        return _reference_too_long()
    if not body.get("returnUrl"):
        return service_error(422, "14_030", "Return URL is missing.")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or len(metadata) > 20 or any(
            len(str(k)) > 20 or len(str(v)) > 80 for k, v in metadata.items()):
        return service_error(422, "177", "Metadata size exceeds limit")
    card = body.get("paymentMethod")
    if not isinstance(card, dict) or card.get("type", "scheme") != "scheme":
        return service_error(422, "14_012", "The provided paymentMethod is not a card (scheme).")
    number = card.get("number")
    if not isinstance(number, str) or not re.fullmatch(r"\d{12,19}", number):
        return service_error(422, "101", "Invalid card number")
    month, year = card.get("expiryMonth"), card.get("expiryYear")
    if not (isinstance(month, str) and re.fullmatch(r"0[1-9]|1[0-2]", month)
            and isinstance(year, str) and re.fullmatch(r"\d{4}", year)):
        return service_error(422, "129", "Expiry Date Invalid")
    additional = body.get("additionalData") or {}
    manual = str(additional.get("manualCapture", "")).lower() == "true"
    behaviour_number = HOLDER_TRIGGERS.get(str(card.get("holderName", "")).upper(), number)
    try:
        authorization = ledger.authorize(
            PROVIDER, reference=reference, amount=value, currency=currency,
            number=behaviour_number, capture=not manual, brand=_brand(number),
            metadata=metadata, merchant_account=body["merchantAccount"])
    except ledger.ServiceUnavailable:
        return unavailable()
    charge = authorization.charge
    if behaviour_number != number:  # a holder-name trigger: keep the real card's last4
        SandboxCharge.objects.filter(pk=charge.pk).update(card_last4=number[-4:])
    response = _payment_response(charge)
    if charge.status == "declined":
        reason = response["refusalReason"]
    else:
        reason = f"{response['additionalData']['authCode']}:{number[-4:]}:{month}/{year}"
    _notify(body["merchantAccount"], "AUTHORISATION", success=charge.status != "declined",
            psp=charge.provider_reference, reference=reference, amount=value,
            currency=currency, reason=reason, payment_method=charge.card_brand)
    # A dropped connection (card …0408) loses the answer, not the charge nor its webhook.
    return Response(200, response, drop_connection=authorization.drop_connection)


# --- webhooks (docs/providers.md 2.8) ------------------------------------------------------------
def _notify(merchant_account: str, event_code: str, *, success: bool, psp: str,
            reference: str, amount: int | None = None, currency: str = "",
            original: str = "", reason: str = "", payment_method: str = "",
            additional: dict | None = None) -> None:
    """Queue a standard webhook for every endpoint of the merchant account, each item signed
    with that endpoint's HMAC key."""
    item = {"eventCode": event_code, "success": "true" if success else "false",
            "pspReference": psp, "merchantAccountCode": merchant_account,
            "merchantReference": reference, "eventDate": datetime.now(UTC).isoformat(),
            "reason": reason}
    if original:
        item["originalReference"] = original
    if amount is not None:
        item["amount"] = {"value": amount, "currency": currency}
    if payment_method:
        item["paymentMethod"] = payment_method

    def body_for(endpoint) -> tuple[str, dict]:
        signed = {**item, "additionalData": {**(additional or {}),
                                             "hmacSignature": sign(item, endpoint.hmac_key)}}
        return json.dumps({"live": "false",
                           "notificationItems": [{"NotificationRequestItem": signed}]}), {}

    sandbox_webhooks.queue(PROVIDER, merchant_account, event_code, body_for)


def _brand(number: str) -> str:
    """Adyen's brand names (`visa`, `mc`, `amex`) as its BIN detection reports them."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mc"
    return "scheme"


def _payment_response(charge: SandboxCharge) -> dict:
    response = {
        "pspReference": charge.provider_reference,
        "merchantReference": charge.reference,
        "amount": {"currency": charge.currency, "value": charge.amount},
        "paymentMethod": {"brand": charge.card_brand, "type": "scheme"},
    }
    if charge.status == "declined":
        result_code, code, reason, raw = REFUSALS.get(charge.decline_code,
                                                      REFUSALS["generic_decline"])
        response.update(resultCode=result_code, refusalReason=reason, refusalReasonCode=code,
                        additionalData={"refusalReasonRaw": raw})
    else:
        response.update(resultCode="Authorised", additionalData={
            "authCode": "".join(secrets.choice(string.digits) for _ in range(6)),
            "cvcResult": "1 Matches", "refusalReasonRaw": "AUTHORISED"})
    return response


# --- modifications ------------------------------------------------------------------------
_KINDS = {"captures": "capture", "cancels": "cancel", "refunds": "refund",
          "reversals": "reverse"}
EVENT_CODES = {"capture": "CAPTURE", "cancel": "CANCELLATION", "refund": "REFUND",
               "reverse": "CANCEL_OR_REFUND"}


def modification(request: Request, psp: str, action: str) -> Response:
    return _keyed_body(request, lambda body: _modify(body, psp, _KINDS[action]))


def _modify(body: dict, psp: str, kind: str) -> Response:
    if len(str(body.get("reference") or "")) > MAX_REFERENCE:
        return _reference_too_long()
    amount = None
    if kind not in ("cancel", "reverse"):  # captures and refunds require an amount
        parsed = _amount(body)
        if isinstance(parsed, Response):
            return parsed
        amount, currency = parsed
        charge = SandboxCharge.objects.filter(provider=PROVIDER, provider_reference=psp).first()
        if charge is not None and charge.currency != currency:
            return service_error(422, "137", "Invalid amount specified: the currency differs "
                                 "from the payment's.")
    reference = str(body.get("reference") or "")
    try:
        operation = ledger.modify(PROVIDER, kind, psp, amount=amount, reference=reference)
    except ledger.UnknownCharge:
        return service_error(422, "167", "Original pspReference required for this operation")
    except ledger.InvalidState as exc:
        # Adyen accepts the request and refuses it in the webhook ("success": "false")
        charge = ledger.get_charge(PROVIDER, psp)
        return _received(body, kind, psp=psp, operation_psp=_psp(),
                         reference=reference or charge.reference,
                         amount=charge.amount if amount is None else amount,
                         currency=charge.currency, success=False, reason=str(exc))
    return _received(body, kind, psp=psp, operation_psp=operation.provider_reference,
                     reference=reference or operation.charge.reference,
                     amount=operation.amount, currency=operation.charge.currency,
                     success=True, action=operation.kind)


def _received(body: dict, kind: str, *, psp: str, operation_psp: str, reference: str,
              amount: int, currency: str, success: bool, reason: str = "",
              action: str = "") -> Response:
    """201 `received`, and the webhook with the real result queued."""
    extra = {"modification.action": action} if kind == "reverse" and action else {}
    _notify(body["merchantAccount"], EVENT_CODES[kind], success=success, psp=operation_psp,
            original=psp, reference=reference, amount=amount, currency=currency,
            reason=reason, additional=extra)
    response = {"merchantAccount": body["merchantAccount"], "paymentPspReference": psp,
                "pspReference": operation_psp, "reference": str(body.get("reference") or ""),
                "status": "received"}
    if kind not in ("cancel", "reverse"):
        response["amount"] = {"currency": currency, "value": amount}
    return Response(201, response)


# --- /cancels: cancel by our reference ("technical cancel", docs/providers.md 2.3-2.4) -----------
def technical_cancel(request: Request) -> Response:
    return _keyed_body(request, _technical_cancel)


def _technical_cancel(body: dict) -> Response:
    payment_reference = body.get("paymentReference")
    if not isinstance(payment_reference, str) or not payment_reference:
        return service_error(422, "130", "Required field 'paymentReference' is not provided.")
    if max(len(payment_reference), len(str(body.get("reference") or ""))) > MAX_REFERENCE:
        return _reference_too_long()
    reference = str(body.get("reference") or "")
    charges = ledger.find_by_reference(PROVIDER, payment_reference)
    charge = charges[0] if charges else None
    psp, original, success, reason = _psp(), "", True, ""
    if charge is not None:
        original = charge.provider_reference
        if charge.status == "authorized":
            psp = ledger.modify(PROVIDER, "cancel", original, amount=None,
                                reference=reference).provider_reference
        elif charge.status == "captured":
            success, reason = False, "Transaction is already captured; refund it instead."
        # declined or already canceled: nothing is held, the cancel succeeds trivially
    # ASSUMPTION (ours; Adyen documents no answer for this case): with no payment under the
    # reference at all, the technical cancel succeeds with nothing to cancel (no
    # originalReference). Switchyard's use of it stays safe either way: it never replays the
    # authorization after a release, and reverses a charge reported after it.
    _notify(body["merchantAccount"], "TECHNICAL_CANCEL", success=success, psp=psp,
            original=original, reference=reference or payment_reference, reason=reason)
    return Response(201, {"merchantAccount": body["merchantAccount"],
                          "paymentReference": payment_reference, "pspReference": psp,
                          "reference": reference, "status": "received"})


# --- /paymentMethods ----------------------------------------------------------------------
def payment_methods(request: Request) -> Response:
    body = _body(request)
    if isinstance(body, Response):
        return body
    return Response(200, {"paymentMethods": [
        {"brands": ["visa", "mc", "amex"], "name": "Cards", "type": "scheme"}]})


# --- settlement details report ------------------------------------------------------------
def batch_number(day: date) -> int:
    """The settlement batch holding a UTC day's captures and refunds."""
    return (day - BATCH_EPOCH).days + 1


def batch_bounds(batch: int) -> tuple[datetime, datetime]:
    start = datetime.combine(BATCH_EPOCH + timedelta(days=batch - 1), time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def major_units(amount: int, currency: str) -> str:
    """Adyen's minor units (the ledger's) → the report's major-unit decimal text (1050 USD →
    "10.50"; 100000 ISK, which Adyen counts in hundredths → "1000.00")."""
    exponent = WIRE.unit(currency).exponent
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f}"


def settlement_report(request: Request, merchant: str, batch: str) -> Response:
    """The batch's captures and refunds of the merchant account in the path (each merchant
    account has its own batches), with planted faults (`ledger.plant_settlement_fault`)."""
    number = int(batch)
    if number < 1:
        return service_error(404, "404", "Report not found", "validation")
    since, until = batch_bounds(number)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SETTLEMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in ledger.settlement(PROVIDER, since=since, until=until, merchant_account=merchant):
        writer.writerow(_settlement_line(row, merchant, number))
    return Response(200, out.getvalue(), {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition":
            f'attachment; filename="settlement_detail_report_batch_{number}.csv"'})


def _settlement_line(row: dict, merchant: str, batch: int) -> dict:
    currency = row["currency"]
    charge = SandboxCharge.objects.get(provider=PROVIDER,
                                       provider_reference=row["provider_reference"])
    gross = major_units(row["amount"], currency)
    net = major_units(row["amount"] - row["fee"], currency)
    line = dict.fromkeys(SETTLEMENT_COLUMNS, "")
    line.update({
        "Company Account": COMPANY_ACCOUNT, "Merchant Account": merchant,
        "Psp Reference": row["provider_reference"], "Merchant Reference": row["reference"],
        "Payment Method": charge.card_brand, "Payment Method Variant": charge.card_brand,
        "Creation Date": row["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "TimeZone": "UTC", "Modification Reference": row["operation_reference"],
        "Modification Merchant Reference": row["operation_merchant_reference"],
        "Gross Currency": currency, "Exchange Rate": "1", "Net Currency": currency,
        "Batch Number": str(batch),
    })
    if row["type"] == "capture":
        line.update({"Type": "Settled", "Gross Credit (GC)": gross, "Net Credit (NC)": net,
                     "Commission (NC)": major_units(row["fee"], currency)})
    else:
        line.update({"Type": "Refunded", "Gross Debit (GC)": gross, "Net Debit (NC)": gross})
    return line


# --- the app ------------------------------------------------------------------------------
def _before(request: Request) -> Response | None:
    """Provider-wide faults first (an outage hits before anything else), then auth."""
    try:
        ledger.before_request(PROVIDER)
    except ledger.ServiceUnavailable:
        return unavailable()
    basic = request.headers.get("authorization", "").startswith("Basic ")
    if not request.headers.get("x-api-key") and not basic:
        return service_error(401, "000", "HTTP Status Response - Unauthorized", "security")
    return None


def _not_found(request: Request) -> Response:
    return service_error(404, "404", f"No endpoint {request.method} {request.path}",
                         "validation")


app = make_app([
    ("POST", PREFIX + r"/payments", payments),
    ("POST", PREFIX + r"/payments/(?P<psp>[A-Za-z0-9]+)/"
             r"(?P<action>captures|cancels|refunds|reversals)",
     modification),
    ("POST", PREFIX + r"/cancels", technical_cancel),
    ("POST", PREFIX + r"/paymentMethods", payment_methods),
    ("GET", r"/reports/download/MerchantAccount/(?P<merchant>[^/]+)/"
            r"settlement_detail_report_batch_(?P<batch>\d+)\.csv", settlement_report),
], not_found=_not_found, before=_before)
