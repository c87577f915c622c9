"""The Adyen adapter against its sandbox: in-process (httpx → WSGI), over real HTTP, and the
sandbox's own wire behaviour (auth, idempotency, faults, settlement report).

The sandbox ledger (`SandboxCharge`, `SandboxOperation`) is what the simulated provider
believes it has charged: the tests count charges there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from datetime import UTC

import httpx
import pytest
from django.db import connection

from providers.adyen.adapter import (
    AdyenAdapter,
    SettlementLine,
    idempotency_key,
    parse_settlement_report,
)
from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    Card,
    HardDecline,
    ModificationRequest,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
    SoftDecline,
)
from providers.ids import new_id
from providers.sandboxes import adyen as sandbox
from providers.sandboxes import ledger
from providers.sandboxes.catalog import BASE_PATHS, SANDBOX_CREDENTIALS
from providers.sandboxes.models import (
    SandboxCharge,
    SandboxCondition,
    SandboxIdempotencyRecord,
    SandboxOperation,
)
from providers.sandboxes.server import make_server
from providers.sandboxes.transport import SANDBOX_HOST, SandboxTransport

pytestmark = pytest.mark.django_db

CREDENTIALS = SANDBOX_CREDENTIALS["adyen"]
CONFIG = AccountConfig(name="adyen-test", provider="adyen", livemode=False,
                       base_url="sandbox://local", credentials=CREDENTIALS)
KEY_HEADERS = {"X-API-Key": CREDENTIALS["api_key"]}

APPROVED = ["4242424242424242", "5555555555554444", "378282246310005"]
# number → (exception, error code, decline code, Adyen refusalReasonCode)
DECLINES = {
    "4000000000000002": (HardDecline, "card_declined", "generic_decline", "2"),
    "4000000000009995": (HardDecline, "card_declined", "insufficient_funds", "12"),
    "4000000000000069": (HardDecline, "expired_card", "expired_card", "6"),
    "4000000000009987": (HardDecline, "card_declined", "lost_card", "5"),
    "4000000000000119": (SoftDecline, "processing_error", "processing_error", "4"),
}


def make_request(number: str = "4242424242424242", *, capture: bool = False,
                 amount: int = 1050, currency: str = "USD", reference: str | None = None,
                 cvc: str | None = "737", holder_name: str = "Jane Doe") -> AuthorizeRequest:
    brand = "amex" if number.startswith("3") else "mastercard" if number.startswith("5") \
        else "visa"
    return AuthorizeRequest(
        reference=reference or new_id("att"), amount=amount, currency=currency,
        card=Card(number=number, exp_month=3, exp_year=2030, brand=brand, cvc=cvc),
        capture=capture, holder_name=holder_name)


def modification(psp: str, amount: int, *, currency: str = "USD",
                 reference: str | None = None) -> ModificationRequest:
    return ModificationRequest(reference=reference or new_id("mod"), provider_reference=psp,
                               amount=amount, currency=currency)


def adapter(config: AccountConfig = CONFIG, client: httpx.Client | None = None) -> AdyenAdapter:
    return AdyenAdapter(config, client=client)


def charges() -> list[SandboxCharge]:
    return list(SandboxCharge.objects.filter(provider="adyen").order_by("id"))


@pytest.fixture
def webhooks():
    """The sandbox's webhook endpoint for our merchant account; returns a function giving the
    queued items of one event code."""
    from providers.sandboxes import webhooks as sandbox_webhooks
    from providers.sandboxes.models import SandboxNotification

    sandbox_webhooks.register("adyen", CREDENTIALS["merchant_account"], "/provider_webhooks/x",
                              "ab" * 32)

    def items(event_code: str) -> list[dict]:
        return [json.loads(n.body)["notificationItems"][0]["NotificationRequestItem"]
                for n in SandboxNotification.objects.filter(event_code=event_code)
                .order_by("id")]
    return items


def refused_in_webhook(result, items: list[dict], reason: str) -> None:
    """Adyen accepted the modification (201, pending) and refused it in its webhook."""
    assert result.pending
    [item] = [i for i in items if i["pspReference"] == result.provider_reference]
    assert item["success"] == "false" and reason in item["reason"]


def wire() -> httpx.Client:
    """A raw client to the in-process sandbox, for wire-level checks."""
    return httpx.Client(base_url=SANDBOX_HOST, transport=SandboxTransport(sandbox.app))


def payment_body(number: str = "4242424242424242", reference: str | None = None,
                 **extra) -> dict:
    return {
        "merchantAccount": CREDENTIALS["merchant_account"],
        "reference": reference or new_id("att"),
        "amount": {"value": 1050, "currency": "USD"},
        "paymentMethod": {"type": "scheme", "number": number, "expiryMonth": "03",
                          "expiryYear": "2030", "cvc": "737", "holderName": "Jane Doe"},
        "returnUrl": "https://merchant.example/return",
        "shopperInteraction": "Ecommerce",
        "authenticationData": {"attemptAuthentication": "never"},
        **extra,
    }


class Recording(SandboxTransport):
    """The in-process sandbox transport, keeping every request the adapter sent."""

    def __init__(self):
        super().__init__(sandbox.app)
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


def recording_client() -> tuple[httpx.Client, Recording]:
    transport = Recording()
    return httpx.Client(base_url=SANDBOX_HOST + BASE_PATHS["adyen"],
                        transport=transport), transport


# --- authorize ----------------------------------------------------------------------------
@pytest.mark.parametrize("number", APPROVED)
def test_authorize_manual_capture_leaves_an_authorisation(number):
    request = make_request(number, capture=False)

    result = adapter().authorize(request)

    [charge] = charges()
    assert result.provider_reference == charge.provider_reference
    assert len(result.provider_reference) == 16 and not result.captured
    assert (charge.status, charge.amount, charge.currency, charge.reference) == (
        "authorized", 1050, "USD", request.reference)
    assert charge.card_last4 == number[-4:]
    assert charge.card_brand == {"4": "visa", "5": "mc", "3": "amex"}[number[0]]
    assert charge.metadata == {"switchyard_attempt": request.reference}


def test_authorize_automatic_capture_captures():
    result = adapter().authorize(make_request(capture=True, amount=999, currency="EUR"))

    [charge] = charges()
    assert result.captured and result.provider_reference == charge.provider_reference
    assert (charge.status, charge.amount_captured, charge.currency) == ("captured", 999, "EUR")


@pytest.mark.parametrize("number", sorted(DECLINES))
def test_declines_map_to_the_normalized_codes(number):
    error, code, decline_code, adyen_code = DECLINES[number]

    with pytest.raises(error) as raised:
        adapter().authorize(make_request(number))

    assert type(raised.value) is error
    assert (raised.value.code, raised.value.decline_code) == (code, decline_code)
    assert raised.value.raw_code == adyen_code
    [charge] = charges()
    assert charge.status == "declined"


def test_card_0507_is_unavailable_and_nothing_is_charged_or_stored():
    request = make_request("4000000000000507")

    for _ in range(2):  # not stored: the retry with the same key is processed again
        with pytest.raises(ProviderUnavailable) as raised:
            adapter().authorize(request)
        assert raised.value.raw_code == "503"

    assert charges() == []
    assert not SandboxIdempotencyRecord.objects.filter(provider="adyen").exists()


def test_card_0408_commits_then_drops_and_a_retry_with_the_same_reference_replays(settings):


    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)


    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    request = make_request("4000000000000408")

    with pytest.raises(OutcomeUnknown):
        adapter().authorize(request)
    [charge] = charges()
    assert charge.status == "authorized"

    retried = adapter().authorize(request)

    assert retried.provider_reference == charge.provider_reference
    assert len(charges()) == 1


def test_card_0606_times_out_before_commit_and_nothing_is_charged():
    with pytest.raises(OutcomeUnknown) as raised:
        adapter().authorize(make_request("4000000000000606"))

    assert raised.value.raw_code == "ReadTimeout"
    assert charges() == []
    assert not SandboxIdempotencyRecord.objects.filter(provider="adyen").exists()


def test_holder_name_trigger_word_forces_the_refusal():
    with pytest.raises(HardDecline) as raised:
        adapter().authorize(make_request(holder_name="NOT_ENOUGH_BALANCE"))

    assert raised.value.decline_code == "insufficient_funds"
    [charge] = charges()
    assert charge.card_last4 == "4242"


def test_soft_decline_rate_condition_soft_declines_approving_cards():
    SandboxCondition.objects.create(provider="adyen", soft_decline_rate=1.0)

    with pytest.raises(SoftDecline) as raised:
        adapter().authorize(make_request())

    assert raised.value.decline_code == "processing_error"


def test_authorize_sends_adyens_wire_format():
    client, transport = recording_client()
    request = make_request(capture=False, cvc="737")

    adapter(client=client).authorize(request)

    [sent] = transport.requests
    assert sent.method == "POST" and sent.url.path == "/v71/payments"
    assert sent.headers["X-API-Key"] == CREDENTIALS["api_key"]
    assert sent.headers["Idempotency-Key"] == request.reference
    assert sent.headers["Content-Type"] == "application/json"
    body = httpx.Response(200, content=sent.content).json()
    assert body == {
        "merchantAccount": CREDENTIALS["merchant_account"],
        "reference": request.reference,
        "amount": {"value": 1050, "currency": "USD"},
        "paymentMethod": {"type": "scheme", "number": "4242424242424242",
                          "expiryMonth": "03", "expiryYear": "2030", "cvc": "737",
                          "holderName": "Jane Doe"},
        "returnUrl": "https://switchyard.invalid/adyen/return",
        "shopperInteraction": "Ecommerce",
        "authenticationData": {"attemptAuthentication": "never"},
        "additionalData": {"manualCapture": "true"},
        "metadata": {"switchyard_attempt": request.reference},
    }
    assert not client.is_closed  # a client the caller gave is the caller's to close


def test_automatic_capture_omits_manual_capture_and_cvc_is_optional():
    client, transport = recording_client()

    adapter(client=client).authorize(make_request(capture=True, cvc=None, holder_name=""))

    body = httpx.Response(200, content=transport.requests[0].content).json()
    assert "additionalData" not in body
    assert "cvc" not in body["paymentMethod"] and "holderName" not in body["paymentMethod"]


def test_adapter_closes_the_clients_it_creates(monkeypatch):
    from providers import http as module

    created = []
    real_client_for = module.client_for

    def tracking_client_for(config):
        created.append(real_client_for(config))
        return created[-1]

    monkeypatch.setattr(module, "client_for", tracking_client_for)
    instance = adapter()
    result = instance.authorize(make_request())
    instance.capture(modification(result.provider_reference, 1050))
    instance.probe()

    assert len(created) == 3 and all(client.is_closed for client in created)


def test_card_data_never_reaches_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    number = "4000000000009995"

    with pytest.raises(HardDecline) as raised:
        adapter().authorize(make_request(number))
    adapter().authorize(make_request("4242424242424242"))

    assert "provider call provider=adyen" in caplog.text  # the call was logged …
    assert number not in caplog.text and "4242424242424242" not in caplog.text  # … not the card
    assert number not in str(raised.value)


def test_idempotency_key_fits_adyens_64_characters():
    assert idempotency_key("att_abc") == "att_abc"
    long = "x" * 65
    assert len(idempotency_key(long)) == 64
    assert idempotency_key(long) == idempotency_key(long) != idempotency_key("y" * 65)


# --- capture, cancel, refund ----------------------------------------------------------------
def test_full_capture_is_pending_until_adyen_confirms():
    instance = adapter()
    auth = instance.authorize(make_request())

    result = instance.capture(modification(auth.provider_reference, 1050))

    assert result.pending
    [operation] = SandboxOperation.objects.filter(kind="capture")
    assert result.provider_reference == operation.provider_reference != auth.provider_reference
    [charge] = charges()
    assert (charge.status, charge.amount_captured) == ("captured", 1050)


def test_partial_capture_releases_the_remainder(webhooks):
    instance = adapter()
    auth = instance.authorize(make_request(amount=2000))

    instance.capture(modification(auth.provider_reference, 1500))

    [charge] = charges()
    assert (charge.status, charge.amount_captured) == ("captured", 1500)
    # the rest was released: a second capture is accepted, then refused in the webhook
    second = instance.capture(modification(auth.provider_reference, 500))
    refused_in_webhook(second, webhooks("CAPTURE"), "cannot be captured")
    charge.refresh_from_db()
    assert charge.amount_captured == 1500


def test_capture_above_the_authorised_amount_is_refused_in_the_webhook(webhooks):
    instance = adapter()
    auth = instance.authorize(make_request(amount=1000))

    result = instance.capture(modification(auth.provider_reference, 1001))

    refused_in_webhook(result, webhooks("CAPTURE"), "exceeds")
    assert charges()[0].status == "authorized"


def test_modification_sends_adyens_wire_format():
    client, transport = recording_client()
    instance = adapter(client=client)
    auth = instance.authorize(make_request())
    request = modification(auth.provider_reference, 700)

    instance.capture(request)
    instance.refund(modification(auth.provider_reference, 200, reference="re_1"))
    other = instance.authorize(make_request())
    instance.cancel(modification(other.provider_reference, 1050, reference="void_1"))

    captured, refunded, _, cancelled = transport.requests[1:]
    assert captured.url.path == f"/v71/payments/{auth.provider_reference}/captures"
    assert captured.headers["Idempotency-Key"] == request.reference
    assert httpx.Response(200, content=captured.content).json() == {
        "merchantAccount": CREDENTIALS["merchant_account"], "reference": request.reference,
        "amount": {"value": 700, "currency": "USD"}}
    assert refunded.url.path.endswith("/refunds")
    assert refunded.headers["Idempotency-Key"] == "re_1"
    assert cancelled.url.path.endswith("/cancels")
    assert httpx.Response(200, content=cancelled.content).json() == {
        "merchantAccount": CREDENTIALS["merchant_account"], "reference": "void_1"}


def test_cancel_voids_the_authorisation(webhooks):
    instance = adapter()
    auth = instance.authorize(make_request())

    result = instance.cancel(modification(auth.provider_reference, 1050))

    assert result.pending and result.provider_reference != auth.provider_reference
    assert charges()[0].status == "canceled"
    [cancellation] = webhooks("CANCELLATION")
    assert (cancellation["success"], cancellation["pspReference"]) == (
        "true", result.provider_reference)
    late = instance.capture(modification(auth.provider_reference, 1050))
    refused_in_webhook(late, webhooks("CAPTURE"), "canceled")


def test_full_refund():
    instance = adapter()
    auth = instance.authorize(make_request(capture=True))

    result = instance.refund(modification(auth.provider_reference, 1050))

    assert result.pending
    [charge] = charges()
    assert charge.amount_refunded == 1050
    [operation] = SandboxOperation.objects.filter(kind="refund")
    assert operation.provider_reference == result.provider_reference


def test_several_partial_refunds_never_exceed_the_capture(webhooks):
    instance = adapter()
    auth = instance.authorize(make_request(capture=True, amount=1000))

    first = instance.refund(modification(auth.provider_reference, 300))
    second = instance.refund(modification(auth.provider_reference, 600))
    third = instance.refund(modification(auth.provider_reference, 101))

    refused_in_webhook(third, webhooks("REFUND"), "exceeds")
    assert [i["success"] for i in webhooks("REFUND")] == ["true", "true", "false"]
    assert first.provider_reference != second.provider_reference
    assert charges()[0].amount_refunded == 900
    assert SandboxOperation.objects.filter(kind="refund").count() == 2


def test_refund_of_an_uncaptured_authorisation_is_refused_in_the_webhook(webhooks):
    # as at Adyen: 201 received, then the REFUND webhook says success "false"
    instance = adapter()
    auth = instance.authorize(make_request())

    result = instance.refund(modification(auth.provider_reference, 100))

    refused_in_webhook(result, webhooks("REFUND"), "only a captured charge")
    assert charges()[0].amount_refunded == 0


def test_modification_retried_with_the_same_reference_happens_once():
    instance = adapter()
    auth = instance.authorize(make_request(capture=True))
    request = modification(auth.provider_reference, 400, reference="re_" + "r" * 67)

    first = instance.refund(request)  # a 70-character reference: hashed into the key
    again = instance.refund(request)

    assert first == again
    assert SandboxOperation.objects.filter(kind="refund").count() == 1
    assert charges()[0].amount_refunded == 400


def test_modification_of_an_unknown_payment():
    with pytest.raises(ProviderBadRequest) as raised:
        adapter().capture(modification("ABCDEFGHIJKLMNOP", 100))

    assert raised.value.raw_code == "167"


# --- lookup -------------------------------------------------------------------------------
def test_lookup_finds_an_authorisation():
    request = make_request()
    auth = adapter().authorize(request)

    found = adapter().lookup(request)

    assert (found.found, found.provider_reference, found.status, found.amount) == (
        True, auth.provider_reference, "authorized", 1050)
    assert len(charges()) == 1


def test_lookup_finds_a_capture_without_the_cvc():
    request = make_request(capture=True)
    auth = adapter().authorize(request)
    without_cvc = make_request(capture=True, reference=request.reference, cvc=None)

    found = adapter().lookup(without_cvc)  # the CVC is never persisted: the replay lacks it

    assert (found.found, found.provider_reference, found.status) == (
        True, auth.provider_reference, "captured")
    assert len(charges()) == 1


@pytest.mark.parametrize("number,decline_code", [("4000000000009995", "insufficient_funds"),
                                                 ("4000000000000119", "processing_error")])
def test_lookup_finds_a_decline(number, decline_code):
    request = make_request(number)
    with pytest.raises((HardDecline, SoftDecline)):
        adapter().authorize(request)

    found = adapter().lookup(request)

    assert (found.found, found.status, found.decline_code) == (True, "declined", decline_code)
    assert found.provider_reference == charges()[0].provider_reference


def test_lookup_after_a_dropped_connection_finds_the_charge(settings):


    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)


    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    request = make_request("4000000000000408")
    with pytest.raises(OutcomeUnknown):
        adapter().authorize(request)

    found = adapter().lookup(request)

    assert found.found and found.status == "authorized"
    assert found.provider_reference == charges()[0].provider_reference
    assert len(charges()) == 1


def test_lookup_of_a_request_adyen_never_processed_processes_it_now():
    # Adyen has no read endpoint: the replay of a request it never received is processed as
    # new. It therefore never answers "not found"; the key keeps it to one charge.
    request = make_request()

    found = adapter().lookup(request)
    again = adapter().lookup(request)

    [charge] = charges()
    assert found.found and found.status == "authorized"
    assert found.provider_reference == again.provider_reference == charge.provider_reference


def test_lookup_of_card_0606_stays_unknown_and_charges_nothing():
    request = make_request("4000000000000606")
    with pytest.raises(OutcomeUnknown):
        adapter().authorize(request)

    with pytest.raises(OutcomeUnknown):
        adapter().lookup(request)

    assert charges() == []


@pytest.mark.parametrize("condition", [{"outage": True}, None])
def test_lookup_that_cannot_replay_is_unknown(condition):
    # an outage, or card 0507 whose replay answers 503 again: no result to read either way
    request = make_request("4242424242424242" if condition else "4000000000000507")
    if condition:
        SandboxCondition.objects.create(provider="adyen", **condition)

    with pytest.raises(OutcomeUnknown):
        adapter().lookup(request)

    assert charges() == []


# --- probe, errors --------------------------------------------------------------------------
def test_probe():
    client, transport = recording_client()

    adapter(client=client).probe()

    [sent] = transport.requests
    assert sent.url.path == "/v71/paymentMethods"
    assert httpx.Response(200, content=sent.content).json() == {
        "merchantAccount": CREDENTIALS["merchant_account"]}


@pytest.mark.parametrize("credentials,code", [
    ({"api_key": "", "merchant_account": "SwitchyardSandbox"}, "000"),
    ({"api_key": "k", "merchant_account": ""}, "901"),
])
def test_probe_with_bad_credentials(credentials, code):
    config = AccountConfig(name="adyen-bad", provider="adyen", livemode=False,
                           base_url="sandbox://local", credentials=credentials)

    with pytest.raises(ProviderBadRequest) as raised:
        adapter(config).probe()

    assert raised.value.raw_code == code


def test_outage_is_unavailable_for_every_call():
    SandboxCondition.objects.create(provider="adyen", outage=True)
    instance = adapter()

    with pytest.raises(ProviderUnavailable):
        instance.authorize(make_request())
    with pytest.raises(ProviderUnavailable):
        instance.probe()

    assert charges() == []


def test_latency_condition_is_applied():
    SandboxCondition.objects.create(provider="adyen", latency_ms=300)

    started = time.monotonic()
    adapter().probe()

    assert time.monotonic() - started >= 0.3


def _mock_adapter(handler) -> AdyenAdapter:
    client = httpx.Client(base_url="https://checkout-test.adyen.com/v71",
                          transport=httpx.MockTransport(handler))
    return adapter(client=client)


@pytest.mark.parametrize("status,headers,body,error,raw_code", [
    (500, {}, {"status": 500, "errorCode": "905", "message": "x", "errorType": "internal"},
     OutcomeUnknown, "905"),
    (503, {"transient-error": "true"},
     {"status": 503, "errorCode": "703", "message": "x", "errorType": "internal"},
     ProviderUnavailable, "703"),
    (502, {}, None, OutcomeUnknown, "502"),
    (429, {}, {"status": 429, "errorCode": "429", "message": "x", "errorType": "validation"},
     ProviderUnavailable, "429"),
    (409, {"transient-error": "true"},
     {"status": 409, "errorCode": "704", "message": "in progress", "errorType": "validation"},
     OutcomeUnknown, "704"),
    (422, {}, {"status": 422, "errorCode": "14_030", "message": "Return URL is missing.",
               "errorType": "validation"}, ProviderBadRequest, "14_030"),
    (200, {}, "not json", OutcomeUnknown, "200"),
    (200, {}, {"resultCode": "Pending", "pspReference": "P", "merchantReference": "R"},
     OutcomeUnknown, ""),
    (200, {}, {"resultCode": "Authorised"}, OutcomeUnknown, ""),
])
def test_adyen_answers_map_to_safe_outcomes(status, headers, body, error, raw_code):
    def handler(request):
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    with pytest.raises(error) as raised:
        _mock_adapter(handler).authorize(make_request(reference="R"))

    assert type(raised.value) is error
    if raw_code:
        assert raised.value.raw_code == raw_code


def test_redirect_result_is_a_hard_authentication_decline():
    def handler(request):
        return httpx.Response(200, json={"resultCode": "RedirectShopper", "pspReference": "P",
                                         "action": {"type": "redirect"}})

    with pytest.raises(HardDecline) as raised:
        _mock_adapter(handler).authorize(make_request())

    assert raised.value.decline_code == "authentication_required"


def test_connection_refused_is_unavailable():
    server = make_server(sandbox.app)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    config = AccountConfig(name="adyen-down", provider="adyen", livemode=False,
                           base_url=f"http://127.0.0.1:{port}/v71", credentials=CREDENTIALS)

    with pytest.raises(ProviderUnavailable):
        adapter(config).authorize(make_request())


# --- the sandbox on the wire ------------------------------------------------------------------
def test_sandbox_requires_an_api_key():
    response = wire().post("/v71/payments", json=payment_body())

    assert response.status_code == 401
    error = response.json()
    assert (error["status"], error["errorCode"], error["errorType"]) == (401, "000", "security")
    assert charges() == []


def test_sandbox_answers_refusals_with_http_200():
    response = wire().post("/v71/payments", json=payment_body("4000000000009995"),
                           headers=KEY_HEADERS)

    assert response.status_code == 200
    body = response.json()
    assert (body["resultCode"], body["refusalReasonCode"], body["refusalReason"]) == (
        "Refused", "12", "Not enough balance")
    assert body["additionalData"]["refusalReasonRaw"] == "51 : Insufficient funds"
    assert len(body["pspReference"]) == 16


def test_sandbox_acquirer_error_for_card_0119():
    body = wire().post("/v71/payments", json=payment_body("4000000000000119"),
                       headers=KEY_HEADERS).json()

    assert (body["resultCode"], body["refusalReasonCode"], body["refusalReason"]) == (
        "Error", "4", "Acquirer Error")


def test_sandbox_replays_the_stored_response_for_the_same_key():
    headers = {**KEY_HEADERS, "Idempotency-Key": "key-replay"}
    body = payment_body()

    first = wire().post("/v71/payments", json=body, headers=headers)
    second = wire().post("/v71/payments", json=body, headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.json()["resultCode"] == "Authorised"
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == "key-replay"
    assert len(charges()) == 1


def test_sandbox_same_key_with_another_body_returns_the_stored_response():
    # Undocumented at Adyen; docs/providers.md 2.5 assumes the stored response wins.
    headers = {**KEY_HEADERS, "Idempotency-Key": "key-mismatch"}
    first = wire().post("/v71/payments", json=payment_body(), headers=headers)
    other = payment_body("5555555555554444", amount={"value": 1, "currency": "EUR"})

    second = wire().post("/v71/payments", json=other, headers=headers)

    assert second.status_code == 200 and second.content == first.content
    assert len(charges()) == 1


def test_sandbox_503_card_is_transient_and_not_stored():
    headers = {**KEY_HEADERS, "Idempotency-Key": "key-503"}

    response = wire().post("/v71/payments", json=payment_body("4000000000000507"),
                           headers=headers)

    assert response.status_code == 503
    assert response.headers["transient-error"] == "true"
    error = response.json()
    assert (error["status"], error["errorType"]) == (503, "internal")
    assert set(error) == {"status", "errorCode", "message", "errorType", "pspReference"}
    assert not SandboxIdempotencyRecord.objects.filter(key="key-503").exists()
    assert charges() == []


def test_sandbox_outage_answers_503_transient():
    SandboxCondition.objects.create(provider="adyen", outage=True)

    response = wire().post("/v71/payments", json=payment_body(), headers=KEY_HEADERS)

    assert response.status_code == 503 and response.headers["transient-error"] == "true"
    assert charges() == []


def test_sandbox_drop_connection_stores_the_result_for_a_replay(settings):


    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)


    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    headers = {**KEY_HEADERS, "Idempotency-Key": "key-0408"}
    body = payment_body("4000000000000408")

    with pytest.raises(httpx.RemoteProtocolError):
        wire().post("/v71/payments", json=body, headers=headers)
    replay = wire().post("/v71/payments", json=body, headers=headers)

    [charge] = charges()
    assert replay.status_code == 200
    assert replay.json()["pspReference"] == charge.provider_reference
    assert replay.json()["resultCode"] == "Authorised"


@pytest.mark.parametrize("body,status,code", [
    (payment_body(returnUrl=""), 422, "14_030"),
    ({**payment_body(), "merchantAccount": ""}, 403, "901"),
    (payment_body(amount={"value": -1, "currency": "USD"}), 422, "137"),
    (payment_body(metadata={f"k{i}": "v" for i in range(21)}), 422, "177"),
    (payment_body(paymentMethod={"type": "scheme", "number": "4242", "expiryMonth": "03",
                                 "expiryYear": "2030"}), 422, "101"),
    (payment_body(paymentMethod={"type": "scheme", "number": "4242424242424242",
                                 "expiryMonth": "3", "expiryYear": "30"}), 422, "129"),
])
def test_sandbox_validates_payment_requests(body, status, code):
    response = wire().post("/v71/payments", json=body, headers=KEY_HEADERS)

    assert (response.status_code, response.json()["errorCode"]) == (status, code)
    assert response.json()["errorType"] in ("validation", "security")
    assert charges() == []


def test_sandbox_rejects_malformed_json_and_long_keys():
    bad_json = wire().post("/v71/payments", content=b"{nope",
                           headers={**KEY_HEADERS, "Content-Type": "application/json"})
    long_key = wire().post("/v71/payments", json=payment_body(),
                           headers={**KEY_HEADERS, "Idempotency-Key": "k" * 65})
    unknown = wire().post("/v71/nothing", json={}, headers=KEY_HEADERS)

    assert (bad_json.status_code, bad_json.json()["errorCode"]) == (400, "702")
    assert long_key.status_code == 422
    assert unknown.status_code == 404
    assert charges() == []


def test_sandbox_modification_answers_201_received():
    auth = wire().post("/v71/payments", json=payment_body(
        additionalData={"manualCapture": "true"}), headers=KEY_HEADERS).json()
    psp = auth["pspReference"]

    response = wire().post(f"/v71/payments/{psp}/captures", headers=KEY_HEADERS, json={
        "merchantAccount": CREDENTIALS["merchant_account"], "reference": "cap-1",
        "amount": {"value": 1050, "currency": "USD"}})

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "received" and body["paymentPspReference"] == psp
    assert body["reference"] == "cap-1" and body["pspReference"] != psp
    assert body["amount"] == {"value": 1050, "currency": "USD"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_gets_704_and_is_outcome_unknown(monkeypatch):
    started, release = threading.Event(), threading.Event()
    real_authorize = ledger.authorize

    def slow_authorize(*args, **kwargs):
        started.set()
        assert release.wait(10)
        return real_authorize(*args, **kwargs)

    monkeypatch.setattr(ledger, "authorize", slow_authorize)
    request = make_request()
    first: dict = {}

    def run_first():
        try:
            first["result"] = adapter().authorize(request)
        except BaseException as exc:  # reported below
            first["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run_first, daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        raw = wire().post("/v71/payments", json=adapter()._payment_body(request),
                          headers={**KEY_HEADERS, "Idempotency-Key": request.reference})
        with pytest.raises(OutcomeUnknown) as raised:
            adapter().authorize(request)
    finally:
        release.set()
        thread.join(10)

    assert raw.status_code == 422 and raw.json()["errorCode"] == "704"
    assert raw.headers["transient-error"] == "true"
    assert raised.value.raw_code == "704"
    assert "error" not in first
    [charge] = charges()
    assert first["result"].provider_reference == charge.provider_reference


# --- settlement report ----------------------------------------------------------------------
def _settle_some_payments(instance: AdyenAdapter) -> dict:
    auto = instance.authorize(make_request(capture=True, amount=1050))
    manual = instance.authorize(make_request(amount=2000))
    capture = instance.capture(modification(manual.provider_reference, 1500, reference="cap-2"))
    refund_1 = instance.refund(modification(manual.provider_reference, 500, reference="re-2a"))
    refund_2 = instance.refund(modification(manual.provider_reference, 200, reference="re-2b"))
    yen = instance.authorize(make_request(capture=True, amount=1000, currency="JPY"))
    instance.authorize(make_request())  # authorised only: not settled
    with pytest.raises(HardDecline):
        instance.authorize(make_request("4000000000000002"))  # declined: not settled
    return {"auto": auto, "manual": manual, "capture": capture, "refund_1": refund_1,
            "refund_2": refund_2, "yen": yen}


def _batch() -> int:
    created = SandboxCharge.objects.order_by("id").first().created_at
    return sandbox.batch_number(created.astimezone(UTC).date())


def test_settlement_report_is_adyens_csv():
    refs = _settle_some_payments(adapter())
    batch = _batch()

    response = wire().get(f"/reports/download/MerchantAccount/SwitchyardSandbox/"
                          f"settlement_detail_report_batch_{batch}.csv", headers=KEY_HEADERS)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == sandbox.SETTLEMENT_COLUMNS
    rows = {(row["Psp Reference"], row["Modification Reference"]): row for row in reader}
    assert len(rows) == 5
    auto = rows[(refs["auto"].provider_reference, refs["auto"].provider_reference)]
    assert (auto["Type"], auto["Gross Currency"], auto["Gross Credit (GC)"],
            auto["Commission (NC)"], auto["Net Credit (NC)"], auto["Gross Debit (GC)"]) == (
        "Settled", "USD", "10.50", "0.60", "9.90", "")
    assert auto["Merchant Account"] == "SwitchyardSandbox"
    assert auto["Batch Number"] == str(batch) and auto["Payment Method"] == "visa"
    manual_psp = refs["manual"].provider_reference
    capture = rows[(manual_psp, refs["capture"].provider_reference)]
    assert (capture["Type"], capture["Gross Credit (GC)"], capture[
        "Modification Merchant Reference"]) == ("Settled", "15.00", "cap-2")
    refund = rows[(manual_psp, refs["refund_1"].provider_reference)]
    assert (refund["Type"], refund["Gross Debit (GC)"], refund["Net Debit (NC)"],
            refund["Modification Merchant Reference"]) == ("Refunded", "5.00", "5.00", "re-2a")
    yen = rows[(refs["yen"].provider_reference, refs["yen"].provider_reference)]
    assert (yen["Gross Currency"], yen["Gross Credit (GC)"], yen["Commission (NC)"]) == (
        "JPY", "1000", "59")


def test_settlement_report_parses_back_to_the_ledger():
    instance = adapter()
    refs = _settle_some_payments(instance)

    lines = instance.settlement_report(_batch())

    expected = {(row["type"], row["provider_reference"], row["reference"], row["amount"],
                 row["currency"], row["fee"]) for row in ledger.settlement("adyen")}
    assert {(line.type, line.provider_reference, line.reference, line.amount, line.currency,
             line.fee) for line in lines} == expected
    refund_ops = {line.operation_reference for line in lines if line.type == "refund"}
    assert refund_ops == {refs["refund_1"].provider_reference,
                          refs["refund_2"].provider_reference}
    assert all(line.created_at is not None and line.fee_currency == line.currency
               for line in lines)


def test_settlement_report_of_an_empty_batch():
    assert adapter().settlement_report(1) == []


def test_settlement_parser_reads_columns_by_name():
    text = (
        "Batch Number,Type,Merchant Reference,Psp Reference,Modification Reference,"
        "Gross Currency,Gross Credit (GC),Gross Debit (GC),Net Currency,Commission (NC),"
        "Markup (NC),Scheme Fees (NC),Interchange (NC),Creation Date,TimeZone,Extra\n"
        "7,Settled,att_1,PSP1,MOD1,KWD,1.234,,EUR,,0.10,0.05,0.20,2026-01-02 03:04:05,CET,x\n"
        "7,Refunded,att_1,PSP1,MOD2,KWD,,0.500,KWD,,,,,2026-01-02 03:04:05,UTC,x\n"
        "7,MerchantPayout,,,,EUR,,100.00,EUR,,,,,,,x\n"
        ",,,,,,,,,,,,,,,\n"
    )

    settled, refunded, payout = parse_settlement_report(text)

    assert settled == SettlementLine(
        type="capture", provider_reference="PSP1", operation_reference="MOD1",
        reference="att_1", amount=1234, currency="KWD", fee=35, fee_currency="EUR",
        created_at=settled.created_at, batch="7", raw_type="Settled")
    assert settled.created_at.utcoffset().total_seconds() == 3600
    assert (refunded.type, refunded.amount, refunded.fee) == ("refund", 500, 0)
    assert (payout.type, payout.amount) == ("MerchantPayout", 10000)


# --- over real HTTP ---------------------------------------------------------------------------
@pytest.fixture
def http_base():
    """The sandbox served on 127.0.0.1 in a thread; yields its base URL (no /v71)."""
    before = set(threading.enumerate())
    server = make_server(sandbox.app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    for leftover in set(threading.enumerate()) - before:  # request threads (a hang sleeps)
        leftover.join(10)


def http_adapter(base: str, *, read_timeout: float = 5.0) -> AdyenAdapter:
    return AdyenAdapter(AccountConfig(
        name="adyen-http", provider="adyen", livemode=False,
        base_url=base + BASE_PATHS["adyen"], credentials=CREDENTIALS,
        connect_timeout=2.0, read_timeout=read_timeout))


@pytest.mark.django_db(transaction=True)
class TestOverHttp:
    def test_authorize_capture_refund(self, http_base):
        instance = http_adapter(http_base)
        auth = instance.authorize(make_request(amount=2000))

        capture = instance.capture(modification(auth.provider_reference, 1500))
        refund = instance.refund(modification(auth.provider_reference, 400))

        assert capture.pending and refund.pending
        [charge] = charges()
        assert (charge.provider_reference, charge.status, charge.amount_captured,
                charge.amount_refunded) == (auth.provider_reference, "captured", 1500, 400)

    def test_decline(self, http_base):
        with pytest.raises(HardDecline) as raised:
            http_adapter(http_base).authorize(make_request("4000000000000002"))

        assert raised.value.decline_code == "generic_decline"

    def test_503_card_is_unavailable(self, http_base):
        with pytest.raises(ProviderUnavailable):
            http_adapter(http_base).authorize(make_request("4000000000000507"))

        assert charges() == []

    def test_dropped_connection_then_retry_returns_the_same_charge(self, http_base, settings):

        # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)

        settings.SANDBOX_DROP_WINDOW_SECONDS = 0
        instance = http_adapter(http_base)
        request = make_request("4000000000000408")

        with pytest.raises(OutcomeUnknown) as raised:
            instance.authorize(request)
        assert raised.value.raw_code == "RemoteProtocolError"

        retried = instance.authorize(request)
        found = instance.lookup(request)

        [charge] = charges()
        assert retried.provider_reference == found.provider_reference == \
            charge.provider_reference

    def test_timeout_before_commit(self, http_base, settings):
        settings.SANDBOX_HANG_SECONDS = 0.6

        with pytest.raises(OutcomeUnknown) as raised:
            http_adapter(http_base, read_timeout=0.2).authorize(
                make_request("4000000000000606"))

        assert raised.value.raw_code == "ReadTimeout"
        assert charges() == []

    def test_probe_and_settlement_report(self, http_base):
        instance = http_adapter(http_base)
        instance.probe()
        instance.authorize(make_request(capture=True, amount=1050))

        [line] = instance.settlement_report(_batch())  # served outside /v71

        assert (line.type, line.amount, line.currency, line.fee) == ("capture", 1050, "USD", 60)
