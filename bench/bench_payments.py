"""Cost of the payment path and of idempotency, measured side by side in one run.

Runs create+confirm (automatic capture, in-process sandbox) through the full Django/DRF stack
with the test client, with and without an Idempotency-Key, in interleaved rounds so machine
noise hits both alike. Reports per-request medians and their ratio.

    .venv/bin/python bench/bench_payments.py [--requests 200] [--rounds 5]

Uses a fresh Postgres database `switchyard_bench` on 127.0.0.1 (dropped and created) and
Redis db 14.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import common

common.configure(database="switchyard_bench", redis_db=14,
                 MERCHANT_RATE_LIMIT_PER_MINUTE="10000000", ALLOWED_HOSTS="testserver")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    common.fresh_database()
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from payments.services.merchants import merchant_create
    from payments.services.payment_methods import payment_method_create

    call_command("migrate", verbosity=0)
    merchant, key, _ = merchant_create(actor="test", name=f"bench-{uuid.uuid4().hex[:8]}", sandbox_accounts=True)
    pm = payment_method_create(merchant=merchant, livemode=False, number="4242424242424242",
                               exp_month=12, exp_year=2034)
    client = APIClient()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    body = {"amount": 1050, "currency": "USD", "payment_method": pm.id, "confirm": True}

    def run(with_key: bool) -> list[float]:
        timings = []
        for _ in range(args.requests):
            headers = dict(auth)
            if with_key:
                headers["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex
            start = time.perf_counter()
            resp = client.post("/v1/payments", body, format="json", **headers)
            timings.append(time.perf_counter() - start)
            assert resp.status_code == 200, resp.content
        return timings

    run(False)  # warm-up
    plain, keyed = [], []
    for _ in range(args.rounds):
        plain += run(False)
        keyed += run(True)

    p_med, k_med = statistics.median(plain), statistics.median(keyed)
    print(f"requests per variant: {len(plain)} (interleaved rounds: {args.rounds})")
    print(f"create+confirm, no Idempotency-Key : median {p_med * 1000:.2f} ms, "
          f"p95 {statistics.quantiles(plain, n=20)[18] * 1000:.2f} ms")
    print(f"create+confirm, Idempotency-Key   : median {k_med * 1000:.2f} ms, "
          f"p95 {statistics.quantiles(keyed, n=20)[18] * 1000:.2f} ms")
    print(f"ratio keyed / plain (median): {k_med / p_med:.2f}")


if __name__ == "__main__":
    main()
