"""What is Checkout.com's own: the adapter's wire format and its reading of Checkout.com's
answers (a 503 confirmed by a lookup, actions), and the sandbox's wire format
(docs/providers.md section 3), financial actions included. What every adapter shares
(operations, test cards, unknown outcomes, replays, lookups, probes, real HTTP) is in
test_adapter_contract.py."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from providers.base import (
    AccountConfig,
    AuthorizeRequest,
    AuthorizeResult,
    Card,
    HardDecline,
    ModificationRequest,
    ModificationResult,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
)
from providers.checkout.adapter import CheckoutAdapter
from providers.http import client_for
from providers.sandboxes import ledger
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS
from providers.sandboxes.models import SandboxCharge, SandboxCondition, SandboxIdempotencyRecord

pytestmark = pytest.mark.django_db

CREDENTIALS = SANDBOX_CREDENTIALS["checkout"]


# --- helpers --------------------------------------------------------------------------------
def config(base_url: str = "sandbox://local", **overrides) -> AccountConfig:
    fields = {"name": "checkout-test", "provider": "checkout", "livemode": False,
              "base_url": base_url, "credentials": dict(CREDENTIALS), **overrides}
    return AccountConfig(**fields)


def new_reference() -> str:
    return "att_" + uuid.uuid4().hex[:20]


def auth(number: str = "4242424242424242", *, capture: bool = False, amount: int = 1050,
         currency: str = "EUR", reference: str | None = None, **extra) -> AuthorizeRequest:
    card = Card(number=number, exp_month=12, exp_year=2034,
                brand="amex" if number.startswith("3") else "visa",
                cvc="1234" if number.startswith("3") else "100")
    return AuthorizeRequest(reference=reference or new_reference(), amount=amount,
                            currency=currency, card=card, capture=capture, **extra)


def mod(result: AuthorizeResult | str, amount: int, kind: str = "op",
        currency: str = "EUR") -> ModificationRequest:
    provider_reference = result if isinstance(result, str) else result.provider_reference
    return ModificationRequest(reference=f"{new_reference()}-{kind}",
                               provider_reference=provider_reference, amount=amount,
                               currency=currency)


def charges():
    return SandboxCharge.objects.filter(provider="checkout")


def wire(**headers) -> httpx.Client:
    """A raw client to the in-process sandbox, authenticated unless told otherwise."""
    client = client_for(config())
    client.headers.update({"Authorization": f"Bearer {CREDENTIALS['secret_key']}", **headers})
    return client


def payment_body(number: str = "4242424242424242", **overrides) -> dict:
    return {"source": {"type": "card", "number": number, "expiry_month": 12,
                       "expiry_year": 2034, "cvv": "100", "name": "Jane Doe"},
            "amount": 1050, "currency": "EUR", "reference": new_reference(), "capture": False,
            "payment_type": "Regular", "processing_channel_id": "pc_sandbox", **overrides}


@pytest.fixture
def adapter() -> CheckoutAdapter:
    return CheckoutAdapter(config())


# --- the sandbox's answer to a declining card ------------------------------------------------
DECLINE_CODES = {  # number → Checkout.com's response code
    "4000000000000002": "20005", "4000000000009995": "20051", "4000000000000069": "20054",
    "4000000000009987": "30041", "4000000000000119": "20068",
}


@pytest.mark.parametrize("number", sorted(DECLINE_CODES))
def test_sandbox_answers_declines_as_201_not_approved(number):
    with wire() as client:
        response = client.post("/payments", json=payment_body(number))
    assert response.status_code == 201
    body = response.json()
    assert (body["approved"], body["status"], body["response_code"]) == (
        False, "Declined", DECLINE_CODES[number])
    assert body["response_summary"] and "auth_code" not in body


# --- what the adapter leaves behind, read back as Checkout.com payments and actions ----------
def test_the_adapters_operations_read_back_as_payments_and_actions(adapter):
    """The operations themselves are in test_adapter_contract.py; here, Checkout.com's view."""
    captured = adapter.authorize(auth(amount=1050))
    request = mod(captured, 1050, "capture")
    capture = adapter.capture(request)
    assert capture.provider_reference.startswith("act_")
    partial = adapter.authorize(auth(amount=1050))
    adapter.capture(mod(partial, 400, "capture"))
    refunded = adapter.authorize(auth(capture=True, amount=1050))
    adapter.refund(mod(refunded, 1050, "refund"))
    some = adapter.authorize(auth(capture=True, amount=1000))
    adapter.refund(mod(some, 300, "refund"))
    adapter.refund(mod(some, 200, "refund"))

    with wire() as client:
        actions = client.get(f"/payments/{captured.provider_reference}/actions").json()
        payment = {result.provider_reference: client.get(
            f"/payments/{result.provider_reference}").json()
            for result in (partial, refunded, some)}
    assert [a["type"] for a in actions] == ["Capture", "Authorization"]
    assert (actions[0]["id"], actions[0]["reference"]) == (capture.provider_reference,
                                                           request.reference)
    partial_payment = payment[partial.provider_reference]
    assert partial_payment["status"] == "Partially Captured"
    assert (partial_payment["balances"]["total_captured"],
            partial_payment["balances"]["available_to_refund"]) == (400, 400)
    assert payment[refunded.provider_reference]["status"] == "Refunded"
    assert payment[some.provider_reference]["status"] == "Partially Refunded"
    assert payment[some.provider_reference]["balances"]["available_to_refund"] == 500


# --- the adapter's own requests and its reading of answers the sandbox never gives ----------
class Recorder:
    """An httpx MockTransport answering from a route table and recording every request."""

    def __init__(self, routes: dict[tuple[str, str], httpx.Response | list]):
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes[(request.method, request.url.path)]
        return answer.pop(0) if isinstance(answer, list) else answer

    def adapter(self, **credentials) -> CheckoutAdapter:
        cfg = config("https://test.api.sandbox.checkout.com",
                     credentials=credentials or dict(CREDENTIALS))
        client = httpx.Client(base_url=cfg.base_url, transport=httpx.MockTransport(self))
        return CheckoutAdapter(cfg, client=client)


def _payment(status: str = "Authorized", approved: bool = True, **extra) -> dict:
    return {"id": "pay_mock", "action_id": "act_mock", "amount": 1050, "currency": "EUR",
            "approved": approved, "status": status, "response_code": "10000",
            "response_summary": "Approved", "reference": "att_1", **extra}


def test_authorize_sends_checkouts_wire_format():
    recorder = Recorder({("POST", "/payments"): httpx.Response(201, json=_payment())})
    request = auth(reference="att_wire", currency="eur", description="Order A1",
                   holder_name="Jane Doe")
    assert recorder.adapter().authorize(request) == AuthorizeResult("pay_mock", False)
    sent = recorder.requests[0]
    assert sent.headers["Authorization"] == "Bearer sk_sbox_sandbox"
    assert sent.headers["Cko-Idempotency-Key"] == "att_wire"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.content) == {
        "source": {"type": "card", "number": "4242424242424242", "expiry_month": 12,
                   "expiry_year": 2034, "cvv": "100", "name": "Jane Doe"},
        "amount": 1050, "currency": "EUR", "reference": "att_wire", "capture": False,
        "payment_type": "Regular", "processing_channel_id": "pc_sandbox",
        "description": "Order A1", "metadata": {"switchyard_attempt": "att_wire"},
    }


def test_modifications_send_amount_reference_and_key():
    recorder = Recorder({
        ("POST", "/payments/pay_1/captures"): httpx.Response(202, json={"action_id": "act_c"}),
        ("POST", "/payments/pay_1/voids"): httpx.Response(202, json={"action_id": "act_v"}),
        ("POST", "/payments/pay_1/refunds"): httpx.Response(202, json={"action_id": "act_r"}),
    })
    adapter = recorder.adapter()
    request = ModificationRequest(reference="att_1-capture", provider_reference="pay_1",
                                  amount=500, currency="EUR")
    assert adapter.capture(request) == ModificationResult("act_c", pending=True)
    assert adapter.cancel(request) == ModificationResult("act_v", pending=True)
    assert adapter.refund(request) == ModificationResult("act_r", pending=True)
    capture, void, refund = (json.loads(r.content) for r in recorder.requests)
    assert capture == refund == {"reference": "att_1-capture", "amount": 500,
                                 "metadata": {"switchyard_operation": "att_1-capture"}}
    assert void == {"reference": "att_1-capture",
                    "metadata": {"switchyard_operation": "att_1-capture"}}
    assert all(r.headers["Cko-Idempotency-Key"] == "att_1-capture" for r in recorder.requests)


def test_auto_capture_approved_as_authorized_counts_as_captured():
    recorder = Recorder({("POST", "/payments"): httpx.Response(201, json=_payment())})
    assert recorder.adapter().authorize(auth(capture=True)).captured is True


@pytest.mark.parametrize("response,error", [
    (httpx.Response(202, json=_payment("Pending", approved=False)), OutcomeUnknown),
    (httpx.Response(201, text="<html>oops</html>"), OutcomeUnknown),
    (httpx.Response(500, json={"request_id": "r", "error_type": "processing_error"}),
     OutcomeUnknown),
    (httpx.Response(502), OutcomeUnknown),
    (httpx.Response(409, json={"error_type": "request_conflict"}), OutcomeUnknown),
    (httpx.Response(429, json={"error_type": "too_many_requests"}), OutcomeUnknown),
    (httpx.Response(422, json={"request_id": "r", "error_type": "request_invalid",
                               "error_codes": ["card_number_invalid"]}), ProviderBadRequest),
    (httpx.Response(401), ProviderBadRequest),
    (httpx.Response(422, json={"response_code": "20051", "response_summary": "Insufficient"}),
     HardDecline),
])
def test_authorize_maps_every_answer(response, error):
    recorder = Recorder({("POST", "/payments"): response})
    with pytest.raises(error) as excinfo:
        recorder.adapter().authorize(auth())
    assert type(excinfo.value) is error
    assert "4242424242424242" not in str(excinfo.value)


@pytest.mark.parametrize("lookup,outcome", [
    (httpx.Response(200, json={"limit": 100, "skip": 0, "total_count": 0, "data": []}),
     OutcomeUnknown),  # not listed (yet) proves nothing
    (httpx.Response(500), OutcomeUnknown),
    (httpx.Response(503), OutcomeUnknown),
    (httpx.Response(200, json={"total_count": 1, "data": [_payment()]}), AuthorizeResult),
])
def test_a_503_is_confirmed_by_a_lookup_by_reference(lookup, outcome):
    recorder = Recorder({("POST", "/payments"): httpx.Response(503),
                         ("GET", "/payments"): lookup})
    adapter, request = recorder.adapter(), auth(reference="att_503")
    if outcome is AuthorizeResult:
        assert adapter.authorize(request) == AuthorizeResult("pay_mock", False)
    else:
        with pytest.raises(outcome):
            adapter.authorize(request)
    assert parse_qs(urlparse(str(recorder.requests[1].url)).query)["reference"] == ["att_503"]


@pytest.mark.parametrize("actions,outcome", [
    (httpx.Response(200, json=[]), ProviderUnavailable),
    (httpx.Response(503), OutcomeUnknown),
    (httpx.Response(200, json=[{"id": "act_9", "type": "Capture", "approved": True,
                                "reference": "att_1-capture"}]), ModificationResult),
    (httpx.Response(200, json=[{"id": "act_9", "type": "Capture", "approved": False,
                                "reference": "att_1-capture", "response_code": "20005"}]),
     ProviderBadRequest),
])
def test_a_503_to_a_capture_is_confirmed_from_the_actions(actions, outcome):
    recorder = Recorder({("POST", "/payments/pay_1/captures"): httpx.Response(503),
                         ("GET", "/payments/pay_1/actions"): actions})
    request = ModificationRequest(reference="att_1-capture", provider_reference="pay_1",
                                  amount=500, currency="EUR")
    if outcome is ModificationResult:
        assert recorder.adapter().capture(request) == ModificationResult("act_9", pending=False)
    else:
        with pytest.raises(outcome):
            recorder.adapter().capture(request)


@pytest.mark.parametrize("approved", [None, "missing"])
def test_an_action_without_a_decision_is_pending_not_done(approved):
    """Issue #8 (#5): an action listed with `approved: null` (or none) is still being
    processed: it must not settle the capture or refund as succeeded."""
    action = {"id": "act_9", "type": "Capture", "reference": "att_1-capture",
              "response_code": None}
    if approved != "missing":
        action["approved"] = approved
    recorder = Recorder({("GET", "/payments/pay_1/actions"): httpx.Response(200, json=[action]),
                         ("POST", "/payments/pay_1/captures"): httpx.Response(503)})
    request = ModificationRequest(reference="att_1-capture", provider_reference="pay_1",
                                  amount=500, currency="EUR")
    adapter = recorder.adapter()
    assert adapter.lookup_modification(request) == ModificationResult("act_9", pending=True)
    # after a 503, the action it finds was accepted but is not done either
    assert adapter.capture(request) == ModificationResult("act_9", pending=True)


@pytest.mark.parametrize("approved,expected", [
    (True, ModificationResult("act_9", pending=False)),
    (None, ModificationResult("act_9", pending=True)),
    (False, ProviderBadRequest),
])
def test_lookup_modification_reads_approved_true_false_and_null(approved, expected):
    recorder = Recorder({("GET", "/payments/pay_1/actions"): httpx.Response(200, json=[
        {"id": "act_9", "type": "Refund", "approved": approved, "reference": "re_1",
         "response_code": "20005" if approved is False else None}])})
    request = ModificationRequest(reference="re_1", provider_reference="pay_1", amount=500,
                                  currency="EUR")
    if expected is ProviderBadRequest:
        with pytest.raises(ProviderBadRequest):
            recorder.adapter().lookup_modification(request)
    else:
        assert recorder.adapter().lookup_modification(request) == expected


@pytest.mark.parametrize("response,error", [
    (httpx.Response(202, json={"reference": "x"}), OutcomeUnknown),
    (httpx.Response(500), OutcomeUnknown),
    (httpx.Response(429), OutcomeUnknown),
    (httpx.Response(403, json={"error_type": "action_not_allowed"}), ProviderBadRequest),
    (httpx.Response(404), ProviderBadRequest),
])
def test_modifications_map_every_answer(response, error):
    recorder = Recorder({("POST", "/payments/pay_1/refunds"): response})
    request = ModificationRequest(reference="att_1-refund", provider_reference="pay_1",
                                  amount=500, currency="EUR")
    with pytest.raises(error) as excinfo:
        recorder.adapter().refund(request)
    assert type(excinfo.value) is error


@pytest.mark.parametrize("response", [
    httpx.Response(200, json={"data": [_payment("Pending", approved=False)]}),
    httpx.Response(500),
    httpx.Response(401),
])
def test_lookup_raises_outcome_unknown_when_it_cannot_tell(response):
    recorder = Recorder({("GET", "/payments"): response})
    with pytest.raises(OutcomeUnknown):
        recorder.adapter().lookup(auth())


def test_lookup_prefers_the_payment_that_moved_money():
    declined = _payment("Declined", approved=False, id="pay_new")
    approved = _payment("Captured", id="pay_old")
    recorder = Recorder({("GET", "/payments"): httpx.Response(200, json={
        "data": [declined, approved]})})
    found = recorder.adapter().lookup(auth())
    assert (found.provider_reference, found.status) == ("pay_old", "captured")


@pytest.mark.parametrize("status,error", [(401, ProviderBadRequest), (503, ProviderUnavailable),
                                          (429, ProviderUnavailable)])
def test_probe_failures(status, error):
    recorder = Recorder({("GET", "/payments"): httpx.Response(status)})
    with pytest.raises(error):
        recorder.adapter().probe()
    query = parse_qs(urlparse(str(recorder.requests[0].url)).query)
    assert query == {"reference": ["switchyard-health-probe"], "limit": ["1"]}


def test_missing_secret_key_is_refused_before_sending():
    recorder = Recorder({})
    with pytest.raises(ProviderBadRequest):
        recorder.adapter(processing_channel_id="pc_x").authorize(auth())
    assert recorder.requests == []


# --- the sandbox on the wire ----------------------------------------------------------------
@pytest.mark.parametrize("authorization", [None, "Basic c2tfc2JveDo=", "Bearer ", "sk_sbox_x"])
def test_sandbox_requires_a_bearer_key(authorization):
    with client_for(config()) as client:
        headers = {"Authorization": authorization} if authorization else {}
        response = client.post("/payments", json=payment_body(), headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"request_id", "error_type", "error_codes"}
    assert response.headers["Cko-Request-Id"] == body["request_id"]
    assert not charges().exists()


def test_sandbox_payment_response_shape():
    body = payment_body(capture=True, metadata={"order": "A1"})
    with wire() as client:
        response = client.post("/payments", json=body)
    assert response.status_code == 201 and response.headers["Cko-Request-Id"]
    payment = response.json()
    assert payment["id"].startswith("pay_") and payment["action_id"].startswith("act_")
    assert (payment["approved"], payment["status"], payment["response_code"],
            payment["response_summary"]) == (True, "Captured", "10000", "Approved")
    assert (payment["amount"], payment["currency"], payment["reference"]) == (
        1050, "EUR", body["reference"])
    assert len(payment["auth_code"]) == 6
    assert payment["source"]["last4"] == "4242" and payment["source"]["scheme"] == "Visa"
    assert "number" not in payment["source"]
    assert set(payment["_links"]) >= {"self", "actions"}
    assert charges().get().metadata == {"order": "A1"}


@pytest.mark.parametrize("change,code", [
    ({"processing_channel_id": None}, "processing_channel_id_required"),
    ({"amount": None}, "amount_required"),
    ({"amount": "10.50"}, "amount_invalid"),
    ({"currency": "eur"}, "currency_invalid"),
    ({"currency": "XXQ"}, "currency_invalid"),
    ({"capture": "false"}, "capture_invalid"),
    ({"reference": "r" * 81}, "reference_invalid"),
    ({"source": {"type": "card", "number": "4242424242424241", "expiry_month": 12,
                 "expiry_year": 2034}}, "card_number_invalid"),
    ({"source": {"type": "card", "number": "4242424242424242", "expiry_month": "12",
                 "expiry_year": 2034}}, "card_expiry_month_invalid"),
    ({"source": {"type": "card", "number": "4242424242424242", "expiry_month": 1,
                 "expiry_year": 2020}}, "card_expired"),
    ({"source": {"type": "token", "token": "tok_x"}}, "source_type_invalid"),
])
def test_sandbox_rejects_invalid_data_with_422(change, code):
    body = {k: v for k, v in {**payment_body(), **change}.items() if v is not None}
    with wire() as client:
        response = client.post("/payments", json=body)
    assert response.status_code == 422
    assert response.json()["error_type"] == "request_invalid"
    assert code in response.json()["error_codes"]
    assert not charges().exists()


def test_idempotent_replay_returns_the_same_status_and_body():
    body = payment_body()
    with wire(**{"Cko-Idempotency-Key": "key-replay"}) as client:
        first = client.post("/payments", json=body)
        second = client.post("/payments", json=body)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert charges().count() == 1


def test_same_key_with_a_different_body_is_a_409_conflict():
    with wire(**{"Cko-Idempotency-Key": "key-mismatch"}) as client:
        first = client.post("/payments", json=payment_body())
        other = client.post("/payments", json=payment_body(amount=999))
    assert first.status_code == 201
    assert other.status_code == 409
    assert other.json()["error_codes"] == ["idempotency_key_reused"]
    assert charges().count() == 1


def test_a_request_whose_key_is_in_flight_gets_409_and_the_adapter_says_unknown(adapter):
    request = auth()
    SandboxIdempotencyRecord.objects.create(provider="checkout", key=request.reference,
                                            fingerprint="in-flight")  # not completed yet
    with wire(**{"Cko-Idempotency-Key": request.reference}) as client:
        response = client.post("/payments", json=payment_body())
    assert response.status_code == 409
    assert response.json()["error_codes"] == ["idempotency_key_in_use"]
    with pytest.raises(OutcomeUnknown) as excinfo:
        adapter.authorize(request)
    assert excinfo.value.raw_code == "409"
    assert not charges().exists()


def test_errors_are_not_stored_so_a_retry_is_executed_again():
    body = payment_body()
    with wire(**{"Cko-Idempotency-Key": "key-errors"}) as client:
        invalid = client.post("/payments", json={**body, "amount": "x"})
        assert invalid.status_code == 422
        SandboxCondition.objects.create(provider="checkout", outage=True)
        unavailable = client.post("/payments", json=body)
        assert unavailable.status_code == 503
        SandboxCondition.objects.filter(provider="checkout").update(outage=False)
        processed = client.post("/payments", json=body)
    assert processed.status_code == 201
    assert charges().count() == 1


def test_503_card_answers_in_checkouts_error_shape():
    with wire() as client:
        response = client.post("/payments", json=payment_body("4000000000000507"))
    assert response.status_code == 503
    assert response.json()["error_type"] == "service_unavailable"
    assert response.json()["request_id"] == response.headers["Cko-Request-Id"]
    assert not charges().exists()


def test_outage_answers_503_to_everything(adapter):
    authorization = adapter.authorize(auth())
    SandboxCondition.objects.create(provider="checkout", outage=True)
    with wire() as client:
        assert client.post("/payments", json=payment_body()).status_code == 503
        assert client.get("/payments", params={"reference": "x"}).status_code == 503
    with pytest.raises(ProviderUnavailable):
        adapter.probe()
    # The authorization's 503 cannot be confirmed while the lookup fails too: unknown, and
    # nothing was charged — which the lookup tells once the outage is over.
    request = auth()
    with pytest.raises(OutcomeUnknown):
        adapter.authorize(request)
    with pytest.raises(OutcomeUnknown):
        adapter.lookup(request)
    with pytest.raises(OutcomeUnknown):
        adapter.capture(mod(authorization, 1050, "capture"))
    assert charges().count() == 1
    SandboxCondition.objects.filter(provider="checkout").update(outage=False)
    assert adapter.lookup(request).found is False
    assert adapter.authorize(request).provider_reference  # the retry is executed
    assert charges().get(provider_reference=authorization.provider_reference).status == \
        "authorized"


def test_get_payment_with_balances_and_unknown_ids():
    with wire() as client:
        created = client.post("/payments", json=payment_body(amount=1000)).json()
        payment = client.get(f"/payments/{created['id']}").json()
        missing = client.get("/payments/pay_unknown")
        missing_actions = client.get("/payments/pay_unknown/actions")
    assert (payment["status"], payment["approved"], payment["amount"]) == ("Authorized", True,
                                                                           1000)
    assert payment["balances"] == {
        "total_authorized": 1000, "total_voided": 0, "available_to_void": 1000,
        "total_captured": 0, "available_to_capture": 1000, "total_refunded": 0,
        "available_to_refund": 0}
    assert missing.status_code == missing_actions.status_code == 404
    assert missing.json()["error_type"] == "resource_not_found"


def test_list_payments_by_reference_newest_first():
    reference = new_reference()
    with wire() as client:
        first = client.post("/payments", json=payment_body(reference=reference)).json()
        second = client.post("/payments", json=payment_body(reference=reference)).json()
        listing = client.get("/payments", params={"reference": reference}).json()
        paged = client.get("/payments", params={"reference": reference, "limit": 1,
                                                "skip": 1}).json()
        no_reference = client.get("/payments")
    assert (listing["total_count"], listing["limit"], listing["skip"]) == (2, 10, 0)
    assert [p["id"] for p in listing["data"]] == [second["id"], first["id"]]
    assert [p["id"] for p in paged["data"]] == [first["id"]]
    assert no_reference.status_code == 422


# --- settlement: the Financial Actions API --------------------------------------------------
def test_financial_actions_for_a_payment(adapter):
    authorization = adapter.authorize(auth(capture=True, amount=1050, currency="EUR"))
    refund = adapter.refund(mod(authorization, 300, "refund"))
    pay_id = authorization.provider_reference
    with wire() as client:
        report = client.get("/financial-actions", params={"payment_id": pay_id}).json()
        actions = client.get(f"/payments/{pay_id}/actions").json()
    capture_action = next(a for a in actions if a["type"] == "Capture")
    assert report["count"] == 2 and report["limit"] == 100
    refund_item, capture_item = report["data"]  # latest first
    assert (refund_item["action_type"], refund_item["action_id"]) == ("Refund",
                                                                      refund.provider_reference)
    assert (capture_item["action_type"], capture_item["action_id"]) == ("Capture",
                                                                        capture_action["id"])
    charge = charges().get()
    for item in report["data"]:
        assert (item["payment_id"], item["reference"]) == (pay_id, charge.reference)
        assert item["processed_on"].endswith("Z")
    fee = ledger.settlement_fee(1050)  # 60 minor units: 30 variable + 30 fixed
    assert [(b["breakdown_type"], b["processing_currency_amount"], b["processing_currency"])
            for b in capture_item["breakdown"]] == [
        ("Capture", 10.5, "EUR"), ("Premium Variable Fee", -(fee - 30) / 100, "EUR"),
        ("Gateway Fixed Fee", -0.3, "EUR")]
    assert sum(b["holding_currency_amount"] for b in capture_item["breakdown"]) == \
        pytest.approx((1050 - fee) / 100)
    assert [(b["breakdown_type"], b["processing_currency_amount"])
            for b in refund_item["breakdown"]] == [("Refund", -3.0)]


def test_financial_actions_filters_partial_capture_zero_decimal_and_pagination(adapter):
    partial = adapter.authorize(auth(amount=1000))
    adapter.capture(mod(partial, 600, "capture"))
    yen = adapter.authorize(auth(capture=True, amount=500, currency="JPY"))
    declined = auth("4000000000000002")
    with pytest.raises(HardDecline):
        adapter.authorize(declined)
    declined_id = charges().get(reference=declined.reference).provider_reference
    with wire() as client:
        partial_report = client.get("/financial-actions",
                                    params={"payment_id": partial.provider_reference}).json()
        yen_report = client.get("/financial-actions",
                                params={"payment_id": yen.provider_reference}).json()
        declined_report = client.get("/financial-actions",
                                     params={"payment_id": declined_id}).json()
        by_action = client.get("/financial-actions", params={
            "action_id": partial_report["data"][0]["action_id"]}).json()
        unfiltered = client.get("/financial-actions")
        refund_one = adapter.refund(mod(yen, 100, "refund"))
        adapter.refund(mod(yen, 100, "refund"))
        page_one = client.get("/financial-actions",
                              params={"payment_id": yen.provider_reference, "limit": 2}).json()
        page_two = client.get(page_one["_links"]["next"]["href"]).json()
    assert partial_report["data"][0]["breakdown"][0] == {
        **partial_report["data"][0]["breakdown"][0], "breakdown_type": "Partial Capture",
        "processing_currency_amount": 6.0}
    assert yen_report["data"][0]["breakdown"][0]["processing_currency_amount"] == 500.0
    assert declined_report == {**declined_report, "count": 0, "data": []}
    assert [i["payment_id"] for i in by_action["data"]] == [partial.provider_reference]
    assert unfiltered.status_code == 422
    assert page_one["count"] == 2 and "next" in page_one["_links"]
    assert page_one["data"][1]["action_id"] == refund_one.provider_reference
    assert [i["action_type"] for i in page_two["data"]] == ["Capture"]
    assert "next" not in page_two["_links"]


# --- settlement: the Reconciliation API (previous platform) ----------------------------------
def test_reconciliation_api_payments_with_actions_and_breakdowns(adapter):
    captured = adapter.authorize(auth(capture=True, amount=1050, currency="EUR"))
    refund = adapter.refund(mod(captured, 300, "refund"))
    manual = adapter.authorize(auth(amount=2000, currency="EUR"))
    capture = adapter.capture(mod(manual, 1500, "capture"))
    adapter.authorize(auth(amount=999))  # authorized only: no money moved
    with wire() as client:
        first = client.get("/reporting/payments", params={"limit": 1}).json()
        second = client.get(first["_links"]["next"]["href"]).json()
        bad = client.get("/reporting/payments", params={"from": "yesterday"})
        future = client.get("/reporting/payments", params={"from": "2999-01-01T00:00:00Z"})
    assert (first["count"], second["count"]) == (1, 1)
    assert "next" not in second["_links"] and bad.status_code == 422
    assert future.json()["data"] == []
    by_id = {p["id"]: p for p in first["data"] + second["data"]}
    auto = by_id[captured.provider_reference]
    assert (auto["processing_currency"], auto["channel_name"]) == ("EUR", "pc_sandbox")
    assert [(a["type"], a["response_code"]) for a in auto["actions"]] == [
        ("Capture", "10000"), ("Refund", "10000")]
    fee = ledger.settlement_fee(1050)
    assert [(b["type"], b["processing_currency_amount"])
            for b in auto["actions"][0]["breakdown"]] == [
        ("Captured", 10.5), ("Premium Fee", -(fee - 30) / 100), ("Scheme Fixed Fee", -0.3)]
    assert auto["actions"][1]["id"] == refund.provider_reference
    assert [(b["type"], b["processing_currency_amount"])
            for b in auto["actions"][1]["breakdown"]] == [("Refunded", -3.0)]
    [manual_capture] = by_id[manual.provider_reference]["actions"]
    assert manual_capture["id"] == capture.provider_reference

    report = adapter.fetch_settlement(charges().first().created_at.date())
    assert sorted((line.kind, line.amount_minor) for line in report.lines) == [
        ("capture", 1050), ("capture", 1500), ("refund", 300)]
