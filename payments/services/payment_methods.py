"""The card vault: tokenize once, keep the number encrypted, expose only safe fields."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import transaction

from payments import vault
from payments.audit import audit_record
from payments.cards import validate_card
from payments.errors import ResourceMissing
from payments.models import Merchant, Payment, PaymentMethod, WebhookEndpoint
from payments.services import idempotency
from providers.base import Card
from providers.ids import new_id
from providers.models import ProviderAccount

_Row = TypeVar("_Row", PaymentMethod, ProviderAccount, WebhookEndpoint)


@transaction.atomic
def payment_method_create(
    *,
    merchant: Merchant,
    livemode: bool,
    number: object,
    exp_month: object,
    exp_year: object,
    cvc: object = None,
    billing_details: dict[str, Any] | None = None,
) -> PaymentMethod:
    """Vault a card. The CVC, if given, is kept encrypted only until the card's first
    authorization starts (`card_for_authorization`), then erased."""
    digits, brand = validate_card(number, exp_month, exp_year, cvc)
    assert isinstance(exp_month, int) and isinstance(exp_year, int)  # checked just above
    pm_id = new_id("pm")
    key_version, blob = vault.encrypt(digits, associated=pm_id)
    encrypted_cvc = None
    if cvc:
        cvc_key, encrypted_cvc = vault.encrypt(str(cvc), associated=_cvc_context(pm_id))
        assert cvc_key == key_version  # one active key encrypts both
    pm = PaymentMethod.objects.create(
        id=pm_id,
        merchant=merchant,
        livemode=livemode,
        brand=brand,
        last4=digits[-4:],
        bin=digits[:6],
        exp_month=exp_month,
        exp_year=exp_year,
        fingerprint=vault.fingerprint(digits, merchant_id=merchant.id),
        encrypted_number=blob,
        key_version=key_version,
        encrypted_cvc=encrypted_cvc,
        billing_details=billing_details or {},
    )
    idempotency.record_object(pm)
    return pm


def _cvc_context(pm_id: str) -> str:
    return f"{pm_id}:cvc"


def payment_method_get(*, merchant: Merchant, livemode: bool, pm_id: object,
                       param: str | None = None) -> PaymentMethod:
    pm = None
    if isinstance(pm_id, str):
        pm = PaymentMethod.objects.filter(id=pm_id, merchant=merchant, livemode=livemode).first()
    if pm is None:
        raise ResourceMissing(f"No such payment_method: {str(pm_id)[:60]!r}", param=param)
    return pm


def card_for_provider(pm: PaymentMethod, *, cvc: str | None = None) -> Card:
    """Decrypt the card for one provider call. The result lives in memory only."""
    number = vault.decrypt(pm.key_version, pm.encrypted_number, associated=pm.id)
    return Card(number=number, exp_month=pm.exp_month, exp_year=pm.exp_year, brand=pm.brand,
                cvc=cvc)


def card_for_payment(payment: Payment) -> Card:
    """The card of a confirmed payment, for a later call about its authorization (a lookup
    replays it, a stalled loop resumes it). A payment is confirmed with its card."""
    if payment.payment_method is None:
        raise ValueError(f"payment {payment.pk} has no payment method: it was never confirmed")
    return card_for_provider(payment.payment_method)


def card_for_authorization(card: Card, pm: PaymentMethod, *, cvc: str | None = None) -> Card:
    """`card` (`pm` decrypted) for an authorization that is starting, with its CVC: the one
    the merchant sent with this request (memory only), else the one kept since the card was
    vaulted, which is erased now. Call inside the transaction that starts the authorization,
    so that the CVC is erased exactly when it is used (and kept if that transaction rolls
    back). Only the first authorization of a card ever gets the stored CVC."""
    if "encrypted_cvc" not in pm.get_deferred_fields() and pm.encrypted_cvc is None:
        # Nothing to erase, now or later: a CVC is kept only when the card is vaulted (and
        # re-encrypted only where one is kept), so a card read without one has none.
        return dataclasses.replace(card, cvc=cvc)
    stored = PaymentMethod.objects.select_for_update().filter(pk=pm.pk).values_list(
        "key_version", "encrypted_cvc").first()
    if stored is not None and stored[1] is not None:
        PaymentMethod.objects.filter(pk=pm.pk).update(encrypted_cvc=None)
        if cvc is None:
            try:
                cvc = vault.decrypt(stored[0], bytes(stored[1]),
                                    associated=_cvc_context(pm.pk))
            except Exception:  # noqa: BLE001 - a CVC that cannot be read is no CVC
                cvc = None
    return dataclasses.replace(card, cvc=cvc)


def payment_methods_erase_stale_cvcs(*, now: dt.datetime | None = None) -> int:
    """Erase the CVCs of cards vaulted more than CVC_RETENTION_HOURS ago and never
    authorized: a CVC is kept only for the card's first authorization, and not for a card
    that may never have one. Returns how many."""
    from django.conf import settings
    from django.utils import timezone

    cutoff = (now or timezone.now()) - dt.timedelta(hours=settings.CVC_RETENTION_HOURS)
    return PaymentMethod.objects.filter(encrypted_cvc__isnull=False,
                                        created_at__lt=cutoff).update(encrypted_cvc=None)


def _reencrypt_rows(model: type[_Row], *, key_field: str, batch_size: int,
                    reencrypt: Callable[[_Row], list[str]], skip_empty: str = "") -> int:
    """Re-encrypt the rows of `model` not under the active vault key, `batch_size` rows per
    short transaction, skipping rows other transactions hold locked (SKIP LOCKED: a
    payment in flight is never waited on, nor made to wait); returns how many. Rows skipped
    are left for the next pass (`vault_keys_rotate` makes passes until none is left).

    Runs online: a row stays readable under its old key until its transaction commits it
    under the new one, and only the encrypted fields are written (a concurrent change to
    any other field is never overwritten)."""
    from django.conf import settings

    active = settings.VAULT_ACTIVE_KEY
    done = 0
    while True:
        with transaction.atomic():
            rows = model.objects.select_for_update(skip_locked=True).exclude(
                **{key_field: active})
            if skip_empty:
                rows = rows.exclude(**{skip_empty: b""})
            batch = list(rows.order_by("pk")[:batch_size])
            for row in batch:
                row.save(update_fields=reencrypt(row))
        done += len(batch)
        if not batch:
            return done


def _reencrypt_card(pm: PaymentMethod) -> list[str]:
    number = vault.decrypt(pm.key_version, pm.encrypted_number, associated=pm.id)
    cvc = None
    if pm.encrypted_cvc is not None:
        cvc = vault.decrypt(pm.key_version, bytes(pm.encrypted_cvc),
                            associated=_cvc_context(pm.id))
    pm.key_version, pm.encrypted_number = vault.encrypt(number, associated=pm.id)
    if cvc is not None:
        _, pm.encrypted_cvc = vault.encrypt(cvc, associated=_cvc_context(pm.id))
    return ["key_version", "encrypted_number", "encrypted_cvc"]


def _reencrypt_account(account: ProviderAccount) -> list[str]:
    account.set_credentials(account.get_credentials())
    return ["credentials_encrypted", "credentials_key_version"]


def _reencrypt_endpoint(endpoint: WebhookEndpoint) -> list[str]:
    stored = endpoint.stored_secrets()
    endpoint.set_secrets(stored["current"], previous=stored.get("previous", ""))
    return ["secrets_encrypted", "secrets_key_version"]


def payment_methods_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypt every card (and kept CVC) not under the active vault key; how many."""
    return _reencrypt_rows(PaymentMethod, key_field="key_version", batch_size=batch_size,
                           reencrypt=_reencrypt_card)


def provider_credentials_reencrypt(*, batch_size: int = 1) -> int:
    """Re-encrypt provider-account credentials not under the active vault key, one account
    per transaction by default (an account row is also written by health probes and
    operators)."""
    return _reencrypt_rows(ProviderAccount, key_field="credentials_key_version",
                           batch_size=batch_size, reencrypt=_reencrypt_account,
                           skip_empty="credentials_encrypted")


def webhook_endpoints_reencrypt(*, batch_size: int = 1) -> int:
    """Re-encrypt webhook endpoints' signing secrets not under the active vault key."""
    return _reencrypt_rows(WebhookEndpoint, key_field="secrets_key_version",
                           batch_size=batch_size, reencrypt=_reencrypt_endpoint)


class RotationIncomplete(Exception):
    """Rows are still under old keys after every pass (held locked throughout, or written
    back under an old key by a process still configured with it)."""


def vault_keys_by_version() -> dict[str, dict[str, int]]:
    """How many cards, webhook endpoints and provider accounts are under each key that is
    not the active one (empty dicts: everything is under the active key)."""
    from django.conf import settings
    from django.db.models import Count

    active = settings.VAULT_ACTIVE_KEY
    cards = (PaymentMethod.objects.exclude(key_version=active).values("key_version")
             .annotate(n=Count("pk")).order_by("key_version"))
    accounts = (ProviderAccount.objects.exclude(credentials_key_version=active)
                .exclude(credentials_encrypted=b"").values("credentials_key_version")
                .annotate(n=Count("pk")).order_by("credentials_key_version"))
    endpoints = (WebhookEndpoint.objects.exclude(secrets_key_version=active)
                 .values("secrets_key_version").annotate(n=Count("pk"))
                 .order_by("secrets_key_version"))
    return {"cards": {row["key_version"]: row["n"] for row in cards},
            "webhook_endpoints": {row["secrets_key_version"]: row["n"] for row in endpoints},
            "provider_accounts": {row["credentials_key_version"]: row["n"]
                                  for row in accounts}}


def _wait_for_locked_rows(seconds: float) -> None:
    """Between passes, while rows are left that others hold locked (tests replace it)."""
    import time

    time.sleep(seconds)


def vault_keys_rotate(*, actor: str, reason: str = "", batch_size: int = 500,
                      passes: int = 10, pause_seconds: float = 1.0) -> tuple[int, int]:
    """Re-encrypt cards, provider credentials and webhook signing secrets under the active
    vault key (`rotate_keys`), online, while the service runs; returns (cards, provider
    accounts). Passes are made until nothing is left under an old key (rows held locked by
    others are skipped, then retried after `pause_seconds`), at most `passes`. One audit row
    summarizes it. If rows are still under old keys at the end, the audit row says "failed"
    with what is left, and RotationIncomplete is raised: the old key must stay configured
    (running it again finishes the job)."""
    from django.conf import settings

    active = settings.VAULT_ACTIVE_KEY
    before = vault_keys_by_version()
    cards = accounts = endpoints = 0
    try:
        for n in range(passes):
            cards += payment_methods_reencrypt(batch_size=batch_size)
            accounts += provider_credentials_reencrypt()
            endpoints += webhook_endpoints_reencrypt()
            left = vault_keys_by_version()
            if not any(left.values()):
                break
            if n + 1 < passes:
                _wait_for_locked_rows(pause_seconds)
        else:
            raise RotationIncomplete(
                f"still under old keys after {passes} passes: {left}; keep the old key "
                "configured and run rotate_keys again")
        with transaction.atomic():
            audit_record(actor=actor, action="vault.rotate_keys", object_type="vault_key",
                         object_id=active, reason=reason, before={"under_old_keys": before},
                         after={"active_key": active, "cards": cards,
                                "provider_accounts": accounts,
                                "webhook_endpoints": endpoints})
    except Exception as exc:
        with transaction.atomic():
            audit_record(actor=actor, action="vault.rotate_keys", object_type="vault_key",
                         object_id=active, reason=reason, before={"under_old_keys": before},
                         after={"active_key": active, "cards": cards,
                                "provider_accounts": accounts,
                                "webhook_endpoints": endpoints,
                                "under_old_keys": vault_keys_by_version()},
                         outcome=f"failed: {type(exc).__name__}")
        raise
    return cards, accounts
