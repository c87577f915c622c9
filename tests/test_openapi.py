"""The OpenAPI schema: generated without warnings, served without auth, faithful to API.md, and
describing what the API really sends back (validated with jsonschema)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from django.core.management import call_command

from tests.conftest import Api, make_card

# API.md paths and their methods, exactly.
CONTRACT_PATHS = {
    "/v1/payment_methods": {"get", "post"},
    "/v1/payment_methods/{pm_id}": {"get"},
    "/v1/payments": {"get", "post"},
    "/v1/payments/{payment_id}": {"get"},
    "/v1/payments/{payment_id}/confirm": {"post"},
    "/v1/payments/{payment_id}/capture": {"post"},
    "/v1/payments/{payment_id}/cancel": {"post"},
    "/v1/refunds": {"get", "post"},
    "/v1/refunds/{refund_id}": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

PAYMENT_FIELDS = {
    "id", "object", "amount", "currency", "status", "capture_method", "amount_capturable",
    "amount_captured", "amount_refunded", "payment_method", "provider", "attempts", "routing",
    "last_error", "description", "reference", "metadata", "created", "updated", "livemode",
}
PAYMENT_STATUSES = {"requires_confirmation", "processing", "requires_capture", "succeeded",
                    "canceled", "failed", "unresolved"}
ATTEMPT_FIELDS = {"id", "provider", "status", "decline_code", "created"}
LAST_ERROR_FIELDS = {"code", "decline_code", "message"}
REFUND_FIELDS = {"id", "object", "payment", "amount", "currency", "status", "reason", "created"}
REFUND_STATUSES = {"pending", "succeeded", "failed", "unresolved"}
PAYMENT_METHOD_FIELDS = {"id", "object", "type", "card", "billing_details", "created",
                         "livemode"}
CARD_FIELDS = {"brand", "last4", "bin", "exp_month", "exp_year", "fingerprint"}
ERROR_FIELDS = {"type", "code", "message", "param"}
LIST_FIELDS = {"object", "data", "has_more"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema as `manage.py spectacular --validate --fail-on-warn` writes it."""
    path = tmp_path_factory.mktemp("openapi") / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json",
                 "--file", str(path))
    return json.loads(path.read_text())


# --- helpers ----------------------------------------------------------------------------------
def resolve(schema: dict, node: dict) -> dict:
    """Follow `$ref` (and a lone `allOf: [$ref]` wrapper) to the component it names."""
    while True:
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/components/schemas/")
            node = schema["components"]["schemas"][name]
        elif len(node.get("allOf", [])) == 1:
            node = node["allOf"][0]
        else:
            return node


def operation(schema: dict, path: str, method: str) -> dict:
    return schema["paths"][path][method]


def response_schema(schema: dict, path: str, method: str, status: int) -> dict:
    responses = operation(schema, path, method)["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    return responses[str(status)]["content"]["application/json"]["schema"]


def component_for(schema: dict, path: str, method: str, status: int = 200) -> dict:
    return resolve(schema, response_schema(schema, path, method, status))


def properties(schema: dict, component: dict) -> dict:
    return component["properties"]


def enum_of(schema: dict, prop: dict) -> set:
    return set(resolve(schema, prop)["enum"])


def to_json_schema(node):
    """OpenAPI 3.0 schema → JSON Schema 2020-12: `nullable` becomes a `null` alternative.

    Objects that list their properties are closed (no additionalProperties), so a field the
    API sends but the schema does not document fails the validation.
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = to_json_schema(value)
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [{"type": "null"}, out]}
    return out


class Contract:
    """Validates real responses against the schema of the operation that produced them."""

    def __init__(self, schema: dict):
        self.schema = schema
        self.components = {"schemas": {name: to_json_schema(component) for name, component
                                       in schema["components"]["schemas"].items()}}
        self.checked: list[tuple[str, str, int]] = []

    def check(self, resp, path: str, method: str = "post") -> dict:
        body = resp.json()
        root = {**to_json_schema(response_schema(self.schema, path, method,
                                                 resp.status_code)),
                "components": self.components}
        jsonschema.Draft202012Validator.check_schema(root)
        errors = sorted(jsonschema.Draft202012Validator(root).iter_errors(body),
                        key=lambda e: list(e.absolute_path))
        assert not errors, (
            f"{method.upper()} {path} → {resp.status_code} does not match the schema:\n"
            + "\n".join(f"  {list(e.absolute_path)}: {e.message}" for e in errors[:10]))
        self.checked.append((path, method, resp.status_code))
        return body


# --- generation and serving -------------------------------------------------------------------
def test_schema_generates_and_validates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]
    assert schema["paths"]


def test_schema_is_served_without_auth(db, schema, anon):
    resp = anon.get("/v1/schema")
    assert resp.status_code == 200
    assert "openapi" in resp["Content-Type"]
    assert yaml.safe_load(resp.content) == schema

    as_json = anon.get("/v1/schema", {"format": "json"})
    assert as_json.status_code == 200
    assert json.loads(as_json.content) == schema

    # a wrong key does not matter either: the schema is public
    wrong_key = Api("sk_test_not-a-key").get("/v1/schema")
    assert wrong_key.status_code == 200


def test_docs_page_is_served_without_auth(db, anon):
    resp = anon.get("/v1/docs")
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/html")
    page = resp.content.decode()
    assert "<html" in page.lower()
    assert "/v1/schema" in page


# --- the contract -----------------------------------------------------------------------------
def test_every_contract_path_with_its_methods(schema):
    for path, methods in CONTRACT_PATHS.items():
        assert path in schema["paths"], f"{path} missing from the schema"
        documented = set(schema["paths"][path]) & HTTP_METHODS
        assert documented == methods, f"{path}: {sorted(documented)} != {sorted(methods)}"


def test_operation_ids_are_unique_and_plain(schema):
    ids = [op["operationId"] for item in schema["paths"].values()
           for method, op in item.items() if method in HTTP_METHODS]
    assert len(ids) == len(set(ids))
    # no numeral suffixes: those are how drf-spectacular resolves collisions
    assert not [i for i in ids if i[-1].isdigit()]


def test_path_parameters_are_documented(schema):
    for path in CONTRACT_PATHS:
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, op in schema["paths"][path].items():
            if method not in HTTP_METHODS:
                continue
            documented = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert documented == names, (path, method)


def test_every_operation_requires_the_api_key(schema):
    schemes = schema["components"]["securitySchemes"]
    assert len(schemes) == 1
    (name, scheme), = schemes.items()
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for path in CONTRACT_PATHS:
        for method, op in schema["paths"][path].items():
            if method in HTTP_METHODS:
                assert op.get("security") == [{name: []}], (path, method)


def test_post_operations_document_the_idempotency_key(schema):
    posts = [(path, item["post"]) for path, item in schema["paths"].items() if "post" in item]
    assert {path for path, _ in posts} >= {p for p, m in CONTRACT_PATHS.items() if "post" in m}
    for path, op in posts:
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, path
        assert headers["Idempotency-Key"].get("required", False) is False
        assert headers["Idempotency-Key"]["schema"]["type"] == "string"


def test_post_operations_document_their_body_and_errors(schema):
    for path, methods in CONTRACT_PATHS.items():
        if "post" not in methods:
            continue
        op = operation(schema, path, "post")
        assert "application/json" in op["requestBody"]["content"], path
        for status in ("200", "400", "401", "404", "409", "429"):
            assert status in op["responses"], (path, status)
    for path in ("/v1/payments", "/v1/payments/{payment_id}/confirm"):
        responses = operation(schema, path, "post")["responses"]
        assert {"202", "402"} <= set(responses), path


def test_payment_schema_has_every_contract_field(schema):
    for path, method in (("/v1/payments", "post"), ("/v1/payments/{payment_id}", "get"),
                         ("/v1/payments/{payment_id}/confirm", "post"),
                         ("/v1/payments/{payment_id}/capture", "post"),
                         ("/v1/payments/{payment_id}/cancel", "post")):
        payment = component_for(schema, path, method)
        props = properties(schema, payment)
        assert PAYMENT_FIELDS <= set(props), PAYMENT_FIELDS - set(props)
        assert PAYMENT_FIELDS <= set(payment["required"])

    assert enum_of(schema, props["status"]) == PAYMENT_STATUSES
    assert enum_of(schema, props["object"]) == {"payment"}
    for name in ("amount", "amount_capturable", "amount_captured", "amount_refunded",
                 "created", "updated"):
        assert resolve(schema, props[name])["type"] == "integer", name
    assert props["livemode"]["type"] == "boolean"
    for name in ("payment_method", "provider", "last_error"):
        assert props[name].get("nullable") is True, name
    assert props["metadata"]["type"] == "object"
    assert props["metadata"]["additionalProperties"] == {"type": "string"}

    attempt = resolve(schema, props["attempts"]["items"])
    assert props["attempts"]["type"] == "array"
    assert ATTEMPT_FIELDS <= set(attempt["properties"])
    assert attempt["properties"]["decline_code"].get("nullable") is True
    last_error = resolve(schema, props["last_error"])
    assert LAST_ERROR_FIELDS <= set(last_error["properties"])


def test_refund_schema_has_every_contract_field(schema):
    for path, method in (("/v1/refunds", "post"), ("/v1/refunds/{refund_id}", "get")):
        refund = component_for(schema, path, method)
        props = properties(schema, refund)
        assert REFUND_FIELDS <= set(props), REFUND_FIELDS - set(props)
        assert REFUND_FIELDS <= set(refund["required"])
    assert enum_of(schema, props["status"]) == REFUND_STATUSES
    assert enum_of(schema, props["object"]) == {"refund"}
    assert props["amount"]["type"] == "integer"
    assert props["reason"].get("nullable") is True

    request = resolve(schema, operation(schema, "/v1/refunds", "post")["requestBody"]["content"]
                      ["application/json"]["schema"])
    assert {"payment", "amount", "reason", "metadata"} <= set(request["properties"])
    assert request["required"] == ["payment"]
    assert enum_of(schema, request["properties"]["reason"]) == {
        "requested_by_customer", "duplicate", "fraudulent"}


def test_payment_method_schema_has_every_contract_field(schema):
    for path, method in (("/v1/payment_methods", "post"),
                         ("/v1/payment_methods/{pm_id}", "get")):
        pm = component_for(schema, path, method)
        props = properties(schema, pm)
        assert PAYMENT_METHOD_FIELDS <= set(props), PAYMENT_METHOD_FIELDS - set(props)
    assert enum_of(schema, props["object"]) == {"payment_method"}
    card = resolve(schema, props["card"])
    assert set(card["properties"]) == CARD_FIELDS  # never the number nor the CVC


def test_request_schemas_match_the_contract(schema):
    def request_props(path):
        body = operation(schema, path, "post")["requestBody"]["content"]["application/json"]
        return resolve(schema, body["schema"])

    create = request_props("/v1/payments")
    assert {"amount", "currency", "payment_method", "confirm", "capture_method", "description",
            "reference", "metadata", "provider"} <= set(create["properties"])
    assert set(create["required"]) == {"amount", "currency"}
    assert enum_of(schema, create["properties"]["capture_method"]) == {"automatic", "manual"}
    assert "payment_method" in request_props("/v1/payments/{payment_id}/confirm")["properties"]
    assert "amount_to_capture" in request_props(
        "/v1/payments/{payment_id}/capture")["properties"]
    assert "cancellation_reason" in request_props(
        "/v1/payments/{payment_id}/cancel")["properties"]
    pm = request_props("/v1/payment_methods")
    assert {"type", "card", "billing_details"} <= set(pm["properties"])
    card = resolve(schema, pm["properties"]["card"])
    assert {"number", "exp_month", "exp_year", "cvc"} <= set(card["properties"])


def test_list_schemas_are_the_list_envelope(schema):
    for path, item_fields in (("/v1/payments", PAYMENT_FIELDS),
                              ("/v1/refunds", REFUND_FIELDS),
                              ("/v1/payment_methods", PAYMENT_METHOD_FIELDS)):
        envelope = component_for(schema, path, "get")
        props = properties(schema, envelope)
        assert set(props) == LIST_FIELDS
        assert enum_of(schema, props["object"]) == {"list"}
        assert props["has_more"]["type"] == "boolean"
        assert item_fields <= set(resolve(schema, props["data"]["items"])["properties"])
        params = {p["name"] for p in operation(schema, path, "get")["parameters"]}
        assert {"limit", "starting_after"} <= params
    payment_filters = {p["name"] for p in operation(schema, "/v1/payments", "get")["parameters"]}
    assert {"status", "reference", "created[gte]", "created[lte]"} <= payment_filters
    refund_filters = {p["name"] for p in operation(schema, "/v1/refunds", "get")["parameters"]}
    assert "payment" in refund_filters


def test_error_schema(schema):
    error = component_for(schema, "/v1/payments", "post", 400)
    body = resolve(schema, error["properties"]["error"])
    assert ERROR_FIELDS <= set(body["properties"])
    assert "decline_code" in body["properties"]
    assert body["properties"]["param"].get("nullable") is True
    assert PAYMENT_FIELDS <= set(resolve(schema, error["properties"]["payment"])["properties"])


# --- real responses against the schema --------------------------------------------------------
@pytest.mark.django_db
def test_real_responses_match_the_schema(schema, api, anon):
    contract = Contract(schema)
    P = "/v1/payments"

    # payment methods
    pm_resp = api.post("/v1/payment_methods", {
        "type": "card",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        "billing_details": {"name": "Ada", "email": "ada@example.com",
                            "address": {"country": "GB"}}})
    pm = contract.check(pm_resp, "/v1/payment_methods")["id"]
    contract.check(api.get(f"/v1/payment_methods/{pm}"), "/v1/payment_methods/{pm_id}", "get")
    contract.check(api.get("/v1/payment_methods"), "/v1/payment_methods", "get")

    # payments, every way they come back
    draft = contract.check(api.post(P, {"amount": 1050, "currency": "USD",
                                        "metadata": {"order": "1"}}), P)
    assert draft["status"] == "requires_confirmation"
    confirmed = contract.check(api.post(f"{P}/{draft['id']}/confirm", {"payment_method": pm}),
                               "/v1/payments/{payment_id}/confirm")
    assert confirmed["status"] == "succeeded"

    manual = contract.check(api.post(P, {"amount": 2000, "currency": "EUR",
                                         "payment_method": make_card(api), "confirm": True,
                                         "capture_method": "manual"}), P)
    assert manual["status"] == "requires_capture"
    captured = contract.check(api.post(f"{P}/{manual['id']}/capture",
                                       {"amount_to_capture": 1500}),
                              "/v1/payments/{payment_id}/capture")
    assert captured["amount_captured"] == 1500

    to_cancel = contract.check(api.post(P, {"amount": 700, "currency": "USD",
                                            "payment_method": make_card(api), "confirm": True,
                                            "capture_method": "manual"}), P)
    canceled = contract.check(api.post(f"{P}/{to_cancel['id']}/cancel",
                                       {"cancellation_reason": "requested_by_customer"}),
                              "/v1/payments/{payment_id}/cancel")
    assert canceled["status"] == "canceled"

    for number, status in (("4000000000000002", 402), ("4000000000009995", 402),
                           ("4000000000000119", 402), ("4000000000000408", 202),
                           ("4000000000000606", 202), ("4000000000000507", None)):
        resp = api.post(P, {"amount": 1000, "currency": "USD",
                            "payment_method": make_card(api, number), "confirm": True})
        if status is not None:
            assert resp.status_code == status, (number, resp.json())
        contract.check(resp, P)

    contract.check(api.get(f"{P}/{confirmed['id']}"), "/v1/payments/{payment_id}", "get")
    contract.check(api.get(P, {"limit": 100}), P, "get")
    contract.check(api.get(P, {"status": "succeeded"}), P, "get")

    # refunds
    refund = contract.check(api.post("/v1/refunds", {"payment": confirmed["id"],
                                                     "amount": 50,
                                                     "reason": "duplicate"}), "/v1/refunds")
    contract.check(api.post("/v1/refunds", {"payment": captured["id"]}), "/v1/refunds")
    contract.check(api.get(f"/v1/refunds/{refund['id']}"), "/v1/refunds/{refund_id}", "get")
    contract.check(api.get("/v1/refunds", {"payment": confirmed["id"]}), "/v1/refunds", "get")

    # idempotent replay: the stored body is still the documented shape
    body = {"amount": 300, "currency": "USD"}
    api.post(P, body, idempotency_key="schema-replay")
    replay = api.post(P, body, idempotency_key="schema-replay")
    assert replay["Idempotent-Replayed"] == "true"
    contract.check(replay, P)

    # errors
    contract.check(anon.get(P), P, "get")  # 401
    contract.check(api.get(f"{P}/pay_missing"), "/v1/payments/{payment_id}", "get")  # 404
    contract.check(api.post(P, {"amount": "ten"}), P)  # 400 validation
    contract.check(api.post(P, {**body, "amount": 1}, idempotency_key="schema-replay"), P)
    contract.check(api.post(f"{P}/{confirmed['id']}/capture", {}),
                   "/v1/payments/{payment_id}/capture")  # 409
    contract.check(api.post("/v1/refunds", {"payment": confirmed["id"], "amount": 10**6}),
                   "/v1/refunds")  # 400 amount_too_large

    statuses = {status for _, _, status in contract.checked}
    assert {200, 202, 400, 401, 402, 404, 409} <= statuses


@pytest.mark.django_db
def test_the_validation_above_does_catch_drift(schema, api):
    """The checker itself: a body that strays from the schema fails it."""
    contract = Contract(schema)
    resp = api.post("/v1/payments", {"amount": 300, "currency": "USD"})
    contract.check(resp, "/v1/payments")

    class Fake:
        status_code = 200

        def __init__(self, body):
            self.body = body

        def json(self):
            return self.body

    good = resp.json()
    for bad in ({**good, "status": "paid"},  # not an enum value
                {**good, "amount": "300"},  # wrong type
                {**good, "undocumented": 1},  # a field the schema does not describe
                {k: v for k, v in good.items() if k != "livemode"},  # a required field missing
                {**good, "currency": None}):  # null where the schema says never null
        with pytest.raises(AssertionError, match="does not match the schema"):
            contract.check(Fake(bad), "/v1/payments")
    contract.check(Fake({**good, "last_error": None, "payment_method": None}), "/v1/payments")
