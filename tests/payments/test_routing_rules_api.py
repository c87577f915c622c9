"""/v1/routing_rules and /v1/retry_rules: CRUD, strict validation, isolation per merchant and
mode, pagination, idempotent POSTs."""

from __future__ import annotations

import pytest

from providers.models import SANDBOX_URL, ProviderAccount, RetryRule, RoutingRule
from providers.routing.context import RoutingContext
from providers.routing.engine import route

pytestmark = pytest.mark.django_db

# merchant_create gives every merchant stripe-sandbox, adyen-sandbox, checkout-sandbox (test)
ORDERED = {"strategy": "ordered", "accounts": ["adyen-sandbox", "stripe-sandbox"]}


def create(api, body=None, **headers):
    return api.post("/v1/routing_rules", body if body is not None else ORDERED, **headers)


def error(resp) -> tuple[int, str, str | None]:
    body = resp.json()["error"]
    return resp.status_code, body["code"], body["param"]


# --- routing rules: CRUD ----------------------------------------------------------------------
def test_create_retrieve_update_delete(api, merchant):
    resp = create(api, {
        "priority": 10, "description": "Big EUR cards to Adyen",
        "conditions": {"amount_gte": 10000, "currencies": ["eur"], "card_brands": ["Visa"],
                       "bin_prefixes": ["4242"], "billing_countries": ["de", "FR"],
                       "metadata": {"channel": "web"}},
        "strategy": "weighted",
        "accounts": [{"account": "adyen-sandbox", "weight": 70},
                     {"account": "stripe-sandbox", "weight": 30}],
    })
    assert resp.status_code == 200, resp.json()
    rule = resp.json()
    assert rule["id"].startswith("rr_")
    assert rule["object"] == "routing_rule"
    assert rule["livemode"] is False
    assert rule["enabled"] is True
    assert rule["conditions"] == {"amount_gte": 10000, "currencies": ["EUR"],
                                  "card_brands": ["visa"], "bin_prefixes": ["4242"],
                                  "billing_countries": ["DE", "FR"],
                                  "metadata": {"channel": "web"}}
    assert isinstance(rule["created"], int) and isinstance(rule["updated"], int)

    assert api.get(f"/v1/routing_rules/{rule['id']}").json() == rule

    resp = api.post(f"/v1/routing_rules/{rule['id']}",
                    {"enabled": False, "conditions": {"currencies": ["USD"]}})
    assert resp.status_code == 200, resp.json()
    updated = resp.json()
    assert updated["enabled"] is False
    assert updated["conditions"] == {"currencies": ["USD"]}  # replaced as a whole
    assert updated["strategy"] == "weighted" and updated["priority"] == 10

    resp = api.client.delete(f"/v1/routing_rules/{rule['id']}",
                             HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert resp.status_code == 200
    assert resp.json() == {"id": rule["id"], "object": "routing_rule", "deleted": True}
    assert api.get(f"/v1/routing_rules/{rule['id']}").status_code == 404
    assert not RoutingRule.objects.exists()


def test_defaults_and_what_the_engine_does_with_the_rule(api, merchant):
    resp = create(api, {"strategy": "ordered", "accounts": ["checkout-sandbox"],
                        "conditions": {"currencies": ["GBP"]}})
    rule = resp.json()
    assert (rule["priority"], rule["enabled"], rule["description"]) == (100, True, "")
    decision = route(RoutingContext(merchant_id=merchant.id, livemode=False, amount=500,
                                    currency="GBP"))
    assert decision.record["rule"] == rule["id"]
    assert [a.name for a in decision.candidates] == ["checkout-sandbox"]


def test_update_to_another_strategy_needs_accounts_of_its_shape(api):
    rule = create(api).json()
    resp = api.post(f"/v1/routing_rules/{rule['id']}", {"strategy": "weighted"})
    assert error(resp) == (400, "parameter_invalid", "accounts")
    resp = api.post(f"/v1/routing_rules/{rule['id']}", {
        "strategy": "weighted", "accounts": [{"account": "adyen-sandbox", "weight": 1}]})
    assert resp.status_code == 200
    resp = api.post(f"/v1/routing_rules/{rule['id']}", {"strategy": "least_cost",
                                                        "accounts": ["adyen-sandbox"]})
    assert resp.json()["accounts"] == ["adyen-sandbox"]


def test_an_update_that_fails_validation_changes_nothing(api):
    rule = create(api).json()
    resp = api.post(f"/v1/routing_rules/{rule['id']}",
                    {"priority": 1, "accounts": ["no-such-account"]})
    assert error(resp) == (400, "provider_unknown", "accounts")
    assert api.get(f"/v1/routing_rules/{rule['id']}").json() == rule


# --- routing rules: validation ----------------------------------------------------------------
@pytest.mark.parametrize(("body", "code", "param"), [
    ({**ORDERED, "colour": "red"}, "parameter_unknown", "colour"),
    ({**ORDERED, "conditions": {"currency": ["USD"]}}, "parameter_unknown",
     "conditions.currency"),
    ({"accounts": ["adyen-sandbox"]}, "parameter_missing", "strategy"),
    ({"strategy": "ordered"}, "parameter_missing", "accounts"),
    ({"strategy": "cheapest", "accounts": ["adyen-sandbox"]}, "parameter_invalid", "strategy"),
    ({"strategy": "ordered", "accounts": []}, "parameter_invalid", "accounts"),
    ({"strategy": "ordered", "accounts": "adyen-sandbox"}, "parameter_invalid", "accounts"),
    ({"strategy": "ordered", "accounts": ["nope"]}, "provider_unknown", "accounts"),
    ({"strategy": "ordered", "accounts": ["adyen-sandbox", "adyen-sandbox"]},
     "parameter_invalid", "accounts"),
    ({"strategy": "ordered", "accounts": [{"account": "adyen-sandbox", "weight": 1}]},
     "parameter_invalid", "accounts"),
    ({"strategy": "weighted", "accounts": ["adyen-sandbox"]}, "parameter_invalid", "accounts"),
    ({"strategy": "weighted", "accounts": [{"account": "adyen-sandbox", "weight": 0}]},
     "parameter_invalid", "accounts"),
    ({"strategy": "weighted", "accounts": [{"account": "adyen-sandbox", "weight": 1.5}]},
     "parameter_invalid", "accounts"),
    ({"strategy": "weighted", "accounts": [{"account": "adyen-sandbox", "weight": "3"}]},
     "parameter_invalid", "accounts"),
    ({"strategy": "weighted", "accounts": [{"account": "adyen-sandbox", "weight": 2,
                                            "x": 1}]}, "parameter_invalid", "accounts"),
    ({**ORDERED, "priority": -1}, "parameter_invalid", "priority"),
    ({**ORDERED, "priority": "1"}, "parameter_invalid", "priority"),
    ({**ORDERED, "enabled": "yes"}, "parameter_invalid", "enabled"),
    ({**ORDERED, "conditions": []}, "parameter_invalid", "conditions"),
    ({**ORDERED, "conditions": {"amount_gte": 0}}, "amount_too_small",
     "conditions.amount_gte"),
    ({**ORDERED, "conditions": {"amount_lte": "100"}}, "parameter_invalid",
     "conditions.amount_lte"),
    ({**ORDERED, "conditions": {"amount_lte": 10**12}}, "amount_too_large",
     "conditions.amount_lte"),
    ({**ORDERED, "conditions": {"amount_gte": 500, "amount_lte": 100}}, "parameter_invalid",
     "conditions.amount_gte"),
    ({**ORDERED, "conditions": {"currencies": ["USX"]}}, "currency_invalid",
     "conditions.currencies"),
    ({**ORDERED, "conditions": {"currencies": "USD"}}, "parameter_invalid",
     "conditions.currencies"),
    ({**ORDERED, "conditions": {"currencies": []}}, "parameter_invalid",
     "conditions.currencies"),
    ({**ORDERED, "conditions": {"card_brands": ["visa", "maestro"]}}, "parameter_invalid",
     "conditions.card_brands"),
    ({**ORDERED, "conditions": {"bin_prefixes": ["42a"]}}, "parameter_invalid",
     "conditions.bin_prefixes"),
    ({**ORDERED, "conditions": {"bin_prefixes": ["123456789"]}}, "parameter_invalid",
     "conditions.bin_prefixes"),
    ({**ORDERED, "conditions": {"billing_countries": ["USA"]}}, "parameter_invalid",
     "conditions.billing_countries"),
    ({**ORDERED, "conditions": {"metadata": {"k": 1}}}, "parameter_invalid",
     "conditions.metadata"),
    ({**ORDERED, "conditions": {"metadata": {}}}, "parameter_invalid", "conditions.metadata"),
    ({**ORDERED, "description": "x" * 501}, "parameter_invalid", "description"),
])
def test_invalid_rules_are_rejected(api, body, code, param):
    resp = create(api, body)
    assert error(resp) == (400, code, param), resp.json()
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert not RoutingRule.objects.exists()


def test_rules_per_mode_are_capped(api, live_api, merchant, settings):
    settings.ROUTING_MAX_RULES = 2
    for _ in range(2):
        assert create(api).status_code == 200
    assert error(create(api)) == (400, "routing_rules_limit", None)
    ProviderAccount.objects.create(merchant=merchant, name="stripe-live", provider="stripe",
                                   livemode=True, base_url="https://api.stripe.com")
    assert create(live_api, {"strategy": "ordered", "accounts": ["stripe-live"]}
                  ).status_code == 200  # per mode


def test_account_names_must_exist_in_the_callers_mode(api, live_api, merchant):
    ProviderAccount.objects.create(merchant=merchant, name="stripe-live", provider="stripe",
                                   livemode=True, base_url="https://api.stripe.com")
    assert error(create(api, {"strategy": "ordered", "accounts": ["stripe-live"]})) == (
        400, "provider_unknown", "accounts")
    assert error(create(live_api, ORDERED)) == (400, "provider_unknown", "accounts")
    resp = create(live_api, {"strategy": "ordered", "accounts": ["stripe-live"]})
    assert resp.status_code == 200 and resp.json()["livemode"] is True


def test_another_merchants_account_names_do_not_count(api, other_api, merchant):
    ProviderAccount.objects.create(merchant=merchant, name="only-mine", provider="stripe",
                                   base_url=SANDBOX_URL)
    assert create(api, {"strategy": "ordered", "accounts": ["only-mine"]}).status_code == 200
    assert error(create(other_api, {"strategy": "ordered", "accounts": ["only-mine"]})) == (
        400, "provider_unknown", "accounts")


# --- isolation --------------------------------------------------------------------------------
def test_other_merchants_and_modes_see_404_and_empty_lists(api, live_api, other_api):
    rule = create(api).json()
    for client in (live_api, other_api):
        assert error(client.get(f"/v1/routing_rules/{rule['id']}")) == (
            404, "resource_missing", None)
        assert error(client.post(f"/v1/routing_rules/{rule['id']}", {"enabled": False})) == (
            404, "resource_missing", None)
        resp = client.client.delete(f"/v1/routing_rules/{rule['id']}",
                                    HTTP_AUTHORIZATION=f"Bearer {client.key}")
        assert resp.status_code == 404
        assert client.get("/v1/routing_rules").json()["data"] == []
    assert RoutingRule.objects.get().enabled is True


def test_auth_is_required(anon):
    assert anon.get("/v1/routing_rules").status_code == 401
    assert anon.post("/v1/routing_rules", ORDERED).status_code == 401
    assert anon.get("/v1/retry_rules").status_code == 401


# --- lists ------------------------------------------------------------------------------------
def test_list_is_paginated_newest_first(api):
    ids = [create(api, {**ORDERED, "priority": i}).json()["id"] for i in range(5)]
    page = api.get("/v1/routing_rules", {"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [r["id"] for r in page["data"]] == ids[::-1][:2]
    page = api.get("/v1/routing_rules", {"limit": 2, "starting_after": ids[3]}).json()
    assert [r["id"] for r in page["data"]] == [ids[2], ids[1]]
    last = api.get("/v1/routing_rules", {"limit": 10, "starting_after": ids[1]}).json()
    assert ([r["id"] for r in last["data"]], last["has_more"]) == ([ids[0]], False)
    assert error(api.get("/v1/routing_rules", {"limit": 0})) == (400, "parameter_invalid",
                                                                 "limit")
    assert error(api.get("/v1/routing_rules", {"status": "x"})) == (400, "parameter_unknown",
                                                                    "status")


# --- idempotency ------------------------------------------------------------------------------
def test_create_is_idempotent(api):
    first = create(api, idempotency_key="rr-1")
    again = create(api, idempotency_key="rr-1")
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert RoutingRule.objects.count() == 1
    other_body = create(api, {**ORDERED, "priority": 3}, idempotency_key="rr-1")
    assert error(other_body) == (400, "idempotency_key_reused", "Idempotency-Key")


def test_a_rejected_create_does_not_burn_the_key(api):
    assert create(api, {"strategy": "ordered", "accounts": ["nope"]},
                  idempotency_key="rr-2").status_code == 400
    fixed = create(api, {"strategy": "ordered", "accounts": ["adyen-sandbox"]},
                   idempotency_key="rr-2")
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers


def test_update_is_idempotent(api):
    rule = create(api).json()
    first = api.post(f"/v1/routing_rules/{rule['id']}", {"priority": 7}, idempotency_key="u1")
    RoutingRule.objects.filter(pk=rule["id"]).update(priority=8)
    again = api.post(f"/v1/routing_rules/{rule['id']}", {"priority": 7}, idempotency_key="u1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert RoutingRule.objects.get().priority == 8  # replayed, not re-applied


# --- retry rules ------------------------------------------------------------------------------
def test_retry_rules_crud(api):
    resp = api.post("/v1/retry_rules", {"decline_code": "do_not_honor", "retry": True})
    assert resp.status_code == 200, resp.json()
    rule = resp.json()
    assert rule["id"].startswith("rtr_")
    assert (rule["object"], rule["decline_code"], rule["retry"], rule["default_retry"],
            rule["livemode"]) == ("retry_rule", "do_not_honor", True, False, False)
    # one rule per code: setting it again replaces it
    again = api.post("/v1/retry_rules", {"decline_code": "do_not_honor", "retry": False}).json()
    assert (again["id"], again["retry"]) == (rule["id"], False)
    soft = api.post("/v1/retry_rules", {"decline_code": "processing_error", "retry": False})
    assert soft.json()["default_retry"] is True
    assert api.get(f"/v1/retry_rules/{rule['id']}").json()["retry"] is False
    listing = api.get("/v1/retry_rules").json()
    assert [r["decline_code"] for r in listing["data"]] == ["processing_error", "do_not_honor"]
    resp = api.client.delete(f"/v1/retry_rules/{rule['id']}",
                             HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert resp.json() == {"id": rule["id"], "object": "retry_rule", "deleted": True}
    assert RetryRule.objects.count() == 1


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"decline_code": "nope", "retry": True}, "decline_code_unknown", "decline_code"),
    ({"decline_code": "stolen_card", "retry": True}, "decline_code_not_retriable", "retry"),
    ({"decline_code": "do_not_honor"}, "parameter_missing", "retry"),
    ({"decline_code": "do_not_honor", "retry": "true"}, "parameter_invalid", "retry"),
    ({"decline_code": "do_not_honor", "retry": True, "kind": "hard"}, "parameter_unknown",
     "kind"),
])
def test_invalid_retry_rules_are_rejected(api, body, code, param):
    assert error(api.post("/v1/retry_rules", body)) == (400, code, param)
    assert not RetryRule.objects.exists()


def test_a_never_retriable_code_may_be_set_not_retriable(api):
    assert api.post("/v1/retry_rules", {"decline_code": "stolen_card",
                                        "retry": False}).status_code == 200


def test_retry_rules_are_isolated(api, live_api, other_api):
    rule = api.post("/v1/retry_rules", {"decline_code": "do_not_honor", "retry": True}).json()
    for client in (live_api, other_api):
        assert client.get(f"/v1/retry_rules/{rule['id']}").status_code == 404
        assert client.client.delete(f"/v1/retry_rules/{rule['id']}",
                                    HTTP_AUTHORIZATION=f"Bearer {client.key}").status_code == 404
        assert client.get("/v1/retry_rules").json()["data"] == []
    # the same code in the other mode is its own rule
    live = live_api.post("/v1/retry_rules", {"decline_code": "do_not_honor", "retry": False})
    assert live.json()["id"] != rule["id"]
    assert RetryRule.objects.count() == 2


def test_retry_rule_create_is_idempotent(api):
    body = {"decline_code": "do_not_honor", "retry": True}
    first = api.post("/v1/retry_rules", body, idempotency_key="k")
    again = api.post("/v1/retry_rules", body, idempotency_key="k")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_retry_rules_pagination(api):
    for code in ("do_not_honor", "processing_error", "call_issuer"):
        api.post("/v1/retry_rules", {"decline_code": code, "retry": code != "processing_error"})
    page = api.get("/v1/retry_rules", {"limit": 2}).json()
    assert (len(page["data"]), page["has_more"]) == (2, True)
    rest = api.get("/v1/retry_rules", {"starting_after": page["data"][-1]["id"]}).json()
    assert [r["decline_code"] for r in rest["data"]] == ["do_not_honor"]
