"""How long does one routing decision take? 200 rules, 10 accounts, the match near the end.

A merchant with 10 provider accounts (fee schedules; half of them with a rate limit and a
concurrency cap, so the limits are read too) and 200 enabled routing rules. The first 195
rules get as far as their last condition before failing (currency, brand, amount and BIN
prefix all hold; the metadata differs), which is the most work a non-matching rule can cost
when tested one by one; rule 196 matches; 4 more follow. The matching rule's strategy is
each of the four in turn.

Variants, each timed per decision over many iterations (median and p95):
- match only: finding the rule in the compiled rules (pure Python, no I/O), through the
  engine's RuleIndex and, for reference, by testing the rules one by one; plus a second
  merchant whose 195 rules differ only in their amount range, which the index cannot rule
  out (every one is tested in full);
- route(context, config=config): the decision with the rules and accounts already loaded
  (what a failover re-route within one request costs): matching, the breaker states (one Redis
  command), the limits (one), the success rates for that strategy (one), the strategy;
- route(context): the same plus `load_config` (one Postgres query while the rules are
  unchanged: the accounts with the rules' version);
- for reference, a Redis PING and a Postgres SELECT 1 round trip.

    .venv/bin/python bench/bench_routing.py [--iterations 3000] [--rounds 3]

Uses Postgres database `switchyard_bench_routing` on 127.0.0.1 (dropped and created each run) and Redis
db 12 unless DATABASE_URL / REDIS_URL say otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import common

common.configure(database="switchyard_bench_routing", redis_db=12)

RULES, ACCOUNTS, MATCH_AT = 200, 10, 196


def timed(fn, iterations: int) -> list[float]:
    """Microseconds per call."""
    out = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    common.fresh_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from payments.models import Merchant
    from providers.models import SANDBOX_URL, ProviderAccount, RoutingRule
    from providers.outcomes import APPROVED, SOFT
    from providers.routing import stats
    from providers.routing.context import RoutingContext
    from providers.routing.engine import load_config, route

    call_command("migrate", verbosity=0)
    merchant = Merchant.objects.create(name=f"bench-routing-{uuid.uuid4().hex[:8]}")
    accounts = []
    for i in range(ACCOUNTS):
        limited = i % 2 == 0
        accounts.append(ProviderAccount.objects.create(
            merchant=merchant, name=f"acct-{i}", provider=("stripe", "adyen", "checkout")[i % 3],
            base_url=SANDBOX_URL, priority=(i + 1) * 10,
            fees={"USD": {"percent": f"2.{i}", "fixed": 30 - i}, "*": {"percent": "3.5",
                                                                        "fixed": 35}},
            rate_limit_per_second=1000 if limited else None,
            concurrency_limit=500 if limited else None))
        for n in range(40):
            stats.record_outcome(accounts[-1], APPROVED if n % (i + 2) else SOFT)
    names = [a.name for a in accounts]
    for i in range(RULES):
        matches = i == MATCH_AT - 1
        RoutingRule.objects.create(
            merchant=merchant, livemode=False, priority=i, strategy="ordered",
            accounts=names[i % 7: i % 7 + 3],
            conditions={"currencies": ["USD", "EUR"], "card_brands": ["visa", "mastercard"],
                        "amount_gte": 100, "amount_lte": 100000,
                        "bin_prefixes": ["4242", "5555"],
                        "metadata": {"channel": "web" if matches else f"store-{i}"}})
    matching = RoutingRule.objects.get(merchant=merchant, priority=MATCH_AT - 1)
    # the same, but the other rules fail on their amount range, which no index narrows down
    by_amount = Merchant.objects.create(name=f"bench-routing-amount-{uuid.uuid4().hex[:8]}")
    for acct in accounts:
        ProviderAccount.objects.create(merchant=by_amount, name=acct.name,
                                       provider=acct.provider, base_url=SANDBOX_URL,
                                       priority=acct.priority)
    for i in range(RULES):
        low = 100 if i == MATCH_AT - 1 else 50000 + i
        RoutingRule.objects.create(
            merchant=by_amount, livemode=False, priority=i, strategy="ordered",
            accounts=names[i % 7: i % 7 + 3],
            conditions={"currencies": ["USD", "EUR"], "card_brands": ["visa", "mastercard"],
                        "amount_gte": low, "amount_lte": 100000,
                        "bin_prefixes": ["4242", "5555"], "metadata": {"channel": "web"}})
    context = RoutingContext(merchant_id=merchant.id, livemode=False, amount=2500,
                             currency="USD", card_brand="visa", card_bin="42424242",
                             billing_country="US", metadata={"channel": "web"})

    amount_config = load_config(by_amount.id, False)
    amount_context = RoutingContext(
        merchant_id=by_amount.id, livemode=False, amount=2500, currency="USD",
        card_brand="visa", card_bin="42424242", billing_country="US",
        metadata={"channel": "web"})
    assert route(amount_context, config=amount_config).record["rule"] == RoutingRule.objects.get(
        merchant=by_amount, priority=MATCH_AT - 1).id

    strategies = {
        "ordered": names,
        "weighted": [{"account": n, "weight": w + 1} for w, n in enumerate(names)],
        "least_cost": names,
        "success_rate": names,
    }
    from providers.resilience import store

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        # the floor under every variant that does I/O, measured alongside
        results.setdefault("reference: Redis PING", []).extend(
            timed(store.redis_client().ping, args.iterations))
        results.setdefault("reference: Postgres SELECT 1", []).extend(
            timed(select_one, args.iterations))
        for strategy, rule_accounts in strategies.items():
            RoutingRule.objects.filter(pk=matching.pk).update(strategy=strategy,
                                                              accounts=rule_accounts)
            config = load_config(merchant.id, False)
            decision = route(context, config=config)
            assert decision.record["rule"] == matching.id
            assert len(decision.candidates) == ACCOUNTS, decision.record
            if strategy == "ordered":
                results.setdefault("match only, index", []).extend(timed(
                    lambda c=config: c.first_match(context), args.iterations))
                results.setdefault("match only, one by one (reference)", []).extend(timed(
                    lambda c=config: next(r for r in c.rules if r.matches(context)),
                    args.iterations))
                results.setdefault("match only, index, rules differ by amount", []).extend(
                    timed(lambda: amount_config.first_match(amount_context), args.iterations))
                results.setdefault("route, config loaded, rules differ by amount",
                                   []).extend(timed(
                    lambda: route(amount_context, config=amount_config), args.iterations))
            results.setdefault(f"route, config loaded, {strategy}", []).extend(
                timed(lambda c=config: route(context, config=c), args.iterations))
            results.setdefault(f"route incl. load_config, {strategy}", []).extend(
                timed(lambda: route(context), args.iterations // 3))

    connection.close()
    print(f"{RULES} rules (match at #{MATCH_AT}), {ACCOUNTS} accounts (5 with limits), "
          f"{args.rounds} rounds; microseconds per decision")
    print(f"{'variant':<48} {'n':>6} {'median':>9} {'p95':>9}")
    for label, samples in results.items():
        print(f"{label:<48} {len(samples):>6} {statistics.median(samples):>9.1f} "
              f"{p95(samples):>9.1f}")


if __name__ == "__main__":
    main()
