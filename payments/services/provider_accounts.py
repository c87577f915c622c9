"""Operator changes to provider accounts, each with its audit row in the same transaction.

providers.accounts checks and saves an account; this module is the operator's way in: it
records who changed what (payments.audit), which providers cannot import. Credentials are
never written to the audit log: a row names the credential keys whose values changed,
nothing else (`{"credentials": ["secret_key"]}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from payments.audit import audit_record
from providers.accounts import AccountError, account_save
from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_reset, breaker_state

# What an audit row shows of an account (everything an operator sets, credentials aside).
AUDITED_FIELDS = ("merchant_id", "name", "provider", "livemode", "base_url", "enabled",
                  "priority", "currencies", "fees", "connect_timeout", "read_timeout",
                  "breaker_fail_max", "breaker_reset_timeout", "rate_limit_per_second",
                  "concurrency_limit")


@dataclass(frozen=True)
class AccountSnapshot:
    """An account's audited fields and its credentials, in memory only: `changes()` turns two
    snapshots into what an audit row may hold (credential key names, never values)."""

    fields: dict[str, Any]
    credentials: dict[str, str]

    @classmethod
    def of(cls, account: ProviderAccount) -> AccountSnapshot:
        return cls(fields={name: getattr(account, name) for name in AUDITED_FIELDS},
                   credentials=account.get_credentials())

    @classmethod
    def stored(cls, account: ProviderAccount) -> AccountSnapshot | None:
        """The account as the database has it (None for an account not saved yet)."""
        if not account.pk:
            return None
        row = ProviderAccount.objects.filter(pk=account.pk).first()
        return cls.of(row) if row is not None else None


def account_changes(before: AccountSnapshot | None,
                    after: AccountSnapshot) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(before, after) for an audit row: the fields that differ, and under "credentials" the
    sorted names of the credentials added, removed or given a new value."""
    if before is None:
        return None, {**after.fields, "credentials": sorted(after.credentials)}
    names = [n for n in AUDITED_FIELDS if before.fields[n] != after.fields[n]]
    old = {n: before.fields[n] for n in names}
    new = {n: after.fields[n] for n in names}
    changed = sorted(k for k in before.credentials.keys() | after.credentials.keys()
                     if before.credentials.get(k) != after.credentials.get(k))
    if changed:
        old["credentials"] = [k for k in changed if k in before.credentials]
        new["credentials"] = [k for k in changed if k in after.credentials]
    return old, new


def provider_account_save(*, account: ProviderAccount, credentials: dict[str, str],
                          actor: str, reason: str = "", ip: str | None = None) -> None:
    """Check and save an account (providers.accounts.account_save) with its audit row. A
    refused change (AccountError) is recorded as refused, with nothing saved, and re-raised."""
    before = AccountSnapshot.stored(account)
    action = "provider_account.update" if before is not None else "provider_account.create"
    try:
        with transaction.atomic():
            account_save(account=account, credentials=credentials)
            old, new = account_changes(before, AccountSnapshot.of(account))
            audit_record(actor=actor, action=action, object_type="provider_account",
                         object_id=account.pk, reason=reason, before=old, after=new, ip=ip)
    except AccountError as exc:
        with transaction.atomic():
            audit_record(actor=actor, action=action, object_type="provider_account",
                         object_id=account.pk or "-", reason=reason, ip=ip,
                         outcome=f"refused: {exc}")
        raise


def provider_account_set_enabled(*, account: ProviderAccount, enabled: bool, actor: str,
                                 reason: str = "", ip: str | None = None) -> bool:
    """Enable or disable an account (routing skips a disabled one). False when it already
    was; the audit row says so."""
    action = "provider_account.enable" if enabled else "provider_account.disable"
    with transaction.atomic():
        locked = ProviderAccount.objects.select_for_update().get(pk=account.pk)
        before = {"enabled": locked.enabled}
        if locked.enabled == enabled:
            audit_record(actor=actor, action=action, object_type="provider_account",
                         object_id=account.pk, reason=reason, before=before, after=before,
                         ip=ip, outcome=f"unchanged: already {'enabled' if enabled else 'disabled'}")
            account.enabled = enabled
            return False
        locked.enabled = enabled
        locked.save(update_fields=["enabled"])
        account.enabled = enabled
        audit_record(actor=actor, action=action, object_type="provider_account",
                     object_id=account.pk, reason=reason, before=before,
                     after={"enabled": enabled}, ip=ip)
        return True


def provider_account_reset_breaker(*, account: ProviderAccount, actor: str, reason: str = "",
                                   ip: str | None = None) -> str:
    """Close the account's circuit breaker in every process; returns the state it was in.

    The breaker lives in Redis, outside the transaction: the reset runs inside it, before the
    audit row, so a reset that fails leaves no "ok" row (a "failed" one instead, and the
    error is re-raised)."""
    try:
        with transaction.atomic():
            before = breaker_reset(account)
            audit_record(actor=actor, action="provider_account.reset_breaker",
                         object_type="provider_account", object_id=account.pk, reason=reason,
                         before={"breaker": before}, after={"breaker": "closed"}, ip=ip)
            return before
    except Exception as exc:
        with transaction.atomic():
            audit_record(actor=actor, action="provider_account.reset_breaker",
                         object_type="provider_account", object_id=account.pk, reason=reason,
                         before={"breaker": _state_or_unknown(account)}, ip=ip,
                         outcome=f"failed: {type(exc).__name__}")
        raise


def _state_or_unknown(account: ProviderAccount) -> str:
    try:
        return breaker_state(account)
    except Exception:  # noqa: BLE001 - the row records the failure either way
        return "unknown"
