"""Every row of docs/api.md's error table, and the one error shape they all share.

`{"error": {"type", "code", "message", "param"}}` with exactly those keys (plus `decline_code`
on card errors, whose body also carries the failed `payment`), the right HTTP status, JSON
even for paths no view matched, and never a stack trace.
"""

from __future__ import annotations

import types

import pytest

from payments.api import throttling
from payments.models import APIKey, IdempotencyKey, Payment
from payments.services import idempotency
from payments.services.merchants import api_key_create, api_key_revoke
from tests.conftest import ERROR_KEYS, Api, assert_error, make_card, pay


def raw(api: Api, method: str, path: str, data: str | bytes = "",
        content_type: str = "application/json", headers: dict | None = None):
    """A request with a body exactly as given (the Api helper always sends valid JSON)."""
    extra = {}
    if api.key:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {api.key}"
    for name, value in (headers or {}).items():
        extra["HTTP_" + name.upper().replace("-", "_")] = value
    return api.client.generic(method, path, data, content_type=content_type, **extra)


CARD = {"type": "card",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034}}


# --- 400 invalid_request_error: malformed bodies --------------------------------------------
@pytest.mark.parametrize("path", ["/v1/payment_methods", "/v1/payments", "/v1/refunds"])
@pytest.mark.parametrize("body", ['{"amount": ', "{'amount': 1}", "not json", '{"a": 1}}',
                                  "\xff\xfe"])
def test_malformed_json(api, path, body):
    resp = raw(api, "POST", path, body)
    assert_error(resp, 400, "invalid_request_error", "invalid_json")


def test_malformed_json_on_an_action(api):
    payment = api.post("/v1/payments", {"amount": 100, "currency": "USD"}).json()
    resp = raw(api, "POST", f"/v1/payments/{payment['id']}/cancel", '{"cancellation_reason"')
    assert_error(resp, 400, "invalid_request_error", "invalid_json")
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == \
        "requires_confirmation"


def test_malformed_json_with_an_idempotency_key_does_not_burn_the_key(api):
    resp = raw(api, "POST", "/v1/payment_methods", "{", headers={"Idempotency-Key": "k-1"})
    assert_error(resp, 400, "invalid_request_error", "invalid_json")
    fixed = api.post("/v1/payment_methods", CARD, idempotency_key="k-1")
    assert fixed.status_code == 200, fixed.json()


@pytest.mark.parametrize("body", ["[1, 2]", "[]", '"a string"', "42", "true", "null"])
@pytest.mark.parametrize("path", ["/v1/payment_methods", "/v1/payments", "/v1/refunds"])
def test_body_that_is_not_a_json_object(api, path, body):
    resp = raw(api, "POST", path, body)
    assert_error(resp, 400, "invalid_request_error")


def test_json_array_body(api):
    resp = raw(api, "POST", "/v1/payments", '[{"amount": 100, "currency": "USD"}]')
    error = assert_error(resp, 400, "invalid_request_error")
    assert "object" in error["message"].lower()
    assert not Payment.objects.exists()


def test_missing_unknown_and_invalid_fields_name_the_param(api):
    assert_error(api.post("/v1/payments", {"currency": "USD"}), 400, "invalid_request_error",
                 "parameter_missing", param="amount")
    assert_error(api.post("/v1/payments", {"amount": 1, "currency": "USD", "amout": 1}), 400,
                 "invalid_request_error", "parameter_unknown", param="amout")
    assert_error(api.post("/v1/payments", {"amount": 1, "currency": "USD",
                                           "capture_method": "later"}),
                 400, "invalid_request_error", param="capture_method")
    assert_error(api.post("/v1/payments", {"amount": 1, "currency": "USD",
                                           "metadata": {"k": 1}}),
                 400, "invalid_request_error", param="metadata")
    assert_error(api.get("/v1/payments", {"colour": "red"}), 400, "invalid_request_error",
                 "parameter_unknown", param="colour")
    assert_error(api.get("/v1/payments", {"limit": 0}), 400, "invalid_request_error",
                 param="limit")


# --- 400 idempotency_error / 409 key in use --------------------------------------------------
def test_idempotency_key_reused_with_another_body(api):
    first = api.post("/v1/payments", {"amount": 100, "currency": "USD"}, idempotency_key="k")
    assert first.status_code == 200
    resp = api.post("/v1/payments", {"amount": 200, "currency": "USD"}, idempotency_key="k")
    assert_error(resp, 400, "idempotency_error", "idempotency_key_reused",
                 param="Idempotency-Key")
    assert Payment.objects.count() == 1


def test_idempotency_key_in_use(api, merchant):
    body = {"amount": 100, "currency": "USD"}
    # The first request with this key is still running (its row is claimed, not completed).
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="busy",
        fingerprint=idempotency.request_fingerprint("POST", "/v1/payments", body))
    resp = api.post("/v1/payments", body, idempotency_key="busy")
    assert_error(resp, 409, "invalid_request_error", "idempotency_key_in_use",
                 param="Idempotency-Key")
    assert not Payment.objects.exists()


# --- 415: content type -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", '{"amount": 100, "currency": "USD"}'),
        ("application/x-www-form-urlencoded", "amount=100&currency=USD"),
        ("multipart/form-data; boundary=XX",
         '--XX\r\nContent-Disposition: form-data; name="amount"\r\n\r\n100\r\n--XX--\r\n'),
        ("application/xml", "<payment><amount>100</amount></payment>"),
    ],
)
@pytest.mark.parametrize("idempotency_key", [None, "ct-1"])
def test_wrong_content_type_is_415(api, content_type, data, idempotency_key):
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    resp = raw(api, "POST", "/v1/payments", data, content_type=content_type, headers=headers)
    assert_error(resp, 415, "invalid_request_error", "unsupported_media_type")
    assert not Payment.objects.exists()
    if idempotency_key:  # nothing ran, so nothing is stored under the key
        ok = api.post("/v1/payments", {"amount": 100, "currency": "USD"},
                      idempotency_key=idempotency_key)
        assert ok.status_code == 200, ok.json()


def test_form_encoded_card_is_415_and_not_echoed(api):
    resp = raw(api, "POST", "/v1/payment_methods",
               "type=card&card[number]=4242424242424242&card[exp_month]=12",
               content_type="application/x-www-form-urlencoded")
    assert_error(resp, 415, "invalid_request_error")
    assert "4242424242424242" not in resp.content.decode()


def test_json_with_charset_is_accepted(api):
    resp = raw(api, "POST", "/v1/payments", '{"amount": 100, "currency": "USD"}',
               content_type="application/json; charset=utf-8")
    assert resp.status_code == 200, resp.json()


# --- 401 authentication_error --------------------------------------------------------------
def assert_unauthenticated(resp):
    assert_error(resp, 401, "authentication_error")
    assert resp["WWW-Authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize("method,path", [("GET", "/v1/payments"),
                                         ("POST", "/v1/payments"),
                                         ("GET", "/v1/payment_methods"),
                                         ("POST", "/v1/payment_methods"),
                                         ("GET", "/v1/refunds"),
                                         ("GET", "/v1/payments/pay_123"),
                                         ("POST", "/v1/payments/pay_123/capture")])
def test_no_key(anon, method, path):
    resp = raw(anon, method, path, "{}")
    assert_unauthenticated(resp)


@pytest.mark.parametrize("header", [
    "Bearer sk_test_wrong",
    "Bearer sk_live_wrong",
    "Bearer pk_test_123",
    "Bearer ",
    "Bearer",
    "Basic c2tfdGVzdF94eXo6",
    "Token sk_test_abc",
    "sk_test_abc",
    "",
])
def test_wrong_or_malformed_key(db, header):
    client = Api(None)
    resp = client.client.get("/v1/payments", HTTP_AUTHORIZATION=header)
    assert_unauthenticated(resp)


def test_key_of_the_right_shape_but_unknown_is_not_echoed(db):
    secret = "sk_live_" + "A" * 43
    resp = Api(secret).get("/v1/payments")
    assert_unauthenticated(resp)
    assert secret not in resp.content.decode()


def test_revoked_key(merchant_keys):
    merchant, test_key, _ = merchant_keys
    api = Api(test_key)
    assert api.get("/v1/payments").status_code == 200
    for key in APIKey.objects.filter(merchant=merchant, livemode=False):
        api_key_revoke(actor="test", key=key)
    assert_unauthenticated(api.get("/v1/payments"))
    assert_unauthenticated(api.post("/v1/payments", {"amount": 100, "currency": "USD"}))
    assert not Payment.objects.exists()
    # a new key of the same merchant works
    _, fresh = api_key_create(actor="test", merchant=merchant, livemode=False)
    assert Api(fresh).get("/v1/payments").status_code == 200


def test_revoking_one_key_leaves_the_others(merchant_keys):
    merchant, test_key, live_key = merchant_keys
    api_key_revoke(actor="test", key=APIKey.objects.get(merchant=merchant, livemode=True))
    assert_unauthenticated(Api(live_key).get("/v1/payments"))
    assert Api(test_key).get("/v1/payments").status_code == 200


# --- 402 card_error --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "code", "decline_code"),
    [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000069", "expired_card", "expired_card"),
        ("4000000000009987", "card_declined", "lost_card"),
        ("4000000000000119", "processing_error", "processing_error"),
    ],
)
def test_declined_card(api, number, code, decline_code):
    resp = pay(api, number, reference="order-9")
    error = assert_error(resp, 402, "card_error", code, card_error=True)
    assert error["decline_code"] == decline_code
    payment = resp.json()["payment"]
    assert payment["object"] == "payment"
    assert payment["id"].startswith("pay_")
    assert payment["status"] == "failed"
    assert payment["reference"] == "order-9"
    assert payment["amount_captured"] == 0
    assert payment["last_error"]["decline_code"] == decline_code
    assert payment["attempts"] and payment["attempts"][-1]["status"] == "declined"
    assert payment["attempts"][-1]["decline_code"] == decline_code
    assert number not in resp.content.decode()
    # the body's payment is the stored one
    stored = api.get(f"/v1/payments/{payment['id']}")
    assert stored.json()["status"] == "failed"
    assert stored.json()["last_error"] == payment["last_error"]


def test_decline_on_separate_confirm(api):
    pm_id = make_card(api, "4000000000009995")
    payment = api.post("/v1/payments", {"amount": 700, "currency": "EUR",
                                        "payment_method": pm_id}).json()
    resp = api.post(f"/v1/payments/{payment['id']}/confirm")
    error = assert_error(resp, 402, "card_error", "card_declined", card_error=True)
    assert error["decline_code"] == "insufficient_funds"
    assert resp.json()["payment"]["id"] == payment["id"]


# --- 404 resource_missing ------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/payments/pay_doesnotexist",
                                  "/v1/payment_methods/pm_doesnotexist",
                                  "/v1/refunds/re_doesnotexist",
                                  "/v1/payments/pm_wrongprefix",
                                  "/v1/payments/%20"])
def test_unknown_id_on_get(api, path):
    assert_error(api.get(path), 404, "invalid_request_error", "resource_missing")


@pytest.mark.parametrize("action", ["confirm", "capture", "cancel"])
def test_unknown_id_on_actions(api, action):
    assert_error(api.post(f"/v1/payments/pay_doesnotexist/{action}"), 404,
                 "invalid_request_error", "resource_missing")


def test_unknown_ids_in_bodies_name_the_param(api):
    assert_error(api.post("/v1/refunds", {"payment": "pay_doesnotexist"}), 404,
                 "invalid_request_error", "resource_missing", param="payment")
    assert_error(api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                           "payment_method": "pm_doesnotexist"}),
                 404, "invalid_request_error", "resource_missing", param="payment_method")
    payment = api.post("/v1/payments", {"amount": 100, "currency": "USD"}).json()
    assert_error(api.post(f"/v1/payments/{payment['id']}/confirm",
                          {"payment_method": "pm_doesnotexist"}),
                 404, "invalid_request_error", "resource_missing", param="payment_method")
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == \
        "requires_confirmation"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path",
    [
        "/v1",
        "/v1/",
        "/v1/charges",
        "/v1/payments/",
        "/v1/payment_methods/",
        "/v1/refunds/",
        "/v1/payments/pay_123/",
        "/v1/payments/pay_123/confirm/",
        "/v1/payments/pay_123/capture/",
        "/v1/payments/pay_123/refund",
        "/v1/payments/pay_123/confirm/extra",
        "/v2/payments",
        "/payments",
    ],
)
def test_unknown_paths_are_json_404(api, method, path):
    resp = raw(api, method, path, "{}")
    error = assert_error(resp, 404, "invalid_request_error", "resource_missing")
    assert "<html" not in resp.content.decode().lower()
    assert path in error["message"]


def test_unknown_path_without_a_key_is_still_json(anon):
    resp = anon.get("/v1/nothing/here")
    assert resp.status_code in (401, 404)
    assert resp["Content-Type"].startswith("application/json")
    assert set(resp.json()["error"]) == ERROR_KEYS


# --- 405 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/payments"),
        ("PUT", "/v1/payments"),
        ("PATCH", "/v1/payments"),
        ("DELETE", "/v1/payment_methods"),
        ("DELETE", "/v1/refunds"),
        ("GET", "/v1/payments/{pay}/capture"),
        ("GET", "/v1/payments/{pay}/confirm"),
        ("GET", "/v1/payments/{pay}/cancel"),
        ("DELETE", "/v1/payments/{pay}"),
        ("PUT", "/v1/payments/{pay}"),
        ("PATCH", "/v1/payments/{pay}"),
        ("POST", "/v1/payments/{pay}"),
        ("POST", "/v1/payment_methods/{pm}"),
        ("DELETE", "/v1/payment_methods/{pm}"),
        ("POST", "/v1/refunds/re_123"),
        ("DELETE", "/v1/refunds/re_123"),
    ],
)
def test_wrong_method_is_json_405(api, method, path):
    pm_id = make_card(api)
    payment = api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                        "payment_method": pm_id}).json()
    path = path.format(pay=payment["id"], pm=pm_id)
    resp = raw(api, method, path, "{}")
    assert_error(resp, 405, "invalid_request_error", "method_not_allowed")
    assert method not in resp["Allow"].split(", ")
    stored = api.get(f"/v1/payments/{payment['id']}").json()
    assert stored["status"] == "requires_confirmation"


def test_wrong_method_with_an_idempotency_key_is_405(api):
    payment = api.post("/v1/payments", {"amount": 100, "currency": "USD"}).json()
    resp = api.post(f"/v1/payments/{payment['id']}", {}, idempotency_key="m-1")
    assert_error(resp, 405, "invalid_request_error", "method_not_allowed")


# --- 409 payment_state_invalid ------------------------------------------------------------
def test_capture_before_confirmation_is_409(api):
    pm_id = make_card(api)
    payment = api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                        "payment_method": pm_id}).json()
    assert payment["status"] == "requires_confirmation"
    resp = api.post(f"/v1/payments/{payment['id']}/capture")
    error = assert_error(resp, 409, "invalid_request_error", "payment_state_invalid")
    assert "requires_confirmation" in error["message"]
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == \
        "requires_confirmation"


def test_other_illegal_state_changes_are_409(api):
    done = pay(api).json()
    assert done["status"] == "succeeded"
    for action in ("confirm", "capture", "cancel"):
        assert_error(api.post(f"/v1/payments/{done['id']}/{action}"), 409,
                     "invalid_request_error", "payment_state_invalid")
    pending = api.post("/v1/payments", {"amount": 100, "currency": "USD"}).json()
    assert_error(api.post("/v1/refunds", {"payment": pending["id"]}), 409,
                 "invalid_request_error", "payment_state_invalid")
    assert api.get(f"/v1/payments/{done['id']}").json()["status"] == "succeeded"


# --- 429 rate_limit_error ------------------------------------------------------------------
def test_rate_limit(api, other_api, merchant, monkeypatch):
    # Pin the clock 15 s into a one-minute window so the three requests share it.
    now = 1_800_000_000.0 // 60 * 60 + 15
    monkeypatch.setattr(throttling, "time", types.SimpleNamespace(time=lambda: now))
    merchant.rate_limit_per_minute = 2
    merchant.save()

    assert api.get("/v1/payments").status_code == 200
    assert api.post("/v1/payments", {"amount": 100, "currency": "USD"}).status_code == 200
    resp = api.post("/v1/payments", {"amount": 100, "currency": "USD"})
    assert_error(resp, 429, "rate_limit_error", "rate_limit")
    assert resp["Retry-After"] == "45"
    assert Payment.objects.count() == 1  # the throttled request did nothing
    assert api.get("/v1/payments").status_code == 429
    # the limit is per merchant: another merchant is unaffected
    assert other_api.get("/v1/payments").status_code == 200


def test_rate_limit_retry_after_is_a_positive_integer(api, merchant):
    merchant.rate_limit_per_minute = 1
    merchant.save()
    statuses = [api.get("/v1/payments") for _ in range(3)]
    throttled = [r for r in statuses if r.status_code == 429]
    assert throttled  # at most one can fall into a fresh window
    for resp in throttled:
        assert_error(resp, 429, "rate_limit_error")
        assert 1 <= int(resp["Retry-After"]) <= 60


# --- 500 api_error -------------------------------------------------------------------------
def _explode(*args, **kwargs):
    raise RuntimeError("secret detail")


@pytest.mark.parametrize("idempotency_key", [None, "crash-1"])
def test_unexpected_error_is_api_error_without_details(api, monkeypatch, idempotency_key):
    monkeypatch.setattr("payments.api.views.payment_create", _explode)
    resp = api.post("/v1/payments", {"amount": 100, "currency": "USD"},
                    idempotency_key=idempotency_key)
    error = assert_error(resp, 500, "api_error", "internal_error")
    text = resp.content.decode()
    assert "secret detail" not in text
    assert "RuntimeError" not in text
    assert "Traceback" not in text
    assert error["message"]


def test_unexpected_error_in_a_get(api, monkeypatch):
    monkeypatch.setattr("payments.api.views.paginate", _explode)
    resp = api.get("/v1/payments")
    assert_error(resp, 500, "api_error", "internal_error")
    assert "secret detail" not in resp.content.decode()


def test_crash_outside_drf_is_json_500(api, monkeypatch):
    """A crash before DRF's handler runs reaches Django's handler500: same shape."""
    from payments.api.views import PaymentListView

    monkeypatch.setattr(PaymentListView, "dispatch", _explode)
    api.client.raise_request_exception = False
    resp = api.get("/v1/payments")
    error = assert_error(resp, 500, "api_error")
    assert "secret detail" not in resp.content.decode()
    assert "<html" not in resp.content.decode().lower()
    assert error["code"] == "internal_error"
