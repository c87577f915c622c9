"""Stripe adapter: card payments through the PaymentIntents API, in Stripe's own wire format.

Wire (docs/providers.md section 1):
- `Authorization: Bearer <secret_key>`, `Stripe-Version: API_VERSION` (pinned: response
  shapes never change under us), form-encoded bodies with brackets
  (`card[number]`, `metadata[switchyard_attempt]`, `payment_method_types[0]`), JSON answers.
- Every POST carries `Idempotency-Key`: the attempt reference for the PaymentIntent,
  f"{reference}-pm" for its PaymentMethod, the operation reference for capture/cancel/refund.
  The same request object always encodes to the same body, so a retry is replayed by Stripe
  and never executed twice. Keys are kept within Stripe's 255 characters and metadata values
  within its 500 (`providers.references.fit`: deterministic, so a retry sends the same).
- Amounts in Stripe's own minor units (`providers/stripe/currencies.py`): ISK and UGX in
  hundredths (1000 ISK → 100000), MGA in whole ariary, three-decimal amounts ending in 0.
  An amount Stripe cannot take raises AmountNotRepresentable (a ProviderBadRequest, code
  `amount_not_representable`) before anything is sent; amounts Stripe reports (lookups) are
  turned back into ISO minor units.
- authorize = `POST /v1/payment_methods` (the vaulted card) then `POST /v1/payment_intents`
  with `confirm=true`, `capture_method=manual|automatic`, `payment_method_types[0]=card`,
  `error_on_requires_action=true` (a server-only flow cannot do 3-D Secure: fail instead of
  parking in requires_action), `metadata[switchyard_attempt]=<reference>`, lowercase currency.
- capture `POST /v1/payment_intents/{id}/capture` (`amount_to_capture`), cancel
  `POST /v1/payment_intents/{id}/cancel`, refund `POST /v1/refunds` (`payment_intent`,
  `amount`, `metadata[switchyard_operation]`), probe `GET /v1/balance`.
- lookup by our reference: the Search API,
  `GET /v1/payment_intents/search?query=metadata['switchyard_attempt']:'<reference>'`, and
  when that finds nothing, the newest 100 PaymentIntents from `GET /v1/payment_intents`.
  Stripe's Search is eventually consistent (normally under a minute, up to an hour during
  incidents) and Stripe says not to use it for read-after-write; the list endpoint is
  consistent but only the newest page is scanned. So on real Stripe "not found" shortly
  after the attempt, on a busy account, is not proof that nothing was charged: whoever
  concludes "no charge" from `found=False` must wait out the search lag. The sandbox is
  immediately consistent.

How answers map (every code through providers/outcomes.py):
- 200 PaymentIntent: `classify_result("stripe", status)`: requires_capture/succeeded approved,
  processing unknown, requires_action hard (authentication_required); a status the table does
  not know is treated as unknown (never "nothing happened" for something we cannot read).
- 402 `card_error`: `classify_decline("stripe", decline_code or code)` → HardDecline or
  SoftDecline (processing_error and issuer-unavailable codes are soft).
- 503 with `Stripe-Should-Retry: true` and an `api_error` body → ProviderUnavailable (the
  sandbox's and our reading of "not processed"). Caveat for real Stripe: that header promises
  that a retry *with the same idempotency key* is safe, which is weaker than "nothing was
  charged"; Switchyard's design treats it as not processed (a stricter reading would make
  it OutcomeUnknown).
- Any other 5xx, a timeout after sending or a dropped connection → OutcomeUnknown
  (`http_outcome`, providers/http.py).
- 409 (`idempotency_key_in_use`: the first request with this key is still running; or
  another conflict with a concurrent request) and 400 `idempotency_error` (a request with this
  key and other parameters was seen: it may have charged) → OutcomeUnknown. The table's
  default for 4xx (bad request) would allow a failover here, which could charge twice.
- 429 → ProviderUnavailable (rate limited, not processed); other 4xx → ProviderBadRequest.
- A refund that Stripe answers `failed`/`canceled` → HardDecline `refund_failed`;
  `pending`/`requires_action` → ModificationResult(pending=True).

Card data is only ever in the PaymentMethod request body; nothing here logs bodies, and error
messages quote Stripe's messages, which never echo card numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlencode

import httpx

from providers import outcomes, settlement
from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    AuthorizeResult,
    HardDecline,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    OperationRefused,
    OutcomeUnknown,
    ProviderBadRequest,
)
from providers.http import send, session
from providers.references import fit
from providers.stripe.currencies import WIRE

PROVIDER = "stripe"
API_VERSION = "2026-06-24.dahlia"
REFERENCE_KEY = "switchyard_attempt"  # metadata key carrying our attempt reference
OPERATION_KEY = "switchyard_operation"  # metadata key carrying our refund reference
LIST_SCAN_LIMIT = 100  # newest PaymentIntents checked when the search finds nothing
MAX_IDEMPOTENCY_KEY = 255  # docs.stripe.com/api/idempotent_requests
MAX_METADATA_VALUE = 500  # docs.stripe.com/metadata

# PaymentIntent status → LookupResult.status
_LOOKUP_STATUS = {"requires_capture": "authorized", "succeeded": "captured",
                  "canceled": "canceled", "requires_payment_method": "declined"}
# Refund status → pending? (failed/canceled are refusals; anything unlisted is unknown)
_REFUND_PENDING = {"succeeded": False, "pending": True, "requires_action": True}
_ID = re.compile(r"[A-Za-z0-9_]{1,255}\Z")
# operation → PaymentIntent statuses saying it (done, not yet done, can no longer happen)
_MODIFIED_STATUS = {
    "capture": (("succeeded",), ("requires_capture",), ("canceled",)),
    "cancel": (("canceled",), ("requires_capture",), ("succeeded",)),
}
REFUND_PAGES = 10  # pages of 100 refunds read to find ours
SETTLEMENT_PAGES = 1000  # pages of 100 balance transactions read for one day, at most
# balance transaction `type` → SettlementLine.kind (the `type` enum of stripe-python's
# `_balance_transaction.py`: `payment` is a charge of other payment methods, `payment_refund`
# their refund); every other type (payout, adjustment, refund_failure, …) is OTHER
_TXN_KINDS = {"charge": settlement.CAPTURE, "payment": settlement.CAPTURE,
              "refund": settlement.REFUND, "payment_refund": settlement.REFUND,
              "stripe_fee": settlement.FEE, "stripe_fx_fee": settlement.FEE,
              "tax_fee": settlement.FEE, "application_fee": settlement.FEE}


def form_encode(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: nested dicts as a[b][c], lists as a[0], booleans true/false.
    None values are left out. Order is the insertion order, so a request encodes the same
    way every time (the idempotency key's parameters must not change on a retry)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            pairs += form_encode(value, name)
        elif isinstance(value, (list, tuple)):
            pairs += form_encode({str(i): item for i, item in enumerate(value)}, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, str(value)))
    return pairs


class StripeAdapter:
    provider = PROVIDER
    # Lookups by our reference go through Search, which Stripe documents as eventually
    # consistent ("normally under a minute, up to an hour during incidents"; not for
    # read-after-write). Until an hour has passed since the request, "not found" proves
    # nothing. A replay under the idempotency key is not used: the CVC of the original
    # request is gone by then, and Stripe refuses a replay whose parameters differ.
    not_found_proof_seconds = 3600.0

    def __init__(self, config: AccountConfig, client: httpx.Client | None = None):
        self.config = config
        self._client = client

    # --- operations ---------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        card = request.card
        amount = WIRE.to_wire(request.amount, request.currency)  # refused before anything
        with self._http() as client:
            method = self._post(client, "/v1/payment_methods", f"{request.reference}-pm", {
                "type": "card",
                "card": {"number": card.number, "exp_month": card.exp_month,
                         "exp_year": card.exp_year, "cvc": card.cvc or None},
                "billing_details": {"name": request.holder_name or None},
            })
            intent = self._post(client, "/v1/payment_intents", request.reference, {
                "amount": amount,
                "currency": request.currency.lower(),
                "payment_method": _field(method, "id"),
                "confirm": True,
                "capture_method": "automatic" if request.capture else "manual",
                "payment_method_types": ["card"],
                "error_on_requires_action": True,
                "description": request.description or None,
                "metadata": {REFERENCE_KEY: _metadata_value(request.reference)},
            })
        status = _field(intent, "status")
        outcome = outcomes.classify_result(PROVIDER, status)
        if outcome is None:
            outcome = _decline_of(intent.get("last_payment_error")) or outcomes.Outcome(
                outcomes.UNKNOWN, "outcome_unknown")
        outcomes.raise_for(outcome, f"Stripe PaymentIntent is {status}.", raw_code=status)
        return AuthorizeResult(provider_reference=_field(intent, "id"),
                               captured=status == "succeeded")

    def capture(self, request: ModificationRequest) -> ModificationResult:
        path = f"/v1/payment_intents/{_checked_id(request.provider_reference)}/capture"
        with self._http() as client:
            intent = self._post(client, path, request.reference,
                                {"amount_to_capture": self._wire_amount(request)})
        return self._modified(intent, expected="succeeded")

    def cancel(self, request: ModificationRequest) -> ModificationResult:
        path = f"/v1/payment_intents/{_checked_id(request.provider_reference)}/cancel"
        with self._http() as client:
            intent = self._post(client, path, request.reference, {})
        return self._modified(intent, expected="canceled")

    def refund(self, request: ModificationRequest) -> ModificationResult:
        with self._http() as client:
            refund = self._post(client, "/v1/refunds", request.reference, {
                "payment_intent": _checked_id(request.provider_reference),
                "amount": self._wire_amount(request),
                "metadata": {OPERATION_KEY: _metadata_value(request.reference)},
            })
        status = _field(refund, "status")
        if status in ("failed", "canceled"):
            reason = refund.get("failure_reason") or ""
            raise HardDecline(f"Stripe refused the refund ({status}: {reason or 'no reason'}).",
                              code="refund_failed", decline_code=reason or None,
                              raw_code=reason or status)
        if status not in _REFUND_PENDING:
            raise OutcomeUnknown(f"Stripe answered the refund with status {status!r}.",
                                 raw_code=str(status))
        return ModificationResult(provider_reference=_field(refund, "id"),
                                  pending=_REFUND_PENDING[status])

    def lookup(self, request: AuthorizeRequest) -> LookupResult:
        reference = _metadata_value(request.reference)  # as authorize sent it
        with self._http() as client:
            found = self._get(client, "/v1/payment_intents/search", {
                "query": f"metadata['{REFERENCE_KEY}']:'{_quoted(reference)}'", "limit": 10})
            intents = _list_data(found)
            if not intents:  # Search lags behind writes: also scan the consistent list
                recent = _list_data(self._get(client, "/v1/payment_intents",
                                              {"limit": LIST_SCAN_LIMIT}))
                intents = [pi for pi in recent
                           if (pi.get("metadata") or {}).get(REFERENCE_KEY) == reference]
        if not intents:
            return LookupResult(found=False)
        # One key means one PaymentIntent; should there ever be more, money moved wins.
        intent = next((pi for pi in intents if pi.get("status") in ("requires_capture",
                                                                     "succeeded")), intents[0])
        status = _field(intent, "status")
        ours = _LOOKUP_STATUS.get(status)
        if ours is None:  # processing, requires_action, requires_confirmation: not final
            outcome = outcomes.classify_result(PROVIDER, status)
            if outcome is not None and outcome.kind == outcomes.HARD:
                return LookupResult(found=True, provider_reference=_field(intent, "id"),
                                    status="declined", amount=_iso_amount(intent, request),
                                    decline_code=outcome.decline_code)
            raise OutcomeUnknown(f"Stripe PaymentIntent is {status}; not final yet.",
                                 raw_code=str(status))
        decline_code = ""
        if ours == "declined":
            decline = _decline_of(intent.get("last_payment_error"))
            decline_code = (decline or outcomes.GENERIC_DECLINE).decline_code
        return LookupResult(found=True, provider_reference=_field(intent, "id"), status=ours,
                            amount=_iso_amount(intent, request), decline_code=decline_code)

    def lookup_modification(self, request: ModificationRequest) -> ModificationResult | None:
        """What became of our capture, void or refund. A capture or void shows in the
        PaymentIntent (`GET /v1/payment_intents/{id}`); a refund is found among the
        PaymentIntent's refunds (`GET /v1/refunds?payment_intent=`) by our reference in its
        metadata. Both reads are by id or list, not Search. None: Stripe has no such
        operation; OperationRefused: it did not happen and cannot any more."""
        intent_id = _checked_id(request.provider_reference)
        with self._http() as client:
            if request.operation == "refund":
                return self._refund_result(self._find_refund(client, intent_id,
                                                             request.reference))
            intent = self._get(client, f"/v1/payment_intents/{intent_id}", None)
        status = _field(intent, "status")
        done, waiting, never = _MODIFIED_STATUS.get(request.operation, ((), (), ()))
        if status in done:
            return ModificationResult(provider_reference=_field(intent, "id"))
        if status == "processing":
            return ModificationResult(provider_reference=_field(intent, "id"), pending=True)
        if status in waiting:
            return None  # the PaymentIntent is as it was before our request
        if status in never:
            raise OperationRefused(f"The PaymentIntent is {status}: the {request.operation} "
                                   "did not happen.", code=f"{request.operation}_failed",
                                   raw_code=status)
        raise OutcomeUnknown(f"Stripe PaymentIntent is {status}; cannot tell whether the "
                             f"{request.operation or 'operation'} happened.", raw_code=status)

    def probe(self) -> None:
        with self._http() as client:
            self._get(client, "/v1/balance", None)

    def fetch_settlement(self, day: dt.date) -> settlement.SettlementReport:
        """The balance transactions created on `day` (UTC): `GET /v1/balance_transactions`
        with `created[gte]`/`created[lt]`, 100 a page, `starting_after` while `has_more`, and
        `expand[]=data.source` so that each line names its PaymentIntent (a charge's or a
        refund's `payment_intent`) and our references (`metadata`). Amounts are Stripe's
        integer minor units (`currencies.WIRE`); refunds are negative there, positive here."""
        start, end = settlement.day_bounds(day)
        query: dict[str, Any] = {"created[gte]": int(start.timestamp()),
                                 "created[lt]": int(end.timestamp()), "limit": 100,
                                 "expand[]": "data.source"}
        lines: list[settlement.SettlementLine] = []
        with self._http() as client:
            for _ in range(SETTLEMENT_PAGES):
                page = self._get(client, "/v1/balance_transactions", query)
                transactions = _list_data(page)
                lines += [_settlement_line(txn) for txn in transactions]
                if not page.get("has_more") or not transactions:
                    break
                query = {**query, "starting_after": _field(transactions[-1], "id")}
            else:
                raise ProviderBadRequest(
                    f"More than {SETTLEMENT_PAGES * 100} balance transactions on {day}: "
                    "raise SETTLEMENT_PAGES.", code="settlement_too_large")
        return settlement.SettlementReport(
            day=day, source=f"GET /v1/balance_transactions created {day.isoformat()} (UTC)",
            lines=tuple(lines))

    def _find_refund(self, client: httpx.Client, intent_id: str,
                     reference: str) -> dict[str, Any] | None:
        after = None
        for _ in range(REFUND_PAGES):
            page = self._get(client, "/v1/refunds", {
                "payment_intent": intent_id, "limit": 100,
                **({"starting_after": after} if after else {})})
            refunds = _list_data(page)
            for refund in refunds:  # the reference as `refund` sent it
                if (refund.get("metadata") or {}).get(OPERATION_KEY) == _metadata_value(
                        reference):
                    return refund
            if not page.get("has_more") or not refunds:
                return None
            after = _field(refunds[-1], "id")
        raise OutcomeUnknown(f"More than {REFUND_PAGES * 100} refunds on {intent_id}; ours "
                             "was not among them.", raw_code="too_many_refunds")

    @staticmethod
    def _refund_result(refund: dict[str, Any] | None) -> ModificationResult | None:
        if refund is None:
            return None
        status = _field(refund, "status")
        if status in ("failed", "canceled"):
            raise OperationRefused(f"Stripe refused the refund ({status}).",
                                   code="refund_failed", raw_code=status)
        if status not in _REFUND_PENDING:
            raise OutcomeUnknown(f"Stripe's refund is {status!r}.", raw_code=str(status))
        return ModificationResult(provider_reference=_field(refund, "id"),
                                  pending=_REFUND_PENDING[status])

    # --- wire ---------------------------------------------------------------------------
    def _http(self) -> AbstractContextManager[httpx.Client]:
        return session(self.config, self._client)

    def _headers(self) -> dict[str, str]:
        secret = self.config.credentials.get("secret_key", "")
        if not secret:  # refused before anything is sent: provably nothing charged
            raise ProviderBadRequest(f"Stripe account {self.config.name!r} has no secret_key.",
                                     code="provider_misconfigured")
        return {"Authorization": f"Bearer {secret}", "Stripe-Version": API_VERSION,
                "Accept": "application/json"}

    @staticmethod
    def _wire_amount(request: ModificationRequest) -> int | None:
        """A capture's or refund's amount in Stripe's units; None (Stripe's default: all
        that is left) for 0."""
        return WIRE.to_wire(request.amount, request.currency) if request.amount else None

    def _post(self, client: httpx.Client, path: str, idempotency_key: str,
              params: Mapping[str, Any]) -> dict[str, Any]:
        headers = {**self._headers(), "Idempotency-Key": fit(idempotency_key,
                                                             MAX_IDEMPOTENCY_KEY),
                   "Content-Type": "application/x-www-form-urlencoded"}
        response = send(client, "POST", path, provider=PROVIDER, headers=headers,
                        content=urlencode(form_encode(params)).encode())
        return _body(response)

    def _get(self, client: httpx.Client, path: str,
             query: Mapping[str, Any] | None) -> dict[str, Any]:
        response = send(client, "GET", path, provider=PROVIDER, headers=self._headers(),
                        params=dict(query or {}))
        return _body(response)

    def _modified(self, intent: dict[str, Any], *, expected: str) -> ModificationResult:
        status = _field(intent, "status")
        if status == "processing":
            return ModificationResult(provider_reference=_field(intent, "id"), pending=True)
        if status != expected:
            raise OutcomeUnknown(f"Stripe answered with a PaymentIntent in status {status!r}, "
                                 f"expected {expected!r}.", raw_code=str(status))
        return ModificationResult(provider_reference=_field(intent, "id"))


# --- answers ----------------------------------------------------------------------------
def _body(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 2xx answer, or the adapter exception for anything else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        if not isinstance(body, dict):  # something answered, and we cannot read what
            raise OutcomeUnknown(f"Stripe answered {response.status_code} without a JSON "
                                 "object.", raw_code=str(response.status_code))
        return body
    _raise_error(response, body if isinstance(body, dict) else {})
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_error(response: httpx.Response, body: dict[str, Any]) -> None:
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    status = response.status_code
    kind, code = str(error.get("type") or ""), str(error.get("code") or "")
    message = str(error.get("message") or f"Stripe answered HTTP {status}.")
    if status == 402 or kind == "card_error":
        outcome = _decline_of(error) or outcomes.GENERIC_DECLINE
        outcomes.raise_for(outcome, message, raw_code=error.get("decline_code") or code)
    if status == 409 or kind == "idempotency_error":
        # A request with this key is running or was seen with other parameters: it may have
        # charged. Only a lookup can tell.
        outcomes.raise_for(outcomes.Outcome(outcomes.UNKNOWN, "outcome_unknown"),
                           f"Stripe: {message}", raw_code=code or kind)
    not_processed = (status == 503 and kind == "api_error"
                     and response.headers.get("Stripe-Should-Retry", "").lower() == "true")
    outcomes.raise_for(outcomes.http_outcome(status, not_processed=not_processed),
                       f"Stripe answered HTTP {status}: {message}",
                       raw_code=code or kind or str(status))


def _decline_of(error: object) -> outcomes.Outcome | None:
    """The normalized decline of a Stripe error object (or last_payment_error)."""
    if not isinstance(error, dict):
        return None
    raw = error.get("decline_code") or error.get("code")
    if not raw:
        return None
    return outcomes.classify_decline(PROVIDER, str(raw))


def _settlement_line(txn: dict[str, Any]) -> settlement.SettlementLine:
    """One balance transaction (with its `source` expanded, or just its id) as a line."""
    raw_type = str(txn.get("type") or "")
    kind = _TXN_KINDS.get(raw_type, settlement.OTHER)
    if str(txn.get("reporting_category") or "") == "dispute":
        kind = settlement.CHARGEBACK
    currency = str(txn.get("currency") or "").upper()
    amount, fee = txn.get("amount"), txn.get("fee", 0)
    if isinstance(amount, bool) or not isinstance(amount, int) or \
            isinstance(fee, bool) or not isinstance(fee, int) or not currency:
        raise ProviderBadRequest(f"Unreadable balance transaction {txn.get('id')!r}.",
                                 code="settlement_unreadable")
    found = txn.get("source")
    source: dict[str, Any] = found if isinstance(found, dict) else {
        "id": found if isinstance(found, str) else ""}
    metadata = source.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    intent = source.get("payment_intent")
    intent_id = intent.get("id", "") if isinstance(intent, dict) else str(intent or "")
    created = txn.get("created")
    occurred = dt.datetime.fromtimestamp(created, tz=dt.UTC) \
        if isinstance(created, int) and not isinstance(created, bool) else None
    refund = kind == settlement.REFUND
    return settlement.SettlementLine(
        line_id=str(txn.get("id") or ""), kind=kind,
        amount_minor=abs(WIRE.from_wire(amount, currency)), currency=currency,
        fee_minor=settlement.wire_fee_to_minor(WIRE, fee, currency), fee_currency=currency,
        status=settlement.PENDING if txn.get("status") == "pending" else settlement.SETTLED,
        our_reference=str(meta.get(OPERATION_KEY) or "") if refund else "",
        payment_reference="" if refund else str(meta.get(REFERENCE_KEY) or ""),
        provider_reference=intent_id, operation_reference=str(source.get("id") or ""),
        occurred_at=occurred, raw_type=raw_type)


def _metadata_value(reference: str) -> str:
    """Our reference as a metadata value (at most 500 characters at Stripe)."""
    return fit(reference, MAX_METADATA_VALUE)


def _iso_amount(intent: dict[str, Any], request: AuthorizeRequest) -> int:
    """A PaymentIntent's amount in ISO minor units (0 if it has none we can read)."""
    amount = intent.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        return 0
    return WIRE.from_wire_or_zero(amount, str(intent.get("currency") or request.currency))


def _field(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise OutcomeUnknown(f"Stripe's answer has no {name!r}.", raw_code="malformed_response")
    return value


def _list_data(body: dict[str, Any]) -> list[dict[str, Any]]:
    data = body.get("data")
    if not isinstance(data, list):
        raise OutcomeUnknown("Stripe's list answer has no data.", raw_code="malformed_response")
    return [item for item in data if isinstance(item, dict)]


def _checked_id(provider_reference: str) -> str:
    """Our stored provider id goes into a URL path: refuse anything but an id, unsent."""
    if not _ID.match(provider_reference or ""):
        raise ProviderBadRequest(f"Not a Stripe object id: {provider_reference!r}.",
                                 code="provider_bad_request")
    return provider_reference


def _quoted(value: str) -> str:
    """A value inside a single-quoted Search term (Stripe escapes quotes with a backslash)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
