"""The adapter contract: what Stripe, Adyen and Checkout.com share, once, parametrized over the
three adapters against their sandboxes (in-process, and over real HTTP at the end).

The operations, every test card of docs/api.md ("Sandbox test cards"), unknown outcomes,
idempotent replays, lookups and probes. Where a provider legitimately differs (Adyen confirms
modifications in a webhook; Checkout.com's 503 is an unknown outcome), the difference is a
field of its `Provider` below. Wire formats, auth, provider-specific error mappings, webhooks
and settlement reports are in test_stripe.py, test_adyen.py and test_checkout.py.

The sandbox ledger (`SandboxCharge`, `SandboxOperation`) is what the simulated provider
believes it has charged: the tests count charges there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection

from providers.adyen.adapter import AdyenAdapter
from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    AuthorizeResult,
    Card,
    HardDecline,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
    SoftDecline,
)
from providers.checkout.adapter import CheckoutAdapter
from providers.sandboxes import ledger
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS, app_for
from providers.sandboxes.models import (
    SandboxCharge,
    SandboxCondition,
    SandboxIdempotencyRecord,
    SandboxNotification,
    SandboxOperation,
)
from providers.stripe.adapter import StripeAdapter

APPROVED = ["4242424242424242", "5555555555554444", "378282246310005"]
# number → (exception, our code, our decline code), the same at every provider
DECLINES = {
    "4000000000000002": (HardDecline, "card_declined", "generic_decline"),
    "4000000000009995": (HardDecline, "card_declined", "insufficient_funds"),
    "4000000000000069": (HardDecline, "expired_card", "expired_card"),
    "4000000000009987": (HardDecline, "card_declined", "lost_card"),
    "4000000000000119": (SoftDecline, "processing_error", "processing_error"),
}


@dataclass(frozen=True)
class Provider:
    """One provider's adapter and where its sandbox legitimately differs from the others."""

    name: str
    adapter_class: type
    is_reference: Any  # the shape of its charge id
    brands: dict[str, str]  # first digit of the number → the brand its ledger records
    decline_raw_codes: dict[str, str]  # number → its raw code for the decline
    # card 0507 (503 before processing): ProviderUnavailable, or OutcomeUnknown where the
    # provider's 503 carries no "not processed" signal (Checkout.com, docs/api.md)
    unavailable_503: type[Exception]
    unavailable_raw_code: str
    # lookup of a request the provider never committed (card 0606): "not found", or unknown
    # where the lookup is a replay (Adyen has no read endpoint)
    never_committed_lookup: str
    modifications_pending: bool  # confirmed later (webhook / status lookup)
    in_flight_raw_code: str  # the same attempt while it is being processed
    # how each refused modification is refused: ("raises", raw code) synchronously, or
    # ("webhook", reason) accepted (pending) and refused in the provider's webhook
    refusals: dict[str, tuple[str, str]]

    def config(self, base_url: str = "sandbox://local", **fields) -> AccountConfig:
        return AccountConfig(**{"name": f"{self.name}-test", "provider": self.name,
                                "livemode": False, "base_url": base_url,
                                "credentials": dict(SANDBOX_CREDENTIALS[self.name]), **fields})

    def adapter(self, base_url: str = "sandbox://local", **fields):
        return self.adapter_class(self.config(base_url, **fields))


STRIPE = Provider(
    name="stripe", adapter_class=StripeAdapter,
    is_reference=lambda ref: ref.startswith("pi_"),
    brands={"4": "visa", "5": "mastercard", "3": "amex"},
    decline_raw_codes={"4000000000000002": "generic_decline",
                       "4000000000009995": "insufficient_funds",
                       "4000000000000069": "expired_card", "4000000000009987": "lost_card",
                       "4000000000000119": "processing_error"},
    unavailable_503=ProviderUnavailable, unavailable_raw_code="api_error",
    never_committed_lookup="not found", modifications_pending=False,
    in_flight_raw_code="idempotency_key_in_use",
    refusals={
        "capture nothing left": ("raises", "payment_intent_unexpected_state"),
        "capture more than authorized": ("raises", "amount_too_large"),
        "capture after cancel": ("raises", "payment_intent_unexpected_state"),
        "cancel after capture": ("raises", "payment_intent_unexpected_state"),
        "refund more than captured": ("raises", "amount_too_large"),
        "refund before capture": ("raises", "payment_intent_unexpected_state"),
        "refund after full refund": ("raises", "charge_already_refunded"),
        "unknown payment": ("raises", "resource_missing"),
    })
ADYEN = Provider(
    name="adyen", adapter_class=AdyenAdapter,
    is_reference=lambda ref: len(ref) == 16,
    brands={"4": "visa", "5": "mc", "3": "amex"},
    decline_raw_codes={"4000000000000002": "2", "4000000000009995": "12",
                       "4000000000000069": "6", "4000000000009987": "5",
                       "4000000000000119": "4"},
    unavailable_503=ProviderUnavailable, unavailable_raw_code="503",
    never_committed_lookup="unknown",
    modifications_pending=True, in_flight_raw_code="704",
    refusals={
        "capture nothing left": ("webhook", "cannot be captured"),
        "capture more than authorized": ("webhook", "exceeds"),
        "capture after cancel": ("webhook", "canceled"),
        "cancel after capture": ("webhook", "captured"),
        "refund more than captured": ("webhook", "exceeds"),
        "refund before capture": ("webhook", "only a captured charge"),
        "refund after full refund": ("webhook", "exceeds"),
        "unknown payment": ("raises", "167"),
    })
CHECKOUT = Provider(
    name="checkout", adapter_class=CheckoutAdapter,
    is_reference=lambda ref: ref.startswith("pay_"),
    brands={"4": "Visa", "5": "Mastercard", "3": "Amex"},
    decline_raw_codes={"4000000000000002": "20005", "4000000000009995": "20051",
                       "4000000000000069": "20054", "4000000000009987": "30041",
                       "4000000000000119": "20068"},
    unavailable_503=OutcomeUnknown, unavailable_raw_code="503",
    never_committed_lookup="not found",
    modifications_pending=True, in_flight_raw_code="409",
    refusals={
        "capture nothing left": ("raises", "403"),
        "capture more than authorized": ("raises", "422"),
        "capture after cancel": ("raises", "403"),
        "cancel after capture": ("raises", "403"),
        "refund more than captured": ("raises", "422"),
        "refund before capture": ("raises", "403"),
        "refund after full refund": ("raises", "422"),
        "unknown payment": ("raises", "404"),
    })
PROVIDERS = [STRIPE, ADYEN, CHECKOUT]


@pytest.fixture(params=PROVIDERS, ids=lambda p: p.name)
def provider(request, db) -> Provider:
    if request.param is ADYEN:  # Adyen answers modifications in webhooks: have them queued
        from providers.sandboxes import webhooks

        webhooks.register("adyen", SANDBOX_CREDENTIALS["adyen"]["merchant_account"],
                          "/provider_webhooks/x", "ab" * 32)
    return request.param


@pytest.fixture
def adapter(provider):
    return provider.adapter()


# --- helpers ----------------------------------------------------------------------------------
def auth(number: str = "4242424242424242", *, capture: bool = False, amount: int = 1050,
         currency: str = "USD", reference: str | None = None) -> AuthorizeRequest:
    brand = {"4": "visa", "5": "mastercard", "3": "amex"}[number[0]]
    card = Card(number=number, exp_month=3, exp_year=2030, brand=brand,
                cvc="7373" if number.startswith("3") else "737")
    return AuthorizeRequest(reference=reference or "att_" + uuid.uuid4().hex[:20],
                            amount=amount, currency=currency, card=card, capture=capture,
                            description="Order 1", holder_name="Jane Doe")


def mod(provider_reference: str, amount: int, operation: str = "",
        currency: str = "USD") -> ModificationRequest:
    return ModificationRequest(reference="op_" + uuid.uuid4().hex[:20],
                               provider_reference=provider_reference, amount=amount,
                               currency=currency, operation=operation)


def charges(provider: Provider):
    return SandboxCharge.objects.filter(provider=provider.name).order_by("id")


def operations(provider: Provider, kind: str):
    return SandboxOperation.objects.filter(charge__provider=provider.name, kind=kind)


def operation_reference(provider: Provider, authorization: str, kind: str) -> str:
    """The provider's id of a capture, void or refund: Stripe answers a capture or void with the
    PaymentIntent; the others (and Stripe's refunds) with an id of the operation itself."""
    if provider is STRIPE and kind in ("capture", "cancel"):
        return authorization
    [operation] = operations(provider, kind)
    assert operation.provider_reference != authorization
    return operation.provider_reference


def assert_refused(provider: Provider, situation: str, call) -> None:
    """The modification is refused, as this provider refuses it."""
    how, detail = provider.refusals[situation]
    if how == "raises":
        with pytest.raises(ProviderBadRequest) as caught:
            call()
        assert caught.value.raw_code == detail
        return
    result = call()  # Adyen: accepted (201 received), then refused in its webhook
    assert result.pending
    [item] = [item for item in _adyen_webhook_items()
              if item["pspReference"] == result.provider_reference]
    assert item["success"] == "false" and detail in item["reason"]


def _adyen_webhook_items() -> list[dict]:
    return [json.loads(n.body)["notificationItems"][0]["NotificationRequestItem"]
            for n in SandboxNotification.objects.order_by("id")]


# --- authorize --------------------------------------------------------------------------------
def test_authorize_manual_capture_leaves_an_authorization(provider, adapter):
    request = auth(amount=2500, currency="EUR")
    result = adapter.authorize(request)

    assert result.captured is False and provider.is_reference(result.provider_reference)
    charge = charges(provider).get()
    assert (charge.provider_reference, charge.reference, charge.status, charge.amount,
            charge.currency, charge.amount_captured) == (
        result.provider_reference, request.reference, "authorized", 2500, "EUR", 0)
    assert charge.metadata == {"switchyard_attempt": request.reference}


def test_authorize_automatic_capture_captures(provider, adapter):
    result = adapter.authorize(auth(capture=True, amount=999, currency="EUR"))

    assert result.captured is True
    charge = charges(provider).get()
    assert (charge.provider_reference, charge.status, charge.amount_captured,
            charge.currency) == (result.provider_reference, "captured", 999, "EUR")


@pytest.mark.parametrize("number", APPROVED)
def test_approved_test_cards(provider, adapter, number):
    result = adapter.authorize(auth(number))

    assert result.captured is False
    charge = charges(provider).get()
    assert (charge.provider_reference, charge.status) == (result.provider_reference,
                                                          "authorized")
    assert (charge.card_last4, charge.card_brand) == (number[-4:], provider.brands[number[0]])


@pytest.mark.parametrize("number", sorted(DECLINES))
def test_declining_test_cards(provider, adapter, number):
    error, code, decline_code = DECLINES[number]
    with pytest.raises(error) as caught:
        adapter.authorize(auth(number))

    assert type(caught.value) is error
    assert (caught.value.code, caught.value.decline_code, caught.value.raw_code) == (
        code, decline_code, provider.decline_raw_codes[number])
    assert number not in str(caught.value)
    charge = charges(provider).get()  # the provider keeps the declined attempt
    assert (charge.status, charge.decline_code) == ("declined", decline_code)


def test_card_0507_answers_503_before_processing_and_charges_nothing(provider, adapter):
    request = auth("4000000000000507")
    for _ in range(2):  # nothing is stored: the retry with the same key is processed again
        with pytest.raises(provider.unavailable_503) as caught:
            adapter.authorize(request)
        assert type(caught.value) is provider.unavailable_503
        assert caught.value.raw_code == provider.unavailable_raw_code

    assert not charges(provider).exists()
    assert not SandboxIdempotencyRecord.objects.filter(provider=provider.name,
                                                       key=request.reference).exists()
    if provider.never_committed_lookup == "not found":
        assert adapter.lookup(request) == LookupResult(found=False)


def test_card_0408_commits_then_drops_and_a_retry_replays_it(provider, adapter, settings):
    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    request = auth("4000000000000408")
    with pytest.raises(OutcomeUnknown):
        adapter.authorize(request)
    charge = charges(provider).get()
    assert charge.status == "authorized"

    found = adapter.lookup(request)
    assert found == LookupResult(found=True, provider_reference=charge.provider_reference,
                                 status="authorized", amount=1050)
    retried = adapter.authorize(request)  # the same attempt again: the provider replays it
    assert retried == AuthorizeResult(provider_reference=charge.provider_reference,
                                      captured=False)
    assert charges(provider).count() == 1


def test_card_0606_times_out_before_commit_and_nothing_is_charged(provider, adapter):
    request = auth("4000000000000606")
    with pytest.raises(OutcomeUnknown) as caught:
        adapter.authorize(request)

    assert caught.value.raw_code == "ReadTimeout"
    assert not charges(provider).exists()
    assert not SandboxIdempotencyRecord.objects.filter(provider=provider.name,
                                                       key=request.reference).exists()
    if provider.never_committed_lookup == "not found":
        assert adapter.lookup(request).found is False
    else:  # a replay that cannot tell either: still unknown, and still nothing charged
        with pytest.raises(OutcomeUnknown):
            adapter.lookup(request)
        assert not charges(provider).exists()


def test_retrying_an_authorization_replays_it(provider, adapter):
    request = auth()
    first = adapter.authorize(request)
    assert adapter.authorize(request) == first
    assert charges(provider).count() == 1


def test_soft_decline_rate_condition_declines_approving_cards_softly(provider, adapter):
    SandboxCondition.objects.create(provider=provider.name, soft_decline_rate=1.0)
    with pytest.raises(SoftDecline) as caught:
        adapter.authorize(auth())
    assert (caught.value.decline_code, caught.value.raw_code) == (
        "processing_error", provider.decline_raw_codes["4000000000000119"])


def test_card_data_never_reaches_the_logs(provider, adapter, caplog):
    caplog.set_level(logging.DEBUG)
    adapter.authorize(auth("4242424242424242"))
    with pytest.raises(HardDecline) as caught:
        adapter.authorize(auth("4000000000009995"))

    assert f"provider call provider={provider.name}" in caplog.text  # the calls are logged …
    assert "4242424242424242" not in caplog.text  # … without the card
    assert "4000000000009995" not in caplog.text and "4000000000009995" not in str(caught.value)
    assert not SandboxIdempotencyRecord.objects.filter(
        provider=provider.name, body__contains="4242424242424242").exists()


def test_calls_share_one_client_per_account_and_given_clients_stay_the_callers(
        provider, monkeypatch):
    """No client (and no connection) is built per call: every call on one account in this
    process goes through one client, kept open so its connections are kept alive. Another
    base URL or other timeouts get a client of their own; the old one is not closed under a
    call that may still use it. A client passed in belongs to the caller."""
    from providers import http as module

    created = []
    real = module.client_for

    def tracking(config):
        created.append(real(config))
        return created[-1]

    monkeypatch.setattr(module, "client_for", tracking)
    monkeypatch.setattr(module, "_clients", module._ClientCache())
    adapter = provider.adapter()
    result = adapter.authorize(auth())
    adapter.capture(mod(result.provider_reference, 1050))
    provider.adapter().probe()  # another adapter object of the same account
    assert len(created) == 1 and not created[0].is_closed

    provider.adapter(read_timeout=7.5).probe()
    provider.adapter(read_timeout=7.5).probe()
    assert len(created) == 2 and not created[0].is_closed and not created[1].is_closed
    assert created[1].timeout.read == 7.5

    given = real(provider.config())
    provider.adapter_class(provider.config(), client=given).probe()
    assert len(created) == 2
    assert not given.is_closed  # a client passed in belongs to the caller
    given.close()
    module._clients.close_all()
    assert all(client.is_closed for client in created)


# --- capture, cancel, refund ------------------------------------------------------------------
def test_capture_in_full(provider, adapter):
    authorization = adapter.authorize(auth())
    request = mod(authorization.provider_reference, 1050, "capture")
    result = adapter.capture(request)

    assert result.pending is provider.modifications_pending
    assert result.provider_reference == operation_reference(
        provider, authorization.provider_reference, "capture")
    charge = charges(provider).get()
    assert (charge.status, charge.amount_captured) == ("captured", 1050)
    assert adapter.lookup_modification(request) == ModificationResult(
        result.provider_reference, pending=provider is ADYEN)  # Adyen: the replay's 201


def test_partial_capture_releases_the_rest(provider, adapter):
    authorization = adapter.authorize(auth(amount=2000)).provider_reference
    adapter.capture(mod(authorization, 1500))

    charge = charges(provider).get()
    assert (charge.status, charge.amount_captured) == ("captured", 1500)
    assert_refused(provider, "capture nothing left",
                   lambda: adapter.capture(mod(authorization, 500)))
    assert ledger.get_charge(provider.name, authorization).amount_captured == 1500


def test_capture_beyond_the_authorization_or_of_an_unknown_payment_is_refused(provider,
                                                                             adapter):
    authorization = adapter.authorize(auth(amount=1000)).provider_reference
    assert_refused(provider, "capture more than authorized",
                   lambda: adapter.capture(mod(authorization, 1001)))
    unknown = {"stripe": "pi_doesnotexist", "adyen": "ABCDEFGHIJKLMNOP",
               "checkout": "pay_doesnotexist"}[provider.name]
    assert_refused(provider, "unknown payment", lambda: adapter.capture(mod(unknown, 100)))
    with pytest.raises(ProviderBadRequest):  # never put into a URL
        adapter.capture(mod(f"{unknown[:4]}/../../refunds", 100))
    assert ledger.get_charge(provider.name, authorization).status == "authorized"


def test_a_repeated_capture_with_the_same_reference_is_replayed_not_repeated(provider, adapter):
    authorization = adapter.authorize(auth()).provider_reference
    request = mod(authorization, 700)
    assert adapter.capture(request) == adapter.capture(request)
    assert operations(provider, "capture").count() == 1
    assert ledger.get_charge(provider.name, authorization).amount_captured == 700


def test_cancel_voids_the_authorization(provider, adapter):
    request = auth()
    authorization = adapter.authorize(request).provider_reference
    void = mod(authorization, 1050, "cancel")
    result = adapter.cancel(void)

    assert result.pending is provider.modifications_pending
    assert result.provider_reference == operation_reference(provider, authorization, "cancel")
    assert ledger.get_charge(provider.name, authorization).status == "canceled"
    if provider is not ADYEN:  # Adyen's lookup is a replay of the authorization: authorized
        assert adapter.lookup(request).status == "canceled"
    assert adapter.lookup_modification(void) == ModificationResult(
        result.provider_reference, pending=provider is ADYEN)
    assert_refused(provider, "capture after cancel",
                   lambda: adapter.capture(mod(authorization, 1050)))


def test_cancel_after_capture_is_refused(provider, adapter):
    authorization = adapter.authorize(auth(capture=True)).provider_reference
    assert_refused(provider, "cancel after capture",
                   lambda: adapter.cancel(mod(authorization, 1050)))
    assert ledger.get_charge(provider.name, authorization).status == "captured"


def test_refund_in_full(provider, adapter):
    authorization = adapter.authorize(auth(capture=True)).provider_reference
    request = mod(authorization, 1050, "refund")
    result = adapter.refund(request)

    assert result.pending is provider.modifications_pending
    assert result.provider_reference == operation_reference(provider, authorization, "refund")
    assert ledger.get_charge(provider.name, authorization).amount_refunded == 1050
    assert adapter.lookup_modification(request) == ModificationResult(
        result.provider_reference, pending=provider is ADYEN)
    assert_refused(provider, "refund after full refund",
                   lambda: adapter.refund(mod(authorization, 1)))
    assert ledger.get_charge(provider.name, authorization).amount_refunded == 1050


def test_several_partial_refunds_up_to_the_captured_amount(provider, adapter):
    authorization = adapter.authorize(auth(amount=1050)).provider_reference
    adapter.capture(mod(authorization, 1000))
    ids = [adapter.refund(mod(authorization, amount)).provider_reference
           for amount in (300, 200, 400)]

    assert len(set(ids)) == 3
    assert sorted(op.amount for op in operations(provider, "refund")) == [200, 300, 400]
    assert_refused(provider, "refund more than captured",
                   lambda: adapter.refund(mod(authorization, 101)))
    assert ledger.get_charge(provider.name, authorization).amount_refunded == 900
    assert operations(provider, "refund").count() == 3


def test_refund_before_capture_is_refused(provider, adapter):
    authorization = adapter.authorize(auth()).provider_reference
    assert_refused(provider, "refund before capture",
                   lambda: adapter.refund(mod(authorization, 100)))
    assert ledger.get_charge(provider.name, authorization).amount_refunded == 0


def test_a_repeated_refund_with_the_same_reference_refunds_once(provider, adapter):
    authorization = adapter.authorize(auth(capture=True)).provider_reference
    request = mod(authorization, 400)
    assert adapter.refund(request) == adapter.refund(request)
    assert operations(provider, "refund").count() == 1
    assert ledger.get_charge(provider.name, authorization).amount_refunded == 400


# --- lookup -----------------------------------------------------------------------------------
def test_lookup_finds_authorized_and_captured_charges(provider, adapter):
    manual, automatic = auth(amount=1234), auth(capture=True, amount=700)
    manual_result, automatic_result = adapter.authorize(manual), adapter.authorize(automatic)

    assert adapter.lookup(manual) == LookupResult(
        found=True, provider_reference=manual_result.provider_reference, status="authorized",
        amount=1234)
    assert adapter.lookup(automatic) == LookupResult(
        found=True, provider_reference=automatic_result.provider_reference, status="captured",
        amount=700)
    assert charges(provider).count() == 2  # looking up charged nothing more


@pytest.mark.parametrize("number,decline_code", [("4000000000009995", "insufficient_funds"),
                                                 ("4000000000000119", "processing_error")])
def test_lookup_reports_a_decline_with_its_code(provider, adapter, number, decline_code):
    request = auth(number)
    with pytest.raises((HardDecline, SoftDecline)):
        adapter.authorize(request)

    found = adapter.lookup(request)
    assert (found.found, found.status, found.decline_code) == (True, "declined", decline_code)
    assert found.provider_reference == charges(provider).get().provider_reference


def test_lookup_of_a_reference_never_sent(provider, adapter):
    adapter.authorize(auth())  # someone else's charge
    request = auth()
    found = adapter.lookup(request)
    if provider is ADYEN:
        # Adyen has no read endpoint: the lookup replays the request, which it processes now
        # (it never answers "not found"); the idempotency key keeps it to one charge
        again = adapter.lookup(request)
        assert found.found and found.status == "authorized"
        assert found.provider_reference == again.provider_reference == charges(
            provider).get(reference=request.reference).provider_reference
    else:
        assert found == LookupResult(found=False)


def test_lookup_modification_of_an_operation_never_sent(provider, adapter):
    authorization = adapter.authorize(auth(capture=True)).provider_reference
    request = mod(authorization, 100, "refund")
    if provider is ADYEN:  # a replay again: the refund is made now, once
        first, again = adapter.lookup_modification(request), adapter.lookup_modification(request)
        assert first == again and operations(provider, "refund").count() == 1
    else:
        assert adapter.lookup_modification(request) is None


# --- probe and conditions ---------------------------------------------------------------------
def test_probe(adapter):
    assert adapter.probe() is None


def test_probe_with_a_refused_key_is_an_error(provider):
    # Stripe and Checkout.com refuse an empty key before sending; Adyen sends it
    key, value = ("api_key", "") if provider is ADYEN else ("secret_key", " ")
    credentials = {**SANDBOX_CREDENTIALS[provider.name], key: value}
    with pytest.raises(ProviderBadRequest) as caught:  # 401 from the sandbox
        provider.adapter_class(provider.config(credentials=credentials)).probe()
    if provider is ADYEN:
        assert caught.value.raw_code == "000"


def test_an_outage_answers_before_processing(provider, adapter):
    SandboxCondition.objects.create(provider=provider.name, outage=True)
    with pytest.raises(provider.unavailable_503):
        adapter.authorize(auth())
    with pytest.raises(ProviderUnavailable):
        adapter.probe()
    assert not charges(provider).exists()


def test_latency_condition_is_applied(provider, adapter):
    SandboxCondition.objects.create(provider=provider.name, latency_ms=100)
    started = time.monotonic()
    adapter.probe()
    assert time.monotonic() - started >= 0.1


def test_connection_refused_is_unavailable(provider):
    from providers.sandboxes.server import make_server

    server = make_server(app_for(provider.name))
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    with pytest.raises(ProviderUnavailable):
        provider.adapter(f"http://127.0.0.1:{port}").authorize(auth())


# --- over real HTTP ---------------------------------------------------------------------------
@pytest.fixture
def http_provider(provider, serve_sandbox) -> tuple[Provider, str]:
    return provider, serve_sandbox(provider.name)


@pytest.mark.django_db(transaction=True)
def test_http_authorize_capture_refund_lookup_and_probe(http_provider):
    provider, url = http_provider
    adapter = provider.adapter(url)
    request = auth(amount=2000)
    authorization = adapter.authorize(request).provider_reference

    capture = adapter.capture(mod(authorization, 1500))
    refund = adapter.refund(mod(authorization, 400))

    assert capture.pending is refund.pending is provider.modifications_pending
    charge = charges(provider).get()
    assert (charge.provider_reference, charge.status, charge.amount_captured,
            charge.amount_refunded) == (authorization, "captured", 1500, 400)
    found = adapter.lookup(request)
    # Adyen's lookup replays the authorization: it reads as authorized; the others as captured
    assert (found.found, found.provider_reference, found.status) == (
        True, authorization, "authorized" if provider is ADYEN else "captured")
    adapter.probe()


@pytest.mark.django_db(transaction=True)
def test_http_decline_and_503(http_provider):
    provider, url = http_provider
    adapter = provider.adapter(url)
    with pytest.raises(HardDecline) as caught:
        adapter.authorize(auth("4000000000000002"))
    assert (caught.value.decline_code, caught.value.raw_code) == (
        "generic_decline", provider.decline_raw_codes["4000000000000002"])
    with pytest.raises(provider.unavailable_503):
        adapter.authorize(auth("4000000000000507"))
    assert charges(provider).filter(status="declined").count() == charges(provider).count() == 1


@pytest.mark.django_db(transaction=True)
def test_http_dropped_connection_after_commit_then_retry(http_provider, settings):
    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    provider, url = http_provider
    adapter = provider.adapter(url)
    request = auth("4000000000000408", capture=True)
    with pytest.raises(OutcomeUnknown) as caught:
        adapter.authorize(request)
    assert caught.value.raw_code == "RemoteProtocolError"  # a real dropped connection

    result = adapter.authorize(request)
    assert result.captured is True
    charge = charges(provider).get()
    assert result.provider_reference == charge.provider_reference
    assert adapter.lookup(request).provider_reference == charge.provider_reference
    assert charges(provider).count() == 1


@pytest.mark.django_db(transaction=True)
def test_http_timeout_before_commit(http_provider, settings):
    settings.SANDBOX_HANG_SECONDS = 1.0
    provider, url = http_provider
    request = auth("4000000000000606")
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as caught:
        provider.adapter(url, read_timeout=0.2).authorize(request)
    assert caught.value.raw_code == "ReadTimeout"
    assert time.monotonic() - started < 1.0  # the read timeout fired, not the end of the hang
    assert not charges(provider).exists()
    if provider.never_committed_lookup == "not found":
        assert provider.adapter(url).lookup(request).found is False


@pytest.mark.django_db(transaction=True)
def test_http_one_shared_client_serves_concurrent_calls(http_provider, monkeypatch):
    """The account's one client is shared by concurrent calls from several threads (its
    pool hands each its own connection): each gets its own answer, nothing is serialized
    into another call, and no thread builds a client of its own."""
    from providers import http as module
    from tests.threads import in_threads

    monkeypatch.setattr(module, "_clients", module._ClientCache())
    provider, url = http_provider
    adapter = provider.adapter(url)
    results = in_threads(6, lambda i: adapter.authorize(auth()))
    assert all(isinstance(result, AuthorizeResult) for result in results), results
    assert len({result.provider_reference for result in results}) == 6
    assert charges(provider).count() == 6
    assert len(module._clients._clients) == 1
    module._clients.close_all()


@pytest.mark.django_db(transaction=True)
def test_http_concurrent_duplicate_is_unknown_and_charges_once(http_provider, monkeypatch):
    provider, url = http_provider
    entered, release = threading.Event(), threading.Event()
    real_authorize = ledger.authorize

    def slow_authorize(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return real_authorize(*args, **kwargs)

    monkeypatch.setattr(ledger, "authorize", slow_authorize)
    adapter = provider.adapter(url)
    request = auth()
    first: dict = {}

    def run_first():
        try:
            first["result"] = adapter.authorize(request)
        except BaseException as exc:  # reported below
            first["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run_first, daemon=True)
    thread.start()
    try:
        assert entered.wait(10)
        with pytest.raises(OutcomeUnknown) as caught:  # the same attempt while it runs
            adapter.authorize(request)
        assert caught.value.raw_code == provider.in_flight_raw_code
    finally:
        release.set()
        thread.join(10)

    assert "error" not in first
    assert first["result"].provider_reference == charges(provider).get().provider_reference
    assert adapter.authorize(request) == first["result"]  # afterwards: the answer replayed
    assert charges(provider).count() == 1

