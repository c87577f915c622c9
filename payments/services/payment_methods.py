"""The card vault: tokenize once, keep the number encrypted, expose only safe fields."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.db import transaction

from payments import vault
from payments.audit import audit_record
from payments.cards import validate_card
from payments.errors import ResourceMissing
from payments.models import Merchant, Payment, PaymentMethod, WebhookEndpoint
from payments.services import idempotency
from payments.services.webhook_endpoints import webhook_endpoints_reencrypt
from providers.base import Card
from providers.ids import new_id


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


def payment_methods_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypt every card not under the active vault key; returns how many.

    Runs online: each batch is a short transaction that skips rows locked by others, and a
    card is readable under its old key until its row commits under the new one.
    """
    from django.conf import settings

    active = settings.VAULT_ACTIVE_KEY
    done = 0
    while True:
        with transaction.atomic():
            batch = list(
                PaymentMethod.objects.select_for_update(skip_locked=True)
                .exclude(key_version=active)
                .order_by("pk")[:batch_size]
            )
            for pm in batch:
                number = vault.decrypt(pm.key_version, pm.encrypted_number, associated=pm.id)
                cvc = None
                if pm.encrypted_cvc is not None:
                    cvc = vault.decrypt(pm.key_version, bytes(pm.encrypted_cvc),
                                        associated=_cvc_context(pm.id))
                pm.key_version, pm.encrypted_number = vault.encrypt(number, associated=pm.id)
                if cvc is not None:
                    _, pm.encrypted_cvc = vault.encrypt(cvc, associated=_cvc_context(pm.id))
                pm.save(update_fields=["key_version", "encrypted_number", "encrypted_cvc"])
        done += len(batch)
        if len(batch) < batch_size:
            return done


def provider_credentials_reencrypt() -> int:
    """Re-encrypt provider-account credentials not under the active vault key."""
    from django.conf import settings

    from providers.models import ProviderAccount

    done = 0
    with transaction.atomic():
        for account in (ProviderAccount.objects.select_for_update()
                        .exclude(credentials_key_version=settings.VAULT_ACTIVE_KEY)
                        .exclude(credentials_encrypted=b"")):
            account.set_credentials(account.get_credentials())
            account.save(update_fields=["credentials_encrypted", "credentials_key_version"])
            done += 1
    return done


def vault_keys_rotate(*, actor: str, reason: str = "", batch_size: int = 500) -> tuple[int, int]:
    """Re-encrypt cards and provider credentials under the active vault key (`rotate_keys`);
    returns (cards, provider accounts). One audit row summarizes it, written in the
    transaction that re-encrypts the credentials, after the cards' batches (each its own short
    transaction, so the rotation runs online). If it fails part-way, a "failed" row says
    what was still under old keys; running it again finishes the job."""
    from django.conf import settings
    from django.db.models import Count

    from providers.models import ProviderAccount

    active = settings.VAULT_ACTIVE_KEY

    def by_key() -> dict[str, dict[str, int]]:
        cards = (PaymentMethod.objects.exclude(key_version=active).values("key_version")
                 .annotate(n=Count("pk")).order_by("key_version"))
        accounts = (ProviderAccount.objects.exclude(credentials_key_version=active)
                    .exclude(credentials_encrypted=b"").values("credentials_key_version")
                    .annotate(n=Count("pk")).order_by("credentials_key_version"))
        endpoints = (WebhookEndpoint.objects.exclude(secrets_key_version=active)
                     .values("secrets_key_version").annotate(n=Count("pk"))
                     .order_by("secrets_key_version"))
        return {"cards": {row["key_version"]: row["n"] for row in cards},
                "webhook_endpoints": {row["secrets_key_version"]: row["n"]
                                      for row in endpoints},
                "provider_accounts": {row["credentials_key_version"]: row["n"]
                                      for row in accounts}}

    before = by_key()
    try:
        cards = payment_methods_reencrypt(batch_size=batch_size)
        with transaction.atomic():
            accounts = provider_credentials_reencrypt()
            endpoints = webhook_endpoints_reencrypt()
            audit_record(actor=actor, action="vault.rotate_keys", object_type="vault_key",
                         object_id=active, reason=reason, before={"under_old_keys": before},
                         after={"active_key": active, "cards": cards,
                                "provider_accounts": accounts,
                                "webhook_endpoints": endpoints})
    except Exception as exc:
        with transaction.atomic():
            audit_record(actor=actor, action="vault.rotate_keys", object_type="vault_key",
                         object_id=active, reason=reason, before={"under_old_keys": before},
                         after={"active_key": active, "under_old_keys": by_key()},
                         outcome=f"failed: {type(exc).__name__}")
        raise
    return cards, accounts
