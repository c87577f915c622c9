"""The card vault: tokenize once, keep the number encrypted, expose only safe fields."""

from __future__ import annotations

from django.db import transaction

from payments import vault
from payments.cards import validate_card
from payments.errors import ResourceMissing
from payments.models import Merchant, PaymentMethod
from payments.services import idempotency
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
    billing_details: dict | None = None,
) -> PaymentMethod:
    """Vault a card. The CVC is checked and then dropped: it is never persisted."""
    digits, brand = validate_card(number, exp_month, exp_year, cvc)
    pm_id = new_id("pm")
    key_version, blob = vault.encrypt(digits, associated=pm_id)
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
        billing_details=billing_details or {},
    )
    idempotency.record_object(pm)
    return pm


def payment_method_get(*, merchant: Merchant, livemode: bool, pm_id: object,
                       param: str | None = None) -> PaymentMethod:
    pm = None
    if isinstance(pm_id, str):
        pm = PaymentMethod.objects.filter(id=pm_id, merchant=merchant, livemode=livemode).first()
    if pm is None:
        raise ResourceMissing(f"No such payment_method: {str(pm_id)[:60]!r}", param=param)
    return pm


def card_for_provider(pm: PaymentMethod) -> Card:
    """Decrypt the card for one provider call. The result lives in memory only."""
    number = vault.decrypt(pm.key_version, pm.encrypted_number, associated=pm.id)
    return Card(number=number, exp_month=pm.exp_month, exp_year=pm.exp_year, brand=pm.brand)


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
                pm.key_version, pm.encrypted_number = vault.encrypt(number, associated=pm.id)
                pm.save(update_fields=["key_version", "encrypted_number"])
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
