"""Idempotency-Key semantics (docs/api.md "Idempotency", DESIGN.md "Merchant API"), one request at a
time. The races are in `test_concurrency.py`."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from payments.models import IdempotencyKey, Payment, PaymentAttempt
from payments.services import idempotency
from payments.services.idempotency import request_fingerprint
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card

TTL = dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)


def _charges_for(payment_id: str) -> int:
    """Authorizations the sandbox provider holds for this payment (its own ledger)."""
    references = PaymentAttempt.objects.filter(payment_id=payment_id).values_list("id", flat=True)
    return SandboxCharge.objects.filter(reference__in=list(references)).count()


def _error(resp) -> dict:
    return resp.json()["error"]


@pytest.fixture
def body(api) -> dict:
    return {"amount": 1050, "currency": "USD", "payment_method": make_card(api),
            "confirm": True}


# --- replay ---------------------------------------------------------------------------------
def test_same_key_same_body_replays_the_first_response(api, merchant, body):
    first = api.post("/v1/payments", body, idempotency_key="order-1")
    assert first.status_code == 200, first.json()
    assert "Idempotent-Replayed" not in first.headers

    second = api.post("/v1/payments", body, idempotency_key="order-1")
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()

    payments = Payment.objects.filter(merchant=merchant)
    assert payments.count() == 1
    assert payments.get().id == first.json()["id"]
    assert PaymentAttempt.objects.filter(payment__merchant=merchant).count() == 1
    assert _charges_for(first.json()["id"]) == 1


def test_replay_ignores_the_order_of_json_keys(api, merchant, body):
    first = api.post("/v1/payments", body, idempotency_key="order-2")
    reordered = dict(reversed(list(body.items())))
    assert list(reordered) != list(body)
    second = api.post("/v1/payments", reordered, idempotency_key="order-2")
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert Payment.objects.filter(merchant=merchant).count() == 1


def test_replay_works_for_every_post_endpoint(api, merchant):
    pm = api.post("/v1/payment_methods", {
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12,
                                 "exp_year": 2034}}, idempotency_key="pm-1")
    again = api.post("/v1/payment_methods", {
        "type": "card", "card": {"number": "4242424242424242", "exp_month": 12,
                                 "exp_year": 2034}}, idempotency_key="pm-1")
    assert pm.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == pm.json()["id"]

    created = api.post("/v1/payments", {"amount": 500, "currency": "EUR",
                                        "payment_method": pm.json()["id"],
                                        "confirm": True, "capture_method": "manual"})
    assert created.status_code == 200, created.json()
    pay_id = created.json()["id"]
    capture = api.post(f"/v1/payments/{pay_id}/capture", {}, idempotency_key="cap-1")
    assert capture.status_code == 200, capture.json()
    assert capture.json()["status"] == "succeeded"
    capture_again = api.post(f"/v1/payments/{pay_id}/capture", {}, idempotency_key="cap-1")
    # without the key this would be a 409 (already captured); with it, the first answer
    assert capture_again.status_code == 200
    assert capture_again.headers["Idempotent-Replayed"] == "true"
    assert capture_again.json() == capture.json()

    refund = api.post("/v1/refunds", {"payment": pay_id, "amount": 200},
                      idempotency_key="re-1")
    refund_again = api.post("/v1/refunds", {"payment": pay_id, "amount": 200},
                            idempotency_key="re-1")
    assert refund.status_code == refund_again.status_code == 200
    assert refund_again.headers["Idempotent-Replayed"] == "true"
    assert refund_again.json() == refund.json()
    payment = Payment.objects.get(pk=pay_id)
    assert payment.amount_refunded == 200
    assert payment.refunds.count() == 1
    charge = SandboxCharge.objects.get(reference=payment.attempts.get().id)
    assert charge.amount_refunded == 200
    assert charge.operations.filter(kind="capture").count() == 1
    assert charge.operations.filter(kind="refund").count() == 1


def test_no_key_means_no_replay(api, merchant, body):
    assert api.post("/v1/payments", body).status_code == 200
    second = api.post("/v1/payments", body)
    assert second.status_code == 200
    assert "Idempotent-Replayed" not in second.headers
    assert Payment.objects.filter(merchant=merchant).count() == 2
    assert not IdempotencyKey.objects.filter(merchant=merchant).exists()


# --- reuse with another request ---------------------------------------------------------------
def test_same_key_with_another_body_is_rejected(api, merchant, body):
    first = api.post("/v1/payments", body, idempotency_key="order-3")
    assert first.status_code == 200

    other = api.post("/v1/payments", {**body, "amount": 2000}, idempotency_key="order-3")
    assert other.status_code == 400
    error = _error(other)
    assert error["type"] == "idempotency_error"
    assert error["code"] == "idempotency_key_reused"
    assert error["message"]
    assert "Idempotent-Replayed" not in other.headers
    assert Payment.objects.filter(merchant=merchant).count() == 1

    # the key still answers the original request
    replay = api.post("/v1/payments", body, idempotency_key="order-3")
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]


def test_same_key_on_another_endpoint_is_rejected(api, merchant):
    pm = make_card(api)
    created = api.post("/v1/payments", {"amount": 700, "currency": "USD",
                                        "payment_method": pm, "confirm": True,
                                        "capture_method": "manual"}, idempotency_key="k-ep")
    assert created.status_code == 200, created.json()
    pay_id = created.json()["id"]

    # another path with another body
    refund = api.post("/v1/refunds", {"payment": pay_id}, idempotency_key="k-ep")
    assert refund.status_code == 400
    assert _error(refund)["type"] == "idempotency_error"
    assert _error(refund)["code"] == "idempotency_key_reused"

    # another path with the very same (empty) body: the path is part of the request
    capture = api.post(f"/v1/payments/{pay_id}/capture", {}, idempotency_key="k-cap")
    assert capture.status_code == 200, capture.json()
    cancel = api.post(f"/v1/payments/{pay_id}/cancel", {}, idempotency_key="k-cap")
    assert cancel.status_code == 400
    assert _error(cancel)["code"] == "idempotency_key_reused"
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "succeeded"
    assert payment.amount_captured == 700


# --- what is stored and what is not -------------------------------------------------------
def test_validation_error_is_not_stored(api, merchant, body):
    bad = api.post("/v1/payments", {**body, "amount": "1050"}, idempotency_key="order-4")
    assert bad.status_code == 400
    assert _error(bad)["type"] == "invalid_request_error"
    assert _error(bad)["param"] == "amount"
    assert not IdempotencyKey.objects.filter(merchant=merchant, key="order-4").exists()
    assert not Payment.objects.filter(merchant=merchant).exists()

    fixed = api.post("/v1/payments", body, idempotency_key="order-4")
    assert fixed.status_code == 200, fixed.json()
    assert "Idempotent-Replayed" not in fixed.headers
    assert fixed.json()["status"] == "succeeded"
    assert Payment.objects.filter(merchant=merchant).count() == 1


def test_unknown_payment_method_404_is_not_stored(api, merchant, body):
    missing = api.post("/v1/payments", {**body, "payment_method": "pm_nope"},
                       idempotency_key="order-5")
    assert missing.status_code == 404
    fixed = api.post("/v1/payments", body, idempotency_key="order-5")
    assert fixed.status_code == 200, fixed.json()
    assert "Idempotent-Replayed" not in fixed.headers


def test_failed_confirmation_400_leaves_no_payment_behind(live_api, merchant):
    """A 400 is not stored, so the merchant retries with the same key: the first try must not
    have created anything (here: live mode has no provider account to route to)."""
    pm = make_card(live_api)
    body = {"amount": 1050, "currency": "USD", "payment_method": pm, "confirm": True}
    first = live_api.post("/v1/payments", body, idempotency_key="order-live")
    assert first.status_code == 400, first.json()
    assert _error(first)["code"] == "no_provider_account"
    second = live_api.post("/v1/payments", body, idempotency_key="order-live")
    assert second.status_code == 400
    assert not Payment.objects.filter(merchant=merchant).exists()
    assert not IdempotencyKey.objects.filter(merchant=merchant).exists()


def test_decline_is_stored_and_replayed(api, merchant):
    body = {"amount": 1050, "currency": "USD",
            "payment_method": make_card(api, "4000000000000002"), "confirm": True}
    first = api.post("/v1/payments", body, idempotency_key="order-6")
    assert first.status_code == 402, first.json()
    assert _error(first)["type"] == "card_error"
    assert _error(first)["decline_code"] == "generic_decline"
    assert first.json()["payment"]["status"] == "failed"

    second = api.post("/v1/payments", body, idempotency_key="order-6")
    assert second.status_code == 402
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Payment.objects.filter(merchant=merchant).count() == 1
    assert PaymentAttempt.objects.filter(payment__merchant=merchant).count() == 1
    assert _charges_for(first.json()["payment"]["id"]) == 1
    row = IdempotencyKey.objects.get(merchant=merchant, key="order-6")
    assert row.response_status == 402
    assert row.completed_at is not None


def test_state_conflict_is_not_stored_and_the_key_works_once_the_state_allows_it(api,
                                                                                  merchant):
    """A 409 state conflict changed nothing: the key is released, and the same request with
    the same key succeeds once the payment can be captured."""
    created = api.post("/v1/payments", {"amount": 300, "currency": "USD",
                                        "payment_method": make_card(api),
                                        "capture_method": "manual"})
    pay_id = created.json()["id"]
    first = api.post(f"/v1/payments/{pay_id}/capture", {}, idempotency_key="cap-early")
    assert first.status_code == 409
    assert _error(first)["code"] == "payment_state_invalid"
    assert not IdempotencyKey.objects.filter(merchant=merchant, key="cap-early").exists()

    confirmed = api.post(f"/v1/payments/{pay_id}/confirm", {})
    assert confirmed.status_code == 200, confirmed.json()
    assert confirmed.json()["status"] == "requires_capture"
    again = api.post(f"/v1/payments/{pay_id}/capture", {}, idempotency_key="cap-early")
    assert again.status_code == 200, again.json()
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["status"] == "succeeded"
    replay = api.post(f"/v1/payments/{pay_id}/capture", {}, idempotency_key="cap-early")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == again.json()
    assert Payment.objects.get(pk=pay_id).modifications.count() == 1


def test_refund_state_conflict_is_not_stored(api, merchant):
    created = api.post("/v1/payments", {"amount": 300, "currency": "USD",
                                        "payment_method": make_card(api), "confirm": True,
                                        "capture_method": "manual"})
    pay_id = created.json()["id"]
    early = api.post("/v1/refunds", {"payment": pay_id}, idempotency_key="re-early")
    assert early.status_code == 409
    assert api.post(f"/v1/payments/{pay_id}/capture", {}).status_code == 200
    refund = api.post("/v1/refunds", {"payment": pay_id}, idempotency_key="re-early")
    assert refund.status_code == 200, refund.json()
    assert refund.json()["status"] == "succeeded"
    assert "Idempotent-Replayed" not in refund.headers


def test_try_again_shortly_is_not_stored_and_the_key_works_once_a_breaker_closes(api, merchant,
                                                                                 body):
    """A 503 raised before any provider was asked (every account's breaker open) created
    nothing: the key is released, and the same key succeeds once the breakers close."""
    from providers.models import ProviderAccount
    from providers.resilience.breaker import breaker_for

    accounts = list(ProviderAccount.objects.filter(merchant=merchant, livemode=False))
    for account in accounts:
        breaker_for(account).open()
    first = api.post("/v1/payments", body, idempotency_key="order-503")
    assert first.status_code == 503, first.json()
    assert _error(first)["code"] == "provider_unavailable"
    assert "payment" not in first.json()
    assert not Payment.objects.filter(merchant=merchant).exists()
    assert not IdempotencyKey.objects.filter(merchant=merchant, key="order-503").exists()

    for account in accounts:
        breaker_for(account).close()
    again = api.post("/v1/payments", body, idempotency_key="order-503")
    assert again.status_code == 200, again.json()
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["status"] == "succeeded"
    assert Payment.objects.filter(merchant=merchant).count() == 1


def test_a_503_after_provider_attempts_is_stored(api, merchant):
    """Work was done (attempts made, the payment failed): the 503 is the key's answer."""
    body = {"amount": 1050, "currency": "USD", "confirm": True, "provider": "stripe-sandbox",
            "payment_method": make_card(api, "4000000000000507")}
    first = api.post("/v1/payments", body, idempotency_key="order-503-failed")
    assert first.status_code == 503, first.json()
    assert first.json()["payment"]["status"] == "failed"
    again = api.post("/v1/payments", body, idempotency_key="order-503-failed")
    assert again.status_code == 503
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Payment.objects.filter(merchant=merchant).count() == 1


@pytest.mark.parametrize("path", ["/v1/payments/{id}", "/v1/refunds/re_x",
                                  "/v1/payment_methods/pm_x"])
def test_post_to_a_read_only_endpoint_is_405_and_not_stored(api, merchant, path):
    pay_id = api.post("/v1/payments", {"amount": 300, "currency": "USD"}).json()["id"]
    path = path.format(id=pay_id)
    for headers in ({}, {"Idempotency-Key": "ro-1"}):
        resp = api.post(path, {}, headers=headers)
        assert resp.status_code == 405, (path, resp.status_code, resp.content)
        assert _error(resp)["type"] == "invalid_request_error"
    assert not IdempotencyKey.objects.filter(merchant=merchant).exists()


# --- scope ----------------------------------------------------------------------------------
def test_keys_are_scoped_per_merchant(api, other_api, merchant):
    body = {"amount": 1234, "currency": "USD"}
    mine = api.post("/v1/payments", body, idempotency_key="shared-key")
    theirs = other_api.post("/v1/payments", body, idempotency_key="shared-key")
    assert mine.status_code == theirs.status_code == 200
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert Payment.objects.filter(id__in=[mine.json()["id"], theirs.json()["id"]]).count() == 2
    # and each merchant's replay is its own
    assert api.post("/v1/payments", body,
                    idempotency_key="shared-key").json()["id"] == mine.json()["id"]
    assert other_api.post("/v1/payments", body,
                          idempotency_key="shared-key").json()["id"] == theirs.json()["id"]


def test_keys_are_scoped_per_mode(api, live_api, merchant):
    body = {"amount": 1234, "currency": "USD"}
    test_resp = api.post("/v1/payments", body, idempotency_key="mode-key")
    live_resp = live_api.post("/v1/payments", body, idempotency_key="mode-key")
    assert test_resp.status_code == live_resp.status_code == 200
    assert "Idempotent-Replayed" not in live_resp.headers
    assert test_resp.json()["livemode"] is False
    assert live_resp.json()["livemode"] is True
    assert Payment.objects.filter(merchant=merchant).count() == 2
    assert IdempotencyKey.objects.filter(merchant=merchant, key="mode-key").count() == 2


# --- the key itself ---------------------------------------------------------------------------
def test_key_longer_than_255_characters_is_rejected(api, merchant):
    body = {"amount": 1234, "currency": "USD"}
    too_long = api.post("/v1/payments", body, idempotency_key="k" * 256)
    assert too_long.status_code == 400
    assert _error(too_long)["type"] == "invalid_request_error"
    assert _error(too_long)["param"] == "Idempotency-Key"
    assert not Payment.objects.filter(merchant=merchant).exists()

    longest = api.post("/v1/payments", body, idempotency_key="k" * 255)
    assert longest.status_code == 200, longest.json()
    replay = api.post("/v1/payments", body, idempotency_key="k" * 255)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert Payment.objects.filter(merchant=merchant).count() == 1


def test_empty_key_is_rejected(api, merchant):
    resp = api.post("/v1/payments", {"amount": 1234, "currency": "USD"},
                    headers={"Idempotency-Key": ""})
    assert resp.status_code == 400
    assert _error(resp)["param"] == "Idempotency-Key"
    assert not Payment.objects.filter(merchant=merchant).exists()


# --- in flight --------------------------------------------------------------------------------
def test_key_still_in_flight_is_409(api, merchant, body):
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="busy",
        fingerprint=request_fingerprint("POST", "/v1/payments", body),
    )
    resp = api.post("/v1/payments", body, idempotency_key="busy")
    assert resp.status_code == 409
    assert _error(resp)["type"] == "invalid_request_error"
    assert _error(resp)["code"] == "idempotency_key_in_use"
    assert "Idempotent-Replayed" not in resp.headers
    assert not Payment.objects.filter(merchant=merchant).exists()
    # the 409 did not touch the in-flight row
    row = IdempotencyKey.objects.get(merchant=merchant, key="busy")
    assert row.completed_at is None


def test_key_in_flight_with_another_body_is_reused_error(api, merchant, body):
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="busy-2",
        fingerprint=request_fingerprint("POST", "/v1/payments", body),
    )
    resp = api.post("/v1/payments", {**body, "amount": 1}, idempotency_key="busy-2")
    assert resp.status_code == 400
    assert _error(resp)["code"] == "idempotency_key_reused"


def test_in_flight_row_of_another_mode_does_not_block(api, merchant, body):
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=True, key="busy-3",
        fingerprint=request_fingerprint("POST", "/v1/payments", body),
    )
    resp = api.post("/v1/payments", body, idempotency_key="busy-3")
    assert resp.status_code == 200, resp.json()


# --- retention --------------------------------------------------------------------------------
def _age(merchant, key: str, by: dt.timedelta) -> None:
    IdempotencyKey.objects.filter(merchant=merchant, key=key).update(
        created_at=timezone.now() - by)


def test_key_within_retention_still_replays(api, merchant, body):
    first = api.post("/v1/payments", body, idempotency_key="kept")
    _age(merchant, "kept", TTL - dt.timedelta(minutes=5))
    again = api.post("/v1/payments", body, idempotency_key="kept")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]


def test_expired_key_is_treated_as_new(api, merchant, body):
    first = api.post("/v1/payments", body, idempotency_key="old")
    assert first.status_code == 200
    _age(merchant, "old", TTL + dt.timedelta(minutes=1))

    again = api.post("/v1/payments", body, idempotency_key="old")
    assert again.status_code == 200, again.json()
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert Payment.objects.filter(merchant=merchant).count() == 2
    row = IdempotencyKey.objects.get(merchant=merchant, key="old")
    assert row.created_at > timezone.now() - dt.timedelta(minutes=1)
    assert row.response_body["id"] == again.json()["id"]


def test_expired_key_may_be_used_with_another_body(api, merchant, body):
    api.post("/v1/payments", body, idempotency_key="old-2")
    _age(merchant, "old-2", TTL + dt.timedelta(minutes=1))
    other = api.post("/v1/payments", {**body, "amount": 99}, idempotency_key="old-2")
    assert other.status_code == 200, other.json()
    assert other.json()["amount"] == 99


def test_expired_in_flight_key_that_is_not_recoverable_still_blocks(api, merchant, body):
    """A key claimed by code that did not record its request's object (before recovery
    existed): nothing says whether the request charged, and re-executing it could charge
    again, so the key keeps answering 409 until an operator looks."""
    IdempotencyKey.objects.create(
        merchant=merchant, livemode=False, key="stuck", recoverable=False,
        fingerprint=request_fingerprint("POST", "/v1/payments", body),
    )
    _age(merchant, "stuck", TTL + dt.timedelta(minutes=1))
    resp = api.post("/v1/payments", body, idempotency_key="stuck")
    assert resp.status_code == 409, resp.json()
    assert resp.json()["error"]["code"] == "idempotency_key_in_use"
    assert idempotency.purge_expired() == 0  # never purged while in flight
    assert Payment.objects.count() == 0


def test_purge_expired_deletes_only_old_keys(api, merchant, other_api, body):
    api.post("/v1/payments", body, idempotency_key="purge-old")
    api.post("/v1/payments", body, idempotency_key="purge-new")
    api.post("/v1/payments", {"amount": 5, "currency": "USD"}, idempotency_key="purge-edge")
    other_api.post("/v1/payments", {"amount": 5, "currency": "USD"}, idempotency_key="purge-o")
    _age(merchant, "purge-old", TTL + dt.timedelta(hours=1))
    _age(merchant, "purge-edge", TTL - dt.timedelta(minutes=5))
    IdempotencyKey.objects.exclude(merchant=merchant).update(
        created_at=timezone.now() - TTL - dt.timedelta(days=3))

    assert idempotency.purge_expired() == 2
    left = set(IdempotencyKey.objects.values_list("key", flat=True))
    assert "purge-new" in left
    assert "purge-edge" in left
    assert "purge-old" not in left
    assert "purge-o" not in left
    assert idempotency.purge_expired() == 0
    # the payments themselves are untouched
    assert Payment.objects.filter(merchant=merchant).count() == 3


# --- the database enforces it -----------------------------------------------------------------
def test_unique_constraint_in_the_database(merchant):
    IdempotencyKey.objects.create(merchant=merchant, livemode=False, key="dup",
                                  fingerprint="a" * 64)
    with pytest.raises(IntegrityError), transaction.atomic():
        IdempotencyKey.objects.create(merchant=merchant, livemode=False, key="dup",
                                      fingerprint="b" * 64)
    # the same key in the other mode is another key
    IdempotencyKey.objects.create(merchant=merchant, livemode=True, key="dup",
                                  fingerprint="a" * 64)
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(
            cursor, IdempotencyKey._meta.db_table)
    unique = constraints["uniq_idempotency_key"]
    assert unique["unique"] is True
    assert unique["columns"] == ["merchant_id", "livemode", "key"]


def test_raw_sql_duplicate_is_rejected_too(merchant):
    """Not only the ORM: the constraint lives in Postgres."""
    table = IdempotencyKey._meta.db_table
    sql = (f"INSERT INTO {table} (merchant_id, livemode, key, fingerprint, created_at) "
           f"VALUES (%s, false, 'raw', 'f', now())")
    with connection.cursor() as cursor:
        cursor.execute(sql, [merchant.id])
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute(sql, [merchant.id])


def test_a_confirm_that_cannot_route_leaves_nothing_behind(api, merchant, body):
    """Create and the start of confirmation are one transaction: if routing refuses (the
    only account was disabled meanwhile), no payment exists, so releasing the key is right
    and a retry with the key cannot make a second payment."""
    from providers.models import ProviderAccount

    ProviderAccount.objects.filter(merchant=merchant).update(enabled=False)
    resp = api.post("/v1/payments", {**body, "confirm": True}, idempotency_key="no-route")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "no_provider_account"
    assert Payment.objects.count() == 0
    ProviderAccount.objects.filter(merchant=merchant).update(enabled=True)
    again = api.post("/v1/payments", {**body, "confirm": True}, idempotency_key="no-route")
    assert again.status_code == 200, again.json()
    assert Payment.objects.count() == 1


def test_a_500_before_anything_was_written_releases_the_key(api, monkeypatch):
    """An unexpected error before the payment exists (here: the vault cannot decrypt the
    card) changed nothing: the same key retried once it is fixed creates the payment, rather
    than replaying the 500 for a day."""
    from payments.services import payments as payments_service

    pm = make_card(api)
    body = {"amount": 1050, "currency": "USD", "payment_method": pm, "confirm": True}

    def broken_vault(*args, **kwargs):
        raise RuntimeError("vault unavailable")

    monkeypatch.setattr(payments_service, "card_for_provider", broken_vault)
    first = api.post("/v1/payments", body, idempotency_key="order-500")
    assert first.status_code == 500
    assert not Payment.objects.exists()
    monkeypatch.undo()
    again = api.post("/v1/payments", body, idempotency_key="order-500")
    assert again.status_code == 200, again.json()
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["status"] == "succeeded"
