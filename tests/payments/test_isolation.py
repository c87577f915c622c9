"""Merchant and mode isolation on every endpoint (docs/api.md, "Conventions"; DESIGN.md, "Merchant
API": another merchant's or mode's id is a 404).

One merchant's test key creates a payment method, payments in each state and a refund. Then
an intruder (another merchant's test key, or the same merchant's live key) tries every GET and
every POST that takes one of those ids: each is a 404 indistinguishable from an id that never
existed, nothing changes, and no list ever shows the objects.
"""

from __future__ import annotations

import pytest

from payments.models import IdempotencyKey, Payment, PaymentAttempt, PaymentMethod, Refund
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card

ERROR_KEYS = {"type", "code", "message", "param"}


@pytest.fixture
def owned(api):
    """The owner's test-mode objects, one per state an endpoint acts on."""
    pm = make_card(api)

    def create(**fields):
        resp = api.post("/v1/payments", {"amount": 1000, "currency": "USD",
                                         "payment_method": pm, "reference": "order-owned",
                                         **fields})
        assert resp.status_code == 200, resp.json()
        return resp.json()

    unconfirmed = create()
    authorized = create(confirm=True, capture_method="manual")
    succeeded = create(confirm=True)
    assert (unconfirmed["status"], authorized["status"], succeeded["status"]) == \
        ("requires_confirmation", "requires_capture", "succeeded")
    refund = api.post("/v1/refunds", {"payment": succeeded["id"], "amount": 300})
    assert refund.status_code == 200, refund.json()
    return {
        "pm": pm,
        "unconfirmed": unconfirmed["id"],
        "authorized": authorized["id"],
        "succeeded": succeeded["id"],
        "refund": refund.json()["id"],
    }


@pytest.fixture(params=["other_merchant", "live_key"])
def intruder(request):
    return request.getfixturevalue("other_api" if request.param == "other_merchant"
                                   else "live_api")


def assert_missing(resp, *, param: str | None = None, object_id: str | None = None):
    assert resp.status_code == 404, resp.content
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "resource_missing"
    assert body["error"]["param"] == param
    return body["error"]


def same_as_nonexistent(intruder, method: str, path: str, body: dict | None, real_id: str,
                        fake_id: str, *, param: str | None = None):
    """The 404 for a real foreign id and for an id that never existed differ only by the id:
    the answer reveals nothing about whether the object exists elsewhere."""
    def call(object_id):
        p = path.replace(real_id, object_id)
        b = None if body is None else {k: (object_id if v == real_id else v)
                                       for k, v in body.items()}
        return intruder.get(p) if method == "GET" else intruder.post(p, b or {})

    real = assert_missing(call(real_id), param=param)
    fake = assert_missing(call(fake_id), param=param)
    assert real["message"].replace(real_id, "ID") == fake["message"].replace(fake_id, "ID")


def snapshot():
    """Everything an intruder's request could have changed."""
    return {
        "payments": sorted(Payment.objects.values_list(
            "id", "status", "amount_capturable", "amount_captured", "amount_refunded",
            "payment_method_id", "cancellation_reason")),
        "attempts": PaymentAttempt.objects.count(),
        "refunds": sorted(Refund.objects.values_list("id", "status", "amount")),
        "methods": sorted(PaymentMethod.objects.values_list("id", "merchant_id", "livemode")),
        "charges": SandboxCharge.objects.count(),
    }


def test_gets_are_404(owned, intruder):
    same_as_nonexistent(intruder, "GET", f"/v1/payment_methods/{owned['pm']}", None,
                        owned["pm"], "pm_000000000000000000000000")
    for name in ("unconfirmed", "authorized", "succeeded"):
        same_as_nonexistent(intruder, "GET", f"/v1/payments/{owned[name]}", None,
                            owned[name], "pay_000000000000000000000000")
    same_as_nonexistent(intruder, "GET", f"/v1/refunds/{owned['refund']}", None,
                        owned["refund"], "re_000000000000000000000000")


def test_actions_on_the_payments_are_404_and_change_nothing(owned, intruder):
    before = snapshot()
    targets = {
        "confirm": owned["unconfirmed"],
        "cancel": owned["unconfirmed"],
        "capture": owned["authorized"],
    }
    for action, payment_id in targets.items():
        same_as_nonexistent(intruder, "POST", f"/v1/payments/{payment_id}/{action}", {},
                            payment_id, "pay_000000000000000000000000")
    # every action on every state, with and without a body
    for name in ("unconfirmed", "authorized", "succeeded"):
        for action in ("confirm", "capture", "cancel"):
            assert_missing(intruder.post(f"/v1/payments/{owned[name]}/{action}"))
    assert_missing(intruder.post(f"/v1/payments/{owned['authorized']}/capture",
                                 {"amount_to_capture": 100}))
    assert_missing(intruder.post(f"/v1/payments/{owned['authorized']}/cancel",
                                 {"cancellation_reason": "fraud"}))
    assert_missing(intruder.post(f"/v1/payments/{owned['unconfirmed']}/confirm",
                                 {"payment_method": owned["pm"]}))
    assert snapshot() == before


def test_refunding_the_payment_is_404(owned, intruder):
    before = snapshot()
    same_as_nonexistent(intruder, "POST", "/v1/refunds", {"payment": owned["succeeded"]},
                        owned["succeeded"], "pay_000000000000000000000000", param="payment")
    assert_missing(intruder.post("/v1/refunds", {"payment": owned["succeeded"], "amount": 1}),
                   param="payment")
    assert snapshot() == before


def test_paying_with_the_payment_method_is_404(owned, intruder):
    before = snapshot()
    body = {"amount": 500, "currency": "USD", "payment_method": owned["pm"]}
    same_as_nonexistent(intruder, "POST", "/v1/payments", body, owned["pm"],
                        "pm_000000000000000000000000", param="payment_method")
    assert_missing(intruder.post("/v1/payments", {**body, "confirm": True}),
                   param="payment_method")
    assert snapshot() == before


def test_confirming_own_payment_with_a_foreign_payment_method_is_404(owned, intruder):
    own = intruder.post("/v1/payments", {"amount": 500, "currency": "USD"})
    assert own.status_code == 200, own.json()
    before = snapshot()
    resp = intruder.post(f"/v1/payments/{own.json()['id']}/confirm",
                         {"payment_method": owned["pm"]})
    assert_missing(resp, param="payment_method")
    assert snapshot() == before
    assert intruder.get(f"/v1/payments/{own.json()['id']}").json()["status"] == \
        "requires_confirmation"


def test_lists_never_show_the_objects(owned, intruder):
    intruder_pm = make_card(intruder)
    intruder_payment = intruder.post("/v1/payments", {"amount": 100, "currency": "USD",
                                                      "payment_method": intruder_pm,
                                                      "reference": "order-owned"}).json()
    owned_ids = set(owned.values())

    def ids(path, params=None):
        resp = intruder.get(path, {"limit": 100, **(params or {})})
        assert resp.status_code == 200, resp.json()
        return {obj["id"] for obj in resp.json()["data"]}

    assert ids("/v1/payment_methods") == {intruder_pm}
    assert ids("/v1/payments") == {intruder_payment["id"]}
    assert ids("/v1/payments", {"reference": "order-owned"}) == {intruder_payment["id"]}
    assert ids("/v1/payments", {"status": "succeeded"}) == set()
    assert ids("/v1/payments", {"status": "requires_capture"}) == set()
    assert ids("/v1/refunds") == set()
    assert ids("/v1/refunds", {"payment": owned["succeeded"]}) == set()
    for path in ("/v1/payment_methods", "/v1/payments", "/v1/refunds"):
        text = intruder.get(path, {"limit": 100}).content.decode()
        assert not any(object_id in text for object_id in owned_ids)


@pytest.mark.parametrize(("path", "key"), [("/v1/payment_methods", "pm"),
                                           ("/v1/payments", "succeeded"),
                                           ("/v1/refunds", "refund")])
def test_foreign_id_as_a_list_cursor_is_unknown(owned, intruder, path, key):
    resp = intruder.get(path, {"starting_after": owned[key]})
    assert resp.status_code == 400, resp.json()
    assert resp.json()["error"]["code"] == "resource_missing"
    assert resp.json()["error"]["param"] == "starting_after"


def test_owner_still_sees_everything_and_only_its_mode(api, live_api, owned):
    live_pm = make_card(live_api)
    pms = {pm["id"] for pm in api.get("/v1/payment_methods").json()["data"]}
    assert pms == {owned["pm"]}
    payments = {p["id"] for p in api.get("/v1/payments").json()["data"]}
    assert payments == {owned["unconfirmed"], owned["authorized"], owned["succeeded"]}
    assert {r["id"] for r in api.get("/v1/refunds").json()["data"]} == {owned["refund"]}
    # the other direction: the test key does not see the live card
    assert_missing(api.get(f"/v1/payment_methods/{live_pm}"))
    assert_missing(api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                             "payment_method": live_pm}),
                   param="payment_method")


def test_idempotency_keys_are_scoped_to_merchant_and_mode(api, live_api, other_api):
    body = {"type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034}}
    mine = api.post("/v1/payment_methods", body, idempotency_key="shared-key")
    theirs = other_api.post("/v1/payment_methods", body, idempotency_key="shared-key")
    live = live_api.post("/v1/payment_methods", body, idempotency_key="shared-key")
    for resp in (mine, theirs, live):
        assert resp.status_code == 200, resp.json()
        assert "Idempotent-Replayed" not in resp
    assert len({mine.json()["id"], theirs.json()["id"], live.json()["id"]}) == 3
    assert live.json()["livemode"] is True and mine.json()["livemode"] is False
    assert IdempotencyKey.objects.filter(key="shared-key").count() == 3
    # and each replays only its own response
    replay = other_api.post("/v1/payment_methods", body, idempotency_key="shared-key")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == theirs.json()["id"]


# --- livemode ---------------------------------------------------------------------------------
def test_test_key_objects_are_not_livemode(api, owned):
    assert api.get(f"/v1/payment_methods/{owned['pm']}").json()["livemode"] is False
    for name in ("unconfirmed", "authorized", "succeeded"):
        assert api.get(f"/v1/payments/{owned[name]}").json()["livemode"] is False
    assert api.get(f"/v1/refunds/{owned['refund']}").json()["livemode"] is False
    assert not PaymentMethod.objects.filter(livemode=True).exists()
    assert not Payment.objects.filter(livemode=True).exists()


def test_live_key_objects_are_livemode(live_api):
    resp = live_api.post("/v1/payment_methods", {
        "type": "card",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034,
                 "cvc": "123"}})
    assert resp.status_code == 200, resp.json()
    pm = resp.json()
    assert pm["livemode"] is True
    assert live_api.get(f"/v1/payment_methods/{pm['id']}").json()["livemode"] is True
    assert PaymentMethod.objects.get(id=pm["id"]).livemode is True

    payment = live_api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                             "payment_method": pm["id"]})
    assert payment.status_code == 200, payment.json()
    assert payment.json()["livemode"] is True
    assert payment.json()["status"] == "requires_confirmation"


def test_live_payment_cannot_be_confirmed_without_a_live_provider_account(live_api):
    """create_merchant gives sandbox accounts in test mode only: a live payment must never be
    routed to them."""
    pm_id = make_card(live_api)
    payment = live_api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                             "payment_method": pm_id}).json()
    resp = live_api.post(f"/v1/payments/{payment['id']}/confirm")
    assert resp.status_code == 400, resp.json()
    assert set(resp.json()) == {"error"}
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["code"] == "no_provider_account"
    after = live_api.get(f"/v1/payments/{payment['id']}").json()
    assert after["status"] == "requires_confirmation"
    assert after["attempts"] == []
    assert not PaymentAttempt.objects.exists()
    assert not SandboxCharge.objects.exists()


def test_live_create_and_confirm_without_a_live_account_leaves_nothing_behind(live_api):
    pm_id = make_card(live_api)
    resp = live_api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                          "payment_method": pm_id, "confirm": True},
                         idempotency_key="live-1")
    assert resp.status_code == 400, resp.json()
    assert resp.json()["error"]["code"] == "no_provider_account"
    # a 400 is not stored under the key, so it must not have created anything either
    assert live_api.get("/v1/payments").json()["data"] == []
    assert not Payment.objects.exists()
    assert not SandboxCharge.objects.exists()


def test_live_key_cannot_pin_a_test_mode_provider_account(live_api):
    pm_id = make_card(live_api)
    resp = live_api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                          "payment_method": pm_id, "confirm": True,
                                          "provider": "stripe-sandbox"})
    assert resp.status_code == 400, resp.json()
    assert resp.json()["error"]["param"] == "provider"
    assert not SandboxCharge.objects.exists()
    assert not Payment.objects.exists()
