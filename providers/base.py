"""The provider contract: what every adapter takes, returns and raises.

Adapters never touch the ORM. They take frozen dataclasses, return frozen dataclasses and
raise one of the exceptions below; the orchestration in `payments.services` decides what each
means for the payment. The exception classes carry the *safety* of what happened, because that
alone decides whether failing over to another provider can charge a customer twice:

- `HardDecline`          the card was declined for good; never retry anywhere.
- `SoftDecline`          declined, but another provider may approve; nothing was charged.
- `ProviderUnavailable`  the provider provably did not process the request (connection
                         refused, 503 before processing, open breaker); nothing was charged.
- `OutcomeUnknown`       the request may have been processed (timeout after sending, dropped
                         connection, 5xx): money may have moved. Never fail over; ask later.
- `ProviderBadRequest`   the provider rejected our request as malformed: our bug, not the card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Card:
    """A card as the vault hands it to an adapter: in memory only, never logged."""

    number: str
    exp_month: int
    exp_year: int
    brand: str
    cvc: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never let a card number reach a log line or a traceback
        return f"Card(brand={self.brand!r}, last4={self.number[-4:]!r})"


@dataclass(frozen=True)
class AccountConfig:
    """What an adapter needs to know about the provider account it calls.

    `credentials` per provider: stripe {"secret_key"}; adyen {"api_key", "merchant_account"};
    checkout {"secret_key", "processing_channel_id"}. Sandboxes accept any non-empty values.
    """

    name: str
    provider: str
    livemode: bool
    base_url: str = ""
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    account_id: str = ""


@dataclass(frozen=True)
class AuthorizeRequest:
    reference: str  # our attempt id: the provider's idempotency key and lookup reference
    amount: int
    currency: str
    card: Card
    capture: bool  # True: authorize and capture in one call (capture_method=automatic)
    description: str = ""
    holder_name: str = ""


@dataclass(frozen=True)
class AuthorizeResult:
    provider_reference: str  # the provider's id for the charge (PaymentIntent id, pspReference…)
    captured: bool


@dataclass(frozen=True)
class ModificationRequest:
    """Capture, cancel (void) or refund of an earlier authorization."""

    reference: str  # our id for this operation: the provider's idempotency key
    provider_reference: str  # the authorization being modified
    amount: int
    currency: str
    operation: str = ""  # capture | cancel | refund: what a `lookup_modification` looks for


@dataclass(frozen=True)
class ModificationResult:
    provider_reference: str
    pending: bool = False  # the provider confirms asynchronously (webhook or status lookup)


@dataclass(frozen=True)
class LookupResult:
    """The provider's answer to "what happened to the request with our reference?".

    found=False: the provider has no charge for it (it never processed the request).
    """

    found: bool
    provider_reference: str = ""
    status: str = ""  # "authorized" | "captured" | "declined" | "canceled"
    amount: int = 0
    decline_code: str = ""


@dataclass(frozen=True)
class ProviderEvent:
    """One event a provider sent us by webhook, normalized (payments applies it).

    kind: "authorization" (the result of an authorization), "capture", "cancel" (a void),
    "refund", "release" (a cancel by our reference, Adyen's technical cancel) or "other"
    (an event we record but do not act on). `reference` is our reference as the provider
    echoes it: the attempt id for an authorization, our operation id for a modification.
    """

    event_id: str  # unique per account and event: duplicates of a delivery share it
    kind: str
    success: bool
    reference: str
    provider_reference: str = ""  # the payment's id at the provider
    operation_reference: str = ""  # the capture's, void's or refund's id at the provider
    amount: int = 0
    currency: str = ""
    reason: str = ""  # the provider's text: refusal reason, failure reason
    decline_code: str = ""  # normalized (providers.outcomes) for a failed authorization
    raw_type: str = ""  # the provider's own event name, e.g. AUTHORISATION


class InvalidWebhook(Exception):
    """A webhook delivery we must refuse: unreadable (400) or not authentic (401).

    `authenticated`: the refusal comes after the delivery's signature verified. Only then may
    the receiver say what is wrong with it; before, any refusal would tell a stranger that the
    account exists, so the receiver answers it as it answers an unknown account."""

    def __init__(self, message: str, *, status: int = 400, authenticated: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.authenticated = authenticated


def webhook_json(body: bytes, *, authenticated: bool = False) -> Any:
    """A webhook delivery's JSON body; InvalidWebhook (400) for one that is not JSON."""
    try:
        return json.loads(body or b"")
    except (ValueError, RecursionError):
        raise InvalidWebhook("The body is not JSON.", authenticated=authenticated) from None


RELEASE_SUFFIX = "-release"


def release_reference(reference: str) -> str:
    """Our reference for the release of the authorization `reference` (its idempotency key
    too, and what the provider's webhook about it echoes)."""
    return reference + RELEASE_SUFFIX


class ProviderError(Exception):
    """Base of the adapter exception taxonomy."""

    code = "provider_error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        decline_code: str | None = None,
        raw_code: str = "",
        sent: bool = True,
    ):
        super().__init__(message or code or self.code)
        if code:
            self.code = code
        self.decline_code = decline_code  # set on declines: generic_decline, lost_card, …
        self.raw_code = raw_code  # the provider's own code, kept for the event log
        self.message = message or self.code
        # False only when the request provably never left this process or never reached the
        # provider (our breaker or limits refused it, the connection could not be made).
        # A provider's own "not processed" answer (a 503 with a retry-safe signal, a 429) is
        # sent: safe to fail an authorization over, but for a capture, void or refund it
        # proves too little, so they stay unknown and are looked up.
        self.sent = sent


class HardDecline(ProviderError):
    code = "card_declined"


class SoftDecline(ProviderError):
    code = "processing_error"


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"


class OutcomeUnknown(ProviderError):
    code = "outcome_unknown"


class ProviderBadRequest(ProviderError):
    code = "provider_bad_request"


class OperationRefused(ProviderBadRequest):
    """A capture, void or refund the provider says did not happen and will not: it refused
    it, or the payment is past it. The only answer from which a lookup concludes "not done";
    any other error of a lookup (a 4xx about our credentials, say) proves nothing."""

    code = "operation_refused"


class Adapter(Protocol):
    """Every provider adapter implements these operations."""

    def authorize(self, request: AuthorizeRequest) -> AuthorizeResult: ...

    def capture(self, request: ModificationRequest) -> ModificationResult: ...

    def cancel(self, request: ModificationRequest) -> ModificationResult: ...

    def refund(self, request: ModificationRequest) -> ModificationResult: ...

    def lookup(self, request: AuthorizeRequest) -> LookupResult:
        """Find out what became of an authorization, by our reference (request.reference).

        Takes the whole original request because some providers (Adyen) can only answer by
        an idempotent replay of it. Raises OutcomeUnknown when the provider cannot tell yet.
        """
        ...

    def lookup_modification(self, request: ModificationRequest) -> ModificationResult | None:
        """What became of the capture, void or refund with our reference
        (`request.reference`; `request.operation` says which): a result (pending if the
        provider has accepted it and confirms later), None if the provider has no such
        operation, OperationRefused if it refused it, OutcomeUnknown if it cannot tell."""
        ...

    # How long after a request a "not found" from `lookup` or `lookup_modification` proves
    # that the provider never processed it (its read-after-write consistency window, per
    # adapter and documented there); before that a not-found is treated as "cannot tell".
    not_found_proof_seconds: float

    # Optional: `release(request)` (Adyen) cancels whatever the provider holds under our
    # reference, for an authorization whose outcome the provider cannot tell us; it is
    # confirmed later by webhook (ProviderEvent kind "release"), whose reference is ours or
    # `release_reference(ours)`.
    # Optional: `reverse(request: ModificationRequest)` (Adyen) cancels an authorization or
    # refunds it in full if it was captured, whichever applies when the provider gets to it:
    # used to reverse an extra charge whose capture may still be under way.
    # Optional: `fetch_settlement(day: datetime.date) -> providers.settlement.SettlementReport`
    # fetches one UTC day's settlement report in the provider's own format (Stripe balance
    # transactions, Adyen's settlement details report, Checkout.com's Reconciliation API);
    # reconciliation calls it directly, not through the gateway: a report that cannot be
    # read must not count against the breaker that guards payments.

    def probe(self) -> None:
        """A cheap authenticated call for the health probe; raises a ProviderError if the
        provider is unreachable or refuses our credentials."""
        ...
