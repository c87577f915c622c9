"""The routing engine: rules and their conditions, eligibility, the four strategies, the record
stored on the payment, the rolling success rate, and which outcomes may be retried.

Breakers, limits and success rates run against real Redis (settings.REDIS_URL) and, where it
matters, against the embedded default's in-process state too.
"""

from __future__ import annotations

import json
import random
import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.db import connection
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from payments.cards import _BRANDS
from providers.base import (
    HardDecline,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
    SoftDecline,
)
from providers.models import SANDBOX_URL, ProviderAccount, RetryRule, RoutingRule
from providers.outcomes import APPROVED, HARD, SOFT, UNAVAILABLE, UNKNOWN, Outcome
from providers.resilience import limits, store
from providers.resilience.breaker import BreakerOpen, breaker_for
from providers.routing import stats
from providers.routing.context import RoutingContext
from providers.routing.engine import (
    CompiledRule,
    RuleIndex,
    expected_fee,
    load_config,
    route,
    summarize,
)
from providers.routing.retry import (
    DECLINE_CLASSES,
    NEVER_RETRIABLE,
    default_retry,
    is_retriable,
    outcome_of,
    overrides_for,
    refused_before_sending,
)
from providers.routing.rules import CARD_BRANDS, routing_rule_create
from tests.factories import MerchantFactory

pytestmark = pytest.mark.django_db


# --- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def shop():
    return MerchantFactory(name=f"Routing {uuid.uuid4().hex[:8]}")


def account(merchant, name: str, *, priority: int = 100, **fields) -> ProviderAccount:
    return ProviderAccount.objects.create(
        merchant=merchant, name=name, provider=fields.pop("provider", "stripe"),
        base_url=SANDBOX_URL, priority=priority, **fields)


@pytest.fixture
def three(shop):
    """stripe-main (priority 10), adyen-main (20), checkout-main (30), test mode."""
    return (account(shop, "stripe-main", priority=10),
            account(shop, "adyen-main", priority=20, provider="adyen"),
            account(shop, "checkout-main", priority=30, provider="checkout"))


def ctx(merchant, **fields) -> RoutingContext:
    defaults = {"merchant_id": merchant.id, "livemode": False, "amount": 1000,
                "currency": "USD", "card_brand": "visa", "card_bin": "42424242",
                "billing_country": "US", "metadata": {}}
    return RoutingContext(**{**defaults, **fields})


def rule(merchant, accounts, *, strategy="ordered", priority=100, livemode=False, **fields):
    return routing_rule_create(merchant_id=merchant.id, livemode=livemode, strategy=strategy,
                               accounts=accounts, priority=priority, **fields)


def names(decision) -> list[str]:
    return [a.name for a in decision.candidates]


def trip(acct: ProviderAccount) -> None:
    """Open the account's breaker the way a provider outage does: failures through guard()."""
    breaker = breaker_for(acct)
    for _ in range(acct.breaker_fail_max):
        with pytest.raises(ProviderUnavailable), breaker.guard():
            raise ProviderUnavailable("connect error")
    assert breaker.current_state == "open"


@pytest.fixture(params=["redis", "local"])
def backend(request, settings):
    """Run against Redis and against the embedded default's in-process state."""
    if request.param == "local":
        settings.REDIS_URL = ""
    else:
        assert settings.REDIS_URL
    return request.param


# --- conditions -------------------------------------------------------------------------------
CONDITION_CASES = [
    # (conditions, context fields that match, context fields that do not)
    ({"amount_gte": 1000}, {"amount": 1000}, {"amount": 999}),
    ({"amount_lte": 1000}, {"amount": 1000}, {"amount": 1001}),
    ({"amount_gte": 500, "amount_lte": 700}, {"amount": 600}, {"amount": 701}),
    ({"currencies": ["EUR", "GBP"]}, {"currency": "GBP"}, {"currency": "USD"}),
    ({"card_brands": ["mastercard"]}, {"card_brand": "mastercard"}, {"card_brand": "visa"}),
    ({"card_brands": ["amex"]}, {"card_brand": "amex"}, {"card_brand": None}),
    ({"bin_prefixes": ["5555", "4000"]}, {"card_bin": "400000"}, {"card_bin": "424242"}),
    ({"bin_prefixes": ["4"]}, {"card_bin": "42424242"}, {"card_bin": None}),
    ({"billing_countries": ["DE", "FR"]}, {"billing_country": "FR"},
     {"billing_country": "US"}),
    ({"billing_countries": ["DE"]}, {"billing_country": "DE"}, {"billing_country": None}),
    ({"metadata": {"channel": "web", "tier": "gold"}},
     {"metadata": {"channel": "web", "tier": "gold", "other": "x"}},
     {"metadata": {"channel": "web"}}),
    ({"metadata": {"channel": "web"}}, {"metadata": {"channel": "web"}},
     {"metadata": {"channel": "app"}}),
    ({"currencies": ["USD"], "card_brands": ["visa"], "amount_gte": 100},
     {"amount": 100}, {"amount": 100, "card_brand": "mastercard"}),
]


@pytest.mark.parametrize(("conditions", "hit", "miss"), CONDITION_CASES)
def test_each_condition_matches_or_not(shop, three, conditions, hit, miss):
    matching = rule(shop, ["checkout-main"], conditions=conditions)
    decision = route(ctx(shop, **hit))
    assert decision.record["rule"] == matching.id
    assert names(decision) == ["checkout-main"]
    decision = route(ctx(shop, **miss))
    assert decision.record["rule"] is None
    assert names(decision) == ["stripe-main", "adyen-main", "checkout-main"]


CURRENCY_VALUES, BRAND_VALUES, COUNTRY_VALUES = ["USD", "EUR", "JPY"], ["visa", "amex"], \
    ["US", "DE"]
BIN_VALUES = ["4", "42", "4242", "5", "55555555"]
PAIRS = [("channel", "web"), ("channel", "app"), ("tier", "gold")]


def optional(strategy):
    return st.one_of(st.none(), strategy)


conditions_strategy = st.fixed_dictionaries({}, optional={
    "amount_gte": st.integers(1, 2000), "amount_lte": st.integers(1, 2000),
    "currencies": st.lists(st.sampled_from(CURRENCY_VALUES), min_size=1, unique=True),
    "card_brands": st.lists(st.sampled_from(BRAND_VALUES), min_size=1, unique=True),
    "bin_prefixes": st.lists(st.sampled_from(BIN_VALUES), min_size=1, unique=True),
    "billing_countries": st.lists(st.sampled_from(COUNTRY_VALUES), min_size=1, unique=True),
    "metadata": st.dictionaries(st.sampled_from(["channel", "tier"]),
                                st.sampled_from(["web", "app", "gold"]), min_size=1),
})
context_strategy = st.builds(
    RoutingContext, merchant_id=st.just("m"), livemode=st.just(False),
    amount=st.integers(1, 2000), currency=st.sampled_from(CURRENCY_VALUES),
    card_brand=optional(st.sampled_from(BRAND_VALUES)),
    card_bin=optional(st.sampled_from(["42424242", "40000000", "55555555", "37828224"])),
    billing_country=optional(st.sampled_from(COUNTRY_VALUES)),
    metadata=st.dictionaries(st.sampled_from(["channel", "tier", "x"]),
                             st.sampled_from(["web", "app", "gold"])))


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(conditions_strategy, max_size=25), st.lists(context_strategy, min_size=1,
                                                                max_size=10))
def test_the_rule_index_finds_what_a_linear_scan_finds(all_conditions, contexts):
    rules = tuple(CompiledRule.compile(f"rr_{i}", "ordered", conditions, ["a"])
                  for i, conditions in enumerate(all_conditions))
    index = RuleIndex(rules)
    for context in contexts:
        assert index.first_match(context) is next((r for r in rules if r.matches(context)),
                                                  None)


def test_an_empty_condition_set_matches_every_payment(shop, three):
    catch_all = rule(shop, ["adyen-main"])
    assert route(ctx(shop, card_brand=None, card_bin=None, billing_country=None)
                 ).record["rule"] == catch_all.id


def test_rules_are_tried_by_priority_and_the_first_match_decides(shop, three):
    rule(shop, ["checkout-main"], priority=30)
    eur = rule(shop, ["adyen-main"], priority=20, conditions={"currencies": ["EUR"]})
    first = rule(shop, ["stripe-main"], priority=10, conditions={"amount_gte": 5000})
    assert route(ctx(shop, amount=6000, currency="EUR")).record["rule"] == first.id
    assert route(ctx(shop, amount=100, currency="EUR")).record["rule"] == eur.id
    assert names(route(ctx(shop, amount=100))) == ["checkout-main"]


def test_same_priority_goes_by_age_and_disabled_rules_are_ignored(shop, three):
    older = rule(shop, ["adyen-main"], priority=5)
    rule(shop, ["checkout-main"], priority=5)
    assert route(ctx(shop)).record["rule"] == older.id
    RoutingRule.objects.filter(pk=older.pk).update(enabled=False)
    assert names(route(ctx(shop))) == ["checkout-main"]


def test_rules_of_the_other_mode_and_of_other_merchants_do_not_apply(shop, three):
    other = MerchantFactory(name=f"Other {uuid.uuid4().hex[:8]}")
    account(other, "stripe-main")
    rule(other, ["stripe-main"], priority=0)
    account(shop, "live-main", livemode=True)
    rule(shop, ["live-main"], priority=0, livemode=True)
    decision = route(ctx(shop))
    assert decision.record["rule"] is None
    assert names(decision) == ["stripe-main", "adyen-main", "checkout-main"]
    assert all(a.merchant_id == shop.id and not a.livemode for a in decision.candidates)


def test_without_a_matching_rule_the_default_order_is_the_accounts_priority(shop, three):
    ProviderAccount.objects.filter(name="stripe-main", merchant=shop).update(priority=50)
    decision = route(ctx(shop))
    assert names(decision) == ["adyen-main", "checkout-main", "stripe-main"]
    assert decision.record == {
        "rule": None, "strategy": "default_order",
        "candidates": [{"account": "adyen-main", "score": 20},
                       {"account": "checkout-main", "score": 30},
                       {"account": "stripe-main", "score": 50}],
        "skipped": [],
    }


# --- eligibility ------------------------------------------------------------------------------
def test_disabled_and_currency_unsupported_accounts_are_skipped(shop, three):
    stripe, adyen, checkout = three
    adyen.enabled = False
    adyen.save()
    stripe.currencies = ["EUR"]
    stripe.save()
    decision = route(ctx(shop, currency="USD"))
    assert names(decision) == ["checkout-main"]
    assert decision.record["skipped"] == [
        {"account": "stripe-main", "reason": "currency_unsupported"},
        {"account": "adyen-main", "reason": "disabled"}]
    assert names(route(ctx(shop, currency="EUR"))) == ["stripe-main", "checkout-main"]


def test_excluded_accounts_are_skipped(shop, three):
    stripe, adyen, _ = three
    decision = route(ctx(shop, exclude_account_ids=frozenset({stripe.id, adyen.id})))
    assert names(decision) == ["checkout-main"]
    assert decision.record["skipped"] == [{"account": "stripe-main", "reason": "excluded"},
                                          {"account": "adyen-main", "reason": "excluded"}]


def test_a_rule_naming_an_account_that_is_not_in_this_mode_skips_it(shop, three):
    account(shop, "live-only", livemode=True)
    gone = account(shop, "retired")
    # stored behind the API's back (the API refuses names outside the mode)
    stale = RoutingRule.objects.create(merchant=shop, livemode=False, strategy="ordered",
                                       accounts=["live-only", "retired", "adyen-main"])
    gone.delete()
    decision = route(ctx(shop))
    assert decision.record["rule"] == stale.id
    assert names(decision) == ["adyen-main"]
    assert decision.record["skipped"] == [{"account": "live-only", "reason": "not_in_mode"},
                                          {"account": "retired", "reason": "not_in_mode"}]


def test_an_account_whose_breaker_is_open_is_skipped_until_its_trial_call(shop, three, backend):
    stripe, _, _ = three
    stripe.breaker_fail_max = 2
    stripe.breaker_reset_timeout = 60
    stripe.save()
    trip(stripe)
    decision = route(ctx(shop))
    assert names(decision) == ["adyen-main", "checkout-main"]
    assert decision.record["skipped"] == [{"account": "stripe-main", "reason": "breaker_open"}]
    # reset timeout over: the next call is the breaker's trial, so routing offers the account
    stripe.breaker_reset_timeout = 0
    stripe.save()
    assert names(route(ctx(shop)))[0] == "stripe-main"
    # ... but not while another process's trial call is in flight
    breaker = breaker_for(stripe)
    admission = breaker.admit()
    assert breaker.current_state == "half-open"
    assert route(ctx(shop)).record["skipped"] == [
        {"account": "stripe-main", "reason": "breaker_open"}]
    breaker.record(admission, None)  # the trial succeeded: closed
    assert route(ctx(shop)).record["skipped"] == []


def test_routing_reads_the_breaker_without_changing_it(shop, three):
    stripe, _, _ = three
    stripe.breaker_fail_max = 1
    stripe.breaker_reset_timeout = 0
    stripe.save()
    trip(stripe)
    for _ in range(3):
        route(ctx(shop))
    breaker = breaker_for(stripe)
    assert breaker.current_state == "open"  # admit() would have made it half-open
    assert not breaker.probe_slot.taken()


def test_an_account_at_its_concurrency_cap_is_skipped(shop, three, backend):
    stripe, _, _ = three
    stripe.concurrency_limit = 1
    stripe.save()
    lease = limits.try_acquire(stripe)
    decision = route(ctx(shop))
    assert decision.record["skipped"] == [
        {"account": "stripe-main", "reason": "concurrency_limited"}]
    assert names(decision) == ["adyen-main", "checkout-main"]
    lease.release()
    assert names(route(ctx(shop)))[0] == "stripe-main"


def test_an_account_at_its_rate_limit_is_skipped(shop, three, backend, monkeypatch):
    _, adyen, _ = three
    adyen.rate_limit_per_second = 2
    adyen.save()
    clock = [10**12]  # the limiter's time in ms, pinned: routing reads it as the gateway does
    peek = limits.refusals
    monkeypatch.setattr(limits, "refusals",
                        lambda accounts, now_ms=None: peek(accounts, now_ms=clock[0]))
    limits.try_acquire(adyen, now_ms=clock[0]).release()
    assert route(ctx(shop)).record["skipped"] == []  # one of two grants used
    clock[0] += 10
    limits.try_acquire(adyen, now_ms=clock[0]).release()
    decision = route(ctx(shop))
    assert decision.record["skipped"] == [{"account": "adyen-main", "reason": "rate_limited"}]
    assert names(decision) == ["stripe-main", "checkout-main"]
    clock[0] += limits.WINDOW_MS  # the one-second window slides past both grants
    assert route(ctx(shop)).record["skipped"] == []


def test_routing_takes_no_limit_slot(shop, three):
    stripe, _, _ = three
    stripe.concurrency_limit = 1
    stripe.rate_limit_per_second = 1
    stripe.save()
    for _ in range(5):
        assert names(route(ctx(shop)))[0] == "stripe-main"
    limits.try_acquire(stripe).release()  # the first real call still gets both


def test_a_rule_whose_accounts_are_all_ineligible_yields_no_candidate(shop, three):
    stripe, _, _ = three
    stripe.enabled = False
    stripe.save()
    only = rule(shop, ["stripe-main"], conditions={"currencies": ["USD"]})
    decision = route(ctx(shop))
    assert decision.candidates == ()
    assert decision.record == {"rule": only.id, "strategy": "ordered", "candidates": [],
                               "skipped": [{"account": "stripe-main", "reason": "disabled"}]}


def test_routing_survives_an_unreachable_redis(shop, three, settings):
    stripe, _, _ = three
    stripe.concurrency_limit = 1
    stripe.save()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    rule(shop, ["checkout-main", "stripe-main"], strategy="success_rate")
    decision = route(ctx(shop))
    assert sorted(names(decision)) == ["checkout-main", "stripe-main"]
    assert {c["score"] for c in decision.record["candidates"]} == {0.9}


# --- strategies -------------------------------------------------------------------------------
def test_ordered_keeps_the_rules_order_and_scores_positions(shop, three):
    _, adyen, _ = three
    adyen.enabled = False
    adyen.save()
    matching = rule(shop, ["checkout-main", "adyen-main", "stripe-main"])
    decision = route(ctx(shop))
    assert names(decision) == ["checkout-main", "stripe-main"]
    assert decision.record == {
        "rule": matching.id, "strategy": "ordered",
        "candidates": [{"account": "checkout-main", "score": 1},
                       {"account": "stripe-main", "score": 3}],
        "skipped": [{"account": "adyen-main", "reason": "disabled"}],
    }


def test_weighted_split_follows_the_weights(shop, three):
    rule(shop, [{"account": "stripe-main", "weight": 70},
                {"account": "adyen-main", "weight": 30}], strategy="weighted")
    config = load_config(shop.id, False)
    rng = random.Random(20261128)
    draws = 3000
    firsts = [route(ctx(shop), config=config, rng=rng).candidates[0].name
              for _ in range(draws)]
    share = firsts.count("stripe-main") / draws
    assert 0.66 <= share <= 0.74, share
    decision = route(ctx(shop), config=config, rng=rng)
    assert sorted(names(decision)) == ["adyen-main", "stripe-main"]  # the rest follows
    assert {c["account"]: c["score"] for c in decision.record["candidates"]} == {
        "stripe-main": 70, "adyen-main": 30}


def test_weighted_draws_the_rest_by_weight_too(shop, three):
    rule(shop, [{"account": "stripe-main", "weight": 50},
                {"account": "adyen-main", "weight": 30},
                {"account": "checkout-main", "weight": 20}], strategy="weighted")
    config = load_config(shop.id, False)
    rng = random.Random(7)
    orders = [tuple(names(route(ctx(shop), config=config, rng=rng))) for _ in range(4000)]
    stripe_first = [o for o in orders if o[0] == "stripe-main"]
    assert abs(len(stripe_first) / len(orders) - 0.5) < 0.04
    # second pick among adyen (30) and checkout (20): 60 / 40
    adyen_second = sum(1 for o in stripe_first if o[1] == "adyen-main") / len(stripe_first)
    assert abs(adyen_second - 0.6) < 0.05, adyen_second


def test_weighted_redistributes_the_weight_of_a_skipped_account(shop, three):
    _, adyen, _ = three
    adyen.enabled = False
    adyen.save()
    rule(shop, [{"account": "stripe-main", "weight": 1},
                {"account": "adyen-main", "weight": 98},
                {"account": "checkout-main", "weight": 1}], strategy="weighted")
    config = load_config(shop.id, False)
    rng = random.Random(3)
    firsts = [route(ctx(shop), config=config, rng=rng).candidates[0].name for _ in range(2000)]
    assert abs(firsts.count("stripe-main") / 2000 - 0.5) < 0.04


def test_least_cost_uses_decimal_and_rounds_half_up(shop, three):
    stripe, adyen, _ = three
    # 2750 × 1.4 % = 38.5 exactly → 39. In floats 2750 * 1.4 / 100 is 38.49999999999999,
    # which rounds to 38 and would tie with adyen's 38 (stripe first by priority).
    stripe.fees = {"USD": {"percent": "1.4", "fixed": 0}}
    stripe.save()
    adyen.fees = {"USD": {"percent": "0", "fixed": 38}}
    adyen.save()
    assert round(2750 * float("1.4") / 100) == 38  # the float trap this test is about
    matching = rule(shop, ["stripe-main", "adyen-main"], strategy="least_cost")
    decision = route(ctx(shop, amount=2750))
    assert names(decision) == ["adyen-main", "stripe-main"]
    assert decision.record == {
        "rule": matching.id, "strategy": "least_cost",
        "candidates": [{"account": "adyen-main", "score": 38},
                       {"account": "stripe-main", "score": 39}],
        "skipped": [],
    }


def test_expected_fee_rounds_half_up_not_to_even(shop):
    acct = account(shop, "x", fees={"*": {"percent": "2.5", "fixed": 30}})
    assert expected_fee(acct, 980, "USD") == 25 + 30  # 24.5 → 25 (banker's rounding: 24)
    assert expected_fee(acct, 1010, "USD") == 25 + 30  # 25.25 → 25
    assert expected_fee(acct, 3, "JPY") == 0 + 30  # 0.075 → 0
    assert expected_fee(account(shop, "none"), 1000, "USD") is None


def test_least_cost_per_currency_and_default_fees_and_ties_by_priority(shop, three):
    stripe, adyen, checkout = three
    stripe.fees = {"USD": {"percent": "2.9", "fixed": 30}, "*": {"percent": "3.9", "fixed": 30}}
    stripe.save()
    adyen.fees = {"EUR": {"percent": "1.0", "fixed": 10}, "*": {"percent": "2.5", "fixed": 50}}
    adyen.save()
    checkout.fees = {}  # no schedule: unknown cost, last
    checkout.save()
    rule(shop, ["checkout-main", "adyen-main", "stripe-main"], strategy="least_cost")
    usd = route(ctx(shop, amount=10000, currency="USD")).record["candidates"]
    # stripe 290 + 30 = 320; adyen "*" 250 + 50 = 300
    assert usd == [{"account": "adyen-main", "score": 300},
                   {"account": "stripe-main", "score": 320},
                   {"account": "checkout-main", "score": None}]
    eur = route(ctx(shop, amount=10000, currency="EUR")).record["candidates"]
    # adyen EUR 100 + 10 = 110; stripe "*" 390 + 30 = 420
    assert [c["score"] for c in eur] == [110, 420, None]
    # equal fees: priority decides (stripe 10 before adyen 20)
    adyen.fees = stripe.fees
    adyen.save()
    tie = route(ctx(shop, amount=10000, currency="USD")).record["candidates"]
    assert [c["account"] for c in tie] == ["stripe-main", "adyen-main", "checkout-main"]


def record_many(acct, kind: str, n: int, **kw) -> None:
    for _ in range(n):
        stats.record_outcome(acct, kind, **kw)


def test_success_rate_orders_by_the_rolling_rate(shop, three, settings, backend):
    settings.ROUTING_EXPLORATION_RATE = 0
    stripe, adyen, checkout = three
    record_many(stripe, APPROVED, 80)
    record_many(stripe, SOFT, 20)  # 0.8
    record_many(adyen, APPROVED, 95)
    record_many(adyen, UNAVAILABLE, 3)
    record_many(adyen, UNKNOWN, 2)  # 0.95: unknown counts as a failure
    record_many(adyen, HARD, 500)  # the card's fault: not in the rate
    record_many(checkout, APPROVED, 5)  # too few samples: the neutral prior
    matching = rule(shop, ["stripe-main", "adyen-main", "checkout-main"],
                    strategy="success_rate")
    decision = route(ctx(shop))
    assert names(decision) == ["adyen-main", "checkout-main", "stripe-main"]
    assert decision.record == {
        "rule": matching.id, "strategy": "success_rate", "explored": None,
        "candidates": [{"account": "adyen-main", "score": 0.95, "samples": 100,
                        "basis": "window"},
                       {"account": "checkout-main", "score": 0.9, "samples": 5,
                        "basis": "neutral"},
                       {"account": "stripe-main", "score": 0.8, "samples": 100,
                        "basis": "window"}],
        "skipped": [],
    }


def test_success_rate_explores_a_small_share(shop, three, settings):
    settings.ROUTING_EXPLORATION_RATE = 0.2
    stripe, adyen, checkout = three
    record_many(stripe, APPROVED, 30)
    record_many(adyen, APPROVED, 20)
    record_many(adyen, SOFT, 10)
    record_many(checkout, APPROVED, 10)
    record_many(checkout, SOFT, 20)
    rule(shop, ["stripe-main", "adyen-main", "checkout-main"], strategy="success_rate")
    config = load_config(shop.id, False)
    rng = random.Random(11)
    decisions = [route(ctx(shop), config=config, rng=rng) for _ in range(2000)]
    firsts = [d.candidates[0].name for d in decisions]
    # 80 % to the best; the explored 20 % split evenly among the two others
    assert abs(firsts.count("stripe-main") / 2000 - 0.8) < 0.04
    assert abs(firsts.count("adyen-main") / 2000 - 0.1) < 0.03
    assert abs(firsts.count("checkout-main") / 2000 - 0.1) < 0.03
    explored = [d for d in decisions if d.record["explored"]]
    assert all(d.record["explored"] == d.candidates[0].name for d in explored)
    settings.ROUTING_EXPLORATION_RATE = 0
    assert {route(ctx(shop), config=config, rng=rng).candidates[0].name
            for _ in range(200)} == {"stripe-main"}


def test_a_failing_provider_loses_most_of_its_traffic(shop, three, settings):
    """Stripe led with a perfect record over the last five minutes; then it starts failing.
    After one minute of failures at the same traffic it is last, and sees only its
    exploration share of first tries."""
    settings.ROUTING_EXPLORATION_RATE = 0.05
    stripe, adyen, _ = three
    now = time.time()
    for second in range(240, 0, -1):  # 4 minutes of healthy traffic, one payment a second
        stats.record_outcome(stripe, APPROVED, now=now - 60 - second)
        stats.record_outcome(adyen, APPROVED if second % 20 else SOFT, now=now - 60 - second)
    rule(shop, ["stripe-main", "adyen-main"], strategy="success_rate")
    config = load_config(shop.id, False)
    rng = random.Random(5)
    before = [route(ctx(shop), config=config, rng=rng).candidates[0].name for _ in range(500)]
    assert before.count("stripe-main") / 500 > 0.9
    for second in range(60, 0, -1):  # the last minute: every stripe call fails
        stats.record_outcome(stripe, UNAVAILABLE, now=now - second)
        stats.record_outcome(adyen, APPROVED, now=now - second)
    after = [route(ctx(shop), config=config, rng=rng).candidates[0].name for _ in range(1000)]
    assert after.count("stripe-main") / 1000 < 0.1
    rates = stats.success_rates([stripe, adyen])
    # ~240 approvals over ~300 outcomes (the window is whole 10 s buckets: ±1 bucket)
    assert rates[stripe.id].rate == pytest.approx(240 / 300, abs=0.02)
    assert rates[adyen.id].rate > 0.95


def test_a_recovered_provider_wins_its_traffic_back(shop, three, settings, monkeypatch):
    """Stripe failed four minutes ago and is healthy again. The exploration share keeps
    sending it a few payments, which succeed; once the old failures leave the window, those
    fresh samples put it first again."""
    settings.ROUTING_EXPLORATION_RATE = 0.05
    stripe, adyen, _ = three
    now = time.time()
    record_many(stripe, UNAVAILABLE, 30, now=now - 240)
    record_many(adyen, APPROVED, 27, now=now - 240)
    record_many(adyen, SOFT, 3, now=now - 240)
    rule(shop, ["stripe-main", "adyen-main"], strategy="success_rate")
    config = load_config(shop.id, False)
    rng = random.Random(9)
    explored = 0
    for _ in range(1500):
        first = route(ctx(shop), config=config, rng=rng).candidates[0]
        explored += first.name == "stripe-main"
        stats.record_outcome(first, APPROVED if first.name == "stripe-main"
                             or rng.random() > 0.1 else SOFT)
    assert 40 < explored < 110  # ~5 %: still second, 30 failures weigh more than ~75 approvals
    assert route(ctx(shop), config=config, rng=random.Random(1)).candidates[0] == adyen
    # a minute later the failures have left the window
    buckets = stats._buckets
    monkeypatch.setattr(stats, "_buckets", lambda now=None: buckets(
        (time.time() if now is None else now) + 60))
    decision = route(ctx(shop), config=config, rng=random.Random(1))
    assert decision.candidates[0] == stripe
    assert decision.record["candidates"][0] == {"account": "stripe-main", "score": 1.0,
                                                "samples": explored, "basis": "window"}


# --- stats ------------------------------------------------------------------------------------
def test_stats_window_and_prior(shop, backend):
    acct = account(shop, "s")
    now = time.time()
    record_many(acct, APPROVED, 30, now=now - stats.window_seconds() - 30)
    assert stats.success_rates([acct], now=now)[acct.id].samples == 0  # out of the window
    record_many(acct, APPROVED, 15, now=now)
    record_many(acct, SOFT, 4, now=now)
    rate = stats.success_rates([acct.id], now=now)[acct.id]
    assert (rate.samples, rate.rate, rate.measured) == (19, 0.9, False)  # below 20: prior
    stats.record_outcome(acct, HARD, now=now)
    assert stats.success_rates([acct], now=now)[acct.id].samples == 19
    stats.record_outcome(acct, UNKNOWN, now=now)
    rate = stats.success_rates([acct], now=now)[acct.id]
    assert (rate.samples, rate.rate, rate.hard) == (20, 15 / 20, 1)
    with pytest.raises(ValueError):
        stats.record_outcome(acct, "declined")


def test_stats_buckets_that_leave_the_window_are_dropped_in_redis(shop):
    acct = account(shop, "s")
    now = time.time()
    stats.record_outcome(acct, APPROVED, now=now - 1000)
    stats.record_outcome(acct, SOFT, now=now - 1000)
    stats.record_outcome(acct, APPROVED, now=now)
    fields = store.redis_client().hkeys(stats._key(acct.id))
    assert len(fields) == 1  # only the current bucket's approvals
    client = store.redis_client()
    assert 0 < client.ttl(stats._key(acct.id)) <= 310


# --- the record -------------------------------------------------------------------------------
def test_the_record_has_the_rule_the_scores_and_the_skips(shop, three):
    stripe, adyen, checkout = three
    checkout.currencies = ["EUR"]
    checkout.save()
    trip(adyen)
    for a in three:
        a.fees = {"*": {"percent": "2.0", "fixed": a.priority}}
        a.save()
    matching = rule(shop, ["checkout-main", "adyen-main", "stripe-main"],
                    strategy="least_cost", conditions={"card_brands": ["visa"]})
    decision = route(ctx(shop, amount=1000))
    assert decision.record == {
        "rule": matching.id, "strategy": "least_cost",
        "candidates": [{"account": "stripe-main", "score": 30}],
        "skipped": [{"account": "checkout-main", "reason": "currency_unsupported"},
                    {"account": "adyen-main", "reason": "breaker_open"}],
    }
    json.dumps(decision.record)  # stored in a JSONField as is
    assert summarize(decision.record) == (
        f"rule {matching.id} (least_cost): stripe-main 30; skipped: checkout-main "
        "currency_unsupported, adyen-main breaker_open")
    assert decision.candidates == (stripe,)


def test_a_malformed_stored_rule_is_skipped_not_fatal(shop, three, caplog):
    RoutingRule.objects.create(merchant=shop, strategy="bogus", accounts=["stripe-main"],
                               priority=1)
    RoutingRule.objects.create(merchant=shop, strategy="weighted", accounts=["stripe-main"],
                               priority=2)
    good = rule(shop, ["adyen-main"], priority=3)
    assert route(ctx(shop)).record["rule"] == good.id
    assert "malformed" in caplog.text


# --- cost -------------------------------------------------------------------------------------
def test_routing_loads_with_two_queries_and_decides_with_none(shop, three,
                                                              django_assert_num_queries):
    for i in range(50):
        rule(shop, ["adyen-main", "stripe-main"], priority=i, strategy="least_cost",
             conditions={"currencies": ["EUR"], "metadata": {"n": str(i)}})
    rule(shop, ["checkout-main"], priority=99)
    with django_assert_num_queries(2):  # accounts with the rules' version, then the rules
        config = load_config(shop.id, False)
    with django_assert_num_queries(0):
        decision = route(ctx(shop), config=config)
    assert names(decision) == ["checkout-main"]
    # rules unchanged: the compiled ones are reused (PostgreSQL knows their version)
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        assert names(route(ctx(shop))) == ["checkout-main"]
    with pytest.raises(ValueError):
        route(ctx(shop, livemode=True), config=config)


def test_every_change_to_the_rules_is_seen_at_once(shop, three, django_assert_num_queries):
    first = rule(shop, ["adyen-main"], priority=1)
    assert route(ctx(shop)).record["rule"] == first.id
    second = rule(shop, ["checkout-main"], priority=2)
    with django_assert_num_queries(2):  # a new rule: read again
        assert route(ctx(shop)).record["rule"] == first.id
    # written behind the ORM's save(): no updated_at, no signal, still seen
    RoutingRule.objects.filter(pk=first.pk).update(enabled=False)
    assert route(ctx(shop)).record["rule"] == second.id
    RoutingRule.objects.filter(pk=second.pk).update(conditions={"currencies": ["EUR"]})
    assert route(ctx(shop)).record["rule"] is None
    RoutingRule.objects.filter(pk=first.pk).update(enabled=True)
    assert route(ctx(shop)).record["rule"] == first.id
    first.delete()
    assert route(ctx(shop, currency="EUR")).record["rule"] == second.id
    # accounts are read fresh every time
    ProviderAccount.objects.filter(name="checkout-main").update(enabled=False)
    assert route(ctx(shop, currency="EUR")).record["skipped"] == [
        {"account": "checkout-main", "reason": "disabled"}]
    # another mode has its own rules and version
    account(shop, "live-main", livemode=True)
    live = rule(shop, ["live-main"], livemode=True)
    assert route(ctx(shop, livemode=True)).record["rule"] == live.id
    assert route(ctx(shop, currency="EUR")).record["rule"] == second.id


# --- retry rules ------------------------------------------------------------------------------
def outcome(kind: str, decline_code: str = "") -> Outcome:
    return Outcome(kind, "card_declined" if decline_code else "", decline_code)


def test_every_decline_code_has_one_class_and_the_default_follows_it():
    assert DECLINE_CLASSES["processing_error"] == SOFT
    assert DECLINE_CLASSES["do_not_honor"] == HARD
    assert default_retry("processing_error") and not default_retry("insufficient_funds")
    assert NEVER_RETRIABLE <= set(DECLINE_CLASSES)
    assert all(DECLINE_CLASSES[c] == HARD for c in NEVER_RETRIABLE)


def test_is_retriable_by_default(shop, django_assert_num_queries):
    m = shop.id
    with django_assert_num_queries(0):
        assert is_retriable(m, False, outcome(UNAVAILABLE))
        assert not is_retriable(m, False, outcome(UNKNOWN))
        assert not is_retriable(m, False, outcome(APPROVED))
    with django_assert_num_queries(1):
        assert is_retriable(m, False, outcome(SOFT, "processing_error"))
    with django_assert_num_queries(1):
        assert not is_retriable(m, False, outcome(HARD, "do_not_honor"))
    with django_assert_num_queries(0):
        assert not is_retriable(m, False, outcome(HARD))  # no code: the class decides
        assert is_retriable(m, False, outcome(SOFT))
        assert not is_retriable(m, False, outcome(HARD, "stolen_card"))
    with pytest.raises(ValueError):
        is_retriable(m, False, outcome("declined"))


def test_merchant_overrides(shop):
    m = shop.id
    RetryRule.objects.create(merchant=shop, livemode=False, decline_code="do_not_honor",
                             retry=True)
    RetryRule.objects.create(merchant=shop, livemode=False, decline_code="processing_error",
                             retry=False)
    # stored behind the API's back: still never retried
    RetryRule.objects.create(merchant=shop, livemode=False, decline_code="stolen_card",
                             retry=True)
    assert is_retriable(m, False, outcome(HARD, "do_not_honor"))
    assert not is_retriable(m, False, outcome(SOFT, "processing_error"))
    assert not is_retriable(m, False, outcome(HARD, "stolen_card"))
    assert not is_retriable(m, False, outcome(HARD, "insufficient_funds"))
    # an unknown outcome is never retried, whatever is configured for its code
    assert not is_retriable(m, False, outcome(UNKNOWN, "do_not_honor"))
    assert is_retriable(m, False, outcome(UNAVAILABLE, "processing_error"))
    # other mode, other merchant: defaults
    assert not is_retriable(m, True, outcome(HARD, "do_not_honor"))
    other = MerchantFactory(name=f"Other {uuid.uuid4().hex[:8]}")
    assert is_retriable(other.id, False, outcome(SOFT, "processing_error"))
    overrides = overrides_for(m, False)
    assert overrides == {"do_not_honor": True, "processing_error": False, "stolen_card": True}
    assert is_retriable(m, False, outcome(HARD, "do_not_honor"), overrides=overrides)
    assert not is_retriable(m, False, outcome(HARD, "stolen_card"), overrides=overrides)


def test_outcome_of_a_gateway_call():
    assert outcome_of(None).kind == APPROVED
    soft = outcome_of(SoftDecline("x", code="processing_error", decline_code="processing_error"))
    assert (soft.kind, soft.decline_code) == (SOFT, "processing_error")
    assert outcome_of(HardDecline("x", decline_code="do_not_honor")).kind == HARD
    assert outcome_of(ProviderBadRequest("x")).kind == HARD
    assert outcome_of(ProviderUnavailable("x")).kind == UNAVAILABLE
    assert outcome_of(OutcomeUnknown("x")).kind == UNKNOWN


def test_refusals_by_our_own_breaker_and_limits_are_told_apart(shop):
    acct = account(shop, "tiny", concurrency_limit=1, breaker_fail_max=1)
    lease = limits.try_acquire(acct)
    with pytest.raises(ProviderUnavailable) as refused:
        limits.try_acquire(acct)
    lease.release()
    assert refused_before_sending(refused.value)
    trip(acct)
    with pytest.raises(BreakerOpen) as open_breaker, breaker_for(acct).guard():
        pass
    assert refused_before_sending(open_breaker.value)
    # the provider's own 429 went out: it counts
    assert not refused_before_sending(ProviderUnavailable(
        "HTTP 429", code="provider_rate_limited", raw_code="429"))
    assert not refused_before_sending(SoftDecline("x"))
    assert not refused_before_sending(None)


def test_card_brands_match_the_vault():
    assert set(CARD_BRANDS) == {brand for brand, *_ in _BRANDS}


# --- admin ------------------------------------------------------------------------------------
@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("ops", "ops@example.invalid", "pw-not-secret")
    client.force_login(user)
    return client


def test_admin_routing_rule_is_checked_like_the_api(staff_client, shop, three):
    form = {"merchant": shop.id, "priority": 10, "enabled": "on", "description": "EU",
            "conditions": json.dumps({"currencies": ["eur"]}), "strategy": "weighted",
            "accounts": json.dumps([{"account": "adyen-main", "weight": 3}]),
            "livemode": ""}
    bad = staff_client.post("/admin/providers/routingrule/add/",
                            {**form, "accounts": json.dumps(["adyen-main"])})
    assert bad.status_code == 200 and b"accounts" in bad.content
    assert not RoutingRule.objects.exists()
    missing = staff_client.post("/admin/providers/routingrule/add/",
                                {**form, "accounts": json.dumps(
                                    [{"account": "nope", "weight": 1}])})
    assert b"No provider account named" in missing.content
    ok = staff_client.post("/admin/providers/routingrule/add/", form)
    assert ok.status_code == 302, ok.content[:2000]
    saved = RoutingRule.objects.get()
    assert saved.id.startswith("rr_")
    assert saved.conditions == {"currencies": ["EUR"]}
    listing = staff_client.get("/admin/providers/routingrule/")
    assert b"adyen-main (3)" in listing.content


def test_admin_retry_rule_refuses_never_retriable_codes(staff_client, shop):
    form = {"merchant": shop.id, "livemode": "", "decline_code": "stolen_card", "retry": "on"}
    page = staff_client.post("/admin/providers/retryrule/add/", form)
    assert page.status_code == 200 and not RetryRule.objects.exists()
    page = staff_client.post("/admin/providers/retryrule/add/",
                             {**form, "decline_code": "not_a_code"})
    assert page.status_code == 200 and not RetryRule.objects.exists()
    ok = staff_client.post("/admin/providers/retryrule/add/",
                           {**form, "decline_code": "do_not_honor"})
    assert ok.status_code == 302
    assert RetryRule.objects.get().id.startswith("rtr_")
    assert staff_client.get("/admin/providers/retryrule/").status_code == 200
