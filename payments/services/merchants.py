"""Merchants and their secret API keys."""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from payments.models import APIKey, Merchant
from providers.accounts import sandbox_accounts_create


def hash_key(raw_key: str) -> str:
    # Keys carry ~190 bits of randomness, so a plain SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, merchant: Merchant, livemode: bool) -> tuple[APIKey, str]:
    """Create a key; the raw key is returned once and never stored."""
    raw = f"sk_{'live' if livemode else 'test'}_{secrets.token_urlsafe(32)}"
    key = APIKey.objects.create(
        merchant=merchant, livemode=livemode, key_hash=hash_key(raw), prefix=raw[:12]
    )
    return key, raw


def api_key_revoke(*, key: APIKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


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
def merchant_create(*, name: str, sandbox_accounts: bool = False) -> tuple[Merchant, str, str]:
    """A merchant with a test and a live key; returns (merchant, test key, live key). With
    `sandbox_accounts`, also a test-mode account per provider on the in-process sandboxes
    (providers.accounts.AccountError where they are not installed)."""
    merchant = Merchant.objects.create(name=name)
    if sandbox_accounts:
        sandbox_accounts_create(merchant=merchant)
    _, test_key = api_key_create(merchant=merchant, livemode=False)
    _, live_key = api_key_create(merchant=merchant, livemode=True)
    return merchant, test_key, live_key
