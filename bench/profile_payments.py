"""Where the time of a create+confirm goes: cProfile over many requests, and the wall time
spent waiting on Postgres (ours and the in-process sandbox's) and on Redis.

    DATABASE_URL=… REDIS_URL=… .venv/bin/python bench/profile_payments.py [--requests 300]

POST /v1/payments with `confirm: true` and an Idempotency-Key (automatic capture, the Stripe
sandbox in-process) through the whole Django/DRF stack with the test client, on a fresh
database (`switchyard_profile` unless DATABASE_URL says otherwise). Prints the per-request
split (statements and their time, Redis round trips and their time) and the functions with
the most own time and the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import uuid

import common

common.configure(database="switchyard_profile", redis_db=12,
                 MERCHANT_RATE_LIMIT_PER_MINUTE="10000000", ALLOWED_HOSTS="testserver")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    common.fresh_database()
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from django.db import connection
    from redis.client import Pipeline
    from rest_framework.test import APIClient

    from payments.services.merchants import merchant_create
    from payments.services.payment_methods import payment_method_create
    from tests.counting import _from_sandbox

    call_command("migrate", verbosity=0)
    merchant, key, _ = merchant_create(actor="bench", name=f"profile-{uuid.uuid4().hex[:8]}",
                                       sandbox_accounts=True)
    pm = payment_method_create(merchant=merchant, livemode=False, number="4242424242424242",
                               exp_month=12, exp_year=2034)
    client = APIClient()
    body = {"amount": 1050, "currency": "USD", "payment_method": pm.id, "confirm": True}

    def pay() -> None:
        resp = client.post("/v1/payments", body, format="json",
                           HTTP_AUTHORIZATION=f"Bearer {key}",
                           HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
        assert resp.status_code == 200, resp.content

    for _ in range(20):  # warm-up
        pay()

    sql = {"ours": [0, 0.0], "sandbox": [0, 0.0]}
    rds = [0, 0.0]

    def timed_sql(execute, statement, params, many, context):
        started = time.perf_counter()
        try:
            return execute(statement, params, many, context)
        finally:
            tally = sql["sandbox" if _from_sandbox() else "ours"]
            tally[0] += 1
            tally[1] += time.perf_counter() - started

    real_execute, real_pipeline = redis.Redis.execute_command, Pipeline.execute

    def timed(real):
        def wrapper(self, *a, **k):
            started = time.perf_counter()
            try:
                return real(self, *a, **k)
            finally:
                rds[0] += 1
                rds[1] += time.perf_counter() - started
        return wrapper

    redis.Redis.execute_command = timed(real_execute)
    Pipeline.execute = timed(real_pipeline)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with connection.execute_wrapper(timed_sql):
        profiler.enable()
        for _ in range(args.requests):
            pay()
        profiler.disable()
    wall = time.perf_counter() - started
    redis.Redis.execute_command, Pipeline.execute = real_execute, real_pipeline

    n = args.requests
    print(f"{n} create+confirm requests, {wall / n * 1000:.2f} ms each (under cProfile)")
    for who, (count, seconds) in sql.items():
        print(f"  SQL {who:8}: {count / n:5.1f} statements, {seconds / n * 1000:6.2f} ms")
    print(f"  Redis        : {rds[0] / n:5.1f} round trips, {rds[1] / n * 1000:6.2f} ms")
    for order, limit in (("tottime", 25), ("cumulative", 40)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(limit)
        print(f"\n--- by {order} ---")
        print("\n".join(line for line in out.getvalue().splitlines()
                        if line.strip() and not line.startswith("   Ordered")))


if __name__ == "__main__":
    main()
