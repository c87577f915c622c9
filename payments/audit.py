"""The audit log: who did what to which object, when, from where, why, and what changed.

`audit_record` is called by every operator action (admin actions, management commands),
every credential change and key revocation, inside the transaction that makes the change,
so the row exists exactly when the change does. The table is append-only in the database
(migration 0010's trigger): nothing updates or deletes a row.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.db import transaction

from payments.models import AuditLog


def cli_actor() -> str:
    """The actor of a management command: the operating-system user running it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return f"cli:{user}"


def user_actor(user: Any) -> str:
    """The actor of an admin action: the signed-in user."""
    return f"user:{user.get_username()}"


def audit_record(*, actor: str, action: str, object_type: str, object_id: str,
                 reason: str = "", before: dict[str, Any] | None = None,
                 after: dict[str, Any] | None = None, ip: str | None = None,
                 outcome: str = "ok") -> AuditLog:
    """Append one audit row. Call inside the transaction of the change it records."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change")
    return AuditLog.objects.create(
        actor=actor[:200], action=action[:100], object_type=object_type[:100],
        object_id=str(object_id)[:100], reason=reason, before=before, after=after,
        ip=ip or None, outcome=outcome[:200])
