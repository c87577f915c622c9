"""What is Adyen's own: the adapter's wire format, its reading of Adyen's answers, lookups by
replay, webhooks of modifications, the settlement report, and the sandbox's wire behaviour
(auth, idempotency, faults). What every adapter shares (operations, test cards, unknown
outcomes, replays, lookups, probes, real HTTP) is in test_adapter_contract.py.

The sandbox ledger (`SandboxCharge`, `SandboxOperation`) is what the simulated provider
believes it has charged: the tests count charges there.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC

import httpx
import pytest

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
from providers.sandboxes.transport import SANDBOX_HOST, SandboxTransport

pytestmark = pytest.mark.django_db

CREDENTIALS = SANDBOX_CREDENTIALS["adyen"]
CONFIG = AccountConfig(name="adyen-test", provider="adyen", livemode=False,
                       base_url="sandbox://local", credentials=CREDENTIALS)
KEY_HEADERS = {"X-API-Key": CREDENTIALS["api_key"]}

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


def test_holder_name_trigger_word_forces_the_refusal():
    with pytest.raises(HardDecline) as raised:
        adapter().authorize(make_request(holder_name="NOT_ENOUGH_BALANCE"))

    assert raised.value.decline_code == "insufficient_funds"
    [charge] = charges()
    assert charge.card_last4 == "4242"


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


def test_idempotency_key_fits_adyens_64_characters():
    assert idempotency_key("att_abc") == "att_abc"
    long = "x" * 65
    assert len(idempotency_key(long)) == 64
    assert idempotency_key(long) == idempotency_key(long) != idempotency_key("y" * 65)


# --- capture, cancel, refund ----------------------------------------------------------------


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


def test_accepted_modifications_are_confirmed_in_webhooks(webhooks):
    """The modifications are in test_adapter_contract.py (where refusals arrive in webhooks);
    here, the webhooks of the accepted ones: success "true", under the operation's pspReference."""
    instance = adapter()
    voided = instance.authorize(make_request())
    cancel = instance.cancel(modification(voided.provider_reference, 1050))
    captured = instance.authorize(make_request(capture=True, amount=1000))
    first = instance.refund(modification(captured.provider_reference, 300))
    second = instance.refund(modification(captured.provider_reference, 600))
    third = instance.refund(modification(captured.provider_reference, 101))

    [cancellation] = webhooks("CANCELLATION")
    assert (cancellation["success"], cancellation["pspReference"]) == (
        "true", cancel.provider_reference)
    assert cancel.provider_reference != voided.provider_reference
    refunds = webhooks("REFUND")
    assert [(i["pspReference"], i["success"]) for i in refunds] == [
        (first.provider_reference, "true"), (second.provider_reference, "true"),
        (third.provider_reference, "false")]
    assert all(i["originalReference"] == captured.provider_reference for i in refunds)


def test_modification_retried_with_the_same_reference_happens_once():
    instance = adapter()
    auth = instance.authorize(make_request(capture=True))
    request = modification(auth.provider_reference, 400, reference="re_" + "r" * 67)

    first = instance.refund(request)  # a 70-character reference: hashed into the key
    again = instance.refund(request)

    assert first == again
    assert SandboxOperation.objects.filter(kind="refund").count() == 1
    assert charges()[0].amount_refunded == 400


# --- lookup -------------------------------------------------------------------------------


def test_lookup_finds_a_capture_without_the_cvc():
    request = make_request(capture=True)
    auth = adapter().authorize(request)
    without_cvc = make_request(capture=True, reference=request.reference, cvc=None)

    found = adapter().lookup(without_cvc)  # the CVC is never persisted: the replay lacks it

    assert (found.found, found.provider_reference, found.status) == (
        True, auth.provider_reference, "captured")
    assert len(charges()) == 1


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


def test_probe_without_a_merchant_account():  # (without an API key: the contract suite)
    config = AccountConfig(name="adyen-bad", provider="adyen", livemode=False,
                           base_url="sandbox://local",
                           credentials={"api_key": "k", "merchant_account": ""})

    with pytest.raises(ProviderBadRequest) as raised:
        adapter(config).probe()

    assert raised.value.raw_code == "901"


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


def test_sandbox_answers_a_key_in_flight_with_a_transient_704():
    # (the adapter's reading of it, with a real second request in flight: the contract suite)
    SandboxIdempotencyRecord.objects.create(provider="adyen", key="key-busy",
                                            fingerprint="in-flight")  # not completed yet

    response = wire().post("/v71/payments", json=payment_body(),
                           headers={**KEY_HEADERS, "Idempotency-Key": "key-busy"})

    assert response.status_code == 422 and response.json()["errorCode"] == "704"
    assert response.headers["transient-error"] == "true"
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


# --- over real HTTP (the rest: the contract suite) --------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_http_probe_and_settlement_report(serve_sandbox):
    instance = AdyenAdapter(AccountConfig(
        name="adyen-http", provider="adyen", livemode=False, base_url=serve_sandbox("adyen"),
        credentials=CREDENTIALS, connect_timeout=2.0, read_timeout=5.0))
    instance.probe()
    instance.authorize(make_request(capture=True, amount=1050))

    [line] = instance.settlement_report(_batch())  # served outside /v71

    assert (line.type, line.amount, line.currency, line.fee) == ("capture", 1050, "USD", 60)
