"""No 5xx from anything a client can send (issue #8, #10).

Postgres text and JSON columns refuse NUL characters, and UTF-8 has no encoding for a lone
surrogate, so either reaching the database used to be a 500. They are refused at the edge
instead: in the request URL (path ids, query parameters) and cookies before anything else
runs, and in JSON bodies by the parser, with a 400 whose `param` names the field. Oversized, deeply nested
and otherwise hostile bodies get a 4xx in the API's error shape too.
"""

from __future__ import annotations

import json

import pytest

from payments.models import Payment
from providers.models import ProviderAccount
from tests.payments.test_errors import assert_error, raw

pytestmark = pytest.mark.django_db

# "\ud800" and "\udfff" are what a JSON body's "\ud800" escapes parse to: lone surrogates,
# which no UTF-8 encoder (psycopg2's included) can write.
BAD_STRINGS = ["a\x00b", "\x00", "a\ud800b", "\udfff"]


def code_for(bad: str) -> str:
    """DRF's codes for the same refusal on a string field, used for every field."""
    return "null_characters_not_allowed" if "\x00" in bad else \
        "surrogate_characters_not_allowed"


def post_json(api, path: str, body: object):
    """POST `body` with its strings as JSON escapes, as a client would send them."""
    return raw(api, "POST", path, json.dumps(body, ensure_ascii=True))


def assert_no_server_error(resp):
    assert resp.status_code < 500, resp.content
    assert resp["Content-Type"].startswith("application/json"), resp.content
    assert set(resp.json()["error"]) == {"type", "code", "message", "param"}


@pytest.fixture
def payment(api):
    resp = api.post("/v1/payments", {"amount": 1000, "currency": "USD"})
    assert resp.status_code == 200
    return resp.json()["id"]


@pytest.fixture
def rule(api):
    resp = api.post("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"]})
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]


# --- path ids -------------------------------------------------------------------------------
PATHS = [
    ("GET", "/v1/payments/pay_%00"),
    ("GET", "/v1/payments/%00"),
    ("GET", "/v1/payment_methods/pm_%00x"),
    ("GET", "/v1/refunds/re_%00"),
    ("GET", "/v1/routing_rules/rr_%00"),
    ("GET", "/v1/retry_rules/%00"),
    ("POST", "/v1/payments/pay_%00/confirm"),
    ("POST", "/v1/payments/pay_%00/capture"),
    ("POST", "/v1/payments/pay_%00/cancel"),
    ("POST", "/v1/routing_rules/rr_%00"),
    ("DELETE", "/v1/routing_rules/rr_%00"),
    ("DELETE", "/v1/retry_rules/%00"),
]


@pytest.mark.parametrize(("method", "path"), PATHS)
def test_nul_in_a_path_id_is_a_404(api, method, path):
    resp = raw(api, method, path, "{}")
    assert_error(resp, 404, "invalid_request_error", "resource_missing")


@pytest.mark.parametrize(("method", "path"), PATHS[:2])
def test_nul_in_a_path_id_without_a_key_is_not_a_500(anon, method, path):
    assert_no_server_error(raw(anon, method, path))


@pytest.mark.parametrize("path", ["/provider_webhooks/acct_%00", "/provider_webhooks/%00"])
def test_nul_in_a_provider_webhook_account_id(client, path):
    resp = client.post(path, b"{}", content_type="application/json")
    assert resp.status_code == 404, resp.content
    assert resp.json()["error"]["code"] == "resource_missing"


# --- query parameters -----------------------------------------------------------------------
QUERY = [
    ("/v1/payments", "starting_after"),
    ("/v1/payments", "reference"),
    ("/v1/payments", "status"),
    ("/v1/payments", "limit"),
    ("/v1/payments", "created[gte]"),
    ("/v1/refunds", "payment"),
    ("/v1/refunds", "starting_after"),
    ("/v1/payment_methods", "starting_after"),
    ("/v1/routing_rules", "starting_after"),
    ("/v1/retry_rules", "starting_after"),
]


@pytest.mark.parametrize(("path", "name"), QUERY)
@pytest.mark.parametrize("value", ["\x00", "pay_\x00", "x\x00y"])
def test_nul_in_a_query_parameter_is_a_400_naming_it(api, path, name, value):
    resp = api.get(path, {name: value})
    error = assert_error(resp, 400, "invalid_request_error", "null_characters_not_allowed",
                         param=name)
    assert "NUL" in error["message"]


def test_nul_in_a_query_parameter_name(api):
    resp = api.get("/v1/payments", {"refer\x00ence": "x"})
    assert_error(resp, 400, "invalid_request_error", "null_characters_not_allowed")


def test_nul_in_a_query_parameter_without_a_key(anon):
    resp = anon.get("/v1/payments", {"reference": "\x00"})
    assert_error(resp, 400, "invalid_request_error", "null_characters_not_allowed",
                 param="reference")


def test_too_many_query_parameters(api, settings):
    query = "&".join(f"reference={i}" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    assert_error(api.client.get(f"/v1/payments?{query}",
                                HTTP_AUTHORIZATION=f"Bearer {api.key}"),
                 400, "invalid_request_error", "bad_request")


@pytest.mark.parametrize("path", ["/admin/", "/admin/payments/payment/", "/v1/payments"])
def test_nul_in_a_cookie(api, path):
    # Django unquotes octal escapes in quoted cookie values: this session key is "\x00abc…",
    # which the admin looked up in Postgres.
    resp = api.client.get(path, HTTP_COOKIE='sessionid="\\000abcdefghijk"',
                          HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert_error(resp, 400, "invalid_request_error", "null_characters_not_allowed")


def test_nul_in_an_admin_search(admin_client):
    resp = admin_client.get("/admin/payments/payment/", {"q": "\x00"})
    assert_error(resp, 400, "invalid_request_error", "null_characters_not_allowed", param="q")


# --- JSON bodies ------------------------------------------------------------------------------
def _body_cases():
    """(path template, body with BAD where the bad string goes, expected param)."""
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034}
    pm = {"type": "card", "card": card}
    return [
        ("/v1/payments", {"amount": 100, "currency": "USD", "metadata": {"k": "BAD"}},
         "metadata.k"),
        ("/v1/payments", {"amount": 100, "currency": "USD", "metadata": {"BAD": "v"}},
         "metadata"),
        ("/v1/payments", {"amount": 100, "currency": "USD", "description": "BAD"},
         "description"),
        ("/v1/payments", {"amount": 100, "currency": "USD", "reference": "BAD"}, "reference"),
        ("/v1/payments", {"amount": 100, "currency": "USD", "payment_method": "BAD"},
         "payment_method"),
        ("/v1/payments", {"amount": 100, "currency": "USD", "provider": "BAD"}, "provider"),
        ("/v1/payments", {"amount": 100, "currency": "BAD"}, "currency"),
        ("/v1/payments", {"amount": 100, "currency": "USD", "BAD": 1}, None),
        ("/v1/payment_methods", {**pm, "billing_details": {"name": "BAD"}},
         "billing_details.name"),
        ("/v1/payment_methods",
         {**pm, "billing_details": {"address": {"line1": "BAD", "country": "US"}}},
         "billing_details.address.line1"),
        ("/v1/payment_methods", {**pm, "card": {**card, "cvc": "BAD"}}, "card.cvc"),
        ("/v1/refunds", {"payment": "BAD"}, "payment"),
        ("/v1/refunds", {"payment": "{payment}", "metadata": {"k": "BAD"}}, "metadata.k"),
        ("/v1/payments/{payment}/confirm", {"payment_method": "BAD"}, "payment_method"),
        ("/v1/payments/{payment}/cancel", {"cancellation_reason": "BAD"},
         "cancellation_reason"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["BAD"]}, "accounts.0"),
        ("/v1/routing_rules",
         {"strategy": "weighted", "accounts": [{"account": "BAD", "weight": 1}]},
         "accounts.0.account"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "description": "BAD"}, "description"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "conditions": {"card_brands": ["visa", "BAD"]}},
         "conditions.card_brands.1"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "conditions": {"bin_prefixes": ["BAD"]}},
         "conditions.bin_prefixes.0"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "conditions": {"billing_countries": ["BAD"]}},
         "conditions.billing_countries.0"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "conditions": {"currencies": ["BAD"]}},
         "conditions.currencies.0"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "conditions": {"metadata": {"channel": "BAD"}}},
         "conditions.metadata.channel"),
        ("/v1/routing_rules", {"strategy": "ordered", "accounts": ["stripe-sandbox"],
                               "conditions": {"metadata": {"BAD": "web"}}},
         "conditions.metadata"),
        ("/v1/routing_rules/{rule}", {"description": "BAD"}, "description"),
        ("/v1/routing_rules/{rule}", {"conditions": {"metadata": {"k": "BAD"}}},
         "conditions.metadata.k"),
        ("/v1/retry_rules", {"decline_code": "BAD", "retry": True}, "decline_code"),
    ]


def _substitute(value, bad: str):
    if isinstance(value, dict):
        return {_substitute(k, bad): _substitute(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, bad) for v in value]
    if isinstance(value, str):
        return value.replace("BAD", bad)
    return value


@pytest.mark.parametrize(("path", "body", "param"), _body_cases())
@pytest.mark.parametrize("bad", BAD_STRINGS)
@pytest.mark.parametrize("idempotency_key", [None, "hostile-1"])
def test_nul_and_lone_surrogates_in_bodies_are_a_400_naming_the_field(
        request, api, path, body, param, bad, idempotency_key):
    if "{payment}" in path or "{payment}" in json.dumps(body):
        payment = request.getfixturevalue("payment")
        path = path.replace("{payment}", payment)
        body = json.loads(json.dumps(body).replace("{payment}", payment))
    if "{rule}" in path:
        path = path.replace("{rule}", request.getfixturevalue("rule"))
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    resp = raw(api, "POST", path, json.dumps(_substitute(body, bad), ensure_ascii=True),
               headers=headers)
    error = assert_error(resp, 400, "invalid_request_error", code_for(bad), param=param)
    assert ("NUL" in error["message"]) == ("\x00" in bad)
    if idempotency_key:  # a refused body does not burn the key
        fixed = api.post("/v1/payments", {"amount": 100, "currency": "USD"},
                         idempotency_key=idempotency_key)
        assert fixed.status_code == 200, fixed.json()


def test_valid_astral_characters_still_pass(api):
    resp = post_json(api, "/v1/payments", {"amount": 100, "currency": "USD",
                                            "description": "caf\u00e9 \U0001f600",
                                            "metadata": {"emoji": "\U0001f680"}})
    assert resp.status_code == 200, resp.json()
    assert resp.json()["description"] == "caf\u00e9 \U0001f600"
    assert resp.json()["metadata"] == {"emoji": "\U0001f680"}


def test_nothing_was_stored(api):
    for bad in BAD_STRINGS:
        post_json(api, "/v1/payments", {"amount": 100, "currency": "USD",
                                        "metadata": {"k": bad}})
    assert not Payment.objects.exists()


@pytest.mark.parametrize("depth", [100, 2_000, 100_000])
@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a": ', "}")])
def test_deeply_nested_json_is_invalid_json(api, depth, opener, closer):
    body = '{"amount": 100, "currency": "USD", "metadata": ' + opener * depth + "1" \
        + closer * depth + "}"
    resp = raw(api, "POST", "/v1/payments", body)
    assert_error(resp, 400, "invalid_request_error", "invalid_json")


def test_nesting_a_real_request_needs_is_fine(api):
    resp = api.post("/v1/routing_rules", {
        "strategy": "weighted", "conditions": {"metadata": {"channel": "web"}},
        "accounts": [{"account": "stripe-sandbox", "weight": 1}]})
    assert resp.status_code == 200, resp.json()


@pytest.mark.parametrize("path", ["/v1/payments", "/v1/payment_methods", "/v1/routing_rules"])
def test_a_body_over_the_upload_limit_is_a_413(api, settings, path):
    body = '{"description": "' + "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}'
    resp = raw(api, "POST", path, body)
    assert_error(resp, 413, "invalid_request_error", "request_too_large")
    assert not Payment.objects.exists()


def test_a_body_over_the_upload_limit_with_an_idempotency_key_is_a_413(api, settings):
    body = '{"description": "' + "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}'
    resp = raw(api, "POST", "/v1/payments", body, headers={"Idempotency-Key": "big-1"})
    assert_error(resp, 413, "invalid_request_error", "request_too_large")


def test_a_provider_webhook_over_the_upload_limit_is_a_413(client, settings, merchant):
    account = ProviderAccount.objects.filter(merchant=merchant).first()
    body = b'{"a": "' + b"a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"}'
    resp = client.post(f"/provider_webhooks/{account.pk}", body,
                       content_type="application/json")
    assert resp.status_code == 413, resp.content
    assert resp.json()["error"]["code"] == "request_too_large"


# --- error messages are not over-redacted ----------------------------------------------------
def test_the_services_own_bound_is_not_redacted_in_an_error(api):
    resp = api.get("/v1/payments", {"created[gte]": str(2**37 + 1)})
    error = assert_error(resp, 400, "invalid_request_error", "parameter_invalid",
                         param="created[gte]")
    assert "137438953472" in error["message"]
    assert "[redacted]" not in error["message"]


def test_a_card_number_in_an_error_message_is_still_redacted(api):
    resp = api.get("/v1/payments/4242424242424242")
    error = assert_error(resp, 404, "invalid_request_error", "resource_missing")
    assert "4242424242424242" not in resp.content.decode()
    assert "[redacted]" in error["message"]
