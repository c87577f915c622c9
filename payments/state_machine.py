"""Where a payment, an attempt, a capture/void or a refund changes state. Nothing else
writes `status`.

Each transition locks the row (`select_for_update`), checks the allowed-transitions table
below, applies the field updates, and (payments and refunds) appends a `PaymentEvent` (the
event log replays to the current state) and writes the merchant-webhook event to the outbox,
all in one transaction. Lock order everywhere: the payment, then its attempt, modification
or refund.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import transaction
from django.db.models import Prefetch, prefetch_related_objects
from django.utils import timezone

from payments.api.serializers import PaymentOutput, RefundOutput
from payments.errors import StateConflict
from payments.events import REFUND_EVENTS, EventType
from payments.models import (
    AttemptStatus,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookOutbox,
)
from payments.services.nudge import webhooks_nudge
from providers.ids import new_id
from providers.models import ProviderAccount

S = PaymentStatus

# from-status → the statuses it may move to. Terminal statuses have no way out.
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    S.REQUIRES_CONFIRMATION: frozenset({S.PROCESSING, S.CANCELED}),
    # processing: a provider call is in flight (authorization, capture or void)
    S.PROCESSING: frozenset(
        {S.REQUIRES_CAPTURE, S.SUCCEEDED, S.FAILED, S.CANCELED, S.UNRESOLVED}
    ),
    S.REQUIRES_CAPTURE: frozenset({S.PROCESSING}),
    # unresolved: the provider may have moved money; only its answer (status sync) or an
    # operator decides what happened
    # (processing: the provider said it never charged, and failover goes on)
    S.UNRESOLVED: frozenset({S.PROCESSING, S.REQUIRES_CAPTURE, S.SUCCEEDED, S.FAILED,
                             S.CANCELED}),
    S.SUCCEEDED: frozenset(),
    S.CANCELED: frozenset(),
    S.FAILED: frozenset(),
}
TERMINAL_PAYMENT_STATUSES = frozenset(s for s, nxt in PAYMENT_TRANSITIONS.items() if not nxt)

R = RefundStatus
REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    R.PENDING: frozenset({R.SUCCEEDED, R.FAILED, R.UNRESOLVED}),
    # (pending: the provider turned out to have it, and confirms it later)
    R.UNRESOLVED: frozenset({R.PENDING, R.SUCCEEDED, R.FAILED}),
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset(),
}

A = AttemptStatus
ATTEMPT_TRANSITIONS: dict[str, frozenset[str]] = {
    # sent, no answer yet: the answer decides; a process that died mid-call leaves it unknown
    A.PENDING: frozenset({A.AUTHORIZED, A.CAPTURED, A.DECLINED, A.FAILED, A.UNKNOWN}),
    # the provider may have charged: its answer (lookup, webhook, release) decides; a charge
    # the payment must not keep is reversed
    A.UNKNOWN: frozenset({A.AUTHORIZED, A.CAPTURED, A.DECLINED, A.FAILED, A.REVERSED}),
    A.AUTHORIZED: frozenset({A.CAPTURED, A.VOIDED}),
    # a released attempt (nothing held) whose charge the provider reported after all
    A.FAILED: frozenset({A.REVERSED}),
    A.CAPTURED: frozenset(),
    A.DECLINED: frozenset(),
    A.VOIDED: frozenset(),
    A.REVERSED: frozenset(),
}

M = ModificationStatus
MODIFICATION_TRANSITIONS: dict[str, frozenset[str]] = {
    M.PENDING: frozenset({M.SUCCEEDED, M.FAILED, M.UNKNOWN}),
    # (pending: the provider turned out to have it, and confirms it later)
    M.UNKNOWN: frozenset({M.PENDING, M.SUCCEEDED, M.FAILED}),
    M.SUCCEEDED: frozenset(),
    M.FAILED: frozenset(),
}

# Which payment statuses merchants hear about by webhook (and see in /v1/events).
PAYMENT_WEBHOOK_EVENTS: dict[str, str] = {
    S.PROCESSING: "payment.processing",
    S.REQUIRES_CAPTURE: "payment.requires_capture",
    S.SUCCEEDED: "payment.succeeded",
    S.FAILED: "payment.failed",
    S.CANCELED: "payment.canceled",
    S.UNRESOLVED: "payment.unresolved",
}

# Fields that a transition snapshots into the event, so the log replays to the current state.
_SNAPSHOT_FIELDS = ("amount_capturable", "amount_captured", "amount_refunded")


# --- row locks held by this transaction ------------------------------------------------------
# A payment is locked (and read) once per transaction: `lock_payment` called again for a row
# this transaction already holds returns the instance it locked, which every write of the
# state machine goes through, so it is the row as the database has it (nobody else can change
# a locked row). It is read again when that cannot be vouched for: the lock was taken in a
# savepoint since closed (released or rolled back: a rolled-back savepoint also drops the row
# locks taken in it), a write made through it was rolled back with its savepoint, or the
# transaction ended. (Each lock and write registers a no-op on_commit callback: Django drops
# the callbacks of a savepoint that rolls back and all of them when the transaction ends.)


@dataclass
class _Held:
    payment: Payment
    blocks: tuple[int, ...]  # the atomic blocks open when it was locked (their ids)
    savepoints: tuple[str | None, ...]
    markers: list[Callable[[], None]]


def _marker() -> Callable[[], None]:
    def marker() -> None:
        pass
    transaction.on_commit(marker)
    return marker


def _held_locks() -> dict[str, _Held]:
    """This transaction's locked payments (a fresh table once the transaction changed)."""
    connection = transaction.get_connection()
    table: tuple[Callable[[], None], dict[str, _Held]] | None = getattr(
        connection, "_switchyard_held_payments", None)
    if table is None or not _pending(connection, table[0]):
        table = (_marker(), {})
        connection._switchyard_held_payments = table
    return table[1]


def _pending(connection: Any, marker: Callable[[], None]) -> bool:
    return any(func is marker for _, func, _ in connection.run_on_commit)


def _held(payment_id: str) -> Payment | None:
    """The instance this transaction locked `payment_id` through, if it still holds it."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return None
    entry = _held_locks().get(payment_id)
    if entry is None:
        return None
    open_blocks = tuple(id(block) for block in connection.atomic_blocks)
    open_savepoints = tuple(connection.savepoint_ids)
    if open_blocks[:len(entry.blocks)] != entry.blocks \
            or open_savepoints[:len(entry.savepoints)] != entry.savepoints \
            or not all(_pending(connection, marker) for marker in entry.markers):
        return None
    return entry.payment


def _hold(payment: Payment) -> None:
    connection = transaction.get_connection()
    _held_locks()[payment.pk] = _Held(
        payment=payment, blocks=tuple(id(block) for block in connection.atomic_blocks),
        savepoints=tuple(connection.savepoint_ids), markers=[_marker()])


def _wrote(payment: Payment) -> None:
    """A write through the held instance: if its savepoint rolls back, read the row again."""
    entry = _held_locks().get(payment.pk)
    if entry is not None and entry.payment is payment:
        entry.markers.append(_marker())


def _written_here(payment: Payment) -> bool:
    """Has this transaction saved the payment through `payment` (the instance it holds)?"""
    entry = _held_locks().get(payment.pk)
    return entry is not None and entry.payment is payment and len(entry.markers) > 1 \
        and _held(payment.pk) is payment


def _attname(name: str) -> str:
    field = Payment._meta.get_field(name)
    return str(getattr(field, "attname", name))


def lock_payment(payment_id: str) -> Payment:
    """The payment row, locked until the surrounding transaction ends (read once per
    transaction, see above), with its provider account (not locked)."""
    held = _held(payment_id)
    if held is not None:
        return held
    locked = (Payment.objects.select_for_update(of=("self",)).select_related("provider_account")
              .get(pk=payment_id))
    _hold(locked)
    return locked


def attempts_changed(payment_id: str) -> None:
    """An attempt of the payment was written: what the held instance prefetched of them (for
    the outbox) is out of date."""
    held = _held(payment_id)
    if held is not None:
        getattr(held, "_prefetched_objects_cache", {}).pop("attempts", None)


def transition_payment(
    payment: Payment,
    to_status: str | None,
    *,
    event: str,
    actor: str = "api",
    updates: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Payment:
    """Move a payment to `to_status` (None: same status, e.g. a refund booked on it).

    Call it inside `transaction.atomic()`; it locks and re-reads the row itself, so the check
    against the table is made on the committed state, never on a stale copy.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transition_payment must run inside transaction.atomic()")
    locked = lock_payment(payment.pk)
    from_status = locked.status
    if to_status is not None:
        # An explicit target is a transition, even the same status: only the table decides
        # (a second "succeeded" must not pass silently and book a capture twice).
        if to_status not in PAYMENT_TRANSITIONS[from_status]:
            raise StateConflict(
                f"This payment is {from_status}; it cannot become {to_status}.",
            )
    elif from_status in TERMINAL_PAYMENT_STATUSES and from_status != S.SUCCEEDED:
        # a succeeded payment still books refunds; other terminal payments never change
        raise StateConflict(f"This payment is {from_status} and can no longer change.")

    before = {name: getattr(locked, _attname(name)) for name in updates or {}}
    for name, value in (updates or {}).items():
        setattr(locked, name, value)
    if to_status is not None:
        locked.status = to_status
    if to_status is not None or not _written_here(locked) or any(
            getattr(locked, _attname(name)) != value for name, value in before.items()):
        locked.save()
        _wrote(locked)
    # (else: an event that changes nothing on a row this transaction has just saved, e.g.
    # the first attempt started with the confirmation: the row is already as it must be)

    snapshot = {name: getattr(locked, name) for name in _SNAPSHOT_FIELDS}
    PaymentEvent.objects.create(
        payment=locked,
        type=event,
        from_status=from_status,
        to_status=locked.status,
        actor=actor,
        data={**(data or {}), **snapshot},
    )
    if to_status is not None and to_status in PAYMENT_WEBHOOK_EVENTS:
        _outbox(locked, PAYMENT_WEBHOOK_EVENTS[to_status])
    payment.__dict__.update(locked.__dict__)
    return locked


def transition_refund(
    refund: Refund,
    to_status: str,
    *,
    actor: str = "api",
    updates: dict[str, Any] | None = None,
) -> Refund:
    """Move a refund to `to_status`; books a succeeded refund on its payment atomically."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("transition_refund must run inside transaction.atomic()")
    # Lock order everywhere: payment first, then its refund.
    payment = lock_payment(refund.payment_id)
    locked = Refund.objects.select_for_update().get(pk=refund.pk)
    if to_status not in REFUND_TRANSITIONS[locked.status]:
        raise StateConflict(f"This refund is {locked.status}; it cannot become {to_status}.")
    from_status = locked.status
    for name, value in (updates or {}).items():
        setattr(locked, name, value)
    locked.status = to_status
    locked.save()

    payment_updates = {}
    if to_status == R.SUCCEEDED:
        payment_updates["amount_refunded"] = payment.amount_refunded + locked.amount
    transition_payment(
        payment,
        None,
        event=REFUND_EVENTS[to_status],
        actor=actor,
        updates=payment_updates,
        data={"refund": locked.id, "amount": locked.amount, "from_status": from_status},
    )
    _outbox(locked, REFUND_EVENTS[to_status])
    refund.__dict__.update(locked.__dict__)
    return locked


def transition_attempt(attempt: PaymentAttempt, to_status: str | None, *,
                       updates: dict[str, Any] | None = None) -> PaymentAttempt:
    """Move an attempt to `to_status` (None: same status, other fields only), after the
    table. Call inside `transaction.atomic()` with its payment locked first; the row is
    locked and re-read here and only the named fields are written."""
    return _transition(PaymentAttempt, ATTEMPT_TRANSITIONS, attempt, to_status, updates)


def transition_modification(modification: Modification, to_status: str | None, *,
                            updates: dict[str, Any] | None = None) -> Modification:
    """Move a capture or void to `to_status`, as `transition_attempt` does an attempt."""
    return _transition(Modification, MODIFICATION_TRANSITIONS, modification, to_status,
                       updates)


_Row = TypeVar("_Row", PaymentAttempt, Modification)


def _transition(model: type[_Row], table: dict[str, frozenset[str]], row: _Row,
                to_status: str | None, updates: dict[str, Any] | None) -> _Row:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("a transition must run inside transaction.atomic()")
    locked = model.objects.select_for_update().get(pk=row.pk)
    if to_status is not None and to_status not in table[locked.status]:
        raise StateConflict(f"This {model._meta.verbose_name} is {locked.status}; it cannot "
                            f"become {to_status}.")
    fields: dict[str, Any] = dict(updates or {})
    if to_status is not None:
        fields["status"] = to_status
    for name, value in fields.items():
        setattr(locked, name, value)
    if fields:
        locked.save(update_fields=[*fields, "updated_at"])
        attempts_changed(locked.payment_id)
    # the caller's instance keeps the related rows it had loaded (they did not change)
    locked._state.fields_cache = {**row._state.fields_cache, **locked._state.fields_cache}
    row.__dict__.update(locked.__dict__)
    return locked


def _outbox(obj: Payment | Refund, event_type: str) -> None:
    """Write the merchant event announcing `obj`'s change: a Stripe-shaped envelope around
    the object exactly as the API returns it now (the relay sends this body as it is, and
    /v1/events returns it)."""
    event_id = new_id("evt")
    created = timezone.now()
    if isinstance(obj, Payment):
        # the attempts with their accounts in one query (the serializer would read each
        # attempt's account on its own); kept on the instance for the API's answer, until an
        # attempt is written (`attempts_changed`)
        if "attempts" not in getattr(obj, "_prefetched_objects_cache", {}):
            prefetch_related_objects([obj], Prefetch(
                "attempts", queryset=PaymentAttempt.objects.select_related("provider_account")))
    representation = (PaymentOutput(obj) if isinstance(obj, Payment) else RefundOutput(obj)).data
    WebhookOutbox.objects.create(
        event_id=event_id,
        merchant_id=obj.merchant_id,
        livemode=obj.livemode,
        type=event_type,
        object_id=obj.pk,
        created_at=created,
        payload={"id": event_id, "object": "event", "type": event_type,
                 "created": int(created.timestamp()), "livemode": obj.livemode,
                 "data": {"object": dict(representation)}},
    )
    # out within a second or so; the beat task relays whatever a lost nudge leaves
    transaction.on_commit(webhooks_nudge)


def start_attempt(payment: Payment, account: ProviderAccount, **fields: Any) -> PaymentAttempt:
    """Insert a new attempt of the payment (locked by the caller) at `account`."""
    attempt = PaymentAttempt.objects.create(payment=payment, provider_account=account,
                                            status=AttemptStatus.PENDING, **fields)
    attempts_changed(payment.pk)
    return attempt


def record_event(payment: Payment, event: str, *, actor: str, data: dict[str, Any]) -> None:
    """Append an event that changes neither status nor amounts (allowed in any status, e.g.
    a duplicate charge reversed on a failed payment)."""
    locked = lock_payment(payment.pk)
    PaymentEvent.objects.create(
        payment=locked, type=event, from_status=locked.status, to_status=locked.status,
        actor=actor, data={**data, **{name: getattr(locked, name) for name in _SNAPSHOT_FIELDS}})


def flag_for_operator(payment_id: str, event: str, *, actor: str, data: dict[str, Any],
                      once_by: tuple[str, ...] = ()) -> bool:
    """Flag the payment for an operator (`needs_operator`), recording `event` once per
    payment, or once per value of the `once_by` data fields, however often it is raised.
    Call inside a transaction. True when the event was recorded now."""
    locked = lock_payment(payment_id)
    new = not locked.events.filter(
        type=event, **{f"data__{name}": data[name] for name in once_by}).exists()
    if new:
        record_event(locked, event, actor=actor, data=data)
    if not locked.needs_operator:
        locked.needs_operator = True
        Payment.objects.filter(pk=locked.pk).update(needs_operator=True)
        _outbox(locked, EventType.NEEDS_ATTENTION)
    return new


def clear_operator_flag(payment_id: str, *, actor: str, reason: str) -> bool:
    """An operator has dealt with the payment: clear `needs_operator`, with an event saying
    who and why. Call inside a transaction. False when it was not flagged."""
    locked = lock_payment(payment_id)
    if not locked.needs_operator:
        return False
    Payment.objects.filter(pk=locked.pk).update(needs_operator=False)
    locked.needs_operator = False
    record_event(locked, EventType.OPERATOR_FLAG_CLEARED, actor=actor, data={"reason": reason})
    return True


def replay_events(payment: Payment) -> dict[str, Any]:
    """Fold the payment's event log into the state it describes (for consistency checks)."""
    state: dict[str, Any] = {"status": None}
    for event in payment.events.order_by("id"):
        if state["status"] is not None and event.from_status != state["status"]:
            raise ValueError(f"event {event.id} starts from {event.from_status}, "
                             f"log was at {state['status']}")
        state["status"] = event.to_status
        for name in _SNAPSHOT_FIELDS:
            state[name] = event.data.get(name, state.get(name))
    return state


def create_processing_payment(*, account: ProviderAccount, actor: str,
                              confirmed: dict[str, Any], attempt_fields: dict[str, Any],
                              **fields: Any) -> tuple[Payment, PaymentAttempt]:
    """`create_payment`, its transition to `processing` (CONFIRMED, with `confirmed` as the
    event's data) and `start_attempt` at `account` with its ATTEMPT_STARTED event, for a
    payment created and confirmed at once: the same rows, events and outbox row as those
    three steps, with one INSERT per table. Call inside `transaction.atomic()`."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("create_processing_payment must run inside transaction.atomic()")
    assert S.PROCESSING in PAYMENT_TRANSITIONS[S.REQUIRES_CONFIRMATION]
    payment = Payment(status=S.PROCESSING, provider_account=account, **fields)
    payment.save(force_insert=True)
    _hold(payment)  # as create_payment: nobody else sees it before this transaction commits
    payment._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "attempts": _no_attempts(payment)}
    attempt = PaymentAttempt(payment=payment, provider_account=account,
                             status=AttemptStatus.PENDING, **attempt_fields)
    attempt.save(force_insert=True)
    snapshot = {name: getattr(payment, name) for name in _SNAPSHOT_FIELDS}
    PaymentEvent.objects.bulk_create([
        PaymentEvent(payment=payment, type=EventType.CREATED, from_status="",
                     to_status=S.REQUIRES_CONFIRMATION, data=snapshot),
        PaymentEvent(payment=payment, type=EventType.CONFIRMED,
                     from_status=S.REQUIRES_CONFIRMATION, to_status=S.PROCESSING, actor=actor,
                     data={**confirmed, **snapshot}),
        PaymentEvent(payment=payment, type=EventType.ATTEMPT_STARTED, from_status=S.PROCESSING,
                     to_status=S.PROCESSING, actor=actor,
                     data={"attempt": attempt.id, "provider": account.name, **snapshot}),
    ])
    # the merchant's payment.processing, as the CONFIRMED transition writes it: before the
    # attempt started
    _outbox(payment, PAYMENT_WEBHOOK_EVENTS[S.PROCESSING])
    attempts_changed(payment.pk)
    return payment, attempt


def _no_attempts(payment: Payment) -> Any:
    """The prefetched attempts of a payment that has none yet; a query derived from it
    (filter, values) still goes to the database."""
    attempts = PaymentAttempt.objects.filter(payment=payment)
    attempts._result_cache = []
    return attempts


def create_payment(**fields: Any) -> Payment:
    """Insert a new payment in `requires_confirmation` with its first event."""
    payment = Payment.objects.create(status=S.REQUIRES_CONFIRMATION, **fields)
    # nobody else sees the row before this transaction commits: as good as locked by it
    _hold(payment)
    # and it has no attempt yet: the outbox need not ask (`start_attempt` adds them)
    payment._prefetched_objects_cache = {  # type: ignore[attr-defined]
        "attempts": _no_attempts(payment)}
    PaymentEvent.objects.create(
        payment=payment,
        type=EventType.CREATED,
        from_status="",
        to_status=payment.status,
        data={name: getattr(payment, name) for name in _SNAPSHOT_FIELDS},
    )
    return payment
