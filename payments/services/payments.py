"""Payment lifecycle services: create and confirm (the authorization loop itself is in
payments.services.authorization; capture and cancel in payments.services.modifications).

The pattern for every provider call, so that a crash or a race never charges twice:
1. in one short transaction, lock the payment, check its status, move it to `processing` and
   record what is about to be sent (a `PaymentAttempt`, whose id is the provider idempotency
   key);
2. call the provider outside any transaction (no row lock is held over the network);
3. in a second transaction, record the answer through the state machine.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from payments import state_machine as sm
from payments.errors import CardDeclined, InvalidRequest, ProviderFailed, StateConflict
from payments.events import EventType
from payments.models import (
    AttemptStatus,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentStatus,
)
from payments.services import authorization, idempotency
from payments.services.payment_methods import card_for_authorization, card_for_provider
from payments.services.provider_calls import CallKind, CallOutcome, merchant_message
from providers.base import AuthorizeResult, Card
from providers.models import ProviderAccount
from providers.registry import amount_problem
from providers.routing import engine as routing
from providers.routing.context import RoutingContext

logger = logging.getLogger(__name__)
S = PaymentStatus


# --- create -------------------------------------------------------------------------------
def payment_create(
    *,
    merchant: Merchant,
    livemode: bool,
    amount: int,
    currency: str,
    payment_method: PaymentMethod | None,
    capture_method: str = "automatic",
    description: str = "",
    reference: str = "",
    metadata: dict[str, Any] | None = None,
    provider: str | None = None,
    confirm: bool = False,
    cvc: str | None = None,
) -> Payment:
    account = None
    if provider is not None:
        account = ProviderAccount.objects.filter(
            merchant=merchant, livemode=livemode, name=provider
        ).first()
        if account is None:
            raise InvalidRequest(f"No provider account named {provider!r} in this mode.",
                                 code="provider_unknown", param="provider")
        if not account.enabled:
            raise InvalidRequest(f"Provider account {account.name!r} is disabled.",
                                 code="provider_disabled", param="provider")
    if confirm and payment_method is None:
        raise InvalidRequest("payment_method is required to confirm.", code="parameter_missing",
                             param="payment_method")
    to_confirm = payment_method if confirm else None
    # Decrypt before anything moves: a vault failure must leave nothing behind.
    decrypted = card_for_provider(to_confirm) if to_confirm is not None else None
    card: Card | None = None
    attempt: PaymentAttempt | None = None
    fields: dict[str, Any] = {
        "merchant": merchant, "livemode": livemode, "amount": amount, "currency": currency,
        "payment_method": payment_method, "capture_method": capture_method,
        "description": description, "reference": reference, "metadata": metadata or {},
        "provider_account": account, "pinned": account is not None}
    with transaction.atomic():
        # Creating and starting the confirmation is one transaction: a confirmation that
        # cannot start (no account to route to) rolls the payment back, so the 400 changes
        # nothing — which is what lets it be released from the Idempotency-Key.
        if to_confirm is not None and decrypted is not None:
            payment, card, attempt = _create_and_start(fields, to_confirm, decrypted,
                                                       actor="api", cvc=cvc)
        else:
            payment = sm.create_payment(**fields)
            idempotency.record_object(payment)
    if card is not None and attempt is not None:
        return _authorize(payment, card, attempt, actor="api")
    return payment


# --- confirm (authorize) ------------------------------------------------------------------
# Skip reasons that say "this account cannot take a payment right now" rather than "never":
# when they are all there is, the answer is 503 (try again soon), not 400.
_TRANSIENT_SKIPS = {"breaker_open", "rate_limited", "concurrency_limited"}


def _route(payment: Payment, pm: PaymentMethod | None
           ) -> tuple[ProviderAccount, dict[str, Any]]:
    """Pick the candidate accounts for this payment and say why (the routing record)."""
    if payment.pinned:
        account = payment.provider_account
        assert account is not None, payment.pk  # a pinned payment is created with its account
        if not account.enabled:
            raise InvalidRequest(f"Provider account {account.name!r} is disabled.",
                                 code="provider_disabled", param="provider")
        if not account.supports_currency(payment.currency):
            raise InvalidRequest(f"Provider account {account.name!r} does not support "
                                 f"{payment.currency}.", code="currency_unsupported",
                                 param="provider")
        problem = amount_problem(account.provider, payment.amount, payment.currency)
        if problem is not None:
            raise InvalidRequest(f"Provider account {account.name!r} cannot charge this "
                                 f"amount: {problem}", code=routing.AMOUNT_NOT_REPRESENTABLE,
                                 param="amount")
        return account, {"rule": None, "strategy": "pinned", "selected": account.name,
                         "candidates": [{"account": account.name, "score": None}],
                         "skipped": [], "order": [account.name]}
    address = ((pm.billing_details or {}).get("address") or {}) if pm else {}
    decision = routing.route(RoutingContext(
        merchant_id=payment.merchant_id, livemode=payment.livemode, amount=payment.amount,
        currency=payment.currency, card_brand=pm.brand if pm else None,
        card_bin=pm.bin if pm else None, billing_country=address.get("country") or None,
        metadata=payment.metadata or {}))
    if not decision.candidates:
        reasons = {skip["reason"] for skip in decision.record["skipped"]}
        if reasons and reasons <= _TRANSIENT_SKIPS:
            raise ProviderFailed("Every provider account that could take this payment is "
                                 "unavailable right now (circuit breaker or limit); nothing "
                                 "was charged. Try again shortly.", changed_nothing=True)
        if routing.AMOUNT_NOT_REPRESENTABLE in reasons and not reasons & _TRANSIENT_SKIPS:
            # Accounts take the currency, but not this amount in it: the amount is what to
            # change (another amount, not a retry later), so say which rule each one has.
            raise InvalidRequest(_unrepresentable_message(payment, decision.record),
                                 code=routing.AMOUNT_NOT_REPRESENTABLE, param="amount")
        raise InvalidRequest(
            f"No enabled provider account in this mode can take a {payment.currency} "
            "payment; add one with `manage.py provider_account add` or check the routing "
            "rules.", code="no_provider_account")
    names = [account.name for account in decision.candidates]
    return decision.candidates[0], {**decision.record, "selected": names[0], "order": names}


def _unrepresentable_message(payment: Payment, record: dict[str, Any]) -> str:
    accounts = {account.name: account for account in ProviderAccount.objects.filter(
        merchant_id=payment.merchant_id, livemode=payment.livemode)}
    problems = []
    for skip in record["skipped"]:
        account = accounts.get(skip["account"])
        if skip["reason"] == routing.AMOUNT_NOT_REPRESENTABLE and account is not None:
            problem = amount_problem(account.provider, payment.amount, payment.currency)
            problems.append(f"{account.name}: {(problem or '').rstrip('.')}")
    return (f"No provider account in this mode can charge an amount of {payment.amount} "
            f"{payment.currency} (in the currency's ISO 4217 minor unit): "
            + "; ".join(problems) + ". Round the amount to a unit the providers accept.")


def payment_confirm(*, payment: Payment, payment_method: PaymentMethod | None = None,
                    cvc: str | None = None, actor: str = "api") -> Payment:
    pm = payment_method or payment.payment_method
    if pm is None:
        raise InvalidRequest("payment_method is required to confirm.",
                             code="parameter_missing", param="payment_method")
    # Decrypt before the payment moves: a vault failure must leave it untouched, not stuck
    # in processing.
    decrypted = card_for_provider(pm)
    with transaction.atomic():
        card, attempt = _start_confirmation(payment, pm, decrypted, actor=actor, cvc=cvc)
        idempotency.record_object(payment)
    return _authorize(payment, card, attempt, actor=actor)


def _start_confirmation(payment: Payment, pm: PaymentMethod, card: Card, *, actor: str,
                        cvc: str | None = None) -> tuple[Card, PaymentAttempt]:
    """Lock, check, route, move to processing and record the first attempt (inside the
    caller's transaction, which `payment` is updated to); the card for the authorization,
    with its CVC (erased from the vault now, if kept there), and the attempt."""
    locked = sm.lock_payment(payment.pk)
    if locked.status != S.REQUIRES_CONFIRMATION:
        raise StateConflict(f"This payment is {locked.status}; only a payment that "
                            f"requires_confirmation can be confirmed.", changed_nothing=True)
    account, routing = _route(locked, pm)
    sm.transition_payment(
        locked, S.PROCESSING, event=EventType.CONFIRMED, actor=actor,
        updates={"payment_method": pm, "provider_account": account, "routing": routing},
        data={"candidates": routing["order"]},
    )
    card = card_for_authorization(card, pm, cvc=cvc)
    # the first candidate, in this transaction: routing just read it (enabled, in budget)
    attempt = authorization.start_attempt(locked, account, actor=actor)
    if payment is not locked:
        payment.__dict__.update(locked.__dict__)
    return card, attempt


def _create_and_start(fields: dict[str, Any], pm: PaymentMethod, card: Card, *, actor: str,
                      cvc: str | None) -> tuple[Payment, Card, PaymentAttempt]:
    """A new payment confirmed at once (inside the caller's transaction): routed first (on
    the payment as it is about to be created), then created in `processing` with its first
    attempt, as creating it and `_start_confirmation` would (sm.create_processing_payment)."""
    account, routing = _route(Payment(status=S.REQUIRES_CONFIRMATION, **fields), pm)
    payment, attempt = sm.create_processing_payment(
        **{name: value for name, value in fields.items() if name != "provider_account"},
        account=account, routing=routing, actor=actor,
        confirmed={"candidates": routing["order"]},
        attempt_fields=authorization.first_attempt_fields())
    idempotency.record_object(payment)
    return payment, card_for_authorization(card, pm, cvc=cvc), attempt


def _authorize(payment: Payment, card: Card, attempt: PaymentAttempt, *,
               actor: str) -> Payment:
    payment, outcome = authorization.authorize(payment, card, actor=actor, started=attempt)
    return raise_for_failure(payment, outcome)


def raise_for_failure(payment: Payment,
                      outcome: CallOutcome[AuthorizeResult] | None) -> Payment:
    """The API's answer for a payment that just failed: 402 for a decline, 503 when no
    provider could process it (nothing charged); the payment itself otherwise."""
    if payment.status != S.FAILED or outcome is None:
        return payment
    if outcome.kind == CallKind.DECLINED:
        error = outcome.failure
        raise CardDeclined(merchant_message(error), code=error.code,
                           decline_code=error.decline_code, payment=payment)
    raise ProviderFailed("No provider could process the payment; nothing was charged.",
                         payment=payment)


def raise_for_recorded_failure(payment: Payment) -> Payment:
    """`raise_for_failure` from what a failed payment records rather than from a provider's
    answer in hand: the answer to a request that ended without its process (an
    Idempotency-Key recovered after it died; status sync may have finished the payment)."""
    if payment.status != S.FAILED:
        return payment
    last_attempt = payment.attempts.last()
    if last_attempt is not None and last_attempt.status == AttemptStatus.DECLINED:
        error = payment.last_error or {}
        raise CardDeclined(error.get("message") or "The card was declined.",
                           code=error.get("code") or "card_declined",
                           decline_code=error.get("decline_code"), payment=payment)
    raise ProviderFailed("No provider could process the payment; nothing was charged.",
                         payment=payment)
