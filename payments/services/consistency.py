"""`manage.py check_consistency`: every invariant of the design, checked against the data
(docs/operations/consistency.md).

Each rule is one set-based query (window functions and grouped joins: no row-by-row Python
for the money and event-log rules), so it scales with the tables; only the vault rule must
decrypt row by row, which it does through a streaming iterator. The queries are plain SQL
that both Postgres and SQLite (the embedded default) run. A violation names its rule and the
object (payment, refund, attempt, card, account, endpoint id).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from payments import vault
from payments.events import REFUND_EVENTS, EventType
from payments.models import (
    Modification,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentMethod,
    Refund,
    WebhookEndpoint,
    WebhookOutbox,
)
from payments.state_machine import (
    PAYMENT_WEBHOOK_EVENTS,
    REFUND_TRANSITIONS,
    TERMINAL_PAYMENT_STATUSES,
)
from providers.models import ProviderAccount

RULES: dict[str, str] = {
    "amounts": "0 <= amount_refunded <= amount_captured <= amount, amount > 0, "
               "0 <= amount_capturable <= amount",
    "captured_matches_captures": "amount_captured is what was captured: the succeeded capture "
                                "(Modification) of its one captured attempt, else the whole "
                                "amount when that attempt captured at authorization, else 0",
    "refunded_matches_refunds": "amount_refunded is the sum of the payment's succeeded refunds",
    "refunds_within_captured": "refunds not failed add up to at most amount_captured, in the "
                               "payment's currency",
    "one_successful_attempt": "at most one attempt authorized or captured per payment",
    "status_matches_attempts": "a succeeded payment has a captured attempt, one that "
                               "requires_capture an authorized attempt",
    "terminal_final": "no event leaves a terminal status (payments: succeeded, canceled, "
                      "failed; refunds: succeeded, failed)",
    "event_replay": "a payment's events form a chain from its creation (each starts where the "
                    "previous ended) and end at its current status and amounts",
    "refund_replay": "a refund's events end at its current status",
    "attempt_events": "every attempt has its attempt_started event, and an attempt named by "
                      "an authorized, captured or declined event is in a status that event "
                      "allows",
    "outbox": "every change merchants hear about has its event in the outbox: each payment "
              "status change, each refund status change, a payment flagged for an operator",
    "vault": "every vaulted card (and kept CVC) decrypts with the configured vault keys and "
             "matches its last4 and BIN",
    "credentials": "every provider account's credentials and webhook endpoint's signing "
                   "secrets decrypt with the configured vault keys",
}


@dataclasses.dataclass(frozen=True)
class Violation:
    rule: str
    object_id: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} {self.object_id}: {self.detail}"


@dataclasses.dataclass
class ConsistencyReport:
    violations: list[Violation] = dataclasses.field(default_factory=list)
    checked: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_rule(self) -> Counter[str]:
        return Counter(v.rule for v in self.violations)

    def summary(self) -> str:
        objects = ", ".join(f"{n} {name}" for name, n in self.checked.items())
        verdict = "no violations" if self.ok else f"{len(self.violations)} violation(s) (" + \
            ", ".join(f"{rule}: {n}" for rule, n in sorted(self.by_rule().items())) + ")"
        return f"{len(RULES)} rules over {objects}: {verdict}"


class _Sql:
    """Table names and the few expressions that differ between Postgres and SQLite."""

    def __init__(self, using: str) -> None:
        self.connection = connections[using]
        self.vendor = self.connection.vendor
        self.payment = Payment._meta.db_table
        self.attempt = PaymentAttempt._meta.db_table
        self.event = PaymentEvent._meta.db_table
        self.modification = Modification._meta.db_table
        self.refund = Refund._meta.db_table
        self.outbox = WebhookOutbox._meta.db_table

    def json_text(self, column: str, key: str) -> str:
        if self.vendor == "postgresql":
            return f"({column} ->> '{key}')"
        return f"json_extract({column}, '$.{key}')"

    def json_int(self, column: str, key: str) -> str:
        return f"CAST({self.json_text(column, key)} AS BIGINT)"

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        # (no parameters: no % interpolation either)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())


def _in(values: Any) -> str:
    return "(" + ", ".join(f"'{v}'" for v in sorted(str(v) for v in values)) + ")"


def consistency_check(*, using: str = "default", outbox_since: dt.datetime | None = None,
                      rules: list[str] | None = None) -> ConsistencyReport:
    """Check every rule of RULES (or those named) against the database `using`. The outbox
    rule looks at changes since `outbox_since` (default: CONSISTENCY_OUTBOX_WINDOW_DAYS
    back, 0 for all), since old outbox rows may have been pruned."""
    sql = _Sql(using)
    report = ConsistencyReport()
    report.checked = {
        "payments": Payment.objects.using(using).count(),
        "attempts": PaymentAttempt.objects.using(using).count(),
        "refunds": Refund.objects.using(using).count(),
        "events": PaymentEvent.objects.using(using).count(),
        "cards": PaymentMethod.objects.using(using).count(),
        "provider accounts": ProviderAccount.objects.using(using).count(),
        "webhook endpoints": WebhookEndpoint.objects.using(using).count(),
    }
    if outbox_since is None and settings.CONSISTENCY_OUTBOX_WINDOW_DAYS:
        outbox_since = timezone.now() - dt.timedelta(
            days=settings.CONSISTENCY_OUTBOX_WINDOW_DAYS)
    checks: dict[str, Callable[[], Iterator[Violation]]] = {
        "amounts": lambda: _amounts(sql),
        "captured_matches_captures": lambda: _captured(sql),
        "refunded_matches_refunds": lambda: _refunded(sql),
        "refunds_within_captured": lambda: _refunds_within(sql),
        "one_successful_attempt": lambda: _one_successful(sql),
        "status_matches_attempts": lambda: _status_attempts(sql),
        "terminal_final": lambda: _terminal(sql),
        "event_replay": lambda: _replay(sql),
        "refund_replay": lambda: _refund_replay(sql),
        "attempt_events": lambda: _attempt_events(sql),
        "outbox": lambda: _outbox(sql, outbox_since),
        "vault": lambda: _vault(using),
        "credentials": lambda: _credentials(using),
    }
    unknown = set(rules or []) - set(checks)
    if unknown:
        raise ValueError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    for name, check in checks.items():
        if rules is None or name in rules:
            report.violations.extend(check())
    return report


# --- money --------------------------------------------------------------------------------
def _amounts(sql: _Sql) -> Iterator[Violation]:
    for pid, amount, capturable, captured, refunded in sql.rows(f"""
            SELECT id, amount, amount_capturable, amount_captured, amount_refunded
            FROM {sql.payment}
            WHERE NOT (amount > 0 AND 0 <= amount_refunded AND amount_refunded <= amount_captured
                       AND amount_captured <= amount AND 0 <= amount_capturable
                       AND amount_capturable <= amount)
            ORDER BY id"""):
        yield Violation("amounts", pid, f"amount {amount}, capturable {capturable}, captured "
                        f"{captured}, refunded {refunded}")


def _captured(sql: _Sql) -> Iterator[Violation]:
    for pid, amount, captured, mod_total, mods, attempts in sql.rows(f"""
            SELECT id, amount, amount_captured, mod_total, mods, attempts FROM (
                SELECT p.id, p.amount, p.amount_captured, COALESCE(m.total, 0) AS mod_total,
                       COALESCE(m.n, 0) AS mods, COALESCE(a.n, 0) AS attempts
                FROM {sql.payment} p
                LEFT JOIN (SELECT payment_id, SUM(amount) AS total, COUNT(*) AS n
                           FROM {sql.modification}
                           WHERE kind = 'capture' AND status = 'succeeded'
                           GROUP BY payment_id) m ON m.payment_id = p.id
                LEFT JOIN (SELECT payment_id, COUNT(*) AS n FROM {sql.attempt}
                           WHERE status = 'captured' GROUP BY payment_id) a
                       ON a.payment_id = p.id) x
            -- (no NULL here: a NULL would make NOT (…) unknown and hide the row)
            WHERE NOT ((mods = 1 AND attempts = 1 AND amount_captured = mod_total)
                       OR (mods = 0 AND attempts = 1 AND amount_captured = amount)
                       OR (mods = 0 AND attempts = 0 AND amount_captured = 0))
            ORDER BY id"""):
        expected = (f"{mod_total} in {mods} succeeded capture(s)" if mods else
                    f"{amount} (captured at authorization)" if attempts else "0")
        yield Violation("captured_matches_captures", pid,
                        f"amount_captured {captured}, {attempts} captured attempt(s), "
                        f"expected {expected}")


def _refunded(sql: _Sql) -> Iterator[Violation]:
    for pid, refunded, total in sql.rows(f"""
            SELECT p.id, p.amount_refunded, COALESCE(r.total, 0) FROM {sql.payment} p
            LEFT JOIN (SELECT payment_id, SUM(amount) AS total FROM {sql.refund}
                       WHERE status = 'succeeded' GROUP BY payment_id) r
                   ON r.payment_id = p.id
            WHERE p.amount_refunded <> COALESCE(r.total, 0) ORDER BY p.id"""):
        yield Violation("refunded_matches_refunds", pid,
                        f"amount_refunded {refunded}, succeeded refunds add up to {total}")


def _refunds_within(sql: _Sql) -> Iterator[Violation]:
    for pid, captured, total in sql.rows(f"""
            SELECT p.id, p.amount_captured, r.total FROM {sql.payment} p
            JOIN (SELECT payment_id, SUM(amount) AS total FROM {sql.refund}
                  WHERE status <> 'failed' GROUP BY payment_id) r ON r.payment_id = p.id
            WHERE r.total > p.amount_captured ORDER BY p.id"""):
        yield Violation("refunds_within_captured", pid,
                        f"refunds not failed add up to {total}, more than amount_captured "
                        f"{captured}")
    for rid, currency, expected in sql.rows(f"""
            SELECT r.id, r.currency, p.currency FROM {sql.refund} r
            JOIN {sql.payment} p ON p.id = r.payment_id
            WHERE r.currency <> p.currency ORDER BY r.id"""):
        yield Violation("refunds_within_captured", rid,
                        f"refund in {currency}, its payment in {expected}")


# --- attempts ------------------------------------------------------------------------------
def _one_successful(sql: _Sql) -> Iterator[Violation]:
    for pid, n in sql.rows(f"""
            SELECT payment_id, COUNT(*) FROM {sql.attempt}
            WHERE status IN ('authorized', 'captured')
            GROUP BY payment_id HAVING COUNT(*) > 1 ORDER BY payment_id"""):
        yield Violation("one_successful_attempt", pid, f"{n} attempts authorized or captured")


def _status_attempts(sql: _Sql) -> Iterator[Violation]:
    for pid, status, wanted in sql.rows(f"""
            SELECT p.id, p.status, CASE p.status WHEN 'succeeded' THEN 'captured'
                                                 ELSE 'authorized' END
            FROM {sql.payment} p
            WHERE p.status IN ('succeeded', 'requires_capture') AND NOT EXISTS (
                SELECT 1 FROM {sql.attempt} a WHERE a.payment_id = p.id AND a.status =
                    CASE p.status WHEN 'succeeded' THEN 'captured' ELSE 'authorized' END)
            ORDER BY p.id"""):
        yield Violation("status_matches_attempts", pid, f"{status} without an attempt {wanted}")


# event type → the statuses its attempt (data.attempt) may be in now
_ATTEMPT_AFTER = {
    EventType.AUTHORIZED.value: ("authorized", "captured", "voided"),
    EventType.CAPTURED.value: ("captured",),
    EventType.DECLINED.value: ("declined",),
}


def _attempt_events(sql: _Sql) -> Iterator[Violation]:
    for aid, pid in sql.rows(f"""
            SELECT a.id, a.payment_id FROM {sql.attempt} a
            WHERE NOT EXISTS (SELECT 1 FROM {sql.event} e WHERE e.payment_id = a.payment_id
                              AND e.type = %s AND {sql.json_text('e.data', 'attempt')} = a.id)
            ORDER BY a.id""", [EventType.ATTEMPT_STARTED.value]):
        yield Violation("attempt_events", aid, f"no {EventType.ATTEMPT_STARTED.value} event "
                        f"on payment {pid}")
    cases = " ".join(f"WHEN '{t}' THEN CASE WHEN a.status IN {_in(s)} THEN 1 ELSE 0 END"
                     for t, s in _ATTEMPT_AFTER.items())
    for aid, status, event_id, event_type in sql.rows(f"""
            SELECT a.id, a.status, e.id, e.type FROM {sql.event} e
            JOIN {sql.attempt} a ON a.id = {sql.json_text('e.data', 'attempt')}
                                AND a.payment_id = e.payment_id
            WHERE e.type IN {_in(_ATTEMPT_AFTER)} AND (CASE e.type {cases} END) = 0
            ORDER BY a.id, e.id"""):
        yield Violation("attempt_events", aid, f"is {status}, but event {event_id} "
                        f"({event_type}) allows only {', '.join(_ATTEMPT_AFTER[event_type])}")


# --- the event log -------------------------------------------------------------------------
_REFUND_TERMINAL = [s for s, nxt in REFUND_TRANSITIONS.items() if not nxt]
_REFUND_TYPES = [EventType.REFUND_CREATED.value, *REFUND_EVENTS.values()]


def _terminal(sql: _Sql) -> Iterator[Violation]:
    for eid, pid, from_status, to_status in sql.rows(f"""
            SELECT id, payment_id, from_status, to_status FROM {sql.event}
            WHERE from_status IN {_in(TERMINAL_PAYMENT_STATUSES)} AND to_status <> from_status
            ORDER BY payment_id, id"""):
        yield Violation("terminal_final", pid, f"event {eid} moves it from {from_status} "
                        f"(terminal) to {to_status}")
    refund_id = sql.json_text("e.data", "refund")
    for rid, eid, from_status, event_type in sql.rows(f"""
            SELECT {refund_id}, e.id, {sql.json_text('e.data', 'from_status')}, e.type
            FROM {sql.event} e
            WHERE e.type IN {_in(REFUND_EVENTS.values())}
              AND {sql.json_text('e.data', 'from_status')} IN {_in(_REFUND_TERMINAL)}
            ORDER BY 1, e.id"""):
        yield Violation("terminal_final", rid, f"event {eid} ({event_type}) moves the refund "
                        f"from {from_status} (terminal)")


def _replay(sql: _Sql) -> Iterator[Violation]:
    # the chain: each event starts where the previous one ended; the first from nothing
    for pid, eid, from_status, previous in sql.rows(f"""
            SELECT payment_id, id, from_status, previous FROM (
                SELECT payment_id, id, from_status,
                       LAG(to_status) OVER (PARTITION BY payment_id ORDER BY id) AS previous
                FROM {sql.event}) chain
            WHERE (previous IS NULL AND from_status <> '')
               OR (previous IS NOT NULL AND from_status <> previous)
            ORDER BY payment_id, id"""):
        yield Violation("event_replay", pid, f"event {eid} starts from {from_status or 'nothing'}"
                        f", the log was at {previous or 'nothing'}")
    # the end: the last event's status and amounts are the payment's
    amounts = ("amount_capturable", "amount_captured", "amount_refunded")
    snapshot = ", ".join(f"{sql.json_int('data', name)} AS {name}" for name in amounts)
    differs = " OR ".join(f"last.{name} IS NULL OR last.{name} <> p.{name}" for name in amounts)
    for row in sql.rows(f"""
            SELECT p.id, p.status, last.id, last.to_status,
                   {', '.join(f'p.{n}, last.{n}' for n in amounts)}
            FROM {sql.payment} p
            LEFT JOIN (SELECT id, payment_id, to_status, {snapshot},
                              ROW_NUMBER() OVER (PARTITION BY payment_id ORDER BY id DESC) AS n
                       FROM {sql.event}) last ON last.payment_id = p.id AND last.n = 1
            WHERE last.id IS NULL OR last.to_status <> p.status OR {differs}
            ORDER BY p.id"""):
        pid, status, eid, to_status = row[:4]
        if eid is None:
            yield Violation("event_replay", pid, "has no events")
            continue
        detail = [f"status {status}, the log ends at {to_status}"] if to_status != status \
            else []
        for i, name in enumerate(amounts):
            current, logged = row[4 + 2 * i], row[5 + 2 * i]
            if current != logged:
                detail.append(f"{name} {current}, the log ends at {logged}")
        yield Violation("event_replay", pid, f"{'; '.join(detail)} (last event {eid})")


def _refund_replay(sql: _Sql) -> Iterator[Violation]:
    refund_id = sql.json_text("data", "refund")
    for rid, status, event_type in sql.rows(f"""
            SELECT r.id, r.status, last.type FROM {sql.refund} r
            LEFT JOIN (SELECT {refund_id} AS refund_id, type,
                              ROW_NUMBER() OVER (PARTITION BY {refund_id} ORDER BY id DESC) AS n
                       FROM {sql.event} WHERE type IN {_in(_REFUND_TYPES)}) last
                   ON last.refund_id = r.id AND last.n = 1
            WHERE last.type IS NULL OR r.status <> CASE last.type
                WHEN '{EventType.REFUND_CREATED.value}' THEN 'pending'
                ELSE SUBSTR(last.type, {len('refund.') + 1}) END
            ORDER BY r.id"""):
        if event_type is None:
            yield Violation("refund_replay", rid, "has no events")
        else:
            yield Violation("refund_replay", rid, f"status {status}, its last event is "
                            f"{event_type}")


def _outbox(sql: _Sql, since: dt.datetime | None) -> Iterator[Violation]:
    window = "AND e.created_at >= %s" if since else ""
    params = [since] if since else []
    webhook_statuses = _in(PAYMENT_WEBHOOK_EVENTS)
    # (more events than outbox rows of that type about that object: one is missing; old
    # outbox rows pruned by retention only make the count larger than the window's events)
    for pid, to_status, events, rows in sql.rows(f"""
            SELECT e.payment_id, e.to_status, COUNT(*), MAX(o.n) FROM {sql.event} e
            LEFT JOIN (SELECT object_id, type, COUNT(*) AS n FROM {sql.outbox}
                       GROUP BY object_id, type) o
                   ON o.object_id = e.payment_id AND o.type = 'payment.' || e.to_status
            WHERE e.from_status <> '' AND e.from_status <> e.to_status
              AND e.to_status IN {webhook_statuses} {window}
            GROUP BY e.payment_id, e.to_status
            HAVING COUNT(*) > COALESCE(MAX(o.n), 0)
            ORDER BY e.payment_id, e.to_status""", params):
        yield Violation("outbox", pid, f"{events} change(s) to {to_status}, "
                        f"{rows or 0} payment.{to_status} event(s) in the outbox")
    refund_id = sql.json_text("e.data", "refund")
    for rid, event_type, events, rows in sql.rows(f"""
            SELECT {refund_id}, e.type, COUNT(*), MAX(o.n) FROM {sql.event} e
            LEFT JOIN (SELECT object_id, type, COUNT(*) AS n FROM {sql.outbox}
                       GROUP BY object_id, type) o
                   ON o.object_id = {refund_id} AND o.type = e.type
            WHERE e.type IN {_in(REFUND_EVENTS.values())} {window}
            GROUP BY {refund_id}, e.type
            HAVING COUNT(*) > COALESCE(MAX(o.n), 0)
            ORDER BY 1, 2""", params):
        yield Violation("outbox", rid, f"{events} {event_type} change(s), {rows or 0} in the "
                        "outbox")
    for (pid,) in sql.rows(f"""
            SELECT p.id FROM {sql.payment} p WHERE p.needs_operator AND NOT EXISTS (
                SELECT 1 FROM {sql.outbox} o WHERE o.object_id = p.id AND o.type = %s)
            ORDER BY p.id""", [EventType.NEEDS_ATTENTION.value]):
        yield Violation("outbox", pid, f"flagged for an operator, no "
                        f"{EventType.NEEDS_ATTENTION.value} event in the outbox")


# --- secrets at rest -----------------------------------------------------------------------
def _vault(using: str) -> Iterator[Violation]:
    configured = set(settings.VAULT_KEYS)
    cards = (PaymentMethod.objects.using(using).order_by("pk")
             .values_list("id", "key_version", "encrypted_number", "encrypted_cvc", "last4",
                          "bin"))
    for pm_id, key_version, number, cvc, last4, bin_ in cards.iterator(chunk_size=2000):
        if key_version not in configured:
            yield Violation("vault", pm_id, f"under key {key_version!r}, which is not "
                            "configured (VAULT_KEYS)")
            continue
        try:
            digits = vault.decrypt(key_version, bytes(number), associated=pm_id)
        except Exception as exc:  # noqa: BLE001 - any failure to read it is the finding
            yield Violation("vault", pm_id, f"card number does not decrypt under key "
                            f"{key_version!r} ({type(exc).__name__})")
            continue
        if digits[-4:] != last4 or not digits.startswith(bin_):
            yield Violation("vault", pm_id, "decrypted number does not match its last4/BIN")
        if cvc is not None:
            try:
                vault.decrypt(key_version, bytes(cvc), associated=f"{pm_id}:cvc")
            except Exception as exc:  # noqa: BLE001
                yield Violation("vault", pm_id, f"kept CVC does not decrypt "
                                f"({type(exc).__name__})")


def _credentials(using: str) -> Iterator[Violation]:
    accounts = (ProviderAccount.objects.using(using).exclude(credentials_encrypted=b"")
                .order_by("pk").only("id", "credentials_encrypted", "credentials_key_version"))
    for account in accounts.iterator(chunk_size=500):
        try:
            account.get_credentials()
        except Exception as exc:  # noqa: BLE001
            yield Violation("credentials", account.pk, f"provider credentials do not decrypt "
                            f"under key {account.credentials_key_version!r} "
                            f"({type(exc).__name__})")
    endpoints = (WebhookEndpoint.objects.using(using).order_by("pk")
                 .only("id", "secrets_encrypted", "secrets_key_version"))
    for endpoint in endpoints.iterator(chunk_size=500):
        try:
            endpoint.stored_secrets()
        except Exception as exc:  # noqa: BLE001
            yield Violation("credentials", endpoint.pk, f"webhook signing secrets do not "
                            f"decrypt under key {endpoint.secrets_key_version!r} "
                            f"({type(exc).__name__})")


__all__ = ["RULES", "ConsistencyReport", "Violation", "consistency_check"]
