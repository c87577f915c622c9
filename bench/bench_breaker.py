"""Do concurrent calls through one circuit breaker run concurrently? Measured side by side.

20 payments-style authorizations against the stripe sandbox with 200 ms of added latency
(SandboxCondition latency_ms=200), all through `providers.gateway.call` for ONE provider
account (one shared breaker, its limits and retry policy), run:

- sequentially, one after another (the floor: 20 × 200 ms);
- concurrently, from 20 threads (what the gateway's breaker allows);
- concurrently, from 20 threads, through a stock `pybreaker.CircuitBreaker.call` instead, for
  reference: it holds the breaker's lock over the whole call.

The calls go through the registry's adapter for the account (the Stripe adapter speaking its
wire format to the in-process Stripe sandbox, which applies the latency to every request: an
authorization with a raw card is two requests, a PaymentMethod and a PaymentIntent, so about
2 × latency per call).
Rounds are interleaved so machine noise hits every variant alike.

    .venv/bin/python bench/bench_breaker.py [--calls 20] [--latency-ms 200] [--rounds 3]

Uses Postgres database `switchyard_bench_breaker` on 127.0.0.1 (dropped and created each run) and Redis
db 13 unless DATABASE_URL / REDIS_URL say otherwise.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
import uuid

import common

common.configure(database="switchyard_bench_breaker", redis_db=13)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    common.fresh_database()
    import django

    django.setup()
    import pybreaker
    from django.core.management import call_command
    from django.db import connections

    from payments.services.merchants import merchant_create
    from providers import gateway
    from providers.accounts import adapter_for
    from providers.base import AuthorizeRequest, Card
    from providers.models import ProviderAccount
    from providers.resilience.breaker import breaker_for
    from providers.sandboxes.models import SandboxCondition

    for noisy in ("httpx", "providers.http"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    SandboxCondition.objects.update_or_create(
        provider="stripe", defaults={"latency_ms": args.latency_ms, "outage": False,
                                     "soft_decline_rate": 0.0})
    merchant, _, _ = merchant_create(actor="test", name=f"bench-breaker-{uuid.uuid4().hex[:8]}", sandbox_accounts=True)
    account = ProviderAccount.objects.get(merchant=merchant, livemode=False, provider="stripe")

    card = Card(number="4242424242424242", exp_month=12, exp_year=2034, brand="visa")

    def one_payment() -> None:
        request = AuthorizeRequest(reference="att_" + uuid.uuid4().hex, amount=1050,
                                   currency="USD", card=card, capture=True)
        gateway.call(account, "authorize", request)

    stock = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    def one_payment_stock_pybreaker() -> None:
        request = AuthorizeRequest(reference="att_" + uuid.uuid4().hex, amount=1050,
                                   currency="USD", card=card, capture=True)
        stock.call(adapter_for(account).authorize, request)

    def sequential(fn) -> float:
        started = time.perf_counter()
        for _ in range(args.calls):
            fn()
        return time.perf_counter() - started

    def concurrent(fn) -> float:
        barrier = threading.Barrier(args.calls + 1)
        errors: list[BaseException] = []

        def worker():
            barrier.wait()
            try:
                fn()
            except BaseException as exc:  # reported below: a failed call invalidates the run
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(args.calls)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise errors[0]
        return elapsed

    one_payment()  # warm-up: connections, scripts, breaker state in Redis
    seq, conc, stock_conc = [], [], []
    for _ in range(args.rounds):
        seq.append(sequential(one_payment))
        conc.append(concurrent(one_payment))
        stock_conc.append(concurrent(one_payment_stock_pybreaker))

    s, c, p = statistics.median(seq), statistics.median(conc), statistics.median(stock_conc)
    print(f"{args.calls} authorizations, sandbox latency {args.latency_ms} ms, one provider "
          f"account, median of {args.rounds} interleaved rounds")
    rows = [("sequential, gateway.call", s),
            (f"{args.calls} threads, gateway.call (one breaker)", c),
            (f"{args.calls} threads, stock pybreaker.call (reference)", p)]
    for label, seconds in rows:
        print(f"{label:<45}: {seconds:.3f} s")
    print(f"ratio sequential / concurrent gateway: {s / c:.1f}x")
    print(f"ratio stock pybreaker.call / concurrent gateway: {p / c:.1f}x")
    print(f"breaker state after the run: {breaker_for(account).current_state}")


if __name__ == "__main__":
    main()
