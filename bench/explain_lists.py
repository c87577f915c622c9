"""EXPLAIN ANALYZE of every query the list endpoints issue, on a seeded database.

    DATABASE_URL=… REDIS_URL=… .venv/bin/python bench/explain_lists.py [--payments 50000]
        [--out bench/explain.md]

Seeds a fresh Postgres database (`switchyard_explain` unless DATABASE_URL says otherwise;
dropped and created) with one large merchant (`--payments` test-mode payments, each with an
attempt, a refund for every fourth one, two events per payment, a few webhook endpoints) and
200 small ones (their own payments, refunds, events and endpoints, so that the large
merchant's rows are a minority of nothing and every table has neighbours), runs ANALYZE,
then calls each list endpoint through the whole Django/DRF stack with the test client, with
and without its filters and with a cursor, captures the SQL each call sends (with its
parameters, as sent) and runs EXPLAIN (ANALYZE, BUFFERS) on each SELECT. Writes Markdown:
per call, each statement's plan, and whether any table was read by a sequential scan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import sys
import uuid

import common

common.configure(database="switchyard_explain", redis_db=12,
                 MERCHANT_RATE_LIMIT_PER_MINUTE="10000000", ALLOWED_HOSTS="testserver")

NOTES = """
Reading (see the table, then each plan below):
- Every list call and filter is answered from an index; the tables are never read in full.
  The statement before each list query is the API key lookup (unique index on `key_hash`),
  left out of the table.
- `payment_status_list_idx`, `event_type_list_idx` and `event_created_list_idx` (migration
  `payments/0012_list_indexes.py`, built CONCURRENTLY) serve the filters whose rows are rare:
  a status or event type with few or no rows, the last hour of events. Without them those
  pages walked the merchant's whole index from the newest row (a status with no payment read
  every payment of the merchant).
- A cursor (`starting_after`) starts the scan at the cursor's row (`created_at <=` is added
  to the cursor's OR condition, which Postgres cannot start an index scan from).
- Known limit: `/v1/events?created[lte]=<long ago>` walks the event index backwards from the
  newest event until it reaches that time (rows removed by filter grow with the events newer
  than the bound). Events are paged by id; Postgres estimates that matching rows are spread
  evenly along the ids and picks the id order with LIMIT, though they all lie at its far end.
  Adding `created[gte]` or paging with `starting_after` bounds it.
- Plans are Postgres' choices for this data: with other data it may pick another of the
  indexes (for the large merchant, the single-column `created_at` or primary key index
  ordered, with the merchant as a filter, is as good as the composite one).
"""

SMALL_MERCHANTS = 2000
PER_SMALL_MERCHANT = 10


def seed(n_payments: int):
    from django.db import connection
    from django.utils import timezone

    from payments.models import (
        APIKey,
        Merchant,
        Payment,
        PaymentAttempt,
        Refund,
        WebhookEndpoint,
        WebhookOutbox,
    )
    from payments.services.merchants import merchant_create
    from providers.ids import new_id
    from providers.models import ProviderAccount

    rng = random.Random(11)
    big, key, _ = merchant_create(actor="bench", name="big", sandbox_accounts=True)
    account = ProviderAccount.objects.filter(merchant=big, livemode=False).first()
    smalls = Merchant.objects.bulk_create([Merchant(id=new_id("mer"), name=f"small {i}")
                                           for i in range(SMALL_MERCHANTS)])
    # every merchant has its keys and accounts, so that those lookups meet tables of a
    # realistic size too (a two-row table is read whole, index or not)
    APIKey.objects.bulk_create([
        APIKey(id=new_id("key"), merchant=m, livemode=live, key_hash=uuid.uuid4().hex * 2,
               prefix="sk_test_seed") for m in smalls for live in (False, True)])
    ProviderAccount.objects.bulk_create([
        ProviderAccount(id=new_id("acct"), merchant=m, name=f"{provider}-main",
                        provider=provider, base_url="https://example.com")
        for m in smalls for provider in ("stripe", "adyen", "checkout")])
    now = timezone.now()
    statuses = (["succeeded"] * 80 + ["failed"] * 10 + ["requires_capture"] * 5
                + ["canceled"] * 3 + ["unresolved"] * 2)
    event_types = ("payment.processing", "payment.succeeded", "payment.failed",
                   "refund.succeeded", "payment.requires_capture")

    def payments_for(merchant, count, livemode=False):
        rows = []
        for i in range(count):
            status = rng.choice(statuses)
            captured = 1000 if status == "succeeded" else 0
            rows.append(Payment(
                id=new_id("pay"), merchant=merchant, livemode=livemode, amount=1000,
                currency="USD", status=status, amount_captured=captured,
                provider_account=account if merchant is big else None,
                reference=f"order-{merchant.pk[-6:]}-{i}",
                created_at=now - dt.timedelta(seconds=rng.randrange(180 * 86400))))
        return rows

    def bulk(model, rows):
        for start in range(0, len(rows), 5000):
            model.objects.bulk_create(rows[start:start + 5000])

    payments = payments_for(big, n_payments) + payments_for(big, n_payments // 10, True)
    for merchant in smalls:
        payments += payments_for(merchant, PER_SMALL_MERCHANT)
    by_created = {p.id: p.created_at for p in payments}
    bulk(Payment, payments)
    # bulk_create wrote auto_now_add's "now": spread created_at over the half year as seeded
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE seed_created (id varchar(40), created_at timestamptz)")
        cursor.executemany("INSERT INTO seed_created VALUES (%s, %s)",
                           list(by_created.items()))
        cursor.execute("UPDATE payments_payment p SET created_at = s.created_at "
                       "FROM seed_created s WHERE s.id = p.id")
    bulk(PaymentAttempt, [
        PaymentAttempt(id=new_id("att"), payment=p, provider_account=account,
                       status="captured" if p.status == "succeeded" else "declined")
        for p in payments if p.merchant_id == big.pk])
    refunds = [Refund(id=new_id("re"), merchant_id=p.merchant_id, livemode=p.livemode,
                      payment=p, amount=500, currency="USD", status="succeeded")
               for i, p in enumerate(payments) if p.status == "succeeded" and i % 4 == 0]
    bulk(Refund, refunds)
    with connection.cursor() as cursor:  # a refund a day after its payment, as seeded
        cursor.execute("UPDATE payments_refund r SET created_at = LEAST(p.created_at + "
                       "interval '1 day', now()) FROM payments_payment p "
                       "WHERE p.id = r.payment_id")
    events = []
    for p in payments:
        for n in range(2):
            event_id = new_id("evt")
            created = by_created[p.id] + dt.timedelta(seconds=n)
            kind = rng.choice(event_types)
            events.append(WebhookOutbox(
                event_id=event_id, merchant_id=p.merchant_id, livemode=p.livemode, type=kind,
                object_id=p.id, created_at=created, relayed_at=created,
                payload={"id": event_id, "object": "event", "type": kind,
                         "data": {"object": {"id": p.id}}}))
    events.sort(key=lambda e: e.created_at)  # ids in time order, as the outbox writes them
    bulk(WebhookOutbox, events)
    endpoints = [WebhookEndpoint(id=new_id("we"), merchant=m, livemode=False,
                                 url=f"https://example.com/{uuid.uuid4().hex}",
                                 enabled_events=["*"])
                 for m in [big] * 5 + [m for m in smalls for _ in range(2)]]
    bulk(WebhookEndpoint, endpoints)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # as autovacuum would have by now
    sample = next(p for p in payments if p.merchant_id == big.pk and p.status == "succeeded"
                  and Refund.objects.filter(payment=p).exists())
    return key, sample, now


def calls(sample, now) -> list[tuple[str, str, dict]]:
    hour_ago = int((now - dt.timedelta(hours=1)).timestamp())
    week_ago = int((now - dt.timedelta(days=7)).timestamp())
    half_year_ago = int((now - dt.timedelta(days=170)).timestamp())
    return [
        ("payments", "/v1/payments", {}),
        ("payments", "/v1/payments", {"limit": "100"}),
        ("payments", "/v1/payments", {"status": "unresolved"}),  # 2 % of them
        ("payments", "/v1/payments", {"status": "processing"}),  # none
        ("payments", "/v1/payments", {"reference": sample.reference}),
        ("payments", "/v1/payments", {"created[gte]": str(week_ago)}),
        ("payments", "/v1/payments", {"created[lte]": str(half_year_ago)}),
        ("payments", "/v1/payments", {"status": "failed", "created[gte]": str(week_ago)}),
        ("payments", "/v1/payments", {"starting_after": sample.id}),
        ("refunds", "/v1/refunds", {}),
        ("refunds", "/v1/refunds", {"payment": sample.id}),
        ("refunds", "/v1/refunds", {"starting_after": "CURSOR"}),
        ("events", "/v1/events", {}),
        ("events", "/v1/events", {"type": "payment.failed"}),
        ("events", "/v1/events", {"type": "payment.unresolved"}),  # none
        ("events", "/v1/events", {"type": "refund.*"}),
        ("events", "/v1/events", {"object_id": sample.id}),
        ("events", "/v1/events", {"created[gte]": str(week_ago)}),
        ("events", "/v1/events", {"created[gte]": str(hour_ago)}),
        ("events", "/v1/events", {"created[lte]": str(half_year_ago)}),
        ("events", "/v1/events", {"starting_after": "CURSOR"}),
        ("webhook_endpoints", "/v1/webhook_endpoints", {}),
        ("webhook_endpoints", "/v1/webhook_endpoints", {"starting_after": "CURSOR"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=50_000)
    parser.add_argument("--out", default="bench/explain.md")
    args = parser.parse_args()

    common.fresh_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.test import APIClient

    call_command("migrate", verbosity=0)
    key, sample, now = seed(args.payments)
    client = APIClient()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    out = [f"# EXPLAIN ANALYZE of the list endpoints ({args.payments} payments)\n",
           "Generated by `bench/explain_lists.py` (see its docstring for the data). Every "
           "SELECT a list call sends, with its parameters, planned and run by Postgres "
           f"{connection.pg_version // 10000}. `Seq Scan` marks a table read in full.\n"]
    cursors: dict[str, str] = {}
    seq_scans = []
    table_rows = ["\n| call | table: index (rows removed by filter, ms) |\n| --- | --- |\n"]
    for resource, path, params in calls(sample, now):
        params = {k: (cursors.get(resource, "") if v == "CURSOR" else v)
                  for k, v in params.items()}
        sent: list[tuple[str, tuple]] = []

        def capture(execute, sql, sql_params, many, context, sent=sent):
            sent.append((sql, sql_params))
            return execute(sql, sql_params, many, context)

        with connection.execute_wrapper(capture):
            resp = client.get(path, params, **auth)
        assert resp.status_code == 200, resp.content
        data = resp.json()["data"]
        if data and resource not in cursors:
            cursors[resource] = data[-1]["id"]
        query = "&".join(f"{k}={v}" for k, v in params.items())
        out.append(f"\n## GET {path}{'?' + query if query else ''}\n\n"
                   f"{len(data)} objects, {len(sent)} statements.\n")
        cells = []
        for sql, sql_params in sent:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            with connection.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, sql_params)
                plan = "\n".join(row[0] for row in cur.fetchall())
            table = re.search(r'FROM "(\w+)"', sql)
            scans = re.findall(r"Seq Scan on (\w+)", plan)
            if scans:
                seq_scans.append((path, query, scans))
            out.append(f"\n`{(table.group(1) if table else '?')}`"
                       f"{' — SEQ SCAN' if scans else ''}:\n\n```\n{plan}\n```\n")
            if table and table.group(1) != "payments_apikey":  # the key lookup: every call
                indexes = sorted(set(re.findall(
                    r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? "
                    r"(?:using|on) (\w+)", plan)))
                removed = sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)",
                                                          plan))
                ms = re.search(r"Execution Time: ([\d.]+)", plan)
                cells.append(f"{table.group(1)}: {', '.join(indexes) or 'NO INDEX'} "
                             f"({removed}, {ms.group(1) if ms else '?'})")
        table_rows.append(f"| `{path}{'?' + query if query else ''}` | "
                          f"{'<br>'.join(cells)} |\n")
    summary = ("\nNo statement read a table by a sequential scan.\n" if not seq_scans else
               "\nSequential scans:\n" + "".join(f"- {p}?{q}: {', '.join(s)}\n"
                                                 for p, q, s in seq_scans))
    out.insert(2, summary + NOTES + "".join(table_rows) + "\n# The plans\n")
    with open(args.out, "w") as f:
        f.write("".join(out))
    print(summary)
    sys.exit(1 if seq_scans else 0)


if __name__ == "__main__":
    main()
