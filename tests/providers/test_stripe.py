"""The Stripe adapter against its wire-format sandbox: in-process, over real HTTP, and the
sandbox's own wire behaviour (auth, idempotency, faults, settlement)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from urllib.parse import parse_qsl

import httpx
import pytest

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
from providers.sandboxes import ledger
from providers.sandboxes.catalog import BASE_PATHS, SANDBOX_CREDENTIALS
from providers.sandboxes.models import (
    SandboxCharge,
    SandboxCondition,
    SandboxIdempotencyRecord,
    SandboxOperation,
)
from providers.sandboxes.server import make_server
from providers.sandboxes.stripe import app
from providers.sandboxes.transport import SANDBOX_HOST, SandboxTransport
from providers.stripe.adapter import API_VERSION, StripeAdapter, form_encode

KEY = SANDBOX_CREDENTIALS["stripe"]["secret_key"]
CONFIG = AccountConfig(name="stripe-test", provider="stripe", livemode=False,
                       base_url="sandbox://local", credentials=SANDBOX_CREDENTIALS["stripe"])
BRANDS = {"4": "visa", "5": "mastercard", "3": "amex"}

APPROVED = ["4242424242424242", "5555555555554444", "378282246310005"]
DECLINES = [
    # card, exception, our code, our decline_code, Stripe's raw code
    ("4000000000000002", HardDecline, "card_declined", "generic_decline", "generic_decline"),
    ("4000000000009995", HardDecline, "card_declined", "insufficient_funds",
     "insufficient_funds"),
    ("4000000000000069", HardDecline, "expired_card", "expired_card", "expired_card"),
    ("4000000000009987", HardDecline, "card_declined", "lost_card", "lost_card"),
    ("4000000000000119", SoftDecline, "processing_error", "processing_error",
     "processing_error"),
]


def ref() -> str:
    return "att_" + uuid.uuid4().hex[:20]


def card(number: str = "4242424242424242") -> Card:
    return Card(number=number, exp_month=12, exp_year=2034, brand=BRANDS[number[0]],
                cvc="1234" if number.startswith("3") else "123")


def auth(number: str = "4242424242424242", *, capture: bool = False, amount: int = 1050,
         currency: str = "USD", reference: str | None = None) -> AuthorizeRequest:
    return AuthorizeRequest(reference=reference or ref(), amount=amount, currency=currency,
                            card=card(number), capture=capture, description="Order 1")


def mod(provider_reference: str, amount: int, reference: str | None = None):
    return ModificationRequest(reference=reference or "op_" + uuid.uuid4().hex[:20],
                               provider_reference=provider_reference, amount=amount,
                               currency="USD")


@pytest.fixture
def adapter() -> StripeAdapter:
    return StripeAdapter(CONFIG)


@pytest.fixture
def wire():
    """A raw HTTP client to the in-process sandbox, for wire-level checks."""
    with httpx.Client(base_url=SANDBOX_HOST, transport=SandboxTransport(app)) as client:
        yield client


def post(client: httpx.Client, path: str, data: dict | None = None, *, key: str | None = KEY,
         idem: str | None = None) -> httpx.Response:
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if idem:
        headers["Idempotency-Key"] = idem
    return client.post(path, data=data or {}, headers=headers)


def get(client: httpx.Client, path: str, params: dict | None = None) -> httpx.Response:
    return client.get(path, params=params or {}, headers={"Authorization": f"Bearer {KEY}"})


def new_pm(client: httpx.Client, number: str = "4242424242424242") -> str:
    resp = post(client, "/v1/payment_methods", {"type": "card", "card[number]": number,
                                                "card[exp_month]": "12",
                                                "card[exp_year]": "2034", "card[cvc]": "123"})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def intent_body(pm: str, reference: str, **extra) -> dict:
    return {"amount": "1050", "currency": "usd", "payment_method": pm, "confirm": "true",
            "capture_method": "manual", "payment_method_types[0]": "card",
            "metadata[switchyard_attempt]": reference, **extra}


def charges(reference: str | None = None):
    qs = SandboxCharge.objects.filter(provider="stripe")
    return qs.filter(reference=reference) if reference else qs


class Recorder(httpx.BaseTransport):
    """Records what the adapter sends, then passes it to the in-process sandbox."""

    def __init__(self):
        self.inner = SandboxTransport(app)
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.inner.handle_request(request)


def mocked(handler) -> StripeAdapter:
    """The adapter against a scripted Stripe (for answers the sandbox never gives)."""
    client = httpx.Client(base_url="https://api.stripe.test",
                          transport=httpx.MockTransport(handler))
    return StripeAdapter(CONFIG, client=client)


# --- wire encoding ----------------------------------------------------------------------
def test_form_encoding_uses_brackets_indexes_and_lowercase_booleans():
    pairs = form_encode({"a": 1, "card": {"number": "42", "cvc": None}, "types": ["card"],
                         "confirm": True, "off": False, "meta": {"k": "v"}, "skip": None})
    assert pairs == [("a", "1"), ("card[number]", "42"), ("types[0]", "card"),
                     ("confirm", "true"), ("off", "false"), ("meta[k]", "v")]


@pytest.mark.django_db
def test_authorize_sends_stripes_wire_format(caplog):
    recorder = Recorder()
    client = httpx.Client(base_url=SANDBOX_HOST, transport=recorder)
    request = auth(capture=False)
    with caplog.at_level(logging.DEBUG):
        result = StripeAdapter(CONFIG, client=client).authorize(request)

    pm_call, pi_call = recorder.requests
    for sent in (pm_call, pi_call):
        assert sent.method == "POST"
        assert sent.headers["Authorization"] == f"Bearer {KEY}"
        assert sent.headers["Stripe-Version"] == API_VERSION
        assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert pm_call.url.path == "/v1/payment_methods"
    assert pm_call.headers["Idempotency-Key"] == f"{request.reference}-pm"
    pm_form = dict(parse_qsl(pm_call.content.decode()))
    assert pm_form == {"type": "card", "card[number]": "4242424242424242",
                       "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": "123"}
    assert pi_call.url.path == "/v1/payment_intents"
    assert pi_call.headers["Idempotency-Key"] == request.reference
    pi_form = dict(parse_qsl(pi_call.content.decode()))
    assert pi_form == {
        "amount": "1050", "currency": "usd", "payment_method": pi_form["payment_method"],
        "confirm": "true", "capture_method": "manual", "payment_method_types[0]": "card",
        "error_on_requires_action": "true", "description": "Order 1",
        "metadata[switchyard_attempt]": request.reference,
    }
    assert pi_form["payment_method"].startswith("pm_")
    assert result.provider_reference.startswith("pi_")
    # the card number reaches the provider and nothing else: not the logs, not the ledger
    assert "4242424242424242" not in caplog.text
    assert "/v1/payment_intents" in caplog.text  # the call itself is logged
    assert not SandboxIdempotencyRecord.objects.filter(body__contains="4242424242424242",
                                                       provider="stripe").exists()
    assert charges(request.reference).get().card_last4 == "4242"


@pytest.mark.django_db
def test_the_adapter_closes_the_client_it_created(monkeypatch):
    from providers import http as module

    created = []
    real = module.client_for

    def tracking(config):
        created.append(real(config))
        return created[-1]

    monkeypatch.setattr(module, "client_for", tracking)
    StripeAdapter(CONFIG).probe()
    assert len(created) == 1 and created[0].is_closed

    given = httpx.Client(base_url=SANDBOX_HOST, transport=SandboxTransport(app))
    StripeAdapter(CONFIG, client=given).probe()
    assert not given.is_closed  # a client passed in belongs to the caller
    given.close()


def test_no_secret_key_is_refused_before_anything_is_sent():
    sent = []
    adapter = mocked(lambda request: sent.append(request) or httpx.Response(200, json={}))
    adapter.config = AccountConfig(name="x", provider="stripe", livemode=False,
                                   base_url="https://api.stripe.test", credentials={})
    with pytest.raises(ProviderBadRequest):
        adapter.probe()
    assert sent == []


# --- authorize --------------------------------------------------------------------------
@pytest.mark.django_db
def test_authorize_manual_capture_leaves_an_authorization(adapter, wire):
    request = auth(capture=False, amount=2500, currency="EUR")
    result = adapter.authorize(request)

    assert result.captured is False
    charge = charges(request.reference).get()
    assert (charge.provider_reference, charge.status, charge.amount, charge.currency) == (
        result.provider_reference, "authorized", 2500, "EUR")
    assert charge.metadata == {"switchyard_attempt": request.reference}
    intent = get(wire, f"/v1/payment_intents/{result.provider_reference}").json()
    assert intent["status"] == "requires_capture"
    assert intent["amount_capturable"] == 2500 and intent["currency"] == "eur"
    assert intent["capture_method"] == "manual"


@pytest.mark.django_db
def test_authorize_automatic_capture_captures(adapter, wire):
    request = auth(capture=True)
    result = adapter.authorize(request)

    assert result.captured is True
    charge = charges(request.reference).get()
    assert (charge.status, charge.amount_captured) == ("captured", 1050)
    intent = get(wire, f"/v1/payment_intents/{result.provider_reference}").json()
    assert (intent["status"], intent["amount_received"], intent["capture_method"]) == (
        "succeeded", 1050, "automatic")


@pytest.mark.django_db
@pytest.mark.parametrize("number", APPROVED)
def test_approved_test_cards(adapter, number):
    request = auth(number)
    result = adapter.authorize(request)
    charge = charges(request.reference).get()
    assert charge.provider_reference == result.provider_reference
    assert charge.card_last4 == number[-4:]
    assert charge.card_brand == BRANDS[number[0]]


@pytest.mark.django_db
@pytest.mark.parametrize("number,error,code,decline_code,raw", DECLINES)
def test_declining_test_cards(adapter, number, error, code, decline_code, raw):
    request = auth(number)
    with pytest.raises(error) as caught:
        adapter.authorize(request)

    assert type(caught.value) is error
    assert (caught.value.code, caught.value.decline_code, caught.value.raw_code) == (
        code, decline_code, raw)
    assert number not in str(caught.value)
    charge = charges(request.reference).get()  # Stripe keeps the failed attempt
    assert (charge.status, charge.decline_code) == ("declined", decline_code)


@pytest.mark.django_db
def test_503_before_processing_is_provider_unavailable_and_charges_nothing(adapter):
    request = auth("4000000000000507")
    with pytest.raises(ProviderUnavailable):
        adapter.authorize(request)
    # Stripe saves nothing for a request it never started: a retry runs again (503 again)
    assert not SandboxIdempotencyRecord.objects.filter(provider="stripe",
                                                       key=request.reference).exists()
    with pytest.raises(ProviderUnavailable):
        adapter.authorize(request)
    assert charges().count() == 0


@pytest.mark.django_db
def test_commit_then_dropped_connection_is_unknown_and_a_retry_replays_it(adapter, settings):
    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    request = auth("4000000000000408")
    with pytest.raises(OutcomeUnknown):
        adapter.authorize(request)
    charge = charges(request.reference).get()
    assert charge.status == "authorized"

    result = adapter.authorize(request)  # the same attempt again: Stripe replays its answer
    assert result.provider_reference == charge.provider_reference
    assert charges().count() == 1
    found = adapter.lookup(request)
    assert (found.found, found.status, found.provider_reference) == (
        True, "authorized", charge.provider_reference)


@pytest.mark.django_db
def test_timeout_before_commit_is_unknown_and_lookup_finds_nothing(adapter):
    request = auth("4000000000000606")
    with pytest.raises(OutcomeUnknown):
        adapter.authorize(request)
    assert charges().count() == 0
    assert adapter.lookup(request).found is False


@pytest.mark.django_db
def test_an_invalid_card_number_is_a_hard_decline_before_any_charge(adapter):
    request = AuthorizeRequest(reference=ref(), amount=1050, currency="USD", capture=False,
                               card=Card(number="4242424242424241", exp_month=12,
                                         exp_year=2034, brand="visa", cvc="123"))
    with pytest.raises(HardDecline) as caught:
        adapter.authorize(request)
    assert (caught.value.code, caught.value.decline_code) == ("incorrect_number",
                                                              "incorrect_number")
    assert charges().count() == 0


@pytest.mark.django_db
def test_soft_decline_rate_condition_gives_a_soft_decline(adapter):
    SandboxCondition.objects.create(provider="stripe", soft_decline_rate=1.0)
    with pytest.raises(SoftDecline) as caught:
        adapter.authorize(auth())
    assert caught.value.decline_code == "processing_error"


# --- capture, cancel, refund ------------------------------------------------------------
@pytest.mark.django_db
def test_capture_in_full(adapter):
    pi = adapter.authorize(auth()).provider_reference
    result = adapter.capture(mod(pi, 1050))
    assert (result.provider_reference, result.pending) == (pi, False)
    charge = ledger.get_charge("stripe", pi)
    assert (charge.status, charge.amount_captured) == ("captured", 1050)


@pytest.mark.django_db
def test_partial_capture_releases_the_rest(adapter, wire):
    pi = adapter.authorize(auth()).provider_reference
    adapter.capture(mod(pi, 600))
    charge = ledger.get_charge("stripe", pi)
    assert (charge.status, charge.amount_captured) == ("captured", 600)
    intent = get(wire, f"/v1/payment_intents/{pi}").json()
    assert (intent["status"], intent["amount_received"], intent["amount_capturable"]) == (
        "succeeded", 600, 0)
    with pytest.raises(ProviderBadRequest) as caught:  # nothing left to capture
        adapter.capture(mod(pi, 400))
    assert caught.value.raw_code == "payment_intent_unexpected_state"


@pytest.mark.django_db
def test_capture_more_than_authorized_or_of_an_unknown_intent_is_refused(adapter):
    pi = adapter.authorize(auth()).provider_reference
    with pytest.raises(ProviderBadRequest) as caught:
        adapter.capture(mod(pi, 1051))
    assert caught.value.raw_code == "amount_too_large"
    with pytest.raises(ProviderBadRequest) as caught:
        adapter.capture(mod("pi_doesnotexist", 100))
    assert caught.value.raw_code == "resource_missing"
    with pytest.raises(ProviderBadRequest):  # never put into a URL
        adapter.capture(mod("pi_x/../../v1/refunds", 100))
    assert ledger.get_charge("stripe", pi).status == "authorized"


@pytest.mark.django_db
def test_a_repeated_capture_with_the_same_reference_is_replayed_not_repeated(adapter):
    pi = adapter.authorize(auth()).provider_reference
    request = mod(pi, 700)
    first, second = adapter.capture(request), adapter.capture(request)
    assert first == second
    assert SandboxOperation.objects.filter(charge__provider_reference=pi,
                                           kind="capture").count() == 1


@pytest.mark.django_db
def test_cancel_voids_the_authorization(adapter, wire):
    pi = adapter.authorize(auth()).provider_reference
    result = adapter.cancel(mod(pi, 1050))
    assert result.provider_reference == pi
    assert ledger.get_charge("stripe", pi).status == "canceled"
    assert get(wire, f"/v1/payment_intents/{pi}").json()["status"] == "canceled"
    with pytest.raises(ProviderBadRequest) as caught:
        adapter.capture(mod(pi, 1050))
    assert caught.value.raw_code == "payment_intent_unexpected_state"


@pytest.mark.django_db
def test_cancel_after_capture_is_refused(adapter):
    pi = adapter.authorize(auth(capture=True)).provider_reference
    with pytest.raises(ProviderBadRequest):
        adapter.cancel(mod(pi, 1050))
    assert ledger.get_charge("stripe", pi).status == "captured"


@pytest.mark.django_db
def test_refund_in_full(adapter, wire):
    pi = adapter.authorize(auth(capture=True)).provider_reference
    result = adapter.refund(mod(pi, 1050))
    assert result.provider_reference.startswith("re_") and result.pending is False
    assert ledger.get_charge("stripe", pi).amount_refunded == 1050
    refund = get(wire, f"/v1/refunds/{result.provider_reference}").json()
    assert (refund["object"], refund["amount"], refund["payment_intent"], refund["status"]) == (
        "refund", 1050, pi, "succeeded")
    with pytest.raises(ProviderBadRequest) as caught:
        adapter.refund(mod(pi, 1))
    assert caught.value.raw_code == "charge_already_refunded"


@pytest.mark.django_db
def test_several_partial_refunds_up_to_the_captured_amount(adapter):
    pi = adapter.authorize(auth()).provider_reference
    adapter.capture(mod(pi, 1000))
    ids = [adapter.refund(mod(pi, amount)).provider_reference for amount in (300, 200, 500)]
    assert len(set(ids)) == 3
    assert ledger.get_charge("stripe", pi).amount_refunded == 1000
    assert SandboxOperation.objects.filter(charge__provider_reference=pi,
                                           kind="refund").count() == 3


@pytest.mark.django_db
def test_refund_beyond_the_remainder_or_before_capture_is_refused(adapter):
    pi = adapter.authorize(auth(capture=True)).provider_reference
    adapter.refund(mod(pi, 1000))
    with pytest.raises(ProviderBadRequest) as caught:
        adapter.refund(mod(pi, 51))
    assert caught.value.raw_code == "amount_too_large"
    uncaptured = adapter.authorize(auth()).provider_reference
    with pytest.raises(ProviderBadRequest) as caught:
        adapter.refund(mod(uncaptured, 100))
    assert caught.value.raw_code == "payment_intent_unexpected_state"
    assert ledger.get_charge("stripe", pi).amount_refunded == 1000


@pytest.mark.django_db
def test_a_repeated_refund_with_the_same_reference_refunds_once(adapter):
    pi = adapter.authorize(auth(capture=True)).provider_reference
    request = mod(pi, 400)
    assert adapter.refund(request) == adapter.refund(request)
    assert ledger.get_charge("stripe", pi).amount_refunded == 400


# --- lookup and probe -------------------------------------------------------------------
@pytest.mark.django_db
def test_lookup_finds_authorized_and_captured_charges(adapter):
    manual, automatic = auth(amount=1234), auth(capture=True)
    pi = adapter.authorize(manual).provider_reference
    found = adapter.lookup(manual)
    assert (found.found, found.provider_reference, found.status, found.amount) == (
        True, pi, "authorized", 1234)
    pi_auto = adapter.authorize(automatic).provider_reference
    found = adapter.lookup(automatic)
    assert (found.provider_reference, found.status) == (pi_auto, "captured")


@pytest.mark.django_db
@pytest.mark.parametrize("number,decline_code", [("4000000000009995", "insufficient_funds"),
                                                 ("4000000000000119", "processing_error")])
def test_lookup_reports_a_decline_with_its_code(adapter, number, decline_code):
    request = auth(number)
    with pytest.raises((HardDecline, SoftDecline)):
        adapter.authorize(request)
    found = adapter.lookup(request)
    assert (found.found, found.status, found.decline_code) == (True, "declined", decline_code)


@pytest.mark.django_db
def test_lookup_reports_a_canceled_authorization(adapter):
    request = auth()
    pi = adapter.authorize(request).provider_reference
    adapter.cancel(mod(pi, 1050))
    assert adapter.lookup(request).status == "canceled"


@pytest.mark.django_db
def test_lookup_of_an_unknown_reference_finds_nothing(adapter):
    adapter.authorize(auth())  # someone else's charge
    assert adapter.lookup(auth()).found is False


def _intent_json(reference: str, status: str = "requires_capture", **extra) -> dict:
    return {"id": "pi_123", "object": "payment_intent", "amount": 1050, "status": status,
            "metadata": {"switchyard_attempt": reference}, **extra}


def test_lookup_falls_back_to_the_consistent_list_when_search_lags():
    request = auth()
    paths = []

    def stripe(req: httpx.Request) -> httpx.Response:
        paths.append(req.url.path)
        if req.url.path == "/v1/payment_intents/search":
            assert req.url.params["query"] == (
                f"metadata['switchyard_attempt']:'{request.reference}'")
            return httpx.Response(200, json={"object": "search_result", "data": []})
        assert req.url.params["limit"] == "100"
        return httpx.Response(200, json={"object": "list", "data": [
            _intent_json("att_other"), _intent_json(request.reference, "succeeded")]})

    found = mocked(stripe).lookup(request)
    assert paths == ["/v1/payment_intents/search", "/v1/payment_intents"]
    assert (found.found, found.status, found.provider_reference) == (True, "captured", "pi_123")


def test_lookup_of_a_processing_intent_is_unknown():
    request = auth()
    adapter = mocked(lambda req: httpx.Response(200, json={
        "object": "search_result", "data": [_intent_json(request.reference, "processing")]}))
    with pytest.raises(OutcomeUnknown):
        adapter.lookup(request)


@pytest.mark.django_db
def test_probe_reads_the_balance(adapter):
    adapter.probe()


@pytest.mark.django_db
def test_probe_with_a_refused_key_is_an_error():
    adapter = StripeAdapter(AccountConfig(name="x", provider="stripe", livemode=False,
                                          base_url="sandbox://local",
                                          credentials={"secret_key": " "}))
    with pytest.raises(ProviderBadRequest):  # 401 from the sandbox
        adapter.probe()


# --- how Stripe answers map (scripted answers the sandbox does not give) ------------------
def _answer(status: int, body=None, headers=None):
    return lambda request: httpx.Response(status, json=body, headers=headers or {})


@pytest.mark.parametrize("answer,error,code", [
    (_answer(500, {"error": {"type": "api_error", "message": "boom"}}), OutcomeUnknown,
     "outcome_unknown"),
    (_answer(503, {"error": {"type": "api_error", "message": "x"}}), OutcomeUnknown,
     "outcome_unknown"),  # a 503 without the retry-safe signal may have been processed
    (_answer(503, {"error": {"type": "api_error", "message": "x"}},
             {"Stripe-Should-Retry": "true"}), ProviderUnavailable, "provider_unavailable"),
    (_answer(502, None), OutcomeUnknown, "outcome_unknown"),
    (_answer(429, {"error": {"type": "invalid_request_error", "code": "rate_limit"}}),
     ProviderUnavailable, "provider_rate_limited"),
    (_answer(409, {"error": {"type": "invalid_request_error",
                             "code": "idempotency_key_in_use"}}), OutcomeUnknown,
     "outcome_unknown"),
    (_answer(400, {"error": {"type": "idempotency_error", "message": "other params"}}),
     OutcomeUnknown, "outcome_unknown"),
    (_answer(400, {"error": {"type": "invalid_request_error", "code": "parameter_missing"}}),
     ProviderBadRequest, "provider_bad_request"),
    (_answer(401, {"error": {"type": "invalid_request_error"}}), ProviderBadRequest,
     "provider_bad_request"),
    (lambda request: httpx.Response(200, content=b"<html>proxy</html>"), OutcomeUnknown,
     "outcome_unknown"),
    (_answer(402, {"error": {"type": "card_error", "code": "card_declined",
                             "decline_code": "stolen_card"}}), HardDecline, "card_declined"),
    (_answer(402, {"error": {"type": "card_error", "code": "card_declined",
                             "decline_code": "issuer_not_available"}}), SoftDecline,
     "card_declined"),
])
def test_error_answers_map_to_the_taxonomy(answer, error, code):
    with pytest.raises(error) as caught:
        mocked(answer).authorize(auth())
    assert type(caught.value) is error and caught.value.code == code


@pytest.mark.parametrize("status,error", [
    ("processing", OutcomeUnknown), ("requires_action", HardDecline),
    ("requires_confirmation", OutcomeUnknown)])
def test_unfinished_intent_statuses_are_never_taken_as_approved(status, error):
    def stripe(request):
        if request.url.path == "/v1/payment_methods":
            return httpx.Response(200, json={"id": "pm_1", "object": "payment_method"})
        return httpx.Response(200, json=_intent_json("att", status))

    with pytest.raises(error):
        mocked(stripe).authorize(auth())


@pytest.mark.parametrize("status,pending", [("succeeded", False), ("pending", True)])
def test_refund_status_maps_to_pending(status, pending):
    adapter = mocked(_answer(200, {"id": "re_1", "object": "refund", "status": status}))
    assert adapter.refund(mod("pi_1", 100)).pending is pending


def test_a_failed_refund_is_refused():
    adapter = mocked(_answer(200, {"id": "re_1", "object": "refund", "status": "failed",
                                   "failure_reason": "expired_or_canceled_card"}))
    with pytest.raises(HardDecline) as caught:
        adapter.refund(mod("pi_1", 100))
    assert (caught.value.code, caught.value.decline_code) == ("refund_failed",
                                                              "expired_or_canceled_card")


# --- the sandbox on the wire ------------------------------------------------------------
@pytest.mark.django_db
def test_authentication_is_required(wire):
    resp = post(wire, "/v1/payment_intents", {"amount": "1"}, key=None)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "You did not provide an API key" in error["message"]
    assert resp.headers["Request-Id"].startswith("req_")
    assert wire.get("/v1/balance", auth=(KEY, "")).status_code == 200  # HTTP Basic, as Stripe
    assert charges().count() == 0


@pytest.mark.django_db
def test_unknown_urls_parameters_and_versions_get_stripes_errors(wire):
    resp = get(wire, "/v1/nothing")
    assert resp.status_code == 404
    assert resp.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/")
    pm = new_pm(wire)
    resp = post(wire, "/v1/payment_intents", intent_body(pm, ref(), colour="blue"))
    assert resp.status_code == 400
    assert resp.json()["error"] == {"type": "invalid_request_error", "param": "colour",
                                    "message": "Received unknown parameter: colour"}
    resp = wire.get("/v1/balance", headers={"Authorization": f"Bearer {KEY}",
                                            "Stripe-Version": "yesterday"})
    assert resp.status_code == 400
    resp = get(wire, "/v1/balance")
    assert resp.headers["Stripe-Version"]


@pytest.mark.django_db
def test_confirming_without_card_only_types_needs_a_return_url(wire):
    body = intent_body(new_pm(wire), ref())
    del body["payment_method_types[0]"]
    resp = post(wire, "/v1/payment_intents", body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "return_url"
    body["automatic_payment_methods[enabled]"] = "true"
    body["automatic_payment_methods[allow_redirects]"] = "never"
    assert post(wire, "/v1/payment_intents", body).status_code == 200


@pytest.mark.django_db
def test_payment_methods_keep_no_card_number(wire):
    resp = post(wire, "/v1/payment_methods", {"type": "card", "card[number]": "4012888888881881",
                                              "card[exp_month]": "1",
                                              "card[exp_year]": "2040"})
    assert resp.status_code == 200
    pm = resp.json()
    assert (pm["object"], pm["card"]["last4"], pm["card"]["brand"]) == (
        "payment_method", "1881", "visa")
    assert "4012888888881881" not in resp.text
    assert not SandboxIdempotencyRecord.objects.filter(body__contains="4012888888881881").exists()
    assert get(wire, f"/v1/payment_methods/{pm['id']}").json()["card"]["last4"] == "1881"
    reference = ref()
    resp = post(wire, "/v1/payment_intents", intent_body(pm["id"], reference))
    assert resp.json()["status"] == "requires_capture"  # any other valid card approves
    assert charges(reference).get().card_last4 == "1881"
    resp = post(wire, "/v1/payment_methods", {"type": "card", "card[number]": "4242424242424241",
                                              "card[exp_month]": "1", "card[exp_year]": "2040"})
    assert resp.status_code == 402
    assert resp.json()["error"]["code"] == "incorrect_number"


@pytest.mark.django_db
def test_a_decline_is_a_402_card_error_carrying_the_payment_intent(wire):
    reference = ref()
    resp = post(wire, "/v1/payment_intents",
                intent_body(new_pm(wire, "4000000000009995"), reference))
    assert resp.status_code == 402
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error", "card_declined", "insufficient_funds")
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert error["payment_intent"]["last_payment_error"]["decline_code"] == "insufficient_funds"
    assert error["charge"].startswith("ch_")
    # test tokens and inline card data work too
    resp = post(wire, "/v1/payment_intents", intent_body("pm_card_chargeDeclinedLostCard", ref()))
    assert resp.json()["error"]["decline_code"] == "lost_card"
    body = intent_body("", ref())
    del body["payment_method"]
    body.update({"payment_method_data[type]": "card",
                 "payment_method_data[card][number]": "4000000000000069",
                 "payment_method_data[card][exp_month]": "12",
                 "payment_method_data[card][exp_year]": "2034"})
    resp = post(wire, "/v1/payment_intents", body)
    assert (resp.status_code, resp.json()["error"]["code"]) == (402, "expired_card")


@pytest.mark.django_db
def test_idempotent_replay_returns_the_same_answer_and_charges_once(wire):
    reference, pm = ref(), new_pm(wire)
    first = post(wire, "/v1/payment_intents", intent_body(pm, reference), idem=reference)
    again = post(wire, "/v1/payment_intents", intent_body(pm, reference), idem=reference)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert charges(reference).count() == 1

    declined_ref, declined_pm = ref(), new_pm(wire, "4000000000000002")
    first = post(wire, "/v1/payment_intents", intent_body(declined_pm, declined_ref),
                 idem=declined_ref)
    again = post(wire, "/v1/payment_intents", intent_body(declined_pm, declined_ref),
                 idem=declined_ref)
    assert first.status_code == again.status_code == 402  # errors after start are saved too
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert charges(declined_ref).count() == 1


@pytest.mark.django_db
def test_the_same_key_with_other_parameters_is_an_idempotency_error(wire):
    reference, pm = ref(), new_pm(wire)
    assert post(wire, "/v1/payment_intents", intent_body(pm, reference),
                idem=reference).status_code == 200
    resp = post(wire, "/v1/payment_intents", intent_body(pm, reference, amount="2000"),
                idem=reference)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "idempotency_error"
    assert "same parameters" in error["message"]
    assert charges(reference).count() == 1


@pytest.mark.django_db
def test_nothing_is_saved_for_requests_that_never_started(wire):
    reference, pm = ref(), new_pm(wire)
    invalid = intent_body(pm, reference)
    del invalid["amount"]
    resp = post(wire, "/v1/payment_intents", invalid, idem=reference)
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "parameter_missing")
    resp = post(wire, "/v1/payment_intents", intent_body(pm, reference), idem=reference)
    assert resp.status_code == 200 and "Idempotent-Replayed" not in resp.headers

    reference, pm = ref(), new_pm(wire, "4000000000000507")
    for _ in range(2):
        resp = post(wire, "/v1/payment_intents", intent_body(pm, reference), idem=reference)
        assert resp.status_code == 503
        assert resp.headers["Stripe-Should-Retry"] == "true"
        assert resp.json()["error"]["type"] == "api_error"
        assert "Idempotent-Replayed" not in resp.headers
    assert charges(reference).count() == 0


@pytest.mark.django_db
def test_a_wrong_state_answer_is_saved_and_replayed(wire):
    reference, pm = ref(), new_pm(wire)
    pi = post(wire, "/v1/payment_intents", intent_body(pm, reference)).json()["id"]
    assert post(wire, f"/v1/payment_intents/{pi}/cancel").status_code == 200
    first = post(wire, f"/v1/payment_intents/{pi}/capture", idem="cap-1")
    again = post(wire, f"/v1/payment_intents/{pi}/capture", idem="cap-1")
    assert first.status_code == again.status_code == 400
    assert first.json()["error"]["code"] == "payment_intent_unexpected_state"
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_an_in_flight_key_gets_409(wire):
    SandboxIdempotencyRecord.objects.create(provider="stripe", key="busy", fingerprint="x")
    resp = post(wire, "/v1/payment_intents", intent_body(new_pm(wire), ref()), idem="busy")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "idempotency_key_in_use"
    assert charges().count() == 0


@pytest.mark.django_db
def test_search_and_list_speak_stripes_format(wire, adapter):
    request = auth(capture=True, amount=777)
    pi = adapter.authorize(request).provider_reference
    adapter.authorize(auth())
    resp = get(wire, "/v1/payment_intents/search",
               {"query": f"metadata['switchyard_attempt']:'{request.reference}'"})
    body = resp.json()
    assert (body["object"], body["has_more"], [i["id"] for i in body["data"]]) == (
        "search_result", False, [pi])
    body = get(wire, "/v1/payment_intents/search",
               {"query": "status:'succeeded' AND amount:777"}).json()
    assert [i["id"] for i in body["data"]] == [pi]
    assert get(wire, "/v1/payment_intents/search", {"query": "nonsense"}).status_code == 400
    listed = get(wire, "/v1/payment_intents", {"limit": 1}).json()
    assert (listed["object"], listed["has_more"], len(listed["data"])) == ("list", True, 1)
    rest = get(wire, "/v1/payment_intents",
               {"limit": 10, "starting_after": listed["data"][0]["id"]}).json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False


@pytest.mark.django_db
def test_an_outage_answers_503_before_processing(adapter, wire):
    SandboxCondition.objects.create(provider="stripe", outage=True)
    resp = get(wire, "/v1/balance")
    assert resp.status_code == 503
    assert resp.headers["Stripe-Should-Retry"] == "true"
    assert resp.json()["error"]["type"] == "api_error"
    with pytest.raises(ProviderUnavailable):
        adapter.authorize(auth())
    with pytest.raises(ProviderUnavailable):
        adapter.probe()
    assert charges().count() == 0


@pytest.mark.django_db
def test_latency_is_applied(adapter):
    SandboxCondition.objects.create(provider="stripe", latency_ms=200)
    started = time.monotonic()
    adapter.probe()
    assert time.monotonic() - started >= 0.2


@pytest.mark.django_db
def test_settlement_is_reported_as_balance_transactions(adapter, wire):
    auto = adapter.authorize(auth(capture=True, amount=1050)).provider_reference
    manual = adapter.authorize(auth(amount=2000)).provider_reference
    adapter.capture(mod(manual, 1500))
    refund_id = adapter.refund(mod(manual, 500)).provider_reference
    adapter.authorize(auth(amount=999))  # authorized only: not settled
    with pytest.raises(HardDecline):
        adapter.authorize(auth("4000000000000002"))  # declined: not settled

    body = get(wire, "/v1/balance_transactions", {"limit": 100}).json()
    assert (body["object"], body["url"], body["has_more"]) == (
        "list", "/v1/balance_transactions", False)
    rows = {(t["type"], t["source"]): t for t in body["data"]}
    assert set(rows) == {("charge", "ch_" + auto[3:]), ("charge", "ch_" + manual[3:]),
                         ("refund", refund_id)}
    first = rows[("charge", "ch_" + auto[3:])]
    assert (first["amount"], first["fee"], first["net"], first["currency"]) == (1050, 60, 990,
                                                                               "usd")
    assert first["object"] == "balance_transaction" and first["id"].startswith("txn_")
    assert first["fee_details"] == [{"amount": 60, "application": None, "currency": "usd",
                                     "description": "Stripe processing fees",
                                     "type": "stripe_fee"}]
    second = rows[("charge", "ch_" + manual[3:])]
    assert (second["amount"], second["fee"], second["net"]) == (1500, 74, 1426)
    refund = rows[("refund", refund_id)]
    assert (refund["amount"], refund["fee"], refund["net"], refund["reporting_category"]) == (
        -500, 0, -500, "refund")

    expanded = get(wire, "/v1/balance_transactions",
                   {"expand[]": "data.source", "type": "charge"}).json()["data"]
    assert {t["source"]["payment_intent"] for t in expanded} == {auto, manual}
    assert all(t["source"]["object"] == "charge" for t in expanded)
    page = get(wire, "/v1/balance_transactions", {"limit": 2}).json()
    assert page["has_more"] is True
    rest = get(wire, "/v1/balance_transactions",
               {"starting_after": page["data"][-1]["id"]}).json()["data"]
    assert {t["id"] for t in page["data"]} | {t["id"] for t in rest} == {
        t["id"] for t in body["data"]}
    future = get(wire, "/v1/balance_transactions", {"created[gte]": int(time.time()) + 60})
    assert future.json()["data"] == []

    balance = get(wire, "/v1/balance").json()
    assert balance["object"] == "balance"
    assert balance["available"] == [{"amount": 990 + 1426 - 500, "currency": "usd",
                                      "source_types": {"card": 1916}}]


# --- over real HTTP ---------------------------------------------------------------------
@pytest.fixture
def server_url():
    server = make_server(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{BASE_PATHS['stripe']}"
    server.shutdown()
    server.server_close()


def http_adapter(url: str, read_timeout: float = 5.0) -> StripeAdapter:
    return StripeAdapter(AccountConfig(name="stripe-http", provider="stripe", livemode=False,
                                       base_url=url, credentials=SANDBOX_CREDENTIALS["stripe"],
                                       connect_timeout=2.0, read_timeout=read_timeout))


@pytest.mark.django_db(transaction=True)
def test_http_authorize_capture_refund_and_lookup(server_url):
    adapter = http_adapter(server_url)
    request = auth()
    pi = adapter.authorize(request).provider_reference
    assert adapter.capture(mod(pi, 1050)).provider_reference == pi
    assert adapter.refund(mod(pi, 300)).provider_reference.startswith("re_")
    charge = ledger.get_charge("stripe", pi)
    assert (charge.status, charge.amount_captured, charge.amount_refunded) == (
        "captured", 1050, 300)
    assert adapter.lookup(request).status == "captured"
    adapter.probe()


@pytest.mark.django_db(transaction=True)
def test_http_decline_and_503(server_url):
    adapter = http_adapter(server_url)
    with pytest.raises(HardDecline) as caught:
        adapter.authorize(auth("4000000000000002"))
    assert caught.value.decline_code == "generic_decline"
    with pytest.raises(ProviderUnavailable):
        adapter.authorize(auth("4000000000000507"))
    assert charges().filter(status="declined").count() == charges().count() == 1


@pytest.mark.django_db(transaction=True)
def test_http_dropped_connection_after_commit_then_retry(server_url, settings):
    # the network path has recovered by the time of the retry (see SANDBOX_DROP_WINDOW_SECONDS)
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    adapter = http_adapter(server_url)
    request = auth("4000000000000408", capture=True)
    with pytest.raises(OutcomeUnknown) as caught:
        adapter.authorize(request)
    assert caught.value.raw_code == "RemoteProtocolError"  # a real dropped connection
    result = adapter.authorize(request)
    assert result.captured is True
    assert charges().count() == 1
    assert charges(request.reference).get().provider_reference == result.provider_reference


@pytest.mark.django_db(transaction=True)
def test_http_timeout_before_commit(server_url, settings):
    settings.SANDBOX_HANG_SECONDS = 4
    adapter = http_adapter(server_url, read_timeout=0.3)
    request = auth("4000000000000606")
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown) as caught:
        adapter.authorize(request)
    assert caught.value.raw_code == "ReadTimeout"
    assert time.monotonic() - started < 3  # the read timeout fired, not the end of the hang
    assert charges().count() == 0
    assert http_adapter(server_url).lookup(request).found is False


@pytest.mark.django_db(transaction=True)
def test_http_concurrent_duplicate_gets_409_and_charges_once(server_url, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    original = ledger.authorize

    def slow_authorize(*args, **kwargs):
        entered.set()
        release.wait(5)
        return original(*args, **kwargs)

    monkeypatch.setattr(ledger, "authorize", slow_authorize)
    adapter = http_adapter(server_url)
    request = auth()
    outcome = {}
    first = threading.Thread(target=lambda: outcome.update(result=adapter.authorize(request)))
    first.start()
    try:
        assert entered.wait(5)
        with pytest.raises(OutcomeUnknown) as caught:  # the same attempt while it runs
            adapter.authorize(request)
        assert caught.value.raw_code == "idempotency_key_in_use"
        with httpx.Client(base_url=server_url) as raw:
            resp = post(raw, "/v1/payment_intents", intent_body("pm_card_visa", request.reference),
                        idem=request.reference)
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "idempotency_key_in_use"
        assert resp.headers["Stripe-Should-Retry"] == "true"
    finally:
        release.set()
        first.join(10)
    assert outcome["result"].provider_reference == charges(request.reference).get(
    ).provider_reference
    assert charges().count() == 1
