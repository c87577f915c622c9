"""The Django side of `make bench` (bench/http_bench.py runs it in a child process with the
service's environment): set-up of the merchants, and the per-request counts of SQL
statements, transactions and Redis round trips, taken on the service's own code path (the
WSGI handler through Django's test client, the same middleware, views and services gunicorn
runs; the HTTP sandbox in its own process).

    python bench/http_bench_django.py setup SANDBOX_URL   → JSON (keys, ids, pgbench script)
    python bench/http_bench_django.py profile SETUP_JSON  → JSON (counts per operation)
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: E402
from django.test import Client  # noqa: E402
from http_bench import pgbench_script  # noqa: E402

PROFILE_REQUESTS = 10


class Recorder:
    """SQL statements (as sent, BEGIN/COMMIT included), transactions and Redis round trips
    (one per command sent, one per pipeline) of what runs while it is on."""

    def __init__(self) -> None:
        self.on = False
        self.sql: list[str] = []
        self.statements = 0
        self.transactions = 0
        self.redis_round_trips = 0
        self.kinds: Counter[str] = Counter()
        self._open = False
        recorder = self

        original_commit, original_rollback = BaseDatabaseWrapper.commit, \
            BaseDatabaseWrapper.rollback

        def commit(self: BaseDatabaseWrapper) -> None:
            recorder._end("COMMIT")
            original_commit(self)

        def rollback(self: BaseDatabaseWrapper) -> None:
            recorder._end("ROLLBACK")
            original_rollback(self)

        BaseDatabaseWrapper.commit = commit  # type: ignore[method-assign]
        BaseDatabaseWrapper.rollback = rollback  # type: ignore[method-assign]

        import redis.connection

        cls = getattr(redis.connection, "AbstractConnection", redis.connection.Connection)
        original_send = cls.send_packed_command

        def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
            if recorder.on:
                recorder.redis_round_trips += 1
            return original_send(self, command, check_health)

        cls.send_packed_command = send_packed_command

    def _end(self, word: str) -> None:
        if self.on and self._open:
            self.sql.append(word)
            self.transactions += 1
        self._open = False

    def __call__(self, execute: Any, sql: str, params: Any, many: bool,
                 context: dict[str, Any]) -> Any:
        if not self.on:
            return execute(sql, params, many, context)
        in_atomic = context["connection"].in_atomic_block
        if in_atomic and not self._open:
            self.sql.append("BEGIN")
            self._open = True
        result = execute(sql, params, many, context)
        query = getattr(context["cursor"].cursor, "query", None)
        text = query.decode() if isinstance(query, bytes) else sql
        self.sql.append(text)
        self.statements += 1
        self.kinds[text.split(None, 1)[0].upper()] += 1
        if not in_atomic:
            self.transactions += 1  # autocommit: a statement is its own transaction
        return result

    def reset(self) -> None:
        self.sql, self.statements, self.transactions = [], 0, 0
        self.redis_round_trips, self.kinds = 0, Counter()


RECORDER = Recorder()
connection.execute_wrappers.append(RECORDER)


def redis_commands() -> int:
    import redis
    from django.conf import settings

    stats = redis.Redis.from_url(settings.REDIS_URL).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def create_body(pm: str) -> dict[str, Any]:
    return {"amount": 1050, "currency": "USD", "payment_method": pm, "confirm": True,
            "capture_method": "manual", "reference": "bench"}


def post(client: Client, key: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = client.post(path, body or {}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {key}",
                           HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert response.status_code in (200, 201), (path, response.status_code, response.content)
    return response.json()


def setup(sandbox_url: str) -> dict[str, Any]:
    from payments.models import Merchant
    from payments.services.merchants import merchant_create
    from payments.services.payment_methods import payment_method_create
    from providers.accounts import account_save
    from providers.models import SANDBOX_URL, ProviderAccount

    out: dict[str, Any] = {}
    for name, url, credentials in (("http", sandbox_url, {"secret_key": "sk_test_sandbox"}),
                                   ("inproc", SANDBOX_URL, {})):
        merchant, key, _ = merchant_create(name=f"bench-{name}", actor="cli:bench")
        account = ProviderAccount(merchant_id=merchant.pk, name=f"stripe-{name}",
                                  provider="stripe", livemode=False, base_url=url, priority=10)
        account_save(account=account, credentials=credentials)
        pm = payment_method_create(merchant=merchant, livemode=False,
                                   number="4242424242424242", exp_month=12, exp_year=2034)
        out.update({f"merchant_{name}": merchant.pk, f"key_{name}": key, f"pm_{name}": pm.id})

    # The SQL of one create+confirm (the second: the first warms caches up), for pgbench.
    client = Client()
    post(client, out["key_http"], "/v1/payments", create_body(out["pm_http"]))
    RECORDER.on = True
    post(client, out["key_http"], "/v1/payments", create_body(out["pm_http"]))
    RECORDER.on = False
    keep = set()
    for model in (Merchant, ProviderAccount):
        keep.update(str(pk) for pk in model.objects.values_list("pk", flat=True))
    keep.update({out["pm_http"], out["pm_inproc"]})
    from payments.models import APIKey

    keep.update(str(pk) for pk in APIKey.objects.values_list("pk", flat=True))
    out["pgbench_script"] = pgbench_script(RECORDER.sql, keep)
    out["create_sql_statements"] = RECORDER.statements
    return out


def profile(setup_out: dict[str, Any]) -> dict[str, Any]:
    client = Client()
    key, pm = setup_out["key_http"], setup_out["pm_http"]

    def create(k: str = key, p: str = pm) -> dict[str, Any]:
        return post(client, k, "/v1/payments", create_body(p))  # type: ignore[no-any-return]

    def captured() -> str:
        payment = create()
        post(client, key, f"/v1/payments/{payment['id']}/capture")
        return str(payment["id"])

    def get(path: str) -> None:
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 200, (path, response.status_code)

    ops: dict[str, tuple[Any, Any]] = {
        # name: (prepare, the request counted)
        "create+confirm (HTTP sandbox)": (lambda: None, lambda _: create()),
        "create+confirm (in-process sandbox)": (
            lambda: None, lambda _: create(setup_out["key_inproc"], setup_out["pm_inproc"])),
        "capture": (lambda: create()["id"],
                    lambda pid: post(client, key, f"/v1/payments/{pid}/capture")),
        "refund": (captured, lambda pid: post(client, key, "/v1/refunds",
                                              {"payment": pid, "amount": 100})),
        "retrieve": (lambda: create()["id"], lambda pid: get(f"/v1/payments/{pid}")),
        "list": (lambda: None, lambda _: get("/v1/payments?limit=10")),
    }
    results = {}
    for name, (prepare, request) in ops.items():
        request(prepare())  # warm-up
        RECORDER.reset()
        commands = 0
        for _ in range(PROFILE_REQUESTS):
            arg = prepare()
            before = redis_commands()
            RECORDER.on = True
            request(arg)
            RECORDER.on = False
            commands += redis_commands() - before
        n = PROFILE_REQUESTS
        results[name] = {"statements": RECORDER.statements / n,
                         "transactions": RECORDER.transactions / n,
                         "redis_round_trips": RECORDER.redis_round_trips / n,
                         "redis_commands": commands / n,
                         "kinds": {k: v / n for k, v in RECORDER.kinds.most_common()}}
    return results


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "setup":
        print(json.dumps(setup(sys.argv[2])))
    elif command == "profile":
        print(json.dumps(profile(json.loads(sys.argv[2]))))
    else:
        sys.exit(f"unknown command {command!r}")
