"""Adyen Checkout API v71 adapter (docs/providers.md section 2).

Wire format
- Base URL: the account's `base_url`, which includes the version: test
  `https://checkout-test.adyen.com/v71`, live
  `https://{PREFIX}-checkout-live.adyenpayments.com/checkout/v71` (the in-process sandbox gets
  `/v71` from BASE_PATHS). Paths below are relative to it.
- Credentials: `api_key` (sent as `X-API-Key`), `merchant_account` (named in every body);
  optional `return_url` (defaults to a placeholder: `/payments` requires one even for a
  server-to-server card payment that never redirects) and `report_base_url` (the Customer
  Area host serving reports, e.g. `https://ca-test.adyen.com`; defaults to the API host,
  which is where the sandbox serves them).
- JSON bodies; explicit connect/read timeouts from the account (providers.http).
- Idempotency: every POST that moves money carries `Idempotency-Key` = our reference (the
  attempt id for `/payments`, the operation id for a modification). Adyen allows 64
  characters; a longer reference is replaced by its SHA-256 hex digest (64 characters,
  deterministic, so every retry still carries the same key).
- References: `reference` (and `paymentReference`) at most 80 characters, metadata values at
  most 80: a longer one is shortened by `providers.references.fit` (its start kept, then a
  digest; deterministic), and an echoed `merchantReference` is compared with that form.
- Amounts in Adyen's own minor units (`providers/adyen/currencies.py`): ISK and CLP in
  hundredths (1000 ISK → 100000), IDR and CVE in whole units. An amount Adyen cannot take
  (123.45 IDR) raises AmountNotRepresentable (a ProviderBadRequest, code
  `amount_not_representable`) before anything is sent; amounts in Adyen's answers are turned
  back into ISO minor units (settlement reports are in major units: ISO exponents apply).

Operations
- authorize: `POST payments` with `reference`, `amount{value,currency}`,
  `paymentMethod{type:"scheme", number, expiryMonth "MM", expiryYear "YYYY", cvc?,
  holderName?}`, `returnUrl`, `shopperInteraction "Ecommerce"`,
  `authenticationData.attemptAuthentication "never"` (no 3DS: an SCA-mandated card is
  refused instead), `additionalData.manualCapture "true"` when capture=False, and
  `metadata {"switchyard_attempt": reference}`.
- capture / cancel / refund: `POST payments/{pspReference}/captures|cancels|refunds` with
  `merchantAccount`, `reference` and (capture, refund) `amount`. Adyen answers 201
  `status: "received"` and confirms asynchronously (CAPTURE / CANCELLATION / REFUND
  webhooks), so they return `ModificationResult(pending=True)` with the modification's
  pspReference. A partial capture releases the remainder of the authorisation.
- lookup: Adyen's Checkout API has no endpoint to read a payment. Its documented first step
  for a lost `/payments` response is to replay the identical request with the same
  Idempotency-Key, which returns the stored result if the first was processed; so lookup
  replays the original AuthorizeRequest. The replay may lack the CVC (never persisted);
  Adyen documents no check of the body against the key (we assume the stored response wins,
  as the sandbox does). CAUTION: a replay of a request Adyen never processed is processed as
  new, so on the real platform a lookup of a never-committed request authorises it then (at
  most one charge, thanks to the key) and returns found=True; this adapter never returns
  found=False. In the sandbox card 4000000000000606 times out on every delivery, so its
  lookup keeps raising OutcomeUnknown.
- reverse: `POST payments/{pspReference}/reversals` (cancel or refund, the full amount, as
  applies): how double-charge compensation reverses an extra Adyen charge.
- release: `POST cancels` with `paymentReference` = the attempt id and `reference` =
  "<attempt id>-release" (Adyen's technical cancel, docs/providers.md 2.4): cancels whatever Adyen
  holds under our reference. Status sync sends it when replays cannot tell what became of an
  authorization; the TECHNICAL_CANCEL webhook (`success: "true"`) then proves that nothing
  stays charged under that reference, and failover may go on.
- probe: `POST paymentMethods` with `merchantAccount` (harmless, authenticated).
- settlement_report(batch): `GET /reports/download/MerchantAccount/{merchantAccount}/
  settlement_detail_report_batch_{N}.csv`, parsed by header name (docs/providers.md 2.9),
  major-unit decimals turned back into minor units; fetch_settlement(day): the batch closed
  that day (`batch_for`), normalized for reconciliation (providers.settlement).

Outcomes (through providers.outcomes)
- HTTP 200 for approvals and refusals alike: `resultCode` via `classify_result("adyen", …)`;
  `Refused`/`Error` (and any code the table lacks) via `classify_decline("adyen",
  refusalReasonCode, text=refusalReason, raw=additionalData.refusalReasonRaw)`: the ISO 8583
  code in refusalReasonRaw wins ("51 : Insufficient funds" → insufficient_funds), then the
  numeric code, then the text. `Error`/4 "Acquirer Error" is a soft decline (failover is
  safe). `Pending`/`Received` → OutcomeUnknown.
- Errors use Adyen's ServiceError `{status, errorCode, message, errorType, pspReference}`.
  A 5xx with the response header `transient-error: true` (Adyen's "no side effects, retry
  with the same key") → ProviderUnavailable (nothing charged, failover safe); any other 5xx
  → OutcomeUnknown. `errorCode "704"` (a request with this key is already in progress) →
  OutcomeUnknown whatever its status and headers: the duplicate did nothing, but the first
  request may still charge, so failing over could charge twice. 429 → ProviderUnavailable;
  other 4xx (401 security, 403 "901" merchant account, 422 validation) → ProviderBadRequest.
- Transport (providers.http.send): not connected → ProviderUnavailable; timeout after
  sending or a dropped connection → OutcomeUnknown. A 2xx we cannot read → OutcomeUnknown.

Card data goes only into the request body; nothing here logs bodies, and providers.http logs
method, path, status and a request id.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import iso4217

from providers import outcomes, settlement
from providers.adyen.currencies import WIRE
from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    AuthorizeResult,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderError,
    release_reference,
)
from providers.http import send, session
from providers.references import fit

PROVIDER = "adyen"
# The resultCodes that carry a refusal reason; any other unknown code is not a decline.
REFUSAL_RESULT_CODES = frozenset({"Refused", "Error"})
DEFAULT_RETURN_URL = "https://switchyard.invalid/adyen/return"
MAX_IDEMPOTENCY_KEY = 64
MAX_REFERENCE = 80  # `reference` of /payments and of modifications (Checkout API v71 spec)
MAX_METADATA_VALUE = 80  # metadata values (error 177 beyond)
IN_PROGRESS = "704"  # "request already processed or in progress"

# Adyen settlement `Type` → ours; other types (fees, payouts, chargebacks…) keep their name.
SETTLEMENT_TYPES = {"Settled": "capture", "Refunded": "refund", "Chargeback": "chargeback",
                    "ChargebackReversed": "chargeback_reversed",
                    "RefundedReversed": "refund_reversed"}


@dataclass(frozen=True)
class SettlementLine:
    """One line of a settlement details report, in minor units."""

    type: str  # capture | refund | chargeback | … (Adyen's Type when we have no name for it)
    provider_reference: str  # the payment's pspReference
    operation_reference: str  # the capture's or refund's pspReference
    reference: str  # our reference (Merchant Reference)
    amount: int  # gross, positive, in `currency`'s minor unit
    currency: str
    fee: int  # commission + markup + scheme fees + interchange, in `fee_currency`
    fee_currency: str
    created_at: datetime | None
    batch: str
    raw_type: str
    # our reference of the capture or refund (`Modification Merchant Reference`), if any
    modification_reference: str = ""


# SettlementLine.type → the normalized kind (providers.settlement); anything else is OTHER
_KINDS = {"capture": settlement.CAPTURE, "refund": settlement.REFUND,
          "chargeback": settlement.CHARGEBACK, "chargeback_reversed": settlement.CHARGEBACK,
          "SecondChargeback": settlement.CHARGEBACK, "Fee": settlement.FEE}
# The sandbox closes one batch a day, batch 1 on this day (credential
# `settlement_batch_epoch` for a real account: see `batch_for`).
DEFAULT_BATCH_EPOCH = dt.date(2020, 1, 1)


def wire_reference(reference: str) -> str:
    """Our reference as Adyen's `reference` (at most 80 characters, deterministic; the form
    Adyen echoes back as `merchantReference`)."""
    return fit(reference, MAX_REFERENCE)


def idempotency_key(reference: str) -> str:
    """Our reference as Adyen's Idempotency-Key (at most 64 characters, deterministic)."""
    if len(reference) <= MAX_IDEMPOTENCY_KEY:
        return reference
    return hashlib.sha256(reference.encode()).hexdigest()


class AdyenAdapter:
    provider = PROVIDER
    # `lookup` and `lookup_modification` replay the original request under its idempotency
    # key, so they never answer "not found": there is no consistency window to wait out.
    # Adyen keeps idempotency keys for at least 7 days (docs/providers.md): status sync gives up
    # (STATUS_SYNC_GIVE_UP_SECONDS, 3 days) well before a replay could run as new.
    not_found_proof_seconds = 0.0

    def __init__(self, config: AccountConfig, client: httpx.Client | None = None):
        self.config = config
        self._client = client
        self._api_key = config.credentials.get("api_key", "")
        self.merchant_account = config.credentials.get("merchant_account", "")
        self._return_url = config.credentials.get("return_url") or DEFAULT_RETURN_URL

    # --- operations -------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        data = self._call("POST", "payments", json=self._payment_body(request),
                          key=request.reference)
        outcome = self._classify(data, request)
        if outcome.kind != outcomes.APPROVED:
            self._raise_refusal(outcome, data)
        return AuthorizeResult(provider_reference=data["pspReference"],
                               captured=request.capture)

    def capture(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("captures", request, with_amount=True)

    def cancel(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("cancels", request, with_amount=False)

    def refund(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("refunds", request, with_amount=True)

    def lookup_modification(self, request: ModificationRequest) -> ModificationResult | None:
        """Adyen has no read endpoint for a capture, void or refund: replay the original
        request under its idempotency key. Adyen answers what it answered the first time (or
        takes the request now if it never got it): `received`, so the modification is
        pending and its webhook (CAPTURE, CANCELLATION, REFUND) decides."""
        action = {"capture": "captures", "cancel": "cancels", "refund": "refunds"}.get(
            request.operation)
        if action is None:
            raise OutcomeUnknown(f"Cannot look up an Adyen {request.operation!r}.")
        try:
            return self._modify(action, request, with_amount=action != "cancels")
        except OutcomeUnknown:
            raise
        except ProviderError as exc:
            # unreachable, rate limited, or a 4xx (our credentials, the account): the replay
            # itself failed, which says nothing about the original request
            raise OutcomeUnknown(f"Adyen could not replay the {request.operation}: "
                                 f"{exc.message}", raw_code=exc.raw_code) from exc

    def lookup(self, request: AuthorizeRequest) -> LookupResult:
        """Replay the original `/payments` request with its Idempotency-Key (see the module
        docstring for what that means when Adyen never received the original)."""
        try:
            data = self._call("POST", "payments", json=self._payment_body(request),
                              key=request.reference)
            outcome = self._classify(data, request)
        except OutcomeUnknown:
            raise
        except ProviderError as exc:  # the replay itself failed: we learnt nothing
            raise OutcomeUnknown(f"Adyen could not replay the payment request: {exc.message}",
                                 raw_code=exc.raw_code) from exc
        found = data.get("amount")
        answered: dict[str, Any] = found if isinstance(found, dict) else {}
        amount = request.amount
        if isinstance(answered.get("value"), int) and not isinstance(answered["value"], bool):
            amount = WIRE.from_wire_or_zero(answered["value"],
                                            str(answered.get("currency") or request.currency))
        if outcome.kind == outcomes.APPROVED:
            return LookupResult(found=True, provider_reference=data["pspReference"],
                                status="captured" if request.capture else "authorized",
                                amount=amount)
        if outcome.kind in (outcomes.HARD, outcomes.SOFT):
            return LookupResult(found=True, provider_reference=data.get("pspReference", ""),
                                status="declined", amount=amount,
                                decline_code=outcome.decline_code)
        raise OutcomeUnknown(f"Adyen has no final result yet (resultCode "
                             f"{data.get('resultCode')!r}).", raw_code=data.get("resultCode", ""))

    def reverse(self, request: ModificationRequest) -> ModificationResult:
        """Cancel or refund, whichever applies (`POST payments/{psp}/reversals`, always the
        full amount): for an extra charge whose automatic capture may be under way, where a
        refund would fail before the capture and a cancel after it. CANCEL_OR_REFUND webhook."""
        return self._modify("reversals", request, with_amount=False)

    def release(self, request: AuthorizeRequest) -> ModificationResult:
        """Cancel whatever Adyen holds under our reference: `POST cancels` with
        `paymentReference` = the attempt id (Adyen's "technical cancel", for a payment whose
        pspReference we never learnt). Adyen answers 201 `received`; the TECHNICAL_CANCEL
        webhook says whether it worked. Only an uncaptured authorisation can be cancelled."""
        reference = release_reference(request.reference)
        data = self._call("POST", "cancels", key=reference, json={
            "merchantAccount": self.merchant_account,
            "paymentReference": wire_reference(request.reference),
            "reference": wire_reference(reference)})
        if data.get("status") != "received" or not data.get("pspReference"):
            raise OutcomeUnknown(f"Unexpected answer to cancels: status {data.get('status')!r}.")
        return ModificationResult(provider_reference=data["pspReference"], pending=True)

    def probe(self) -> None:
        self._call("POST", "paymentMethods", json={"merchantAccount": self.merchant_account})

    def settlement_report(self, batch: int) -> list[SettlementLine]:
        """Download and parse settlement details report batch `batch`, as a report user:
        HTTP Basic with credentials `report_username`/`report_password` when the account
        has them (Adyen's report users, docs/providers.md 2.9), else its API key."""
        path = (f"/reports/download/MerchantAccount/{quote(self.merchant_account, safe='')}/"
                f"settlement_detail_report_batch_{int(batch)}.csv")
        username = self.config.credentials.get("report_username", "")
        password = self.config.credentials.get("report_password", "")
        auth = {"auth": httpx.BasicAuth(username, password)} if username else {}
        headers = {} if username else {"X-API-Key": self._api_key}
        with self._session() as client:
            base = self.config.credentials.get("report_base_url") or str(
                client.base_url.copy_with(path="/")).rstrip("/")
            response = send(client, "GET", base.rstrip("/") + path, provider=PROVIDER,
                            headers=headers, **auth)
        if not response.is_success:
            self._raise_error(response)
        return parse_settlement_report(response.text)

    def batch_for(self, day: dt.date) -> int:
        """The settlement batch closed on `day`. Adyen numbers a merchant account's batches
        1, 2, 3, …; with the default daily batch schedule, batch N closes N - 1 days after
        batch 1. The account's credential `settlement_batch_epoch` (ISO date, "the day batch
        1 closed") anchors the count; the sandbox's is 2020-01-01. An account on another
        batch schedule is not supported (docs/operations/reconciliation.md)."""
        epoch_text = self.config.credentials.get("settlement_batch_epoch", "")
        try:
            epoch = dt.date.fromisoformat(epoch_text) if epoch_text else DEFAULT_BATCH_EPOCH
        except ValueError:
            raise ProviderBadRequest(f"settlement_batch_epoch {epoch_text!r} is not a date.",
                                     code="provider_misconfigured") from None
        batch = (day - epoch).days + 1
        if batch < 1:
            raise ProviderBadRequest(f"No settlement batch closed on {day} (batch 1 closed "
                                     f"on {epoch}).", code="settlement_no_batch")
        return batch

    def fetch_settlement(self, day: dt.date) -> settlement.SettlementReport:
        """The settlement details report of the batch closed on `day` (`batch_for`), its
        lines normalized: a `Settled` line is a capture, `Refunded` a refund; Merchant
        Reference is our attempt id, Modification Merchant Reference our capture's or
        refund's id, Psp Reference the payment's, Modification Reference the modification's;
        the fee is Commission + Markup + Scheme Fees + Interchange (NC)."""
        batch = self.batch_for(day)
        lines: list[settlement.SettlementLine] = []
        seen: dict[str, int] = {}
        for line in self.settlement_report(batch):
            key = f"{batch}:{line.raw_type}:{line.provider_reference}:{line.operation_reference}"
            seen[key] = seen.get(key, 0) + 1
            lines.append(settlement.SettlementLine(
                line_id=key if seen[key] == 1 else f"{key}:{seen[key]}",
                kind=_KINDS.get(line.type, settlement.OTHER), amount_minor=line.amount,
                currency=line.currency, fee_minor=line.fee, fee_currency=line.fee_currency,
                our_reference=line.modification_reference,
                payment_reference=line.reference, provider_reference=line.provider_reference,
                operation_reference=line.operation_reference, occurred_at=line.created_at,
                raw_type=line.raw_type))
        return settlement.SettlementReport(
            day=day, source=f"settlement_detail_report_batch_{batch}.csv "
                            f"({self.merchant_account})", lines=tuple(lines))

    # --- wire -------------------------------------------------------------------------
    def _payment_body(self, request: AuthorizeRequest) -> dict[str, Any]:
        card = request.card
        year = card.exp_year + 2000 if card.exp_year < 100 else card.exp_year
        payment_method = {"type": "scheme", "number": card.number,
                          "expiryMonth": f"{card.exp_month:02d}", "expiryYear": f"{year:04d}"}
        if card.cvc:
            payment_method["cvc"] = card.cvc
        if request.holder_name:
            payment_method["holderName"] = request.holder_name
        body: dict[str, Any] = {
            "merchantAccount": self.merchant_account,
            "reference": wire_reference(request.reference),
            "amount": {"value": WIRE.to_wire(request.amount, request.currency),
                       "currency": request.currency},
            "paymentMethod": payment_method,
            "returnUrl": self._return_url,
            "shopperInteraction": "Ecommerce",
            "authenticationData": {"attemptAuthentication": "never"},
            "metadata": {"switchyard_attempt": fit(request.reference, MAX_METADATA_VALUE)},
        }
        if request.capture:
            # ask for the capture explicitly: the account's own default may delay it
            body["captureDelayHours"] = 0
        else:
            body["additionalData"] = {"manualCapture": "true"}
        return body

    def _modify(self, action: str, request: ModificationRequest, *,
                with_amount: bool) -> ModificationResult:
        body: dict[str, Any] = {"merchantAccount": self.merchant_account,
                      "reference": wire_reference(request.reference)}
        if with_amount:
            body["amount"] = {"value": WIRE.to_wire(request.amount, request.currency),
                              "currency": request.currency}
        path = f"payments/{quote(request.provider_reference, safe='')}/{action}"
        data = self._call("POST", path, json=body, key=request.reference)
        if data.get("status") != "received" or not data.get("pspReference"):
            raise OutcomeUnknown(f"Unexpected answer to {action}: status "
                                 f"{data.get('status')!r}.")
        return ModificationResult(provider_reference=data["pspReference"], pending=True)

    def _session(self) -> AbstractContextManager[httpx.Client]:
        return session(self.config, self._client)

    def _call(self, method: str, path: str, *, json: dict[str, Any],
              key: str | None = None) -> dict[str, Any]:
        """Send one JSON request; return the 2xx body or raise the classified error."""
        headers = {"X-API-Key": self._api_key, "Accept": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = idempotency_key(key)
        with self._session() as client:
            response = send(client, method, path, provider=PROVIDER, json=json,
                            headers=headers)
        if not response.is_success:
            self._raise_error(response)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):  # it was sent and answered, but we cannot tell how
            raise OutcomeUnknown(f"Unreadable {response.status_code} answer from Adyen.",
                                 raw_code=str(response.status_code))
        return data

    @staticmethod
    def _raise_error(response: httpx.Response) -> None:
        try:
            error = response.json()
        except ValueError:
            error = None
        error = error if isinstance(error, dict) else {}
        code = str(error.get("errorCode") or response.status_code)
        message = f"Adyen {response.status_code} {code}: {error.get('message') or 'error'}"
        if code == IN_PROGRESS:
            raise OutcomeUnknown(message + " (a request with this key is still in progress).",
                                 raw_code=code)
        transient = response.headers.get("transient-error", "").lower() == "true"
        outcomes.raise_for(outcomes.http_outcome(response.status_code, not_processed=transient),
                           message, raw_code=code)
        raise OutcomeUnknown(message, raw_code=code)  # pragma: no cover - raise_for raised

    @staticmethod
    def _classify(data: dict[str, Any], request: AuthorizeRequest) -> outcomes.Outcome:
        """The normalized outcome of a `/payments` answer."""
        if data.get("merchantReference") not in (None, "", wire_reference(request.reference)):
            raise OutcomeUnknown("Adyen answered for another reference.")
        result_code = str(data.get("resultCode", ""))
        outcome = outcomes.classify_result(PROVIDER, result_code)
        if outcome is None and result_code not in REFUSAL_RESULT_CODES:
            # a result code we do not know (or none): the payment may have gone through
            raise OutcomeUnknown(f"Adyen answered resultCode {result_code or 'none'!r}; "
                                 "not a known final result.", raw_code=result_code)
        if outcome is None:  # Refused or Error: a decline, classified by its reason
            outcome = outcomes.classify_decline(
                PROVIDER, str(data.get("refusalReasonCode", "")),
                text=str(data.get("refusalReason", "")),
                raw=str((data.get("additionalData") or {}).get("refusalReasonRaw", "")))
        if outcome.kind == outcomes.APPROVED and not data.get("pspReference"):
            raise OutcomeUnknown("Adyen authorised without a pspReference.")
        return outcome

    @staticmethod
    def _raise_refusal(outcome: outcomes.Outcome, data: dict[str, Any]) -> None:
        reason = data.get("refusalReason") or data.get("resultCode") or "Refused"
        raw_code = str(data.get("refusalReasonCode") or data.get("resultCode") or "")
        outcomes.raise_for(outcome, f"Adyen: {reason}.", raw_code=raw_code)


# --- settlement report parsing --------------------------------------------------------------
def parse_settlement_report(text: str) -> list[SettlementLine]:
    """A settlement details report CSV → lines; columns are found by header name (Adyen lets
    merchants reorder and add columns)."""
    lines = []
    for row in csv.DictReader(io.StringIO(text)):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        raw_type = row.get("Type", "")
        gross_currency = row.get("Gross Currency", "")
        net_currency = row.get("Net Currency", "") or gross_currency
        if not raw_type or not gross_currency:
            continue  # a blank or summary line
        gross = (_minor(row.get("Gross Credit (GC)"), gross_currency)
                 or _minor(row.get("Gross Debit (GC)"), gross_currency))
        fee = sum(_minor(row.get(column), net_currency) for column in (
            "Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)"))
        lines.append(SettlementLine(
            type=SETTLEMENT_TYPES.get(raw_type, raw_type), raw_type=raw_type,
            provider_reference=row.get("Psp Reference", ""),
            operation_reference=row.get("Modification Reference", ""),
            reference=row.get("Merchant Reference", ""), amount=abs(gross),
            currency=gross_currency, fee=fee, fee_currency=net_currency,
            created_at=_timestamp(row.get("Creation Date", ""), row.get("TimeZone", "")),
            batch=row.get("Batch Number", ""),
            modification_reference=row.get("Modification Merchant Reference", ""),
        ))
    return lines


def _minor(value: str | None, currency: str) -> int:
    """A major-unit decimal ("10.50") → minor units (1050), exponent from ISO 4217."""
    if not value:
        return 0
    try:
        amount = Decimal(value.replace(",", ""))
    except InvalidOperation:
        raise ProviderBadRequest(f"Unreadable amount {value!r} in the settlement report.") \
            from None
    try:
        exponent = iso4217.Currency(currency).exponent or 0
    except ValueError:
        raise ProviderBadRequest(f"Unknown currency {currency!r} in the settlement report.") \
            from None
    return int(amount.scaleb(exponent).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _timestamp(value: str, zone: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        return parsed.replace(tzinfo=ZoneInfo(zone or "UTC"))
    except (ValueError, ZoneInfoNotFoundError):
        return None
