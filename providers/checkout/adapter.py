"""Checkout.com adapter: the unified Payments API (docs/providers.md section 3).

Wire format
- Base URL: the account's (`https://{prefix}.api.sandbox.checkout.com` /
  `https://{prefix}.api.checkout.com`; `sandbox://local` → the in-process sandbox). JSON both
  ways, no version header. Every request: `Authorization: Bearer <secret_key>`; every POST:
  `Cko-Idempotency-Key: <our reference>` (the attempt id for an authorization, the operation id
  for a capture/void/refund — unique per operation, so a retry of the same operation is safe).
  Connect/read timeouts are the account's (providers/http.py); requests go through
  `providers.http.send`, which logs method, path, status and duration, never bodies.
- References and keys: Checkout.com takes 50 characters of `reference`; a longer one of ours
  (a double-charge reversal's, 68) is sent shortened by `providers.references.fit` (its
  start kept, then a digest; deterministic), as the idempotency key too, and lookups by
  reference and the actions list are read with that form. `metadata` keeps the whole one.
- Amounts in Checkout.com's own minor units (`providers/checkout/currencies.py`): CLP in
  hundredths, three-decimal amounts ending in 0, at most nine digits. An amount it cannot
  take raises AmountNotRepresentable (a ProviderBadRequest, code `amount_not_representable`)
  before anything is sent; amounts in its answers are turned back into ISO minor units.
- Authorize: `POST /payments` with `source {type: "card", number, expiry_month, expiry_year
  (integers), cvv?, name?}`, `amount` (minor units), `currency` (uppercase), `reference` (ours),
  `capture` (bool), `payment_type: "Regular"`, `processing_channel_id` (credentials),
  `metadata {switchyard_attempt: reference}`.
- Capture / void / refund: `POST /payments/{id}/captures|voids|refunds` with `amount` (not for
  voids), `reference`, `metadata`. Checkout.com answers 202 `{action_id}`: *accepted*, not done.
  The result is a `ModificationResult(provider_reference=action_id, pending=True)`; it stays
  pending until a webhook (`payment_captured`, `payment_refunded`, `payment_voided` or the
  `*_declined` ones) or a status lookup (`lookup_modification`, i.e.
  `GET /payments/{id}/actions`) confirms it.
- Lookup: `GET /payments?reference=<ours>` (newest first); the response code of a declined
  payment comes from its Authorization action (`GET /payments/{id}/actions`).
- Probe: `GET /payments?reference=switchyard-health-probe&limit=1`.
- Settlement (`fetch_settlement`): the Reconciliation API, `GET /reporting/payments?from=&to=
  &limit=` (UTC, `YYYY-MM-DDTHH:MM:SSZ`), every page by `_links.next` (its path and query,
  sent to our own base URL: the key never goes to a host the answer names). Each payment
  carries `actions[]` with a fee `breakdown[]` of decimal major-unit amounts; one line per
  action (docs/providers.md 3.9). Credential `report_channel_name`: keep only the payments of
  that channel (`channel_name`), for an account whose key sees several.

How each outcome is mapped (data in providers/outcomes.py)
- 201 `approved: true` → `classify_result("checkout", status)` (Authorized, Captured, Card
  Verified, Paid) → `AuthorizeResult`. With `capture: true` an approved payment counts as
  captured even if Checkout.com still says `Authorized` (it captures on its own shortly after).
- 201 `approved: false` → `classify_decline("checkout", response_code)` → HardDecline or
  SoftDecline (raw_code = the response code). A 4xx that carries a `response_code` is read the
  same way (reported by integrators, docs/providers.md 3.6).
- 202 `status: "Pending"` (e.g. 3-D Secure) → `classify_result` → OutcomeUnknown.
- 503 on a POST: Checkout.com stores only 2xx results under an idempotency key, so a 5xx
  means nothing was stored — but not necessarily that nothing was processed. We confirm at
  once: authorize → `GET /payments?reference=`; capture/void/refund → `GET /payments/{id}/
  actions`, looking for our reference. Nothing found → ProviderUnavailable (safe to fail over);
  found → that result; the confirmation itself fails (including a 503 during a full outage) →
  OutcomeUnknown (the status sync finds out later).
- Any other 5xx, a read timeout after sending, a dropped connection → OutcomeUnknown.
- 409 and 429 on a POST → OutcomeUnknown, not the rate-limit "unavailable" of
  `outcomes.http_outcome`: Checkout.com documents 429 as "too many requests *or duplicate
  request detected*", and our sandbox answers 409 to a request whose key is still in flight;
  either may mean the same operation is being processed right now.
- 401/403/404/422 and other 4xx → ProviderBadRequest (nothing was processed; our request or
  our credentials are wrong).
`lookup` never raises anything but OutcomeUnknown ("cannot tell yet"); `lookup_modification`
also raises ProviderBadRequest for an action Checkout.com declined; the probe raises
ProviderUnavailable or ProviderBadRequest (a GET never moves money).
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from providers import outcomes, settlement
from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    AuthorizeResult,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    OperationRefused,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderError,
    ProviderUnavailable,
)
from providers.checkout.currencies import WIRE
from providers.http import send, session
from providers.references import fit

logger = logging.getLogger("providers.checkout")

PROVIDER = "checkout"
PROBE_REFERENCE = "switchyard-health-probe"
MAX_DESCRIPTION = 100
# `reference` of a payment and of its actions: 50 characters (Checkout.com's API reference).
MAX_REFERENCE = 50
# Cko-Idempotency-Key: Checkout.com documents no limit we could find (it recommends UUIDs, 36
# characters); we keep keys within the reference's 50, which every retry maps the same way.
MAX_IDEMPOTENCY_KEY = 50

# Checkout.com payment status → LookupResult.status. Pending and Retry Scheduled are not final.
LOOKUP_STATUS = {
    "Authorized": "authorized",
    "Card Verified": "authorized",
    "Captured": "captured",
    "Partially Captured": "captured",
    "Partially Refunded": "captured",
    "Refunded": "captured",
    "Paid": "captured",
    "Declined": "declined",
    "Voided": "canceled",
    "Canceled": "canceled",
    "Expired": "canceled",
}
CAPTURED_STATUSES = {"Captured", "Partially Captured", "Partially Refunded", "Refunded", "Paid"}
ACTION_PATHS = {"capture": "captures", "cancel": "voids", "refund": "refunds"}
SETTLEMENT_PAGE = 200  # the Reconciliation API's default and our page size
SETTLEMENT_PAGES = 1000  # pages read for one day, at most
# Reconciliation API action `type` → SettlementLine.kind (docs/providers.md 3.9); other actions
# (Authorization, Void, …) carry fees only: FEE when they do, else OTHER
_ACTION_KINDS = {"capture": settlement.CAPTURE, "refund": settlement.REFUND,
                 "chargeback": settlement.CHARGEBACK}


def wire_reference(reference: str) -> str:
    """Our reference as Checkout.com's `reference` (at most 50 characters, deterministic: a
    reversal's 68-character `<attempt>-reversal-pay_…` keeps its `<attempt>-reversal-` start
    and ends in a digest). Lookups by reference and the actions list use this form."""
    return fit(reference, MAX_REFERENCE)


def _iso_amount(payment: dict[str, Any], request: AuthorizeRequest) -> int:
    """A payment's amount in ISO minor units (0 if it has none we can read)."""
    amount = payment.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        return 0
    return WIRE.from_wire_or_zero(amount, str(payment.get("currency") or request.currency))


class CheckoutAdapter:
    provider = PROVIDER
    # `GET /payments?reference=` and `GET /payments/{id}/actions` come with no documented
    # read-after-write guarantee: a payment or action they do not list may still appear.
    # Only an hour after the request does "not found" count as "never processed".
    not_found_proof_seconds = 3600.0

    def __init__(self, config: AccountConfig, client: httpx.Client | None = None):
        self.config = config
        self._client = client

    # --- operations -----------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        source = {"type": "card", "number": request.card.number,
                  "expiry_month": request.card.exp_month, "expiry_year": request.card.exp_year}
        if request.card.cvc:
            source["cvv"] = request.card.cvc
        if request.holder_name:
            source["name"] = request.holder_name
        body = {
            "source": source,
            "amount": WIRE.to_wire(request.amount, request.currency),  # refused before sending
            "currency": request.currency.upper(),
            "reference": wire_reference(request.reference),
            "capture": request.capture,
            "payment_type": "Regular",
            "metadata": {"switchyard_attempt": request.reference},
        }
        if self.config.credentials.get("processing_channel_id"):
            body["processing_channel_id"] = self.config.credentials["processing_channel_id"]
        if request.description:
            body["description"] = request.description[:MAX_DESCRIPTION]
        with self._session() as client:
            response = self._post(client, "/payments", body, request.reference)
            if response.status_code in (200, 201, 202):
                return self._authorize_result(client, request, self._body(response))
            if response.status_code == 503:
                return self._confirm_authorization(client, request)
            self._raise_for_error(response, "authorization")

    def capture(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("capture", request)

    def cancel(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("cancel", request)

    def refund(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("refund", request)

    def lookup(self, request: AuthorizeRequest) -> LookupResult:
        """What became of the authorization with our reference (`GET /payments?reference=`).
        Reported as Checkout.com has it: a payment requested with `capture: true` is
        `Authorized` until its capture runs."""
        with self._session() as client:
            return self._lookup(client, request)

    def lookup_modification(self, request: ModificationRequest) -> ModificationResult | None:
        """Confirm an accepted (pending) capture/void/refund from `GET /payments/{id}/actions`:
        the action with our reference, `pending=False` once Checkout.com approved it
        (`approved: true`) and `pending=True` while it has no decision yet (`approved` null);
        None if Checkout.com lists none. Raises ProviderBadRequest if Checkout.com declined it
        (`approved: false`), OutcomeUnknown if it cannot tell."""
        with self._session() as client:
            return self._confirm_action(client, request)

    def probe(self) -> None:
        with self._session() as client:
            try:
                response = send(client, "GET", "/payments", provider=PROVIDER,
                                headers=self._headers(),
                                params={"reference": PROBE_REFERENCE, "limit": 1})
            except OutcomeUnknown as exc:  # a GET moves no money: just unreachable
                raise ProviderUnavailable(exc.message, raw_code=exc.raw_code) from exc
        if response.status_code == 200:
            return
        message = f"Checkout.com health probe failed: {self._describe(response)}."
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(message, raw_code=str(response.status_code))
        raise ProviderBadRequest(message, raw_code=str(response.status_code))

    def fetch_settlement(self, day: dt.date) -> settlement.SettlementReport:
        """The payments whose actions Checkout.com processed on `day` (UTC), from the
        Reconciliation API, one line per action that moved money or cost a fee."""
        start, end = settlement.day_bounds(day)
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        path = "/reporting/payments"
        params: dict[str, Any] | None = {"from": start.strftime(stamp),
                                         "to": end.strftime(stamp), "limit": SETTLEMENT_PAGE}
        channel = self.config.credentials.get("report_channel_name", "")
        lines: list[settlement.SettlementLine] = []
        with self._session() as client:
            for _ in range(SETTLEMENT_PAGES):
                response = send(client, "GET", path, provider=PROVIDER,
                                headers=self._headers(), params=params)
                if response.status_code != 200:
                    message = f"Reconciliation API: {self._describe(response)}."
                    outcomes.raise_for(outcomes.http_outcome(response.status_code), message,
                                       raw_code=str(response.status_code))
                    raise ProviderBadRequest(message)  # pragma: no cover - raise_for raised
                body = self._body(response, unknown=False)
                for payment in _items(body.get("data")):
                    if channel and payment.get("channel_name") != channel:
                        continue
                    lines += _settlement_lines(payment)
                next_link = (body.get("_links") or {}).get("next")
                href = next_link.get("href") if isinstance(next_link, dict) else None
                if not href:
                    break
                parts = urlsplit(str(href))
                path, params = parts.path + (f"?{parts.query}" if parts.query else ""), None
            else:
                raise ProviderBadRequest(f"More than {SETTLEMENT_PAGES} pages of payments on "
                                         f"{day}.", code="settlement_too_large")
        return settlement.SettlementReport(
            day=day, source=f"GET /reporting/payments {day.isoformat()} (UTC)",
            lines=tuple(lines))

    # --- authorization --------------------------------------------------------------------
    def _authorize_result(self, client: httpx.Client, request: AuthorizeRequest,
                          payment: dict[str, Any]) -> AuthorizeResult:
        status, payment_id = payment.get("status", ""), payment.get("id", "")
        result = outcomes.classify_result(PROVIDER, status)
        if payment.get("approved") is True and result is not None \
                and result.kind == outcomes.APPROVED and payment_id:
            captured = status in CAPTURED_STATUSES or request.capture
            return AuthorizeResult(provider_reference=payment_id, captured=captured)
        if payment.get("approved") is True or (result is not None
                                               and result.kind != outcomes.APPROVED):
            # approved with a status we cannot read, or Pending: the payment may go through
            raise OutcomeUnknown(f"Checkout.com answered status {status or 'none'!r} for "
                                 f"payment {payment_id or 'without id'}; not final.",
                                 raw_code=status)
        if payment.get("approved") is not False:
            # neither approved nor declined (a body we cannot read): the money may have moved
            raise OutcomeUnknown(f"Checkout.com answered without a decision for payment "
                                 f"{payment_id or 'without id'}.", raw_code=status)
        code = payment.get("response_code") or self._authorization_code(client, payment_id)
        self._raise_decline(code, payment.get("response_summary", ""))

    def _confirm_authorization(self, client: httpx.Client,
                               request: AuthorizeRequest) -> AuthorizeResult:
        """After a 503: did Checkout.com record a payment with our reference after all?"""
        try:
            found = self._payments_by_reference(client, wire_reference(request.reference))
        except ProviderError as exc:
            raise OutcomeUnknown("Checkout.com answered 503 and the lookup by reference "
                                 f"failed too ({exc.message}); the payment may exist.",
                                 raw_code="503") from exc
        if not found:
            # Proves nothing yet: the list by reference has no documented read-after-write
            # guarantee, so the payment may exist and only status sync may conclude "no
            # charge", once `not_found_proof_seconds` have passed.
            raise OutcomeUnknown("Checkout.com answered 503 and does not list a payment with "
                                 "our reference yet; it may still appear.", raw_code="503")
        return self._authorize_result(client, request, self._pick(found))

    def _raise_decline(self, code: str, summary: str) -> NoReturn:
        outcome = outcomes.classify_decline(PROVIDER, code)
        if outcome.kind == outcomes.APPROVED:  # an approval code on a declined payment
            outcome = outcomes.GENERIC_DECLINE
        outcomes.raise_for(outcome, f"The card was declined (Checkout.com {code or 'no code'}"
                                    f"{': ' + summary if summary else ''}).", raw_code=code)
        raise AssertionError("unreachable")  # pragma: no cover - raise_for raised

    # --- capture / void / refund ----------------------------------------------------------
    def _modify(self, kind: str, request: ModificationRequest) -> ModificationResult:
        # metadata keeps our whole reference: the one place a shortened one can be traced
        body: dict[str, Any] = {"reference": wire_reference(request.reference),
                      "metadata": {"switchyard_operation": request.reference}}
        if kind != "cancel":
            body["amount"] = WIRE.to_wire(request.amount, request.currency)
        path = f"/payments/{request.provider_reference}/{ACTION_PATHS[kind]}"
        with self._session() as client:
            response = self._post(client, path, body, request.reference)
            if 200 <= response.status_code < 300:
                action_id = self._body(response).get("action_id")
                if not action_id:
                    raise OutcomeUnknown(f"Checkout.com accepted the {kind} without an "
                                         "action id.", raw_code=str(response.status_code))
                return ModificationResult(provider_reference=action_id, pending=True)
            if response.status_code == 503:
                confirmed = self._confirm_action(client, request)
                if confirmed is None:
                    raise ProviderUnavailable(f"Checkout.com answered 503 and lists no {kind} "
                                              "with our reference: nothing was done.",
                                              raw_code="503")
                return confirmed
            self._raise_for_error(response, kind)

    def _confirm_action(self, client: httpx.Client,
                        request: ModificationRequest) -> ModificationResult | None:
        try:
            actions = self._actions(client, request.provider_reference)
        except ProviderError as exc:
            raise OutcomeUnknown(f"The actions of {request.provider_reference} could not be "
                                 f"read: {exc.message}", raw_code=exc.raw_code) from exc
        reference = wire_reference(request.reference)  # as Checkout.com has it
        for action in actions:
            if action.get("reference") == reference and action.get("type") != \
                    "Authorization":
                approved = action.get("approved")
                if approved is False:
                    raise OperationRefused(
                        f"Checkout.com declined the {action.get('type', 'action')} "
                        f"({action.get('response_code', '')}).",
                        code="provider_declined_action", raw_code=action.get("response_code", ""))
                # Only `approved: true` is done. An action listed without a decision
                # (`approved` null or absent: Checkout.com is still processing it) is accepted
                # but pending: settling it now could report a capture or refund that later fails.
                return ModificationResult(provider_reference=action.get("id", ""),
                                          pending=approved is not True)
        return None

    # --- lookups --------------------------------------------------------------------------
    def _lookup(self, client: httpx.Client, request: AuthorizeRequest) -> LookupResult:
        reference = wire_reference(request.reference)
        try:
            found = self._payments_by_reference(client, reference)
            if not found:
                return LookupResult(found=False)
            payment = self._pick(found)
            status = LOOKUP_STATUS.get(payment.get("status", ""))
            if status is None:
                raise OutcomeUnknown(f"Checkout.com payment {payment.get('id')} is "
                                     f"{payment.get('status')!r}: not final yet.",
                                     raw_code=str(payment.get("status", "")))
            decline_code = ""
            if status == "declined":
                code = payment.get("response_code") or self._authorization_code(
                    client, payment.get("id", ""))
                outcome = outcomes.classify_decline(PROVIDER, code)
                if outcome.kind == outcomes.APPROVED:
                    outcome = outcomes.GENERIC_DECLINE
                decline_code = outcome.decline_code
            return LookupResult(found=True, provider_reference=payment.get("id", ""),
                                status=status, amount=_iso_amount(payment, request),
                                decline_code=decline_code)
        except OutcomeUnknown:
            raise
        except ProviderError as exc:
            raise OutcomeUnknown(f"Checkout.com could not be asked about {reference}: "
                                 f"{exc.message}", raw_code=exc.raw_code) from exc

    def _payments_by_reference(self, client: httpx.Client, reference: str) -> list[dict[str, Any]]:
        response = send(client, "GET", "/payments", provider=PROVIDER, headers=self._headers(),
                        params={"reference": reference, "limit": 100})
        if response.status_code != 200:
            raise ProviderUnavailable(f"Lookup by reference failed: {self._describe(response)}.",
                                      raw_code=str(response.status_code))
        data = self._body(response, unknown=False).get("data")
        if not isinstance(data, list):
            raise ProviderUnavailable("Lookup by reference returned no data list.")
        return [item for item in data if isinstance(item, dict)]

    def _actions(self, client: httpx.Client, payment_id: str) -> list[dict[str, Any]]:
        response = send(client, "GET", f"/payments/{payment_id}/actions", provider=PROVIDER,
                        headers=self._headers())
        if response.status_code != 200:
            raise ProviderUnavailable(f"Reading the actions failed: {self._describe(response)}.",
                                      raw_code=str(response.status_code))
        try:
            actions = response.json()
        except ValueError:
            actions = None
        if not isinstance(actions, list):
            raise ProviderUnavailable("The actions of the payment are not a list.")
        return [action for action in actions if isinstance(action, dict)]

    def _authorization_code(self, client: httpx.Client, payment_id: str) -> str:
        """The response code of a payment's Authorization action (list items carry none)."""
        if not payment_id:
            return ""
        try:
            actions = self._actions(client, payment_id)
        except ProviderError as exc:
            raise OutcomeUnknown(f"The decline reason of {payment_id} could not be read: "
                                 f"{exc.message}", raw_code=exc.raw_code) from exc
        for action in actions:
            if action.get("type") == "Authorization":
                return str(action.get("response_code") or "")
        return ""

    @staticmethod
    def _pick(payments: list[dict[str, Any]]) -> dict[str, Any]:
        """The payment that answers for our reference: the newest one that moved money, else
        the newest. Several payments with one reference mean a request was executed twice
        (Checkout.com re-executes a retry whose first answer was not a 2xx)."""
        approved = [p for p in payments if p.get("approved") is True]
        if len(approved) > 1:
            logger.warning("checkout: %d approved payments share one reference: %s",
                           len(approved), ", ".join(str(p.get("id")) for p in approved))
        return (approved or payments)[0]

    # --- HTTP -----------------------------------------------------------------------------
    def _session(self) -> AbstractContextManager[httpx.Client]:
        return session(self.config, self._client)

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        secret = self.config.credentials.get("secret_key")
        if not secret:  # refused before anything is sent
            raise ProviderBadRequest(f"Account {self.config.name!r} has no Checkout.com "
                                     "secret_key.", code="provider_misconfigured")
        headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
        if idempotency_key:
            headers["Cko-Idempotency-Key"] = idempotency_key
        return headers

    def _post(self, client: httpx.Client, path: str, body: dict[str, Any],
              key: str) -> httpx.Response:
        return send(client, "POST", path, provider=PROVIDER,
                    headers=self._headers(fit(key, MAX_IDEMPOTENCY_KEY)), json=body)

    @staticmethod
    def _body(response: httpx.Response, *, unknown: bool = True) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
        error = OutcomeUnknown if unknown else ProviderUnavailable
        raise error(f"Checkout.com answered {response.status_code} with an unreadable body.",
                    raw_code=str(response.status_code))

    @staticmethod
    def _describe(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        text = f"HTTP {response.status_code}"
        if isinstance(body, dict) and body.get("error_type"):
            codes = body.get("error_codes") or []
            text += f" {body['error_type']}"
            if isinstance(codes, list) and codes:
                text += " (" + ", ".join(str(c) for c in codes) + ")"
        request_id = response.headers.get("Cko-Request-Id") or (
            body.get("request_id") if isinstance(body, dict) else None)
        if request_id:
            text += f" [request {request_id}]"
        return text

    def _raise_for_error(self, response: httpx.Response, what: str) -> NoReturn:
        """Raise for a non-2xx answer to a POST (503 is confirmed by the callers first)."""
        status = response.status_code
        if status in (409, 429):
            raise OutcomeUnknown(f"Checkout.com answered {status} to the {what} (a duplicate of "
                                 f"a request in flight?): {self._describe(response)}.",
                                 raw_code=str(status))
        try:
            body = response.json()
        except ValueError:
            body = None
        if what == "authorization" and 400 <= status < 500 and isinstance(body, dict) \
                and body.get("response_code"):
            self._raise_decline(str(body["response_code"]), body.get("response_summary", ""))
        message = f"Checkout.com refused the {what}: {self._describe(response)}."
        outcomes.raise_for(outcomes.http_outcome(status), message, raw_code=str(status))
        raise OutcomeUnknown(message, raw_code=str(status))  # pragma: no cover - 2xx handled


# --- settlement -----------------------------------------------------------------------------
def _items(value: Any) -> list[dict[str, Any]]:
    """A list of objects, or one object, as the Reconciliation API's examples show both."""
    if isinstance(value, dict):
        return [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _is_fee(breakdown_type: str) -> bool:
    """A fee (or its tax) in an action's breakdown: "Interchange Fee", "Scheme Fixed Fee",
    "Gateway Fee Tax ARE USD/GBP@0.76", …; not a rolling reserve movement."""
    lowered = breakdown_type.lower()
    return "fee" in lowered or lowered.startswith("tax") or " tax" in lowered


def _is_reserve(breakdown_type: str) -> bool:
    lowered = breakdown_type.lower()
    return "rolling reserve" in lowered or lowered.split(" ")[0] in ("rr", "reserve")


def _settlement_lines(payment: dict[str, Any]) -> list[settlement.SettlementLine]:
    """One payment of the Reconciliation API → a line per action. The gross amount is the
    sum of the breakdown lines that are neither fees nor reserve movements; the fee is minus
    the sum of the fee lines (fees are debits); both in the processing currency, summed
    exactly and rounded once to the minor unit."""
    currency = str(payment.get("processing_currency") or "").upper()
    lines: list[settlement.SettlementLine] = []
    for action in _items(payment.get("actions")):
        gross, fee = Decimal(0), Decimal(0)
        for part in _items(action.get("breakdown")):
            kind = str(part.get("type") or "")
            value = settlement.decimal_major(part.get("processing_currency_amount"),
                                             what=f"{kind} amount")
            if _is_reserve(kind):
                continue
            if _is_fee(kind):
                fee -= value
            else:
                gross += value
        raw_type = str(action.get("type") or "")
        kind_name = _ACTION_KINDS.get(raw_type.split(" ")[-1].lower())
        if kind_name is None:
            kind_name = settlement.FEE if fee and not gross else settlement.OTHER
        code = str(action.get("response_code") or "")
        processed = str(action.get("processed_on") or "")
        lines.append(settlement.SettlementLine(
            line_id=str(action.get("id") or f"{payment.get('id')}:{len(lines)}"),
            kind=kind_name, amount_minor=abs(settlement.round_minor(gross, currency)),
            currency=currency, fee_minor=settlement.round_minor(fee, currency),
            fee_currency=currency,
            status=settlement.SETTLED if not code or code.startswith("10")
            else settlement.DECLINED,
            payment_reference=str(payment.get("reference") or ""),
            provider_reference=str(payment.get("id") or ""),
            operation_reference=str(action.get("id") or ""),
            occurred_at=_timestamp(processed), raw_type=raw_type))
    return lines


def _timestamp(value: str) -> dt.datetime | None:
    """"2019-03-08T10:29:51.922" (UTC, as the Reconciliation API writes it) or with a Z."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
