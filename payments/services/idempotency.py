"""Idempotency keys with Stripe's semantics, enforced by a Postgres unique constraint.

`claim` inserts the key in its own short transaction before any work starts. Of any number
of concurrent requests with one key exactly one insert succeeds; the others see the row and
get the stored response (finished), a 409 (still running) or a 400 (another body).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments.errors import InvalidRequest, PaymentsError
from payments.models import IdempotencyKey, Merchant


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


def request_fingerprint(method: str, path: str, body: object) -> str:
    """A keyed hash of the request. Keyed, because a body may hold a card number and a CVC,
    and a plain hash of a card number can be reversed by trying every number of a BIN."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    message = f"idempotency\n{method} {path}\n{canonical}".encode()
    return hmac.new(settings.FINGERPRINT_KEY.encode(), message, hashlib.sha256).hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable characters.",
                             code="idempotency_key_invalid", param="Idempotency-Key")
    return key


def claim(*, merchant: Merchant, livemode: bool, key: str, fingerprint: str) -> Claim:
    for _ in range(3):
        try:
            with transaction.atomic():
                row = IdempotencyKey.objects.create(
                    merchant=merchant, livemode=livemode, key=key, fingerprint=fingerprint
                )
            return Claim(row=row, replay=False)
        except IntegrityError:
            pass
        row = IdempotencyKey.objects.filter(merchant=merchant, livemode=livemode,
                                            key=key).first()
        if row is None:  # released (validation error) in between: try to claim it again
            continue
        if _expired(row) and not row.in_flight:
            IdempotencyKey.objects.filter(pk=row.pk, created_at=row.created_at).delete()
            continue
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request; use a new "
                "key for a new request.", param="Idempotency-Key")
        if row.in_flight:
            raise IdempotencyKeyInUse(
                "A request with this Idempotency-Key is still being processed; retry later.",
                param="Idempotency-Key")
        return Claim(row=row, replay=True)
    raise IdempotencyKeyInUse("This Idempotency-Key is contended; retry later.",
                              param="Idempotency-Key")


def _expired(row: IdempotencyKey) -> bool:
    ttl = dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    return row.created_at < timezone.now() - ttl


def complete(row: IdempotencyKey, *, status: int, body: object) -> None:
    """Store the response; from now on the key replays it."""
    IdempotencyKey.objects.filter(pk=row.pk).update(
        response_status=status, response_body=body, completed_at=timezone.now()
    )


def release(row: IdempotencyKey) -> None:
    """Forget the key (the request changed nothing), so the merchant may fix and retry."""
    IdempotencyKey.objects.filter(pk=row.pk).delete()


def purge_expired() -> int:
    """Delete finished keys past their retention; returns how many.

    A key still in flight past its retention belongs to a request whose process died; it is
    kept (retries keep getting 409) rather than freed, because a retry that re-executed the
    request could charge again: an operator looks at the payment first.
    """
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff,
                                               completed_at__isnull=False).delete()
    return deleted
