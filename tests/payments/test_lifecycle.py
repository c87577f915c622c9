"""The payment lifecycle through the HTTP API (docs/api.md "Payments" and the sandbox test cards).

Every provider-side claim is checked against the sandbox's own ledger (`SandboxCharge`), the
way one would check a real provider's dashboard.
"""

from __future__ import annotations

import datetime as dt

import pytest

from payments.models import Payment, PaymentAttempt
from providers.accounts import adapter_for
from providers.base import AuthorizeRequest, Card
from providers.models import ProviderAccount
from providers.sandboxes.models import SandboxCharge
from tests.conftest import make_card, pay

APPROVED = ["4242424242424242", "5555555555554444", "378282246310005"]
HARD_DECLINES = [
    ("4000000000000002", "card_declined", "generic_decline"),
    ("4000000000009995", "card_declined", "insufficient_funds"),
    ("4000000000000069", "expired_card", "expired_card"),
    ("4000000000009987", "card_declined", "lost_card"),
]


# --- helpers ------------------------------------------------------------------------------
def create(api, number="4242424242424242", **fields):
    """Create a payment (not confirmed unless `confirm` is given); returns the JSON body."""
    body = {"amount": 1050, "currency": "USD", **fields}
    if number is not None and "payment_method" not in body:
        body["payment_method"] = make_card(api, number)
    resp = api.post("/v1/payments", body)
    assert resp.status_code in (200, 202), resp.json()
    return resp.json()


def authorized(api, amount=1000, **fields):
    """A payment in requires_capture (manual capture, approved card)."""
    resp = pay(api, amount=amount, capture_method="manual", **fields)
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "requires_capture"
    return body


def ledger(attempt_id: str) -> SandboxCharge:
    return SandboxCharge.objects.get(reference=attempt_id)


def lookup(merchant, account_name: str, attempt_id: str, number: str):
    """Ask the account's provider (its sandbox) what became of an attempt, as status sync will."""
    account = ProviderAccount.objects.get(merchant=merchant, livemode=False, name=account_name)
    request = AuthorizeRequest(reference=attempt_id, amount=1050, currency="USD",
                               card=Card(number, 12, 2034, "visa"), capture=True)
    return adapter_for(account).lookup(request)


def assert_error(resp, status, code, *, param="__any__", type_="invalid_request_error"):
    assert resp.status_code == status, resp.json()
    error = resp.json()["error"]
    assert error["type"] == type_, error
    assert error["code"] == code, error
    assert error["message"]
    if param != "__any__":
        assert error["param"] == param, error
    return error


def ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.json()
    return [item["id"] for item in resp.json()["data"]]


# --- create and confirm -------------------------------------------------------------------
def test_create_without_confirm_requires_confirmation_and_calls_no_provider(api):
    pm = make_card(api)
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "usd", "payment_method": pm,
                                     "reference": "order-1", "description": "Two mugs",
                                     "metadata": {"cart": "c-9"}})
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["id"].startswith("pay_")
    assert body["object"] == "payment"
    assert body["status"] == "requires_confirmation"
    assert body["attempts"] == []
    assert body["currency"] == "USD"
    assert body["payment_method"] == pm
    assert body["provider"] is None
    assert body["last_error"] is None
    assert (body["amount_capturable"], body["amount_captured"], body["amount_refunded"]) == (
        0, 0, 0)
    assert body["reference"] == "order-1"
    assert body["description"] == "Two mugs"
    assert body["metadata"] == {"cart": "c-9"}
    assert body["livemode"] is False
    assert isinstance(body["created"], int)
    assert not PaymentAttempt.objects.filter(payment_id=body["id"]).exists()
    assert SandboxCharge.objects.count() == 0


def test_confirm_with_payment_method_given_at_confirm_time(api):
    body = create(api, number=None)
    assert body["status"] == "requires_confirmation"
    assert body["payment_method"] is None

    pm = make_card(api)
    resp = api.post(f"/v1/payments/{body['id']}/confirm", {"payment_method": pm})
    assert resp.status_code == 200, resp.json()
    confirmed = resp.json()
    assert confirmed["id"] == body["id"]
    assert confirmed["status"] == "succeeded"
    assert confirmed["payment_method"] == pm
    assert confirmed["amount_captured"] == 1050
    assert [a["status"] for a in confirmed["attempts"]] == ["captured"]
    charge = ledger(confirmed["attempts"][0]["id"])
    assert (charge.status, charge.amount, charge.amount_captured) == ("captured", 1050, 1050)


def test_confirm_uses_the_payment_method_given_at_create(api):
    body = create(api)
    resp = api.post(f"/v1/payments/{body['id']}/confirm", {})
    assert resp.status_code == 200, resp.json()
    assert resp.json()["status"] == "succeeded"
    assert resp.json()["payment_method"] == body["payment_method"]


def test_confirm_without_any_payment_method_is_rejected_and_changes_nothing(api):
    body = create(api, number=None)
    resp = api.post(f"/v1/payments/{body['id']}/confirm", {})
    assert_error(resp, 400, "parameter_missing", param="payment_method")
    after = api.get(f"/v1/payments/{body['id']}").json()
    assert after["status"] == "requires_confirmation"
    assert after["attempts"] == []


def test_automatic_capture_succeeds_with_amount_captured(api):
    resp = pay(api, amount=2500)
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "succeeded"
    assert body["capture_method"] == "automatic"
    assert body["amount_captured"] == 2500 == body["amount"]
    assert body["amount_capturable"] == 0
    assert body["amount_refunded"] == 0
    assert body["last_error"] is None
    assert body["provider"] == "stripe-sandbox"
    [attempt] = body["attempts"]
    assert attempt["id"].startswith("att_")
    assert attempt["status"] == "captured"
    assert attempt["provider"] == "stripe-sandbox"
    assert attempt["decline_code"] is None
    charge = ledger(attempt["id"])
    assert (charge.provider, charge.status, charge.amount_captured) == ("stripe", "captured",
                                                                        2500)


def test_manual_capture_authorizes_only(api):
    body = authorized(api, amount=1000)
    assert body["capture_method"] == "manual"
    assert body["amount_capturable"] == 1000
    assert body["amount_captured"] == 0
    [attempt] = body["attempts"]
    assert attempt["status"] == "authorized"
    charge = ledger(attempt["id"])
    assert (charge.status, charge.amount, charge.amount_captured) == ("authorized", 1000, 0)


def test_confirm_an_already_confirmed_payment_is_a_state_conflict(api):
    body = pay(api).json()
    assert body["status"] == "succeeded"
    resp = api.post(f"/v1/payments/{body['id']}/confirm", {})
    assert_error(resp, 409, "payment_state_invalid")
    # no second provider call was made
    assert PaymentAttempt.objects.filter(payment_id=body["id"]).count() == 1
    assert SandboxCharge.objects.count() == 1

    manual = authorized(api)
    resp = api.post(f"/v1/payments/{manual['id']}/confirm", {})
    assert_error(resp, 409, "payment_state_invalid")
    assert api.get(f"/v1/payments/{manual['id']}").json()["status"] == "requires_capture"


# --- capture ------------------------------------------------------------------------------
def test_capture_in_full(api):
    body = authorized(api, amount=1000)
    resp = api.post(f"/v1/payments/{body['id']}/capture", {})
    assert resp.status_code == 200, resp.json()
    captured = resp.json()
    assert captured["status"] == "succeeded"
    assert captured["amount_captured"] == 1000
    assert captured["amount_capturable"] == 0
    assert [a["status"] for a in captured["attempts"]] == ["captured"]
    charge = ledger(captured["attempts"][0]["id"])
    assert (charge.status, charge.amount_captured) == ("captured", 1000)


def test_capture_partial_releases_the_rest(api):
    body = authorized(api, amount=1000)
    resp = api.post(f"/v1/payments/{body['id']}/capture", {"amount_to_capture": 600})
    assert resp.status_code == 200, resp.json()
    captured = resp.json()
    assert captured["status"] == "succeeded"
    assert captured["amount"] == 1000
    assert captured["amount_captured"] == 600
    assert captured["amount_capturable"] == 0
    charge = ledger(captured["attempts"][0]["id"])
    assert (charge.status, charge.amount_captured) == ("captured", 600)
    assert api.get(f"/v1/payments/{body['id']}").json()["amount_captured"] == 600


def test_capture_twice_is_a_state_conflict(api):
    body = authorized(api, amount=1000)
    assert api.post(f"/v1/payments/{body['id']}/capture", {"amount_to_capture": 400}
                    ).status_code == 200
    resp = api.post(f"/v1/payments/{body['id']}/capture", {"amount_to_capture": 400})
    assert_error(resp, 409, "payment_state_invalid")
    after = api.get(f"/v1/payments/{body['id']}").json()
    assert after["amount_captured"] == 400
    assert ledger(after["attempts"][0]["id"]).amount_captured == 400


def test_capture_more_than_capturable_is_rejected(api):
    body = authorized(api, amount=1000)
    resp = api.post(f"/v1/payments/{body['id']}/capture", {"amount_to_capture": 1001})
    assert_error(resp, 400, "amount_too_large", param="amount_to_capture")
    after = api.get(f"/v1/payments/{body['id']}").json()
    assert after["status"] == "requires_capture"
    assert after["amount_capturable"] == 1000
    assert ledger(after["attempts"][0]["id"]).status == "authorized"


@pytest.mark.parametrize("amount", [0, -5, "500", 10.5])
def test_capture_amount_must_be_a_positive_integer(api, amount):
    body = authorized(api, amount=1000)
    resp = api.post(f"/v1/payments/{body['id']}/capture", {"amount_to_capture": amount})
    assert resp.status_code == 400, resp.json()
    assert resp.json()["error"]["param"] == "amount_to_capture"
    assert api.get(f"/v1/payments/{body['id']}").json()["status"] == "requires_capture"


def test_capture_of_an_automatic_payment_is_a_state_conflict(api):
    body = pay(api).json()
    resp = api.post(f"/v1/payments/{body['id']}/capture", {})
    assert_error(resp, 409, "payment_state_invalid")


def test_capture_before_confirmation_is_a_state_conflict(api):
    body = create(api)
    resp = api.post(f"/v1/payments/{body['id']}/capture", {})
    assert_error(resp, 409, "payment_state_invalid")


# --- cancel -------------------------------------------------------------------------------
def test_cancel_from_requires_confirmation(api):
    body = create(api)
    resp = api.post(f"/v1/payments/{body['id']}/cancel",
                    {"cancellation_reason": "customer changed their mind"})
    assert resp.status_code == 200, resp.json()
    canceled = resp.json()
    assert canceled["status"] == "canceled"
    assert canceled["attempts"] == []
    assert Payment.objects.get(pk=body["id"]).cancellation_reason == (
        "customer changed their mind")
    assert SandboxCharge.objects.count() == 0


def test_cancel_from_requires_capture_voids_the_authorization(api):
    body = authorized(api, amount=1000)
    resp = api.post(f"/v1/payments/{body['id']}/cancel", {})
    assert resp.status_code == 200, resp.json()
    canceled = resp.json()
    assert canceled["status"] == "canceled"
    assert canceled["amount_capturable"] == 0
    assert canceled["amount_captured"] == 0
    [attempt] = canceled["attempts"]
    assert attempt["status"] == "voided"
    charge = ledger(attempt["id"])
    assert charge.status == "canceled"
    assert charge.amount_captured == 0


@pytest.mark.parametrize("state", ["succeeded", "canceled", "failed"])
def test_cancel_a_final_payment_is_a_state_conflict(api, state):
    if state == "succeeded":
        body = pay(api).json()
    elif state == "canceled":
        body = create(api)
        assert api.post(f"/v1/payments/{body['id']}/cancel", {}).status_code == 200
    else:
        body = pay(api, "4000000000000002").json()["payment"]
    resp = api.post(f"/v1/payments/{body['id']}/cancel", {})
    assert_error(resp, 409, "payment_state_invalid")
    assert api.get(f"/v1/payments/{body['id']}").json()["status"] == state


def test_cancel_then_confirm_is_a_state_conflict(api):
    body = create(api)
    api.post(f"/v1/payments/{body['id']}/cancel", {})
    resp = api.post(f"/v1/payments/{body['id']}/confirm", {})
    assert_error(resp, 409, "payment_state_invalid")
    assert SandboxCharge.objects.count() == 0


# --- the test cards of docs/api.md, end to end -------------------------------------------------
@pytest.mark.parametrize("number", APPROVED)
def test_approved_cards(api, number):
    resp = pay(api, number, amount=777)
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "succeeded"
    assert body["amount_captured"] == 777
    [attempt] = body["attempts"]
    assert attempt["status"] == "captured"
    charge = ledger(attempt["id"])
    assert (charge.status, charge.amount, charge.amount_captured) == ("captured", 777, 777)


@pytest.mark.parametrize(("number", "code", "decline_code"), HARD_DECLINES)
def test_hard_declines(api, number, code, decline_code):
    resp = pay(api, number)
    error = assert_error(resp, 402, code, type_="card_error")
    assert error["decline_code"] == decline_code
    payment = resp.json()["payment"]
    assert payment["status"] == "failed"
    assert payment["amount_captured"] == 0
    assert payment["last_error"]["code"] == code
    assert payment["last_error"]["decline_code"] == decline_code
    assert payment["last_error"]["message"]
    # a hard decline is never retried anywhere
    [attempt] = payment["attempts"]
    assert attempt["status"] == "declined"
    assert attempt["decline_code"] == decline_code
    assert ledger(attempt["id"]).status == "declined"

    stored = api.get(f"/v1/payments/{payment['id']}").json()
    assert stored["status"] == "failed"
    assert stored["last_error"] == payment["last_error"]


def test_soft_decline(api):
    resp = pay(api, "4000000000000119")
    error = assert_error(resp, 402, "processing_error", type_="card_error")
    # docs/api.md: a 402 always says why the card was declined
    assert error["decline_code"] == "processing_error"
    payment = resp.json()["payment"]
    assert payment["status"] == "failed"
    assert payment["last_error"]["code"] == "processing_error"
    assert payment["attempts"]
    for attempt in payment["attempts"]:
        assert attempt["status"] == "declined"
        assert attempt["decline_code"] == "processing_error"
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == "failed"


def test_provider_unavailable_charges_nothing(api):
    # pinned: Stripe's 503 says "not processed" (Checkout.com's does not: test_failover)
    resp = pay(api, "4000000000000507", provider="stripe-sandbox")
    assert_error(resp, 503, "provider_unavailable", type_="api_error")
    payment = resp.json()["payment"]
    assert payment["status"] == "failed"
    assert payment["last_error"]["code"] == "provider_unavailable"
    assert payment["attempts"]
    assert {a["status"] for a in payment["attempts"]} == {"failed"}
    attempt_ids = [a["id"] for a in payment["attempts"]]
    assert not SandboxCharge.objects.filter(reference__in=attempt_ids).exists()
    assert SandboxCharge.objects.count() == 0
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == "failed"


def test_commit_then_timeout_is_unresolved_and_the_provider_has_the_charge(api, merchant):
    resp = pay(api, "4000000000000408")
    assert resp.status_code == 202, resp.json()
    body = resp.json()
    assert body["status"] == "unresolved"
    assert body["last_error"]["code"] == "outcome_unknown"
    # the payment does not claim money it cannot yet prove
    assert body["amount_captured"] == 0
    # no failover while an attempt is unknown
    [attempt] = body["attempts"]
    assert attempt["status"] == "unknown"

    found = lookup(merchant, attempt["provider"], attempt["id"], "4000000000000408")
    assert found.found is True
    assert found.status == "captured"
    assert found.amount == 1050
    assert found.provider_reference
    assert SandboxCharge.objects.filter(reference=attempt["id"]).count() == 1
    assert api.get(f"/v1/payments/{body['id']}").json()["status"] == "unresolved"


def test_timeout_before_commit_is_unresolved_and_the_provider_has_nothing(api, merchant):
    resp = pay(api, "4000000000000606")
    assert resp.status_code == 202, resp.json()
    body = resp.json()
    assert body["status"] == "unresolved"
    assert body["last_error"]["code"] == "outcome_unknown"
    [attempt] = body["attempts"]
    assert attempt["status"] == "unknown"
    assert lookup(merchant, attempt["provider"], attempt["id"], "4000000000000606").found is False
    assert SandboxCharge.objects.count() == 0


def test_unresolved_payment_cannot_be_captured_canceled_or_confirmed(api):
    body = pay(api, "4000000000000408", capture_method="manual").json()
    assert body["status"] == "unresolved"
    for action in ("confirm", "capture", "cancel"):
        resp = api.post(f"/v1/payments/{body['id']}/{action}", {})
        assert_error(resp, 409, "payment_state_invalid")
    assert api.get(f"/v1/payments/{body['id']}").json()["status"] == "unresolved"


# --- provider pinning ---------------------------------------------------------------------
def test_pinned_provider_routes_there(api):
    resp = pay(api, provider="adyen-sandbox")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "succeeded"
    assert body["provider"] == "adyen-sandbox"
    assert body["attempts"][0]["provider"] == "adyen-sandbox"
    assert body["routing"]["selected"] == "adyen-sandbox"
    assert ledger(body["attempts"][0]["id"]).provider == "adyen"


def test_pinned_provider_is_kept_until_confirmation(api):
    body = create(api, provider="checkout-sandbox")
    assert body["provider"] == "checkout-sandbox"
    confirmed = api.post(f"/v1/payments/{body['id']}/confirm", {}).json()
    assert confirmed["provider"] == "checkout-sandbox"
    assert [a["provider"] for a in confirmed["attempts"]] == ["checkout-sandbox"]


def test_unknown_provider_is_rejected_and_creates_nothing(api):
    resp = pay(api, provider="no-such-provider")
    assert_error(resp, 400, "provider_unknown", param="provider")
    assert ids(api.get("/v1/payments")) == []


def test_live_key_cannot_pin_a_test_mode_account(live_api):
    resp = live_api.post("/v1/payments", {"amount": 1050, "currency": "USD",
                                          "provider": "stripe-sandbox"})
    assert_error(resp, 400, "provider_unknown", param="provider")


def test_disabled_pinned_account_is_rejected_and_creates_nothing(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant, name="adyen-sandbox").update(enabled=False)
    resp = pay(api, provider="adyen-sandbox")
    assert_error(resp, 400, "provider_disabled", param="provider")
    # a 400 changes nothing: no half-made payment is left behind, nothing was charged
    assert ids(api.get("/v1/payments")) == []
    assert not Payment.objects.filter(merchant=merchant).exists()
    assert SandboxCharge.objects.count() == 0


def test_pinning_a_disabled_account_without_confirm_is_rejected(api, merchant):
    ProviderAccount.objects.filter(merchant=merchant, name="adyen-sandbox").update(enabled=False)
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "USD",
                                     "provider": "adyen-sandbox"})
    assert_error(resp, 400, "provider_disabled", param="provider")
    assert not Payment.objects.filter(merchant=merchant).exists()


def test_confirm_with_no_enabled_account_is_rejected_and_creates_nothing(live_api, merchant):
    # create_merchant makes sandbox accounts in test mode only: live mode has none
    resp = pay(live_api)
    assert_error(resp, 400, "no_provider_account")
    assert ids(live_api.get("/v1/payments")) == []
    assert not Payment.objects.filter(merchant=merchant, livemode=True).exists()


def test_account_disabled_after_create_is_rejected_at_confirm(api, merchant):
    body = create(api, provider="adyen-sandbox")
    ProviderAccount.objects.filter(merchant=merchant, name="adyen-sandbox").update(enabled=False)
    resp = api.post(f"/v1/payments/{body['id']}/confirm", {})
    assert_error(resp, 400, "provider_disabled", param="provider")
    after = api.get(f"/v1/payments/{body['id']}").json()
    assert after["status"] == "requires_confirmation"
    assert after["attempts"] == []
    assert SandboxCharge.objects.count() == 0


# --- retrieve -----------------------------------------------------------------------------
def test_retrieve_payment(api, other_api, live_api):
    created = pay(api).json()
    resp = api.get(f"/v1/payments/{created['id']}")
    assert resp.status_code == 200
    assert resp.json() == created
    for client in (other_api, live_api):
        assert_error(client.get(f"/v1/payments/{created['id']}"), 404, "resource_missing")
    assert_error(api.get("/v1/payments/pay_doesnotexist"), 404, "resource_missing")


# --- list and filters ---------------------------------------------------------------------
T0 = 1_700_000_000


def _at(payment_id: str, seconds: float) -> None:
    Payment.objects.filter(pk=payment_id).update(
        created_at=dt.datetime.fromtimestamp(seconds, tz=dt.UTC))


def test_list_filters_by_status_and_reference(api):
    ok = pay(api, reference="order-1").json()
    declined = pay(api, "4000000000000002", reference="order-2").json()["payment"]
    pending = create(api, reference="order-1")

    assert ids(api.get("/v1/payments", {"status": "succeeded"})) == [ok["id"]]
    assert ids(api.get("/v1/payments", {"status": "failed"})) == [declined["id"]]
    assert ids(api.get("/v1/payments", {"status": "requires_confirmation"})) == [pending["id"]]
    assert ids(api.get("/v1/payments", {"status": "canceled"})) == []
    assert set(ids(api.get("/v1/payments", {"reference": "order-1"}))) == {ok["id"],
                                                                         pending["id"]}
    assert ids(api.get("/v1/payments", {"reference": "order-1", "status": "succeeded"})) == [
        ok["id"]]
    assert ids(api.get("/v1/payments", {"reference": "nope"})) == []
    listed = api.get("/v1/payments").json()
    assert listed["object"] == "list"
    assert listed["has_more"] is False
    assert len(listed["data"]) == 3


def test_list_is_scoped_to_merchant_and_mode(api, other_api, live_api):
    mine = pay(api).json()
    pay(other_api)
    assert ids(api.get("/v1/payments")) == [mine["id"]]
    assert ids(live_api.get("/v1/payments")) == []


def test_list_filters_by_created_range(api):
    first, second, third = (create(api)["id"] for _ in range(3))
    _at(first, T0)
    _at(second, T0 + 100.5)  # shown as created = T0 + 100
    _at(third, T0 + 200)
    assert api.get(f"/v1/payments/{second}").json()["created"] == T0 + 100

    def listed(**params):
        return ids(api.get("/v1/payments", {f"created[{k}]": v for k, v in params.items()}))

    assert listed(gte=T0 + 100) == [third, second]
    assert listed(lte=T0 + 100) == [second, first]  # the whole second T0+100 is included
    assert listed(gte=T0 + 100, lte=T0 + 100) == [second]
    assert listed(gte=T0 + 101) == [third]
    assert listed(lte=T0 + 99) == [first]
    assert listed(gte=T0, lte=T0 + 200) == [third, second, first]
    assert listed(gte=T0 + 201) == []


@pytest.mark.parametrize("params", [
    {"status": "paid"},
    {"status": ""},
    {"created[gte]": "yesterday"},
    {"created[lte]": "-1"},
])
def test_list_rejects_invalid_filters(api, params):
    resp = api.get("/v1/payments", params)
    assert_error(resp, 400, "parameter_invalid", param=next(iter(params)))


@pytest.mark.parametrize("name", ["state", "created", "created[gt]", "amount"])
def test_list_rejects_unknown_query_parameters(api, name):
    resp = api.get("/v1/payments", {name: "1"})
    assert_error(resp, 400, "parameter_unknown", param=name)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
def test_list_limit_out_of_range_is_rejected(api, limit):
    assert_error(api.get("/v1/payments", {"limit": limit}), 400, "parameter_invalid",
                 param="limit")


def test_list_limit_bounds_are_accepted(api):
    made = [create(api)["id"] for _ in range(3)]
    resp = api.get("/v1/payments", {"limit": 1})
    assert len(ids(resp)) == 1
    assert resp.json()["has_more"] is True
    resp = api.get("/v1/payments", {"limit": 100})
    assert set(ids(resp)) == set(made)
    assert resp.json()["has_more"] is False
    resp = api.get("/v1/payments")  # default 10
    assert len(ids(resp)) == 3


def test_cursor_pagination_walks_every_page_newest_first(api):
    made = [create(api)["id"] for _ in range(7)]
    # Some share a timestamp so that the id tie-break is exercised too.
    times = [T0, T0 + 10, T0 + 10, T0 + 10, T0 + 20, T0 + 30, T0 + 30]
    for payment_id, seconds in zip(made, times, strict=True):
        _at(payment_id, seconds)
    expected = [p.id for p in Payment.objects.filter(id__in=made).order_by("-created_at",
                                                                             "-id")]
    assert len(expected) == 7

    for limit in (1, 2, 3, 7, 10):
        seen, has_more_flags, cursor = [], [], None
        while True:
            params = {"limit": limit}
            if cursor:
                params["starting_after"] = cursor
            resp = api.get("/v1/payments", params)
            page = ids(resp)
            assert 0 < len(page) <= limit
            seen += page
            has_more_flags.append(resp.json()["has_more"])
            if not resp.json()["has_more"]:
                break
            cursor = page[-1]
            assert len(has_more_flags) <= 7, "pagination does not end"
        assert seen == expected, limit  # newest first, no duplicates, no gaps
        pages = -(-7 // limit)
        assert has_more_flags == [True] * (pages - 1) + [False], limit

    # starting after the oldest: an empty last page
    resp = api.get("/v1/payments", {"starting_after": expected[-1]})
    assert ids(resp) == []
    assert resp.json()["has_more"] is False


def test_cursor_pagination_combines_with_filters(api):
    made = [create(api, reference="r")["id"] for _ in range(4)]
    create(api, reference="other")
    for i, payment_id in enumerate(made):
        _at(payment_id, T0 + i)
    page1 = api.get("/v1/payments", {"reference": "r", "limit": 3}).json()
    assert [p["id"] for p in page1["data"]] == made[::-1][:3]
    assert page1["has_more"] is True
    page2 = api.get("/v1/payments", {"reference": "r", "limit": 3,
                                     "starting_after": made[1]}).json()
    assert [p["id"] for p in page2["data"]] == [made[0]]
    assert page2["has_more"] is False


def test_unknown_starting_after_is_rejected(api, other_api):
    create(api)
    assert_error(api.get("/v1/payments", {"starting_after": "pay_unknown"}), 400,
                 "resource_missing", param="starting_after")
    # another merchant's payment is unknown here too
    theirs = other_api.post("/v1/payments", {"amount": 100, "currency": "USD"}).json()["id"]
    assert_error(api.get("/v1/payments", {"starting_after": theirs}), 400, "resource_missing",
                 param="starting_after")
