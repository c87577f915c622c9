"""Idempotency keys with Stripe's semantics, enforced by a Postgres unique constraint.

`claim` inserts the key in its own short transaction before any work starts. Of any number
of concurrent requests with one key exactly one insert succeeds; the others see the row and
get the stored response (finished), a 409 (still running) or a 400 (another body).

What a key keeps: the answer of a request that did something (`complete`). An answer that
changed nothing (a validation error, a state conflict, "try again shortly" before any
provider was asked) releases the key (`release`), so that the same key can be retried and
succeed once the condition clears.

A request whose process died leaves its key in flight. So that it does not answer 409
forever, the request records on its key the object it creates or starts changing
(`record_object`, called by the services in the transaction that writes it, under
`running`). A claim that finds the key in flight for longer than any request can last
(IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS) recovers it under the key's row lock: with no object
recorded, nothing was written, and the retry takes the key over and runs the request afresh;
with one, the retry answers from that object as it is now (status sync finishes or rolls back
whatever the dead request left unresolved) and stores that answer under the key.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from payments import vault
from payments.errors import InvalidRequest, PaymentsError, StateConflict
from payments.models import IdempotencyKey, Merchant

logger = logging.getLogger(__name__)


class IdempotencyKeyReused(PaymentsError):
    type = "idempotency_error"
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(PaymentsError):
    status = 409
    code = "idempotency_key_in_use"


@dataclass(frozen=True)
class Claim:
    row: IdempotencyKey
    replay: bool  # True: the request already ran; answer with the stored response
    # True: the request had died after it began; its answer was just made from the object it
    # recorded, and stored (row.response_status / row.response_body)
    recovered: bool = False


# (status, body) of the answer to a request that died after recording `object_id`
Recover = Callable[[str], tuple[int, object]]


def request_fingerprint(method: str, path: str, body: object, *, merchant_id: str = "") -> str:
    """A keyed hash of the request, without card data: a card number counts by its vault
    fingerprint (what the payment method stores anyway) and a CVC only by its presence, so
    that nothing kept under a key (24 h, and in backups) can give either back, even to
    someone who holds the fingerprint key."""
    canonical = json.dumps(_without_card_data(body, merchant_id), sort_keys=True,
                           separators=(",", ":"), default=str)
    message = f"idempotency\n{method} {path}\n{canonical}".encode()
    return hmac.new(settings.FINGERPRINT_KEY.encode(), message, hashlib.sha256).hexdigest()


def _without_card_data(value: object, merchant_id: str, *, in_card: bool = False) -> object:
    if isinstance(value, list):
        return [_without_card_data(item, merchant_id) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, object] = {}
    for key, item in value.items():
        if key == "cvc":
            out[key] = "<present>" if item not in (None, "") else item
        elif key == "number" and in_card and isinstance(item, str):
            out[key] = "<card " + vault.fingerprint(re.sub(r"[ -]", "", item),
                                                    merchant_id=merchant_id) + ">"
        else:
            out[key] = _without_card_data(item, merchant_id, in_card=key == "card")
    return out


def validate_key(key: str) -> str:
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable characters.",
                             code="idempotency_key_invalid", param="Idempotency-Key")
    return key


def claim(*, merchant: Merchant, livemode: bool, key: str, fingerprint: str,
          recover: Recover | None = None) -> Claim:
    """Claim the key for a request, or say how to answer it instead.

    `recover` makes the key recoverable: the request records its object (`record_object`),
    and `recover(object_id)` answers from that object if the request dies. Without it (an
    endpoint that records nothing) a key whose request died stays in flight (409).
    """
    row: IdempotencyKey | None
    for _ in range(3):
        try:
            with transaction.atomic():
                row = IdempotencyKey.objects.create(
                    merchant=merchant, livemode=livemode, key=key, fingerprint=fingerprint,
                    recoverable=recover is not None,
                )
            return Claim(row=row, replay=False)
        except IntegrityError:
            pass
        row = IdempotencyKey.objects.filter(merchant=merchant, livemode=livemode,
                                            key=key).first()
        if row is None:  # released (validation error) in between: try to claim it again
            continue
        if _expired(row) and (not row.in_flight or row.recoverable):
            IdempotencyKey.objects.filter(pk=row.pk, created_at=row.created_at).delete()
            continue
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request; use a new "
                "key for a new request.", param="Idempotency-Key")
        if row.in_flight:
            if recover is None or not row.recoverable or not _abandoned(row):
                raise _in_use()
            recovered = _recover(row, recover)
            if recovered is None:  # released or purged meanwhile: claim it again
                continue
            return recovered
        return Claim(row=row, replay=True)
    raise IdempotencyKeyInUse("This Idempotency-Key is contended; retry later.",
                              param="Idempotency-Key")


def _in_use() -> IdempotencyKeyInUse:
    return IdempotencyKeyInUse(
        "A request with this Idempotency-Key is still being processed; retry later.",
        param="Idempotency-Key")


def _expired(row: IdempotencyKey) -> bool:
    ttl = dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    return row.created_at < timezone.now() - ttl


def _abandoned(row: IdempotencyKey) -> bool:
    """In flight for longer than any request can last: its process died."""
    timeout = dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS)
    return row.created_at < timezone.now() - timeout


def _recover(row: IdempotencyKey, recover: Recover) -> Claim | None:
    """Recover the key of a request that died, under the key's row lock, so that of several
    retries doing it at once one recovers and the others see its result. The same lock is
    taken by `record_object` in the transaction that writes the dead request's object, so
    the object is either recorded (and answered from) or was never written."""
    with transaction.atomic():
        locked = IdempotencyKey.objects.select_for_update().filter(pk=row.pk).first()
        if locked is None:
            return None
        row = locked
        if not row.in_flight:  # another retry recovered it (or the request did finish)
            return Claim(row=row, replay=True)
        if not _abandoned(row):  # another retry took it over just now
            raise _in_use()
        now = timezone.now()
        if not row.object_id:
            # Nothing was written: run the request afresh, as this key's new claim. The new
            # created_at is the claim's identity (`complete`, `release`, `record_object`), so
            # the dead request can no longer write under it, were it only slow.
            logger.warning("idempotency key %s: its request died before doing anything; "
                           "a retry runs it again", row.pk)
            IdempotencyKey.objects.filter(pk=row.pk).update(created_at=now)
            row.created_at = now
            return Claim(row=row, replay=False)
        status, body = recover(row.object_id)
        logger.warning("idempotency key %s: its request died after it began on %s; a retry "
                       "answered %s from the object's current state", row.pk, row.object_id,
                       status)
        row.response_status, row.response_body, row.completed_at = status, body, now
        row.save(update_fields=["response_status", "response_body", "completed_at"])
        return Claim(row=row, replay=False, recovered=True)


def wedged(*, now: dt.datetime | None = None) -> QuerySet[IdempotencyKey]:
    """Keys in flight for longer than any request can last (IDEMPOTENCY_IN_FLIGHT_TIMEOUT_
    SECONDS): their request died. A recoverable one is recovered by the merchant's next
    retry; one that is not stays in flight (409) until an operator releases it."""
    timeout = dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS)
    return IdempotencyKey.objects.filter(completed_at__isnull=True,
                                         created_at__lt=(now or timezone.now()) - timeout)


def release_wedged(key: IdempotencyKey) -> IdempotencyKey:
    """An operator releases a key whose request died before it wrote anything: the key is
    forgotten, so that the merchant's retry with it runs the request afresh. Inside the
    caller's transaction, under the key's row lock (as `_recover`); refused (StateConflict,
    nothing changed) for a key that is finished, may still be running, or whose request
    recorded an object (running it again could charge twice). Returns the deleted row."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("release_wedged must run inside transaction.atomic()")
    row = IdempotencyKey.objects.select_for_update().filter(pk=key.pk).first()
    if row is None:
        raise StateConflict("This Idempotency-Key no longer exists (released or purged).",
                            changed_nothing=True)
    if not row.in_flight:
        raise StateConflict("This Idempotency-Key is finished: it replays its stored answer "
                            "and is not wedged.", changed_nothing=True)
    if not _abandoned(row):
        raise StateConflict("This Idempotency-Key's request may still be running (in flight "
                            f"for less than {settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS} "
                            "s).", changed_nothing=True)
    if row.object_id:
        if row.recoverable:
            raise StateConflict(f"This key's request began on {row.object_id}: the "
                                f"merchant's next retry with the key is answered from it; "
                                f"nothing to release.", changed_nothing=True)
        raise StateConflict(f"This key's request began on {row.object_id}: releasing the key "
                            f"would let a retry run the request again beside it. Settle "
                            f"{row.object_id} instead.", changed_nothing=True)
    IdempotencyKey.objects.filter(pk=row.pk).delete()
    logger.warning("idempotency key %s released by an operator", row.pk)
    return row


# The key of the request being handled (its row's pk and claim time), for `record_object`.
_running: contextvars.ContextVar[tuple[int, dt.datetime] | None] = contextvars.ContextVar(
    "idempotency_key", default=None)


@contextlib.contextmanager
def running(row: IdempotencyKey) -> Iterator[None]:
    """The request handled inside runs under this key: `record_object` records on it."""
    token = _running.set((row.pk, row.created_at))
    try:
        yield
    finally:
        _running.reset(token)


def record_object(obj: models.Model) -> None:
    """Record on the running request's Idempotency-Key (if it has one) the object it creates
    or starts changing. Call it in the transaction that writes the object, before any
    provider call: if the request dies, a retry answers from this object; with nothing
    recorded, a retry runs the request again, which is only safe because nothing of it was
    written. Raises (rolling that transaction back) if a retry has taken the key over."""
    running_key = _running.get()
    if running_key is None:
        return
    pk, claimed_at = running_key
    recorded = IdempotencyKey.objects.filter(
        pk=pk, created_at=claimed_at, completed_at__isnull=True).update(object_id=obj.pk)
    if not recorded:
        raise IdempotencyKeyInUse(
            "This request ran for so long that a retry with its Idempotency-Key took over; "
            "it stopped without changing anything.", param="Idempotency-Key")


def _own(row: IdempotencyKey) -> QuerySet[IdempotencyKey]:
    """The key's row while it is still this claim's: in flight, not taken over."""
    return IdempotencyKey.objects.filter(pk=row.pk, created_at=row.created_at,
                                         completed_at__isnull=True)


def complete(row: IdempotencyKey, *, status: int, body: object) -> None:
    """Store the response; from now on the key replays it."""
    _own(row).update(response_status=status, response_body=body,
                     completed_at=timezone.now())


def release(row: IdempotencyKey, *, status: int, body: object) -> None:
    """Forget the key (the request changed nothing), so the merchant may fix and retry. A
    request that recorded an object did change something, whatever its error says: its
    answer is stored instead."""
    deleted, _ = _own(row).filter(object_id="").delete()
    if not deleted:
        complete(row, status=status, body=body)


def purge_expired() -> int:
    """Delete keys past their retention; returns how many.

    A recoverable key still in flight that long belongs to a request that died long ago
    (whatever it left unresolved is status sync's); it goes like any other. A key that is not
    recoverable (claimed by code that did not record its object) is kept: retries keep
    getting 409 rather than re-running a request that may have charged, until an operator
    looks.
    """
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).exclude(
        completed_at__isnull=True, recoverable=False).delete()
    return deleted
