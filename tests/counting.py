"""Count the work one request does: SQL statements, transactions and Redis round trips, ours
apart from the in-process sandbox's.

    with count_work() as work:
        api.post(...)
    work.ours.statements, work.ours.transactions, work.ours.redis
    work.sandbox.statements, ...
    print(work.report())  # every statement and command, tagged, for a failing pin

What counts, and why:
- A statement is whatever goes through Django's cursor (`connection.execute_wrapper`, as
  `CaptureQueriesContext` sees it), SAVEPOINT and RELEASE SAVEPOINT included: each is a round
  trip to Postgres. BEGIN and COMMIT are not sent through the cursor (psycopg2 sends BEGIN
  with the first statement of a transaction; COMMIT is `connection.commit()`), so they are
  not statements here; they are what `transactions` counts.
- A transaction is an outermost `transaction.atomic()` block that ran at least one statement,
  or one statement run outside any atomic block (autocommit: it is a transaction of its own).
  Blocks are told apart by counting the connection's commits and rollbacks.
- A Redis round trip is one command sent on its own (`Redis.execute_command`: a Lua script
  call is one), or one pipeline `execute` with all its commands. Every client counts: the
  Django cache's, providers.resilience's and the Celery broker's (kombu uses redis-py).
  Opening a connection (HELLO, SELECT) is not counted: pools keep connections.
- Ours or the sandbox's: the in-process sandbox (providers.sandboxes, reached through
  httpx.WSGITransport) runs in this thread on this connection, so each statement is tagged by
  its call stack: any frame in a `providers.sandboxes` module makes it the sandbox's. A
  transaction is the sandbox's when all its statements are. (Running the sandbox out of
  process would separate them too, but needs a server per test; the stack says the same.)

Run the request under a transactional test (`django_db(transaction=True)`): under the
default test transaction every block would be a savepoint of one outer transaction.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

import redis
from django.db import connection
from redis.client import Pipeline

SANDBOX_MODULE = "providers.sandboxes"


def _from_sandbox() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(SANDBOX_MODULE):
            return True
        frame = frame.f_back
    return False


@dataclass
class Tally:
    statements: int = 0
    transactions: int = 0
    redis: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return self.statements, self.transactions, self.redis


@dataclass
class Work:
    # (sandbox?, transaction key, sql); key ("atomic", n) or ("autocommit", i)
    statements: list[tuple[bool, tuple[str, int], str]] = field(default_factory=list)
    commands: list[tuple[bool, str]] = field(default_factory=list)  # (sandbox?, command)

    def _tally(self, sandbox: bool) -> Tally:
        transactions: dict[tuple[str, int], set[bool]] = {}
        for tag, key, _ in self.statements:
            transactions.setdefault(key, set()).add(tag)
        return Tally(
            statements=sum(1 for tag, _, _ in self.statements if tag == sandbox),
            # a transaction with statements of both belongs to us (never seen: the sandbox
            # opens its own)
            transactions=sum(1 for tags in transactions.values()
                             if (tags == {True}) == sandbox),
            redis=sum(1 for tag, _ in self.commands if tag == sandbox),
        )

    @property
    def ours(self) -> Tally:
        return self._tally(False)

    @property
    def sandbox(self) -> Tally:
        return self._tally(True)

    def report(self) -> str:
        lines = [f"ours {self.ours}", f"sandbox {self.sandbox}"]
        for tag, key, sql in self.statements:
            lines.append(f"  {'SANDBOX' if tag else 'ours   '} {key[0][:4]}#{key[1]:<3} "
                         f"{sql[:160]}")
        for tag, command in self.commands:
            lines.append(f"  {'SANDBOX' if tag else 'ours   '} redis {command[:160]}")
        return "\n".join(lines)


@contextlib.contextmanager
def count_work() -> Iterator[Work]:
    work = Work()
    epoch = [0]  # commits and rollbacks so far: one outermost atomic block per value
    autocommits = [0]

    def wrapper(execute, sql, params, many, context):
        if connection.in_atomic_block:
            key = ("atomic", epoch[0])
        else:
            autocommits[0] += 1
            key = ("autocommit", autocommits[0])
        work.statements.append((_from_sandbox(), key, sql))
        return execute(sql, params, many, context)

    real_commit, real_rollback = connection._commit, connection._rollback

    def commit():
        epoch[0] += 1
        return real_commit()

    def rollback():
        epoch[0] += 1
        return real_rollback()

    real_execute = redis.Redis.execute_command
    real_pipeline_execute = Pipeline.execute
    real_pipeline_command = Pipeline.execute_command

    def execute_command(self, *args, **options):
        work.commands.append((_from_sandbox(), " ".join(str(a) for a in args[:3])))
        return real_execute(self, *args, **options)

    def pipeline_command(self, *args, **options):
        if self.watching:  # immediate mode (after WATCH): sent now
            work.commands.append((_from_sandbox(), " ".join(str(a) for a in args[:3])))
        return real_pipeline_command(self, *args, **options)

    def pipeline_execute(self, *args, **kwargs):
        if self.command_stack:
            names = ",".join(str(c[0][0]) for c in self.command_stack)
            work.commands.append((_from_sandbox(), f"PIPELINE {names}"))
        return real_pipeline_execute(self, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(connection.execute_wrapper(wrapper))
        stack.enter_context(mock.patch.object(connection, "_commit", commit))
        stack.enter_context(mock.patch.object(connection, "_rollback", rollback))
        stack.enter_context(mock.patch.object(redis.Redis, "execute_command", execute_command))
        stack.enter_context(mock.patch.object(Pipeline, "execute_command", pipeline_command))
        stack.enter_context(mock.patch.object(Pipeline, "execute", pipeline_execute))
        yield work
