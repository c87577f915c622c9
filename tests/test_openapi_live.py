"""The OpenAPI schema against the running API: a client generated from it by
openapi-python-client drives the payment lifecycle over HTTP, and schemathesis sends what the
schema allows (and what it forbids) to every operation: no 5xx, and every answer is one the
schema documents (status, content type, body, headers)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from payments.services.merchants import merchant_create

PACKAGE = "switchyard_client"


# --- a generated client -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated_client(tmp_path_factory):
    """The package openapi-python-client generates from the schema, imported."""
    workdir = tmp_path_factory.mktemp("client")
    schema_path = workdir / "schema.json"
    call_command("spectacular", "--format", "openapi-json", "--file", str(schema_path))
    config = workdir / "config.json"
    # no post hooks: the generator would otherwise run ruff over the generated code
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [str(generator), "generate", "--path", str(schema_path), "--meta", "none",
         "--output-path", str(workdir / PACKAGE), "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # the generator skips what it cannot read (as it skipped POST /v1/refunds) with a warning
    assert "warning" not in output.lower(), output
    assert "error" not in output.lower(), output

    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generated_client_has_every_operation(generated_client):
    api = importlib.import_module(f"{PACKAGE}.api")
    operations = {p.stem for p in Path(api.__file__).parent.glob("*/*.py")
                  if p.stem != "__init__"}
    assert {"payment_methods_create", "payment_methods_list", "payment_methods_retrieve",
            "payments_create", "payments_list", "payments_retrieve", "payments_confirm",
            "payments_capture", "payments_cancel", "refunds_create", "refunds_list",
            "refunds_retrieve"} <= operations


def test_the_generated_client_drives_the_lifecycle(generated_client, live_server):
    """Vault a card, authorize (manual capture), capture, refund, retrieve and list, with
    nothing but the generated code."""
    _, key, _ = merchant_create(actor="test", name=f"Generated {uuid.uuid4().hex[:8]}", sandbox_accounts=True)

    def op(name):
        resource = name.rsplit("_", 1)[0]
        return importlib.import_module(f"{PACKAGE}.api.{resource}.{name}")

    models = importlib.import_module(f"{PACKAGE}.models")
    client = generated_client.AuthenticatedClient(base_url=live_server.url, token=key,
                                                  raise_on_unexpected_status=True)

    card = op("payment_methods_create").sync_detailed(
        client=client, idempotency_key=f"pm-{uuid.uuid4()}",
        body=models.PaymentMethodCreateInputRequest(
            type_=models.PaymentMethodType.CARD,
            card=models.CardInputRequest(number="4242424242424242", exp_month=12,
                                         exp_year=2034, cvc="123"),
            billing_details=models.BillingDetailsInputRequest(
                name="Ada Lovelace",
                address=models.AddressInputRequest(country="GB"))))
    assert card.status_code == 200, card.content
    pm = card.parsed
    assert isinstance(pm, models.PaymentMethodOutput)
    assert (pm.card.brand, pm.card.last4) == ("visa", "4242")
    assert pm.billing_details.address.country == "GB"

    create = op("payments_create")
    body = models.PaymentCreateInputRequest(
        amount=2000, currency="EUR", payment_method=pm.id, confirm=True,
        capture_method=models.CaptureMethod.MANUAL, reference="order-42")
    key_header = f"pay-{uuid.uuid4()}"
    created = create.sync_detailed(client=client, body=body, idempotency_key=key_header)
    assert created.status_code == 200, created.content
    payment = created.parsed
    assert isinstance(payment, models.PaymentOutput)
    assert payment.status is models.PaymentStatus.REQUIRES_CAPTURE
    assert payment.amount_capturable == 2000
    assert [a.status for a in payment.attempts] == [models.AttemptStatus.AUTHORIZED]
    assert payment.routing.selected == payment.provider
    assert payment.routing.order[0] == payment.provider

    replay = create.sync_detailed(client=client, body=body, idempotency_key=key_header)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.parsed.id == payment.id

    captured = op("payments_capture").sync_detailed(
        payment.id, client=client, idempotency_key=f"cap-{uuid.uuid4()}",
        body=models.PaymentCaptureInputRequest(amount_to_capture=1500))
    assert captured.status_code == 200, captured.content
    assert captured.parsed.status is models.PaymentStatus.SUCCEEDED
    assert captured.parsed.amount_captured == 1500

    refunded = op("refunds_create").sync_detailed(
        client=client, idempotency_key=f"re-{uuid.uuid4()}",
        body=models.RefundCreateInputRequest(payment=payment.id, amount=500,
                                             reason=models.RefundReason.DUPLICATE))
    assert refunded.status_code == 200, refunded.content
    refund = refunded.parsed
    assert isinstance(refund, models.RefundOutput)
    assert refund.status is models.RefundStatus.SUCCEEDED
    assert (refund.amount, refund.currency) == (500, "EUR")
    assert refund.reason is models.RefundReason.DUPLICATE

    again = op("payments_retrieve").sync_detailed(payment.id, client=client)
    assert again.status_code == 200
    assert (again.parsed.amount_captured, again.parsed.amount_refunded) == (1500, 500)

    page = op("payments_list").sync_detailed(client=client, limit=100, reference="order-42")
    assert page.status_code == 200
    assert [p.id for p in page.parsed.data] == [payment.id]
    assert page.parsed.has_more is False
    refunds = op("refunds_list").sync_detailed(client=client, payment=payment.id)
    assert [r.id for r in refunds.parsed.data] == [refund.id]
    assert op("refunds_retrieve").sync_detailed(refund.id, client=client).parsed.id == refund.id
    assert op("payment_methods_retrieve").sync_detailed(pm.id, client=client).parsed.id == pm.id

    # errors come back as the documented error shape, not as an unexpected status
    missing = op("payments_retrieve").sync_detailed("pay_missing", client=client)
    assert missing.status_code == 404
    assert missing.parsed.error.code == "resource_missing"
    assert missing.parsed.error.type_ is models.ErrorType.INVALID_REQUEST_ERROR
    twice = op("payments_capture").sync_detailed(payment.id, client=client)
    assert twice.status_code == 409
    assert twice.parsed.error.code == "payment_state_invalid"


# --- schemathesis -----------------------------------------------------------------------------
# Bounded and deterministic: the explicit examples, then 20 generated requests per operation,
# valid and invalid ones (NUL characters included), from a fixed seed. The coverage phase
# (systematic boundary values, ~1,200 more requests) is left out to keep the suite quick.
SCHEMATHESIS = SchemathesisConfig.from_dict({
    "seed": 20260801,
    "generation": {"mode": "all", "max-examples": 20, "deterministic": True,
                   "database": "none"},
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        # what the schema forbids is refused (a constraint it states is one the API enforces)
        "negative_data_rejection": {"enabled": True},
        "missing_required_header": {"enabled": True},
        "ignored_auth": {"enabled": True},
    },
})
# The schema as /v1/schema serves it, called in-process through the WSGI application.
schema = schemathesis.openapi.from_wsgi("/v1/schema?format=json", get_wsgi_application(),
                                        config=SCHEMATHESIS)


@pytest.fixture
def api_key(db):
    """A merchant's test key, with requests run inside the test's transaction: Django would
    otherwise close the connection (and the transaction) at the end of every request, as its
    test client also prevents."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield merchant_create(actor="test", name=f"Schemathesis {uuid.uuid4().hex[:8]}", sandbox_accounts=True)[1]
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_schemathesis(case, api_key):
    case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"})
