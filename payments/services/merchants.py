"""Merchants and their secret API keys. Creating a merchant, issuing a key and revoking one are
operator actions: each writes its audit row (payments.audit) in the transaction of the change."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from payments.audit import audit_record
from payments.models import APIKey, Merchant
from providers.accounts import sandbox_accounts_create

logger = logging.getLogger(__name__)


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
    _forget(locked.key_hash)  # this process at once; the others after the commit's bump
    transaction.on_commit(_new_keys_generation)
    key.revoked_at = locked.revoked_at
    audit_record(actor=actor, action="api_key.revoke", object_type="api_key", object_id=key.pk,
                 reason=reason, before=before,
                 after={"revoked_at": locked.revoked_at.isoformat()}, ip=ip)
    return True


# --- Authenticating a request, with the key cached in the process --------------------------
# A request's key lookup was one SQL statement in a transaction of its own on every request.
# Keys (with their merchant) are now kept in the process for API_KEY_CACHE_SECONDS, each
# stamped with the *keys' generation* (a random token in the shared cache) read before the
# database said the key was active. Revoking a key or saving a merchant sets a new generation
# after the commit; every request reads the generation in the rate limit's round trip
# (payments.api.throttling), and a key stamped with another one is read from the database
# again before the request goes on (`api_key_recheck`). So a revoked key stops working, and a
# merchant's new settings (its rate limit) apply, in every process at its next request, at no
# extra round trip. The generation is random, not a counter, so that a shared cache that lost
# it (a restart, an eviction) cannot count back up to a value a process holds. The
# time-to-live is the backstop if a new generation is lost (the shared cache down at that
# moment) or a change bypasses the model (a queryset update, SQL).

KEYS_GENERATION_KEY = "api-keys:generation"


@dataclass(frozen=True)
class _Cached:
    key: APIKey
    generation: str
    loaded_at: float


_cache: dict[str, _Cached] = {}
_cache_lock = threading.Lock()


def keys_generation() -> str:
    """The shared keys' generation ("" until the first change)."""
    return str(cache.get(KEYS_GENERATION_KEY) or "")


def _new_keys_generation() -> None:
    try:
        cache.set(KEYS_GENERATION_KEY, secrets.token_hex(8), timeout=None)
    except Exception:  # noqa: BLE001 - the cache's time-to-live is the backstop
        logger.warning(
            "could not publish an API key or merchant change to the shared cache; other "
            "processes see it within API_KEY_CACHE_SECONDS")


def merchant_saved(sender: type, instance: Merchant, **kwargs: object) -> None:
    """post_save of Merchant (connected in PaymentsConfig.ready): its settings are cached with
    its keys, forgotten here at once and in other processes after the commit."""
    with _cache_lock:
        for key_hash in [h for h, c in _cache.items() if c.key.merchant_id == instance.pk]:
            del _cache[key_hash]
    transaction.on_commit(_new_keys_generation)


def _lookup(key_hash: str) -> APIKey | None:
    return (
        APIKey.objects.select_related("merchant")
        .filter(key_hash=key_hash, revoked_at__isnull=True)
        .first()
    )


def api_key_authenticate(raw_key: str) -> tuple[APIKey, str] | None:
    """The active key matching `raw_key` and the keys' generation it was last read under (see
    above), or None."""
    if not raw_key.startswith(("sk_test_", "sk_live_")):
        return None
    key_hash = hash_key(raw_key)
    ttl = settings.API_KEY_CACHE_SECONDS
    cached = _cache.get(key_hash)
    if cached is not None and time.monotonic() - cached.loaded_at < ttl:
        return cached.key, cached.generation
    generation = keys_generation()  # read before the database: a later one is seen
    key = _lookup(key_hash)
    if key is None:
        _forget(key_hash)
        return None
    if ttl > 0:
        with _cache_lock:
            _cache[key_hash] = _Cached(key, generation, time.monotonic())
    return key, generation


def api_key_recheck(key: APIKey, *, generation: str) -> APIKey | None:
    """`key` read again from the database (with its merchant) after the keys' generation moved
    to `generation` (read before this call), or None if it is no longer active; the process's
    cache follows."""
    fresh = _lookup(key.key_hash)
    if fresh is None:
        _forget(key.key_hash)
        return None
    with _cache_lock:
        _cache[key.key_hash] = _Cached(fresh, generation, time.monotonic())
    return fresh


def _forget(key_hash: str) -> None:
    with _cache_lock:
        _cache.pop(key_hash, None)


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
