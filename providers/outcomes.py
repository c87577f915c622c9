"""Every provider's result and decline codes, normalized and classified — as data.

Adapters look codes up here and never decide in if-chains what a code means. Each row says
what the code means for us (`code`, `decline_code`, in Stripe's vocabulary, which merchants
know) and its class:

- approved:     the provider approved the request
- hard:         declined for good; never retried elsewhere (DESIGN.md)
- soft:         declined but nothing was charged and another provider may approve: safe to
                fail over
- unavailable:  the provider provably did not process the request: safe to fail over
- unknown:      the provider may have processed it: no failover, ask it later

Sources and the debatable calls are in docs/providers.md ("Decline codes → normalized") and
docs/operations/provider-features.md. A code missing from the table is a hard generic decline:
when in doubt, never charge elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.base import (
    HardDecline,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderError,
    ProviderUnavailable,
    SoftDecline,
)

APPROVED, HARD, SOFT, UNAVAILABLE, UNKNOWN = "approved", "hard", "soft", "unavailable", "unknown"


@dataclass(frozen=True)
class Outcome:
    kind: str
    code: str = ""  # our error code: card_declined, expired_card, processing_error, …
    decline_code: str = ""  # our decline code: insufficient_funds, lost_card, …


def _decline(kind: str, decline_code: str) -> Outcome:
    code = {
        "expired_card": "expired_card",
        "incorrect_number": "incorrect_number",
        "incorrect_cvc": "incorrect_cvc",
        "processing_error": "processing_error",
        "authentication_required": "authentication_required",
    }.get(decline_code, "card_declined")
    return Outcome(kind, code, decline_code)


def _rows(kind: str, mapping: dict[str, str]) -> dict[str, Outcome]:
    return {raw: _decline(kind, ours) for raw, ours in mapping.items()}


GENERIC_DECLINE = _decline(HARD, "generic_decline")

# --- decline codes, keyed by (provider, the provider's code) ------------------------------
_STRIPE = {
    **_rows(HARD, {c: c for c in (
        "insufficient_funds", "card_velocity_exceeded", "withdrawal_count_limit_exceeded",
        "lost_card", "stolen_card", "pickup_card", "fraudulent", "merchant_blacklist",
        "security_violation", "expired_card", "incorrect_number", "invalid_account",
        "restricted_card", "revocation_of_authorization", "revocation_of_all_authorizations",
        "stop_payment_order", "incorrect_cvc", "incorrect_zip", "transaction_not_allowed",
        "not_permitted", "service_not_allowed", "card_not_supported", "currency_not_supported",
        "do_not_honor", "generic_decline", "call_issuer", "do_not_try_again", "no_action_taken",
        "authentication_required", "duplicate_transaction", "testmode_decline",
    )}),
    **_rows(HARD, {"invalid_number": "incorrect_number", "invalid_cvc": "incorrect_cvc",
                   "invalid_expiry_month": "expired_card", "invalid_expiry_year": "expired_card",
                   "card_declined": "generic_decline"}),
    **_rows(SOFT, {c: c for c in (
        "processing_error", "issuer_not_available", "try_again_later", "reenter_transaction",
        "approve_with_id",
    )}),
}

# Adyen refusalReasonCode (numeric string). 24–38 are (unverified) numbers: the adapter also
# looks up the refusalReason text below.
_ADYEN = {
    **_rows(HARD, {
        "2": "generic_decline", "3": "call_issuer", "5": "restricted_card", "6": "expired_card",
        "7": "invalid_amount", "8": "incorrect_number", "10": "card_not_supported",
        "11": "authentication_required", "12": "insufficient_funds", "14": "fraudulent",
        "15": "generic_decline", "16": "generic_decline", "20": "fraudulent",
        "22": "fraudulent", "23": "transaction_not_allowed", "24": "incorrect_cvc",
        "25": "restricted_card", "26": "revocation_of_authorization",
        "27": "generic_decline", "28": "card_velocity_exceeded",
        "29": "withdrawal_count_limit_exceeded", "31": "fraudulent", "32": "incorrect_zip",
        "38": "authentication_required",
    }),
    **_rows(SOFT, {"4": "processing_error", "9": "issuer_not_available",
                   "21": "processing_error"}),
}
# Adyen refusalReason texts, for codes whose numbers are unverified.
_ADYEN_TEXT = {
    **_rows(HARD, {
        "Refused": "generic_decline", "Referral": "call_issuer", "Blocked Card": "restricted_card",
        "Expired Card": "expired_card", "Invalid Amount": "invalid_amount",
        "Invalid Card Number": "incorrect_number", "Not supported": "card_not_supported",
        "3D Not Authenticated": "authentication_required",
        "Not enough balance": "insufficient_funds", "Acquirer Fraud": "fraudulent",
        "FRAUD": "fraudulent", "FRAUD-CANCELLED": "fraudulent",
        "Transaction Not Permitted": "transaction_not_allowed", "CVC Declined": "incorrect_cvc",
        "Restricted Card": "restricted_card", "Revocation Of Auth": "revocation_of_authorization",
        "Declined Non Generic": "generic_decline", "Issuer Suspected Fraud": "fraudulent",
        "AVS Declined": "incorrect_zip", "Authentication required": "authentication_required",
        "Cancelled": "generic_decline", "Shopper Cancelled": "generic_decline",
    }),
    **_rows(SOFT, {"Acquirer Error": "processing_error", "Issuer Unavailable": "issuer_not_available",
                   "Not Submitted": "processing_error"}),
}
# The issuer's ISO 8583 response code at the start of Adyen's additionalData.refusalReasonRaw
# ("51 : Insufficient funds"): finer than refusalReasonCode where Adyen groups reasons.
_ISO8583 = {
    **_rows(HARD, {"05": "generic_decline", "41": "lost_card", "43": "stolen_card",
                   "51": "insufficient_funds", "54": "expired_card", "57": "transaction_not_allowed",
                   "59": "fraudulent", "61": "card_velocity_exceeded", "62": "restricted_card",
                   "65": "withdrawal_count_limit_exceeded", "14": "incorrect_number"}),
    **_rows(SOFT, {"91": "issuer_not_available", "96": "processing_error"}),
}

# Checkout.com response_code (5 characters).
_CHECKOUT = {
    **_rows(HARD, {
        "20001": "call_issuer", "20002": "call_issuer", "20005": "generic_decline",
        "20012": "transaction_not_allowed", "20014": "incorrect_number",
        "20051": "insufficient_funds", "20054": "expired_card",
        "20057": "transaction_not_allowed", "20059": "fraudulent",
        "20061": "card_velocity_exceeded", "20065": "withdrawal_count_limit_exceeded",
        "20062": "restricted_card", "20063": "security_violation", "20078": "restricted_card",
        "20082": "incorrect_cvc", "20154": "authentication_required", "200N7": "incorrect_cvc",
        "200R3": "stop_payment_order", "20179": "generic_decline", "20182": "generic_decline",
        "20183": "generic_decline", "30004": "pickup_card", "30015": "incorrect_number",
        "30041": "lost_card", "30043": "stolen_card",
    }),
    **_rows(SOFT, {"20003": "processing_error", "20068": "processing_error",
                   "20091": "issuer_not_available"}),
}
# Checkout.com ranges, for codes not listed one by one (10xxx approved, 40xxx risk, …).
_CHECKOUT_RANGES = {"10": Outcome(APPROVED), "20": GENERIC_DECLINE, "30": GENERIC_DECLINE,
                    "40": _decline(HARD, "fraudulent"), "50": GENERIC_DECLINE}

DECLINES: dict[tuple[str, str], Outcome] = {
    **{("stripe", k): v for k, v in _STRIPE.items()},
    **{("adyen", k): v for k, v in _ADYEN.items()},
    **{("adyen-text", k): v for k, v in _ADYEN_TEXT.items()},
    **{("iso8583", k): v for k, v in _ISO8583.items()},
    **{("checkout", k): v for k, v in _CHECKOUT.items()},
}

# --- result statuses, keyed by (provider, status) ---------------------------------------
RESULTS: dict[tuple[str, str], Outcome] = {
    # Stripe PaymentIntent.status after confirm
    ("stripe", "requires_capture"): Outcome(APPROVED),
    ("stripe", "succeeded"): Outcome(APPROVED),
    ("stripe", "processing"): Outcome(UNKNOWN),  # not final: ask again later
    ("stripe", "requires_action"): _decline(HARD, "authentication_required"),
    ("stripe", "canceled"): GENERIC_DECLINE,
    # Adyen resultCode
    ("adyen", "Authorised"): Outcome(APPROVED),
    ("adyen", "Pending"): Outcome(UNKNOWN),
    ("adyen", "Received"): Outcome(UNKNOWN),
    ("adyen", "Cancelled"): GENERIC_DECLINE,
    ("adyen", "RedirectShopper"): _decline(HARD, "authentication_required"),
    ("adyen", "IdentifyShopper"): _decline(HARD, "authentication_required"),
    ("adyen", "ChallengeShopper"): _decline(HARD, "authentication_required"),
    ("adyen", "PresentToShopper"): _decline(HARD, "authentication_required"),
    ("adyen", "PartiallyAuthorised"): GENERIC_DECLINE,  # we never accept partial approvals
    # Checkout.com payment status
    ("checkout", "Authorized"): Outcome(APPROVED),
    ("checkout", "Captured"): Outcome(APPROVED),
    ("checkout", "Card Verified"): Outcome(APPROVED),
    ("checkout", "Paid"): Outcome(APPROVED),
    ("checkout", "Pending"): Outcome(UNKNOWN),
    ("checkout", "Retry Scheduled"): Outcome(UNKNOWN),
}


def classify_decline(provider: str, code: str, *, text: str = "", raw: str = "") -> Outcome:
    """Normalize a decline. `text` (Adyen's refusalReason) and `raw` (Adyen's
    refusalReasonRaw, Checkout.com's response code) refine where the provider has them."""
    if provider == "adyen":
        iso = raw.split(":", 1)[0].strip() if raw else ""
        return (DECLINES.get(("iso8583", iso)) or DECLINES.get(("adyen", code))
                or DECLINES.get(("adyen-text", text)) or GENERIC_DECLINE)
    if provider == "checkout" and ("checkout", code) not in DECLINES:
        return _CHECKOUT_RANGES.get(code[:2], GENERIC_DECLINE)
    return DECLINES.get((provider, code), GENERIC_DECLINE)


def classify_result(provider: str, status: str) -> Outcome | None:
    """The outcome of a final result status, or None when the status is a decline (look the
    decline code up with `classify_decline`)."""
    return RESULTS.get((provider, status))


def http_outcome(status_code: int, *, not_processed: bool = False) -> Outcome:
    """What an HTTP error status means when the body carries no decline.

    5xx: the provider may have processed the request (unknown), unless it says it did not
    (`not_processed`: Adyen's `transient-error: true`, a 503 with the provider's own
    retry-safe signal), which makes it unavailable: safe to fail over.
    """
    if status_code >= 500:
        return Outcome(UNAVAILABLE, "provider_unavailable") if not_processed else Outcome(
            UNKNOWN, "outcome_unknown")
    if status_code == 409:  # the same idempotency key is still being processed: may charge
        return Outcome(UNKNOWN, "outcome_unknown")
    if status_code == 429:
        return Outcome(UNAVAILABLE, "provider_rate_limited")  # rejected before processing
    return Outcome(HARD, "provider_bad_request")


def error_for(outcome: Outcome, message: str, *, raw_code: str = "") -> ProviderError:
    """The adapter exception for a non-approved outcome."""
    error: type[ProviderError] = {
        HARD: HardDecline, SOFT: SoftDecline, UNAVAILABLE: ProviderUnavailable,
        UNKNOWN: OutcomeUnknown,
    }[outcome.kind]
    if outcome.code == "provider_bad_request":
        error = ProviderBadRequest
    return error(message, code=outcome.code or None, decline_code=outcome.decline_code or None,
                 raw_code=raw_code)


def raise_for(outcome: Outcome, message: str, *, raw_code: str = "") -> None:
    """Raise the adapter exception for a non-approved outcome."""
    if outcome.kind != APPROVED:
        raise error_for(outcome, message, raw_code=raw_code)
