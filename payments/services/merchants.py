"""Merchants and their secret API keys. Creating a merchant, issuing a key and revoking one are
operator actions: each writes its audit row (payments.audit) in the transaction of the change."""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from payments.audit import audit_record
from payments.models import APIKey, Merchant
from providers.accounts import sandbox_accounts_create


def hash_key(raw_key: str) -> str:
    # Keys carry ~190 bits of randomness, so a plain SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _api_key_new(*, merchant: Merchant, livemode: bool) -> tuple[APIKey, str]:
    raw = f"sk_{'live' if livemode else 'test'}_{secrets.token_urlsafe(32)}"
    key = APIKey.objects.create(
        merchant=merchant, livemode=livemode, key_hash=hash_key(raw), prefix=raw[:12]
    )
    return key, raw


@transaction.atomic
def api_key_create(*, merchant: Merchant, livemode: bool, actor: str,
                   reason: str = "") -> tuple[APIKey, str]:
    """Create a key; the raw key is returned once and never stored (nor audited: the audit
    row names the key by id and prefix)."""
    key, raw = _api_key_new(merchant=merchant, livemode=livemode)
    audit_record(actor=actor, action="api_key.create", object_type="api_key",
                 object_id=key.pk, reason=reason,
                 after={"merchant": merchant.pk, "prefix": key.prefix, "livemode": livemode})
    return key, raw


@transaction.atomic
def api_key_revoke(*, key: APIKey, actor: str, reason: str = "",
                   ip: str | None = None) -> bool:
    """Revoke `key`; False (and an audit row saying so) if it already was."""
    locked = APIKey.objects.select_for_update().get(pk=key.pk)
    before = {"revoked_at": locked.revoked_at.isoformat() if locked.revoked_at else None}
    if locked.revoked_at is not None:
        audit_record(actor=actor, action="api_key.revoke", object_type="api_key",
                     object_id=key.pk, reason=reason, before=before, after=before, ip=ip,
                     outcome="unchanged: already revoked")
        key.revoked_at = locked.revoked_at
        return False
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["revoked_at"])
    key.revoked_at = locked.revoked_at
    audit_record(actor=actor, action="api_key.revoke", object_type="api_key", object_id=key.pk,
                 reason=reason, before=before,
                 after={"revoked_at": locked.revoked_at.isoformat()}, ip=ip)
    return True


def api_key_authenticate(raw_key: str) -> APIKey | None:
    """The active key matching `raw_key`, or None."""
    if not raw_key.startswith(("sk_test_", "sk_live_")):
        return None
    return (
        APIKey.objects.select_related("merchant")
        .filter(key_hash=hash_key(raw_key), revoked_at__isnull=True)
        .first()
    )


@transaction.atomic
def merchant_create(*, name: str, actor: str, reason: str = "",
                    sandbox_accounts: bool = False) -> tuple[Merchant, str, str]:
    """A merchant with a test and a live key; returns (merchant, test key, live key). With
    `sandbox_accounts`, also a test-mode account per provider on the in-process sandboxes
    (providers.accounts.AccountError where they are not installed). One audit row records
    the merchant, its keys (by prefix) and its accounts."""
    merchant = Merchant.objects.create(name=name)
    accounts = sandbox_accounts_create(merchant=merchant) if sandbox_accounts else []
    test, test_key = _api_key_new(merchant=merchant, livemode=False)
    live, live_key = _api_key_new(merchant=merchant, livemode=True)
    audit_record(actor=actor, action="merchant.create", object_type="merchant",
                 object_id=merchant.pk, reason=reason,
                 after={"name": name, "api_keys": [test.prefix, live.prefix],
                        "provider_accounts": [a.pk for a in accounts]})
    return merchant, test_key, live_key
