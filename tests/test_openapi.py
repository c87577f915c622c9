"""The OpenAPI schema: generated without warnings, valid OpenAPI, served without auth, faithful
to docs/api.md, stating what the server enforces and answers (statuses, headers, constraints), written
for merchants, and describing what the API really sends back (validated with jsonschema).

tests/test_openapi_live.py drives the running API with a client generated from it and with
schemathesis."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re
from html.parser import HTMLParser

import jsonschema
import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from openapi_spec_validator import validate as validate_openapi

from payments.api import errors as api_errors
from payments.api import routing as api_routing
from payments.api import schema as api_schema
from payments.api import serializers as api_serializers
from payments.api import views as api_views
from payments.api import webhooks as api_webhooks
from payments.errors import ProviderFailed
from payments.models import AttemptStatus
from tests.conftest import Api, make_card

# docs/api.md paths and their methods, exactly.
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

# What each operation can answer, exactly: every operation 400 (a query parameter the server
# cannot store), 401, 405, 406, 429 and 500; every POST also 409 (Idempotency-Key in use), 413
# and 415; then what the operation itself adds.
ANY = {"200", "400", "401", "405", "406", "429", "500"}
POST = ANY | {"409", "413", "415"}
STATUSES = {
    ("/v1/payment_methods", "get"): ANY,
    ("/v1/payment_methods", "post"): POST,
    ("/v1/payment_methods/{pm_id}", "get"): ANY | {"404"},
    ("/v1/payments", "get"): ANY,
    ("/v1/payments", "post"): POST | {"202", "402", "404", "503"},
    ("/v1/payments/{payment_id}", "get"): ANY | {"404"},
    ("/v1/payments/{payment_id}/confirm", "post"): POST | {"202", "402", "404", "503"},
    ("/v1/payments/{payment_id}/capture", "post"): POST | {"202", "404", "503"},
    ("/v1/payments/{payment_id}/cancel", "post"): POST | {"202", "404", "503"},
    ("/v1/refunds", "get"): ANY,
    ("/v1/refunds", "post"): POST | {"202", "404", "503"},
    ("/v1/refunds/{refund_id}", "get"): ANY | {"404"},
    ("/v1/routing_rules", "get"): ANY,
    ("/v1/routing_rules", "post"): POST,
    ("/v1/routing_rules/{rule_id}", "get"): ANY | {"404"},
    ("/v1/routing_rules/{rule_id}", "post"): POST | {"404"},
    ("/v1/routing_rules/{rule_id}", "delete"): ANY | {"404"},
    ("/v1/retry_rules", "get"): ANY,
    ("/v1/retry_rules", "post"): POST,
    ("/v1/retry_rules/{rule_id}", "get"): ANY | {"404"},
    ("/v1/retry_rules/{rule_id}", "delete"): ANY | {"404"},
    ("/v1/webhook_endpoints", "get"): ANY,
    ("/v1/webhook_endpoints", "post"): POST,
    ("/v1/webhook_endpoints/{endpoint_id}", "get"): ANY | {"404"},
    ("/v1/webhook_endpoints/{endpoint_id}", "post"): POST | {"404"},
    ("/v1/webhook_endpoints/{endpoint_id}", "delete"): ANY | {"404"},
    ("/v1/webhook_endpoints/{endpoint_id}/roll_secret", "post"): POST | {"404"},
    ("/v1/webhook_endpoints/{endpoint_id}/delivery_attempts", "get"): ANY | {"404"},
    ("/v1/events", "get"): ANY,
    ("/v1/events/{event_id}", "get"): ANY | {"404"},
    ("/v1/events/{event_id}/redeliver", "post"): POST | {"404"},
    ("/v1/reports", "get"): ANY,
    ("/v1/reports/{report_id}", "get"): ANY | {"404"},
    ("/v1/reports/{report_id}/csv", "get"): ANY | {"404"},
}
# Operations whose 200 is not JSON (their errors are), by media type.
NOT_JSON = {("/v1/reports/{report_id}/csv", "get"): "text/csv"}
# Stored under an Idempotency-Key, so they may come back with Idempotent-Replayed: true.
REPLAYABLE = {"200", "202", "402", "409", "500", "503"}
RECOVERABLE = {"200", "202", "402", "503"}  # answers to a retry whose first request died


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
        self.validate(response_schema(self.schema, path, method, resp.status_code), body,
                      f"{method.upper()} {path} → {resp.status_code}")
        self.checked.append((path, method, resp.status_code))
        return body

    def validate(self, node: dict, instance, what: str) -> None:
        root = {**to_json_schema(node), "components": self.components}
        jsonschema.Draft202012Validator.check_schema(root)
        errors = sorted(jsonschema.Draft202012Validator(root).iter_errors(instance),
                        key=lambda e: list(e.absolute_path))
        assert not errors, (
            f"{what} does not match the schema:\n"
            + "\n".join(f"  {list(e.absolute_path)}: {e.message}" for e in errors[:10]))


# --- generation and serving -------------------------------------------------------------------
def all_operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def walk(node, path=()):
    """Every (path, dict) in a JSON document, depth first."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))


def test_schema_generates_and_validates_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]
    assert schema["paths"]


def test_schema_is_valid_openapi(db, schema, anon):
    """openapi-spec-validator accepts it (it refused `reason`'s default outside its enum), as
    generated and as served."""
    validate_openapi(schema)
    validate_openapi(json.loads(anon.get("/v1/schema", {"format": "json"}).content))


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


class _AssetLinks(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_docs_page_loads_its_assets_from_this_server(db, anon):
    """Swagger UI's JavaScript, CSS and icon come from drf-spectacular-sidecar through our
    static files: the page works offline and runs no code from a CDN."""
    page = anon.get("/v1/docs").content.decode()
    parser = _AssetLinks()
    parser.feed(page)
    assert parser.urls
    assert not re.search(r"https?://|cdn", page, re.IGNORECASE), "a URL to another origin"
    scripts = [url for url in parser.urls if url.endswith(".js")]
    assert len(scripts) >= 2  # the bundle and the standalone preset
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = anon.get(url)
        assert asset.status_code == 200, url
        body = b"".join(asset.streaming_content) if asset.streaming else asset.content
        assert body, url
        if url.endswith(".js"):
            assert "javascript" in asset["Content-Type"], url
    bundle = anon.get(next(url for url in scripts if "swagger-ui-bundle" in url))
    assert b"SwaggerUIBundle" in b"".join(bundle.streaming_content)


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
        assert headers["Idempotency-Key"]["schema"]["maxLength"] == 255
        assert headers["Idempotency-Key"]["schema"]["minLength"] == 1
    for path, method, op in all_operations(schema):
        if method != "post":
            params = {p["name"] for p in op.get("parameters", [])}
            assert "Idempotency-Key" not in params, (path, method)


def test_post_operations_document_their_body_and_errors(schema):
    for path, methods in CONTRACT_PATHS.items():
        if "post" not in methods:
            continue
        op = operation(schema, path, "post")
        assert "application/json" in op["requestBody"]["content"], path
    for path in ("/v1/payments", "/v1/payments/{payment_id}/confirm"):
        responses = operation(schema, path, "post")["responses"]
        assert {"202", "402"} <= set(responses), path


def test_every_operation_documents_exactly_the_statuses_it_can_return(schema):
    documented = {(path, method): set(op["responses"])
                  for path, method, op in all_operations(schema)}
    assert set(documented) == set(STATUSES)
    for key, statuses in STATUSES.items():
        assert documented[key] == statuses, (key, sorted(documented[key] ^ statuses))


def test_every_error_response_has_the_error_shape_and_a_description(schema):
    for path, method, op in all_operations(schema):
        for status, response in op["responses"].items():
            assert response["description"], (path, method, status)
            if status == "200" and (path, method) in NOT_JSON:
                assert set(response["content"]) == {NOT_JSON[path, method]}, (path, method)
                continue
            body = response["content"]["application/json"]["schema"]
            if int(status) >= 400:
                assert body == {"$ref": "#/components/schemas/ErrorOutput"}, (path, status)
    error = schema["components"]["schemas"]["ErrorBody"]
    assert enum_of(schema, error["properties"]["type"]) == {
        "invalid_request_error", "idempotency_error", "authentication_error", "card_error",
        "rate_limit_error", "api_error"}


def test_response_headers_are_documented(schema):
    for path, method, op in all_operations(schema):
        for status, response in op["responses"].items():
            headers = response.get("headers", {})
            if method == "post" and status in REPLAYABLE:
                replayed = headers["Idempotent-Replayed"]
                assert replayed["schema"] == {"type": "string", "enum": ["true"]}
                assert not replayed.get("required")
            else:
                assert "Idempotent-Replayed" not in headers, (path, method, status)
            if method == "post" and status in RECOVERABLE:
                recovered = headers["Idempotent-Recovered"]
                assert recovered["schema"] == {"type": "string", "enum": ["true"]}
            else:
                assert "Idempotent-Recovered" not in headers, (path, method, status)
            assert ("Retry-After" in headers) == (status == "429"), (path, method, status)
            assert ("Allow" in headers) == (status == "405"), (path, method, status)
            assert ("WWW-Authenticate" in headers) == (status == "401"), (path, method, status)
        retry_after = op["responses"]["429"]["headers"]["Retry-After"]
        assert retry_after["required"] is True
        assert retry_after["schema"] == {"type": "integer", "minimum": 1}


def test_constraints_the_server_enforces_are_stated(schema):
    components = schema["components"]["schemas"]

    def prop(component, name):
        return resolve(schema, components[component]["properties"][name])

    amount = {"type": "integer", "minimum": 1, "maximum": settings.MAX_PAYMENT_AMOUNT}
    for component, name in (("PaymentCreateInputRequest", "amount"),
                            ("PaymentCaptureInputRequest", "amount_to_capture"),
                            ("RefundCreateInputRequest", "amount"),
                            ("ConditionsInputRequest", "amount_gte"),
                            ("ConditionsInputRequest", "amount_lte")):
        assert amount.items() <= prop(component, name).items(), (component, name)

    currency = prop("PaymentCreateInputRequest", "currency")
    assert re.fullmatch(currency["pattern"], "USD") and re.fullmatch(currency["pattern"], "eur")
    assert not re.search(currency["pattern"], "US") and not re.search(currency["pattern"], "U$D")

    year = dt.date.today().year
    assert prop("CardInputRequest", "exp_month").items() >= {"minimum": 1, "maximum": 12}.items()
    assert prop("CardInputRequest", "exp_year").items() >= {
        "minimum": year, "maximum": year + 50}.items()
    assert re.search(prop("CardInputRequest", "cvc")["pattern"], "123")
    assert not re.search(prop("CardInputRequest", "cvc")["pattern"], "12a")
    number = prop("CardInputRequest", "number")
    assert re.search(number["pattern"], "4242 4242 4242 4242")
    assert not re.search(number["pattern"], "4242")

    metadata = prop("PaymentCreateInputRequest", "metadata")
    assert metadata["maxProperties"] == 20
    assert metadata["additionalProperties"] == {"type": "string", "maxLength": 500}

    for path in ("/v1/payments", "/v1/refunds", "/v1/payment_methods", "/v1/routing_rules",
                 "/v1/retry_rules"):
        params = {p["name"]: p["schema"] for p in operation(schema, path, "get")["parameters"]}
        assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 100,
                                   "default": 10}, path
    params = {p["name"]: p["schema"] for p in operation(schema, "/v1/payments",
                                                         "get")["parameters"]}
    for name in ("created[gte]", "created[lte]"):
        assert params[name] == {"type": "integer", "minimum": 0,
                                "maximum": api_views.CREATED_MAX}


def test_request_bodies_are_closed_as_the_server_rejects_unknown_fields(schema):
    """Every request body (and every object inside one) is a StrictSerializer, which rejects
    fields it does not know: `additionalProperties: false`, at every level."""
    components = schema["components"]["schemas"]
    request_components = {name for name in components if name.endswith("Request")}
    assert len(request_components) >= 10
    for name in request_components:
        assert components[name]["additionalProperties"] is False, name
    for path, method, op in all_operations(schema):
        if "requestBody" in op:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in request_components, (path,
                                                                                     method)
    # and no response says it is closed: responses may gain fields
    for name, component in components.items():
        if name not in request_components:
            assert component.get("additionalProperties") is not False, name


def test_routing_and_billing_details_are_typed(schema):
    payment = schema["components"]["schemas"]["PaymentOutput"]["properties"]
    routing = resolve(schema, payment["routing"])
    assert routing["type"] == "object"
    assert {"rule", "strategy", "candidates", "skipped", "selected", "order",
            "explored"} <= set(routing["properties"])
    assert routing.get("required", []) == []  # empty until the payment is confirmed
    candidate = resolve(schema, routing["properties"]["candidates"]["items"])
    assert {"account", "score", "samples"} == set(candidate["properties"])
    assert enum_of(schema, routing["properties"]["strategy"]) == {
        "default_order", "ordered", "weighted", "least_cost", "success_rate", "pinned"}

    pm = schema["components"]["schemas"]["PaymentMethodOutput"]["properties"]
    billing = resolve(schema, pm["billing_details"])
    assert set(billing["properties"]) == {"name", "email", "phone", "address"}
    address = resolve(schema, billing["properties"]["address"])
    assert {"line1", "line2", "city", "state", "postal_code", "country"} == set(
        address["properties"])


def test_status_and_capture_method_are_enums(schema):
    payment = schema["components"]["schemas"]["PaymentOutput"]["properties"]
    attempt = resolve(schema, payment["attempts"]["items"])
    assert enum_of(schema, attempt["properties"]["status"]) == set(AttemptStatus.values)
    assert enum_of(schema, payment["capture_method"]) == {"automatic", "manual"}
    names = set(schema["components"]["schemas"])
    assert {"PaymentStatus", "AttemptStatus", "RefundStatus", "CaptureMethod",
            "RefundReason", "ErrorType"} <= names


def _code_docstrings() -> set[str]:
    """The first line of every docstring in the API's modules: code documentation, which must
    not leak into the schema merchants read."""
    found = set()
    for module in (api_views, api_serializers, api_routing, api_schema, api_errors,
                   api_webhooks):
        for _, obj in inspect.getmembers(module):
            for item in (obj, *vars(obj).values()) if inspect.isclass(obj) else (obj,):
                doc = inspect.getdoc(item) if callable(item) or inspect.isclass(item) else None
                if doc and getattr(item, "__module__", "").startswith("payments."):
                    found.add(doc.splitlines()[0].strip())
    return found


def test_descriptions_are_written_for_merchants(schema):
    for path, method, op in all_operations(schema):
        assert op.get("summary") and op.get("description"), (path, method)
    docstrings = _code_docstrings()
    assert "Rejects fields it does not know, at every level: a typo must not be silently " \
           "ignored." in docstrings  # the one that used to describe every request body
    texts = [(where, node[key]) for where, node in walk(schema) for key in ("description",
                                                                            "summary")
             if isinstance(node.get(key), str)]
    assert len(texts) > 100
    for where, text in texts:
        for doc in docstrings:
            assert doc not in text, (where, doc)


def test_examples_match_their_schemas(schema):
    contract = Contract(schema)
    checked = 0
    for path, method, op in all_operations(schema):
        bodies = [("request", op["requestBody"]["content"]["application/json"])
                  ] if "requestBody" in op else []
        bodies += [(status, media) for status, response in op["responses"].items()
                   for media in response["content"].values()]
        for where, media in bodies:
            for name, example in media.get("examples", {}).items():
                contract.validate(media["schema"], example["value"],
                                  f"{method.upper()} {path} {where} example {name}")
                checked += 1
    assert checked >= 20


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
    assert props["metadata"]["additionalProperties"]["type"] == "string"

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


@pytest.mark.django_db
def test_error_statuses_come_back_as_documented(schema, api, merchant, monkeypatch):
    """405, 406, 413, 415, 429, 500 and 503, and their headers, as the schema says."""
    contract = Contract(schema)
    P = "/v1/payments"

    wrong_method = api.client.put(P, {}, format="json", HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert wrong_method.status_code == 405
    assert set(wrong_method["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    contract.check(wrong_method, P)

    html_only = api.get(P, headers={"Accept": "text/html"})
    assert html_only.status_code == 406
    contract.check(html_only, P, "get")

    as_form = api.client.post(P, "amount=1", content_type="application/x-www-form-urlencoded",
                              HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert as_form.status_code == 415
    contract.check(as_form, P)

    too_big = api.client.post(P, '{"description": "' + "a" * (
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}', content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert too_big.status_code == 413
    contract.check(too_big, P)

    def fail(**_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api_views.MerchantView, "get_or_404", fail)
    crash = api.get(f"{P}/pay_x")
    assert crash.status_code == 500
    contract.check(crash, "/v1/payments/{payment_id}", "get")
    monkeypatch.undo()

    payment = api.post(P, {"amount": 700, "currency": "USD", "payment_method": make_card(api),
                           "confirm": True, "capture_method": "manual"}).json()

    def unavailable(*, payment, amount):
        raise ProviderFailed("The provider could not capture the payment.", payment=payment)

    monkeypatch.setattr(api_views, "payment_capture", unavailable)
    down = api.post(f"{P}/{payment['id']}/capture", {}, idempotency_key="capture-503")
    assert down.status_code == 503
    assert contract.check(down, "/v1/payments/{payment_id}/capture")["payment"]["id"] == \
        payment["id"]
    replay = api.post(f"{P}/{payment['id']}/capture", {}, idempotency_key="capture-503")
    assert replay.status_code == 503 and replay["Idempotent-Replayed"] == "true"

    merchant.rate_limit_per_minute = 1
    merchant.save(update_fields=["rate_limit_per_minute"])
    api.get(P)
    limited = api.get(P)
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1
    contract.check(limited, P, "get")

    assert {405, 406, 413, 415, 429, 500, 503} <= {status for *_, status in contract.checked}


@pytest.mark.django_db
def test_webhook_and_event_responses_match_the_schema(schema, api, merchant, public_dns):
    """The webhook endpoints, their delivery attempts and the events, as really answered."""
    from django.utils import timezone

    from payments.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookOutbox

    contract = Contract(schema)
    E, one = "/v1/webhook_endpoints", "/v1/webhook_endpoints/{endpoint_id}"
    created = contract.check(api.post(E, {"url": "https://hooks.example.com/x",
                                          "enabled_events": ["*"], "metadata": {"a": "b"}}), E)
    assert created["secret"].startswith("whsec_")
    replay = api.post(E, {"url": "https://hooks.example.com/y", "enabled_events": ["*"]},
                      idempotency_key="schema-we")
    replay = api.post(E, {"url": "https://hooks.example.com/y", "enabled_events": ["*"]},
                      idempotency_key="schema-we")
    assert replay["Idempotent-Replayed"] == "true"
    contract.check(replay, E)
    path = f"{E}/{created['id']}"
    contract.check(api.get(E), E, "get")
    contract.check(api.get(path), one, "get")
    contract.check(api.post(path, {"disabled": True}), one)
    contract.check(api.post(f"{path}/roll_secret"), one + "/roll_secret")
    contract.check(api.post(E, {"url": "http://127.0.0.1/", "enabled_events": ["*"]}), E)

    payment = api.post("/v1/payments", {"amount": 1000, "currency": "USD",
                                        "payment_method": make_card(api), "confirm": True})
    contract.check(api.post("/v1/refunds", {"payment": payment.json()["id"], "amount": 10}),
                   "/v1/refunds")
    events = contract.check(api.get("/v1/events", {"limit": 100}), "/v1/events", "get")
    assert {e["data"]["object"]["object"] for e in events["data"]} == {"payment", "refund"}
    for event in events["data"]:
        contract.check(api.get(f"/v1/events/{event['id']}"), "/v1/events/{event_id}", "get")
    contract.check(api.post(f"/v1/events/{events['data'][0]['id']}/redeliver"),
                   "/v1/events/{event_id}/redeliver")
    contract.check(api.get("/v1/events/evt_nope"), "/v1/events/{event_id}", "get")

    event = WebhookOutbox.objects.filter(merchant=merchant).first()
    delivery = WebhookDelivery.objects.create(event=event, endpoint_id=created["id"],
                                              next_attempt_at=timezone.now())
    for code in (None, 503, 204):
        WebhookDeliveryAttempt.objects.create(
            delivery=delivery, endpoint_id=created["id"], started_at=timezone.now(),
            status_code=code, latency_ms=15, error="" if code else "Connection refused.",
            response_excerpt="busy" if code == 503 else "")
    attempts = contract.check(api.get(f"{path}/delivery_attempts"),
                              one + "/delivery_attempts", "get")
    assert len(attempts["data"]) == 3
    contract.check(api.client.delete(path, HTTP_AUTHORIZATION=f"Bearer {api.key}"), one,
                   "delete")
    contract.check(api.get(path), one, "get")  # 404
    assert {200, 400, 404} <= {status for *_, status in contract.checked}
