"""`check_consistency` (payments/services/consistency.py): a database made through the API in
every status passes; each invariant, broken by a planted row (raw SQL or an ORM update that
bypasses the state machine, as a bug or a hand edit would), is named with its object."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from payments.models import (
    Modification,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentMethod,
    Refund,
    WebhookEndpoint,
    WebhookOutbox,
)
from payments.services.consistency import RULES, consistency_check
from providers.models import ProviderAccount
from tests.conftest import pay


def _create(api, **fields) -> dict:
    from tests.conftest import make_card

    resp = api.post("/v1/payments", {"amount": 1500, "currency": "USD",
                                      "payment_method": make_card(api), **fields})
    assert resp.status_code == 200, resp.json()
    return resp.json()


@pytest.fixture
def world(api, merchant):
    """Payments in every status the API reaches, a refund, a partial capture, a webhook
    endpoint: ids by role."""
    ids = {}
    ids["succeeded"] = pay(api).json()["id"]
    refunded = pay(api, amount=2000).json()["id"]
    refund = api.post("/v1/refunds", {"payment": refunded, "amount": 500})
    assert refund.status_code == 200, refund.json()
    ids["refunded"], ids["refund"] = refunded, refund.json()["id"]
    ids["manual"] = pay(api, capture_method="manual").json()["id"]
    partial = pay(api, capture_method="manual", amount=1000).json()["id"]
    assert api.post(f"/v1/payments/{partial}/capture", {"amount_to_capture": 700}) \
        .json()["status"] == "succeeded"
    ids["partial"] = partial
    declined = pay(api, "4000000000000002")
    assert declined.status_code == 402
    ids["declined"] = declined.json()["payment"]["id"]
    canceled = _create(api)
    assert api.post(f"/v1/payments/{canceled['id']}/cancel", {}).json()["status"] == "canceled"
    ids["canceled"] = canceled["id"]
    voided = pay(api, capture_method="manual").json()["id"]
    assert api.post(f"/v1/payments/{voided}/cancel", {}).json()["status"] == "canceled"
    ids["unconfirmed"] = _create(api)["id"]
    unresolved = pay(api, "4000000000000408")
    ids["unresolved"] = unresolved.json()["payment"]["id"] if "payment" in unresolved.json() \
        else unresolved.json()["id"]
    assert Payment.objects.get(pk=ids["unresolved"]).status == "unresolved"
    endpoint = WebhookEndpoint(merchant=merchant, livemode=False,
                               url="https://hooks.example.com/x", enabled_events=["*"])
    endpoint.set_secrets("whsec_test_consistency")
    endpoint.save()
    ids["endpoint"] = endpoint.pk
    statuses = set(Payment.objects.values_list("status", flat=True))
    assert statuses == {"succeeded", "requires_capture", "failed", "canceled",
                        "requires_confirmation", "unresolved"}
    return ids


def _sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _attempt(payment_id: str, *statuses: str) -> PaymentAttempt:
    return PaymentAttempt.objects.filter(payment_id=payment_id, status__in=statuses).get()


@pytest.mark.django_db
def test_a_database_made_through_the_api_is_consistent(world):
    report = consistency_check()
    assert report.ok, [str(v) for v in report.violations]
    assert report.checked["payments"] == 9 and report.checked["refunds"] == 1
    out = StringIO()
    call_command("check_consistency", stdout=out)
    assert out.getvalue().startswith("OK: 13 rules over 9 payments")


# --- the planted violations: each returns the (rule, object id) that must be named ----------
def plant_amounts(ids):
    # the database's own check constraint would refuse the row: gone for this test only
    # (the test's transaction rolls it back), as on a database restored without it
    _sql("SET CONSTRAINTS ALL IMMEDIATE")  # (no deferred checks pending before ALTER)
    _sql("ALTER TABLE payments_payment DROP CONSTRAINT payment_amounts_consistent")
    _sql("UPDATE payments_payment SET amount_refunded = amount_captured + 1 WHERE id = %s",
         [ids["refunded"]])
    return "amounts", ids["refunded"]


def plant_captured(ids):
    Payment.objects.filter(pk=ids["succeeded"]).update(amount_captured=1000)
    return "captured_matches_captures", ids["succeeded"]


def plant_partial_capture(ids):
    Modification.objects.filter(payment_id=ids["partial"]).update(amount=600)
    return "captured_matches_captures", ids["partial"]


def plant_refunded(ids):
    Payment.objects.filter(pk=ids["refunded"]).update(amount_refunded=100)
    return "refunded_matches_refunds", ids["refunded"]


def plant_refund_too_large(ids):
    Refund.objects.create(merchant_id=Payment.objects.get(pk=ids["refunded"]).merchant_id,
                          livemode=False, payment_id=ids["refunded"], amount=1600,
                          currency="USD", status="pending")
    return "refunds_within_captured", ids["refunded"]


def plant_refund_currency(ids):
    Refund.objects.filter(pk=ids["refund"]).update(currency="EUR")
    return "refunds_within_captured", ids["refund"]


def plant_two_successful_attempts(ids):
    _sql("DROP INDEX one_successful_attempt_per_payment")
    attempt = _attempt(ids["succeeded"], "captured")
    PaymentAttempt.objects.create(payment_id=ids["succeeded"], status="authorized",
                                  provider_account_id=attempt.provider_account_id)
    return "one_successful_attempt", ids["succeeded"]


def plant_authorized_without_attempt(ids):
    PaymentAttempt.objects.filter(payment_id=ids["manual"]).update(status="voided")
    return "status_matches_attempts", ids["manual"]


def plant_leaves_terminal(ids):
    payment = Payment.objects.get(pk=ids["declined"])
    PaymentEvent.objects.create(payment=payment, type="payment.resumed", from_status="failed",
                                to_status="processing", data={})
    return "terminal_final", ids["declined"]


def plant_refund_leaves_terminal(ids):
    PaymentEvent.objects.create(payment_id=ids["refunded"], type="refund.failed",
                                from_status="succeeded", to_status="succeeded",
                                data={"refund": ids["refund"], "from_status": "succeeded"})
    return "terminal_final", ids["refund"]


def plant_status_behind_the_log(ids):
    Payment.objects.filter(pk=ids["manual"]).update(status="succeeded")
    return "event_replay", ids["manual"]


def plant_amount_behind_the_log(ids):
    Payment.objects.filter(pk=ids["manual"]).update(amount_capturable=0)
    return "event_replay", ids["manual"]


def plant_broken_chain(ids):
    first = PaymentEvent.objects.filter(payment_id=ids["succeeded"]).order_by("id")[1]
    PaymentEvent.objects.filter(pk=first.pk).update(from_status="requires_capture")
    return "event_replay", ids["succeeded"]


def plant_refund_status(ids):
    Refund.objects.filter(pk=ids["refund"]).update(status="pending")
    return "refund_replay", ids["refund"]


def plant_attempt_status(ids):
    PaymentAttempt.objects.filter(payment_id=ids["declined"]).update(status="failed")
    return "attempt_events", _attempt(ids["declined"], "failed").pk


def plant_attempt_without_event(ids):
    attempt = _attempt(ids["manual"], "authorized")
    PaymentAttempt.objects.create(payment_id=ids["manual"], status="declined",
                                  provider_account_id=attempt.provider_account_id)
    return "attempt_events", PaymentAttempt.objects.get(payment_id=ids["manual"],
                                                        status="declined").pk


def plant_missing_outbox(ids):
    WebhookOutbox.objects.filter(object_id=ids["succeeded"], type="payment.succeeded").delete()
    return "outbox", ids["succeeded"]


def plant_missing_refund_outbox(ids):
    WebhookOutbox.objects.filter(object_id=ids["refund"], type="refund.succeeded").delete()
    return "outbox", ids["refund"]


def plant_flag_without_event(ids):
    Payment.objects.filter(pk=ids["unresolved"]).update(needs_operator=True)
    return "outbox", ids["unresolved"]


def plant_corrupt_card(ids):
    pm = PaymentMethod.objects.order_by("pk").first()
    blob = bytearray(bytes(pm.encrypted_number))
    blob[-1] ^= 1
    PaymentMethod.objects.filter(pk=pm.pk).update(encrypted_number=bytes(blob))
    return "vault", pm.pk


def plant_card_under_unknown_key(ids):
    pm = PaymentMethod.objects.order_by("-pk").first()
    PaymentMethod.objects.filter(pk=pm.pk).update(key_version="k9")
    return "vault", pm.pk


def plant_card_on_another_row(ids):
    # a ciphertext copied onto another card: the row id is bound in, so it does not decrypt
    first, second = PaymentMethod.objects.order_by("pk")[:2]
    PaymentMethod.objects.filter(pk=second.pk).update(
        encrypted_number=bytes(first.encrypted_number), key_version=first.key_version)
    return "vault", second.pk


def plant_corrupt_credentials(ids):
    account = ProviderAccount.objects.order_by("pk").first()
    blob = bytearray(bytes(account.credentials_encrypted))
    blob[20] ^= 1
    ProviderAccount.objects.filter(pk=account.pk).update(credentials_encrypted=bytes(blob))
    return "credentials", account.pk


def plant_corrupt_webhook_secret(ids):
    WebhookEndpoint.objects.filter(pk=ids["endpoint"]).update(secrets_key_version="k1")
    return "credentials", ids["endpoint"]


PLANTS = [plant_amounts, plant_captured, plant_partial_capture, plant_refunded,
          plant_refund_too_large, plant_refund_currency, plant_two_successful_attempts,
          plant_authorized_without_attempt, plant_leaves_terminal, plant_refund_leaves_terminal,
          plant_status_behind_the_log, plant_amount_behind_the_log, plant_broken_chain,
          plant_refund_status, plant_attempt_status, plant_attempt_without_event,
          plant_missing_outbox, plant_missing_refund_outbox, plant_flag_without_event,
          plant_corrupt_card, plant_card_under_unknown_key, plant_card_on_another_row,
          plant_corrupt_credentials, plant_corrupt_webhook_secret]


def test_every_rule_has_a_planted_violation():
    planted = set()
    for plant in PLANTS:
        # read the rule a plant names from its source: every rule must be exercised
        import inspect
        source = inspect.getsource(plant)
        planted |= {rule for rule in RULES if f'"{rule}"' in source}
    assert planted == set(RULES)


@pytest.mark.django_db
@pytest.mark.parametrize("plant", PLANTS, ids=lambda f: f.__name__.removeprefix("plant_"))
def test_a_planted_violation_is_named_with_its_rule_and_object(world, plant):
    assert consistency_check().ok
    rule, object_id = plant(world)
    report = consistency_check()
    named = {(v.rule, v.object_id) for v in report.violations}
    assert (rule, object_id) in named, [str(v) for v in report.violations]

    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_consistency", stdout=out)
    assert f"VIOLATION {rule} {object_id}: " in out.getvalue()
    assert "violation(s)" in str(raised.value) and rule in str(raised.value)


@pytest.mark.django_db
def test_the_outbox_rule_looks_only_at_its_window(world):
    """Outbox rows past their retention may be pruned: with a window, older changes are not
    required to have theirs."""
    import datetime as dt

    from django.test import override_settings
    from django.utils import timezone

    WebhookOutbox.objects.filter(object_id=world["succeeded"]).delete()
    PaymentEvent.objects.filter(payment_id=world["succeeded"]).update(
        created_at=timezone.now() - dt.timedelta(days=40))
    with override_settings(CONSISTENCY_OUTBOX_WINDOW_DAYS=0):  # 0: all history
        assert not consistency_check(rules=["outbox"]).ok
    with override_settings(CONSISTENCY_OUTBOX_WINDOW_DAYS=30):
        assert consistency_check(rules=["outbox"]).ok
    # by default the window is the events' retention, which the cleanup job prunes past
    from django.conf import settings

    assert settings.CONSISTENCY_OUTBOX_WINDOW_DAYS == settings.WEBHOOK_EVENT_RETENTION_DAYS
    assert consistency_check(rules=["outbox"]).ok
