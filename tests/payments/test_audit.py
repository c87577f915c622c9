"""The audit log is append-only in the database, and its rows live and die with the change they
record (same transaction)."""

import pytest
from django.db import DatabaseError, connection, transaction

from payments.audit import audit_record
from payments.models import APIKey, AuditLog
from payments.services.merchants import api_key_revoke

pytestmark = pytest.mark.django_db


@pytest.fixture
def row():
    with transaction.atomic():
        return audit_record(actor="cli:ops", action="test.action", object_type="thing",
                            object_id="thing_1", reason="because", after={"x": 1})


def refused(fn) -> None:
    """`fn` is refused by the trigger, and the test's transaction stays usable."""
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            fn()


def test_the_database_refuses_update_and_delete_through_the_orm(row):
    assert connection.vendor == "postgresql"
    refused(lambda: AuditLog.objects.filter(pk=row.pk).update(reason="rewritten"))
    refused(lambda: AuditLog.objects.filter(pk=row.pk).delete())
    row.reason = "rewritten"
    refused(row.save)
    refused(AuditLog.objects.get(pk=row.pk).delete)
    stored = AuditLog.objects.get(pk=row.pk)
    assert (stored.reason, stored.after) == ("because", {"x": 1})


def test_the_database_refuses_update_and_delete_in_raw_sql(row):
    def execute(sql):
        def run():
            with connection.cursor() as cursor:
                cursor.execute(sql, [row.pk])
        return run

    refused(execute("UPDATE payments_auditlog SET actor = 'someone else' WHERE id = %s"))
    refused(execute("DELETE FROM payments_auditlog WHERE id = %s"))
    assert AuditLog.objects.filter(pk=row.pk, actor="cli:ops").exists()


def test_a_change_that_rolls_back_leaves_no_audit_row(merchant):
    key = APIKey.objects.filter(merchant=merchant).first()
    count = AuditLog.objects.count()
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        api_key_revoke(key=key, actor="cli:ops", reason="leaked")
        assert AuditLog.objects.count() == count + 1  # written with the change...
        1 / 0  # noqa: B018 - whatever fails later in the same transaction
    # ...and gone with it
    assert AuditLog.objects.count() == count
    assert APIKey.objects.get(pk=key.pk).revoked_at is None


def test_a_change_whose_audit_row_cannot_be_written_does_not_happen(merchant, monkeypatch):
    key = APIKey.objects.filter(merchant=merchant).first()

    def broken(**kwargs):
        raise DatabaseError("audit table unavailable")

    monkeypatch.setattr(AuditLog.objects, "create", broken)
    with pytest.raises(DatabaseError):
        api_key_revoke(key=key, actor="cli:ops", reason="leaked")
    assert APIKey.objects.get(pk=key.pk).revoked_at is None


def test_revoking_records_who_why_and_before_after(merchant):
    key = APIKey.objects.filter(merchant=merchant).first()
    assert api_key_revoke(key=key, actor="user:ops", reason="leaked in a log", ip="10.0.0.7")
    row = AuditLog.objects.filter(object_id=key.pk).first()
    assert (row.actor, row.action, row.object_type, row.reason, row.ip, row.outcome) == (
        "user:ops", "api_key.revoke", "api_key", "leaked in a log", "10.0.0.7", "ok")
    assert row.before == {"revoked_at": None}
    assert row.after["revoked_at"] and row.at is not None
    # a second revocation changes nothing, and says so
    assert not api_key_revoke(key=key, actor="user:ops")
    again = AuditLog.objects.filter(object_id=key.pk).first()
    assert again.pk != row.pk and again.outcome.startswith("unchanged")
