"""`backup`, `restore`, `verify_backup` against real Postgres (ops/backups.py): the file, its
checksum and manifest, encryption (wrong key, corruption, truncation), retention, no
password on a command line, no card number in clear in a backup, and the round trip
backup → verify_backup → restore into an empty database → an equal database on which
check_consistency passes (and fails once a violation is planted)."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from ops import backups
from payments.models import AuditLog
from tests.conftest import make_card, pay

ROOT = Path(__file__).resolve().parents[2]
KEY = base64.b64encode(b"test-only-backup-key-32-bytes!!!").decode()
OTHER_KEY = base64.b64encode(b"another-test-backup-key-32bytes!").decode()
# Scratch databases of these tests carry this prefix (the suite's database name, so that
# parallel runs of the suite on other databases never collide).
PREFIX = os.environ.get("DATABASE_URL", "switchyard").rsplit("/", 1)[-1][:30]

pytestmark = pytest.mark.django_db(transaction=True)


def _backup(directory: Path, *args: str) -> tuple[Path, str]:
    out = StringIO()
    call_command("backup", "--dir", str(directory), *args, stdout=out, stderr=StringIO())
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("sha256 "), lines
    return Path(lines[0]), lines[1].removeprefix("sha256 ")


def _settings_dict() -> dict:
    return connection.settings_dict


def _drop(name: str) -> None:
    maintenance = backups._raw_connection(_settings_dict(), "postgres")
    maintenance.autocommit = True
    with maintenance.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    maintenance.close()


def _databases() -> set[str]:
    maintenance = backups._raw_connection(_settings_dict(), "postgres")
    with maintenance.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        names = {row[0] for row in cursor.fetchall()}
    maintenance.close()
    return names


def _manage(*args: str, database: str, **env: str) -> subprocess.CompletedProcess:
    """Run manage.py in a subprocess with DATABASE_URL naming `database`."""
    sd = _settings_dict()
    url = f"postgres://{sd['USER']}@{sd['HOST']}:{sd['PORT']}/{database}"
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test",
                          "DATABASE_URL": url, **env})


@pytest.fixture
def shop(api, merchant):
    """Committed data: vaulted cards, payments made with sandbox test cards (one refunded,
    one authorized only), a declined one."""
    paid = pay(api, "4242424242424242").json()["id"]
    assert api.post("/v1/refunds", {"payment": paid, "amount": 300}).status_code == 200
    pay(api, "4000056655665556", capture_method="manual")
    pay(api, "5555555555554444", amount=2500)
    assert pay(api, "4000000000000002").status_code == 402
    make_card(api, "4000056655665556")
    return merchant


# --- the file -------------------------------------------------------------------------------
def test_backup_prints_the_absolute_path_and_sha256_and_writes_its_sidecars(shop, tmp_path):
    path, sha256 = _backup(tmp_path / "b")
    assert path.is_absolute() and path.is_file()
    assert path.read_bytes().startswith(b"PGDMP")  # pg_dump custom format, not encrypted
    assert sha256 == backups.file_sha256(path)
    assert backups.checksum_path(path).read_text() == f"{sha256}  {path.name}\n"
    # readable by its owner only, in a directory of its own
    for file in (path, backups.checksum_path(path), backups.manifest_path(path)):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    manifest = json.loads(backups.manifest_path(path).read_text())
    assert manifest["sha256"] == sha256 and manifest["encrypted"] is False
    # the counts describe the dump's snapshot: the database before the audit row below
    payments = manifest["tables"]["public.payments_payment"]
    assert payments["rows"] == 4
    assert manifest["tables"]["public.payments_auditlog"]["rows"] == \
        AuditLog.objects.count() - 1
    row = AuditLog.objects.get(action="backup.create")
    assert row.outcome == "ok" and row.after["sha256"] == sha256
    assert row.after["file"] == str(path) and row.actor.startswith("cli:")
    # sha256sum agrees
    checked = subprocess.run(["sha256sum", "-c", backups.checksum_path(path).name],
                             cwd=path.parent, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_backup_keeps_the_newest_n_with_their_sidecars_and_nothing_else(shop, tmp_path):
    directory = tmp_path / "b"
    directory.mkdir()
    stranger = directory / "switchyard-otherdb-20200101T000000.000000Z.dump"
    stranger.write_bytes(b"another database's backup")
    notes = directory / "notes.txt"
    notes.write_text("keep me")
    made = [_backup(directory, "--keep", "2")[0] for _ in range(3)]
    assert not made[0].exists()
    assert not backups.checksum_path(made[0]).exists()
    assert not backups.manifest_path(made[0]).exists()
    assert all(p.exists() and backups.manifest_path(p).exists() for p in made[1:])
    assert stranger.exists() and notes.exists()
    assert AuditLog.objects.filter(action="backup.create").order_by("id").last() \
        .after["removed"] == [made[0].name]
    _backup(directory, "--keep", "0")  # 0 keeps everything
    assert len(backups.backups_in(directory, prefix=backups._prefix(
        _settings_dict()["NAME"]))) == 3


def test_no_password_on_a_command_line(shop, tmp_path, monkeypatch):
    """pg_dump and pg_restore get the password from a passfile (0600) that exists only while
    they run; it is in no argument, and PGPASSWORD is not set."""
    password = "test-only-password-s3cr3t:x"  # trust auth here: accepted and ignored
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", password)
    monkeypatch.setenv("PGPASSWORD", "inherited-test-value")
    seen = []
    real_popen = subprocess.Popen

    def spy(args, **kwargs):
        if "env" not in kwargs:  # (pg_dump --version)
            return real_popen(args, **kwargs)
        env = kwargs["env"]
        passfile = Path(env["PGPASSFILE"])
        seen.append({"args": args, "env": dict(env), "passfile": passfile,
                     "mode": stat.S_IMODE(passfile.stat().st_mode),
                     "content": passfile.read_text()})
        return real_popen(args, **kwargs)

    monkeypatch.setattr(backups.subprocess, "Popen", spy)
    path, _ = _backup(tmp_path / "b")
    result = backups.backup_verify(path=path, actor="cli:test", scratch_name=f"{PREFIX}_pw")
    assert result.ok, result.problems
    assert [Path(s["args"][0]).name for s in seen] == ["pg_dump", "pg_restore"]
    for call in seen:
        assert not any(password in str(arg) for arg in call["args"])
        assert "PGPASSWORD" not in call["env"]
        assert call["mode"] == 0o600
        assert call["content"] == "*:*:*:*:test-only-password-s3cr3t\\:x\n"
        assert not call["passfile"].exists()  # gone once the tool is done


# --- encryption -----------------------------------------------------------------------------
@override_settings(BACKUP_ENCRYPTION_KEY=KEY)
def test_an_encrypted_backup_verifies_and_names_a_wrong_key_or_a_damaged_file(shop, tmp_path):
    path, sha256 = _backup(tmp_path / "b")
    assert path.name.endswith(".dump.enc")
    data = path.read_bytes()
    assert data.startswith(b"SWYBAK\x01") and b"PGDMP" not in data
    manifest = json.loads(backups.manifest_path(path).read_text())
    assert manifest["encrypted"] and manifest["encryption"]["format_version"] == 1

    out = StringIO()
    call_command("verify_backup", str(path), "--scratch-db", f"{PREFIX}_enc", stdout=out)
    assert "OK: " in out.getvalue()

    def verify_fails(match: str, file: Path = path) -> None:
        with pytest.raises(CommandError, match=match):
            call_command("verify_backup", str(file), "--scratch-db", f"{PREFIX}_enc",
                         stdout=StringIO())

    with override_settings(BACKUP_ENCRYPTION_KEY=OTHER_KEY):
        verify_fails("1 problem")
        with pytest.raises(CommandError, match="Wrong key: the backup was encrypted with key"):
            call_command("restore", str(path), stdout=StringIO())
        # a retired key still decrypts
        with override_settings(BACKUP_DECRYPTION_KEYS=[KEY]):
            assert backups.backup_verify(path=path, actor="cli:test",
                                         scratch_name=f"{PREFIX}_enc").ok
    with override_settings(BACKUP_ENCRYPTION_KEY=""), \
            pytest.raises(CommandError, match="is encrypted: set BACKUP_ENCRYPTION_KEY"):
        call_command("restore", str(path), stdout=StringIO())

    # damaged: one bit flipped in the middle, with the sidecars gone (else they say so first)
    damaged = tmp_path / "damaged.dump.enc"
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(CommandError, match="corrupt at chunk 0 .authentication failed"):
        call_command("restore", str(damaged), stdout=StringIO())
    # the sidecar checksum catches it before decryption
    damaged_with_sidecar = tmp_path / "d2.dump.enc"
    damaged_with_sidecar.write_bytes(bytes(flipped))
    backups.checksum_path(damaged_with_sidecar).write_text(f"{sha256}  d2.dump.enc\n")
    with pytest.raises(CommandError, match=f"is corrupt: its SHA-256 is .*says {sha256}"):
        call_command("restore", str(damaged_with_sidecar), stdout=StringIO())
    # truncated
    truncated = tmp_path / "truncated.dump.enc"
    truncated.write_bytes(data[:-40])
    with pytest.raises(CommandError, match="truncated"):
        call_command("restore", str(truncated), stdout=StringIO())
    # not a backup at all
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"hello")
    with pytest.raises(CommandError, match="neither a Switchyard backup nor a pg_dump"):
        call_command("restore", str(junk), stdout=StringIO())
    assert f"{PREFIX}_enc" not in _databases()


def test_the_stream_cipher_detects_reordered_dropped_and_appended_chunks():
    from ops import backup_crypto

    key = base64.b64decode(KEY)
    sink = _Bytes()
    writer = backup_crypto.EncryptingWriter(sink, key, chunk_size=16)
    plaintext = bytes(range(200))
    for i in range(0, len(plaintext), 7):
        writer.write(plaintext[i:i + 7])
    writer.close()
    blob = bytes(sink.data)

    def decrypt(data: bytes) -> bytes:
        import io
        return b"".join(backup_crypto.decrypt_stream(io.BytesIO(data), [key]))

    assert decrypt(blob) == plaintext
    header, body = blob[:35], blob[35:]
    chunk = 4 + 16 + 16
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    assert len(chunks) == 13  # 12 full chunks and the last one (8 bytes)
    for broken, match in [
        (header + chunks[1] + chunks[0] + b"".join(chunks[2:]), "corrupt at chunk 0"),
        (header + b"".join(chunks[:5] + chunks[6:]), "corrupt at chunk 5"),
        (header + b"".join(chunks[:-1]), "truncated"),
        (blob + b"x", "data follows its last chunk"),
        (blob[:7] + b"\xff" * 8 + blob[15:], "Wrong key"),
    ]:
        with pytest.raises(backup_crypto.BackupCryptoError, match=match):
            decrypt(broken)


class _Bytes:
    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


# --- no card number in clear ------------------------------------------------------------------
@override_settings(BACKUP_ENCRYPTION_KEY=KEY)
def test_no_card_number_in_clear_in_a_backup(shop, tmp_path):
    """The backup, decrypted and turned back into SQL text (`pg_restore -f -`), holds no
    vaulted or charged card number; it does hold the cards themselves (by id and last4), so
    the scan looked at the right data."""
    from payments.models import PaymentMethod

    path, _ = _backup(tmp_path / "b")
    archive = tmp_path / "plain.dump"
    with archive.open("wb") as handle:
        for block in backups.plaintext_chunks(path, backups.configured_keys()):
            handle.write(block)
    sql = subprocess.run([backups.pg_tool("pg_restore"), "-f", "-", str(archive)],
                         capture_output=True, check=True).stdout.decode()
    archive.unlink()
    cards = list(PaymentMethod.objects.all())
    assert len(cards) == 5
    for pm in cards:
        assert pm.id in sql
    assert "\t4242\t" in sql and "\t5556\t" in sql  # last4 columns, in the COPY data
    files = [sql, backups.manifest_path(path).read_text(), path.read_bytes().decode("latin-1")]
    for number in ("4242424242424242", "4000056655665556", "5555555555554444",
                   "4000000000000002"):
        spaced = " ".join(re.findall("....", number))
        for text in files:
            assert number not in text and spaced not in text


# --- restore ----------------------------------------------------------------------------------
def test_restore_refuses_a_database_that_is_not_empty(shop, tmp_path):
    path, _ = _backup(tmp_path / "b")
    with pytest.raises(CommandError, match=r"is not empty \(\d+ tables, sequences or views\)"
                                           ".*--force"):
        call_command("restore", str(path), stdout=StringIO())


def test_backup_restore_and_verify_refuse_sqlite_with_a_clear_message(tmp_path):
    from tests.ops.test_embedded_default import run_embedded

    result = run_embedded(tmp_path, """
from io import StringIO
from django.core.management import call_command
from django.core.management.base import CommandError
for args in (["backup", "--dir", "%s"], ["restore", "x.dump"], ["verify_backup", "x.dump"]):
    try:
        call_command(*args)
    except CommandError as exc:
        print(args[0], "refused:", exc)
out = StringIO()
call_command("create_merchant", "SQLite shop", stdout=StringIO())
call_command("check_consistency", stdout=out)
print(out.getvalue())
""" % (tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    for command in ("backup", "restore", "verify_backup"):
        assert f"{command} refused: Backups work on PostgreSQL only; this database is " \
               "sqlite" in result.stdout
    assert "OK: 13 rules over 0 payments" in result.stdout
    assert not (tmp_path / "b").exists()


# --- verify -----------------------------------------------------------------------------------
def test_verify_backup_names_rows_that_differ_from_the_manifest_and_drops_its_database(
        shop, tmp_path):
    path, _ = _backup(tmp_path / "b")
    manifest_file = backups.manifest_path(path)
    manifest = json.loads(manifest_file.read_text())
    manifest["tables"]["public.payments_payment"]["rows"] += 1
    manifest["tables"]["public.payments_refund"]["checksum"] = "12345"
    manifest["tables"]["public.payments_gone"] = {"rows": 0, "checksum": "0"}
    manifest_file.write_text(json.dumps(manifest))
    scratch = f"{PREFIX}_verify_bad"
    out = StringIO()
    with pytest.raises(CommandError, match="3 problem"):
        call_command("verify_backup", str(path), "--scratch-db", scratch, stdout=out)
    text = out.getvalue()
    assert "PROBLEM table public.payments_payment: 4 rows restored, the manifest says 5" in text
    assert "PROBLEM table public.payments_refund: rows differ from the backup's" in text
    assert "PROBLEM table public.payments_gone: in the manifest, missing from the restore" \
        in text
    assert scratch not in _databases()
    row = AuditLog.objects.get(action="backup.verify")
    assert row.outcome.startswith("failed: ")


def test_verify_backup_runs_the_consistency_check_on_the_restored_data(shop, tmp_path):
    from payments.models import Payment

    payment = Payment.objects.filter(status="succeeded").first()
    Payment.objects.filter(pk=payment.pk).update(amount_captured=payment.amount - 1)
    path, _ = _backup(tmp_path / "b")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_backup", str(path), "--scratch-db", f"{PREFIX}_verify_cc",
                     stdout=out)
    assert f"PROBLEM consistency: captured_matches_captures {payment.pk}: " in out.getvalue()
    assert f"{PREFIX}_verify_cc" not in _databases()


def test_verify_backup_drops_its_scratch_database_even_when_it_fails_midway(
        shop, tmp_path, monkeypatch):
    import payments.services.consistency as consistency

    path, _ = _backup(tmp_path / "b")
    seen = []

    def boom(**kwargs):
        seen.append(_databases())
        raise RuntimeError("the check crashed")

    monkeypatch.setattr(consistency, "consistency_check", boom)
    with pytest.raises(RuntimeError, match="the check crashed"):
        call_command("verify_backup", str(path), "--scratch-db", f"{PREFIX}_verify_crash",
                     stdout=StringIO())
    assert f"{PREFIX}_verify_crash" in seen[0]  # it was there while the check ran
    assert f"{PREFIX}_verify_crash" not in _databases()


# --- the round trip ---------------------------------------------------------------------------
@override_settings(BACKUP_ENCRYPTION_KEY=KEY)
def test_backup_verify_restore_round_trip_gives_an_equal_consistent_database(shop, tmp_path):
    before = backups.database_fingerprints(_settings_dict())
    assert before["public.payments_payment"]["rows"] == 4
    path, _ = _backup(tmp_path / "b")
    manifest = json.loads(backups.manifest_path(path).read_text())
    assert manifest["tables"] == before  # the dump's snapshot is the database as it was

    out = StringIO()
    call_command("verify_backup", str(path), "--scratch-db", f"{PREFIX}_rt_verify", stdout=out)
    assert "OK: " in out.getvalue() and "no violations" in out.getvalue()

    target = f"{PREFIX}_rt_target"
    _drop(target)
    connection_ = backups._raw_connection(_settings_dict(), "postgres")
    connection_.autocommit = True
    with connection_.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
    connection_.close()
    try:
        env = {"BACKUP_ENCRYPTION_KEY": KEY}
        restored = _manage("restore", str(path), database=target, **env)
        assert restored.returncode == 0, restored.stderr
        assert f"Restored {path} into {target} (decrypted; sha256 " in restored.stdout

        # equal: every table's rows, the restore's own audit row aside
        after = backups.database_fingerprints(_settings_dict(), target)
        raw = backups._raw_connection(_settings_dict(), target)
        with raw.cursor() as cursor:
            cursor.execute("SELECT actor, object_id, after FROM payments_auditlog "
                           "WHERE action = 'backup.restore'")
            (actor, object_id, details), = cursor.fetchall()
            assert actor.startswith("cli:") and object_id == target
            assert details["file"] == str(path)
            audit = backups.table_fingerprints(cursor, where={
                "public.payments_auditlog": "action <> 'backup.restore'"})
        raw.close()
        after["public.payments_auditlog"] = audit["public.payments_auditlog"]
        assert after == before

        clean = _manage("check_consistency", database=target)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout.startswith("OK: 13 rules over 4 payments")

        # a second restore over it is refused, unless forced
        again = _manage("restore", str(path), database=target, **env)
        assert again.returncode == 1 and "is not empty" in again.stderr
        forced = _manage("restore", str(path), "--force", database=target, **env)
        assert forced.returncode == 0, forced.stderr

        # a planted violation is found there
        raw = backups._raw_connection(_settings_dict(), target)
        with raw.cursor() as cursor:
            cursor.execute("UPDATE payments_refund SET status = 'failed' RETURNING id")
            (refund_id,) = cursor.fetchone()
        raw.commit()
        raw.close()
        broken = _manage("check_consistency", database=target)
        assert broken.returncode == 1
        assert f"VIOLATION refund_replay {refund_id}: status failed" in broken.stdout
        assert "violation(s)" in broken.stderr
    finally:
        _drop(target)


def test_a_forced_restore_blocked_by_a_running_session_fails_whole_and_says_why(
        shop, tmp_path, monkeypatch):
    """Restoring over a database that a live session uses cannot drop its tables: after the
    lock timeout it fails, saying to stop the service first, and, being one transaction,
    changes nothing."""
    path, _ = _backup(tmp_path / "b")
    before = backups.database_fingerprints(_settings_dict())
    monkeypatch.setattr(backups, "RESTORE_LOCK_TIMEOUT", 1.0)
    session = backups._raw_connection(_settings_dict())
    try:
        with session.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM payments_payment")  # holds its lock
        with pytest.raises(CommandError, match="waited more than 1 s for a lock .*nothing was "
                                               "restored. Stop the service's web, worker"):
            call_command("restore", str(path), "--force", stdout=StringIO())
    finally:
        session.close()
    assert backups.database_fingerprints(_settings_dict()) == before


def test_verify_backup_never_touches_a_database_that_already_has_the_scratch_name(
        shop, tmp_path):
    path, _ = _backup(tmp_path / "b")
    existing = f"{PREFIX}_verify_taken"
    _drop(existing)
    admin = backups._raw_connection(_settings_dict(), "postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{existing}" TEMPLATE template0')
    admin.close()
    try:
        out = StringIO()
        with pytest.raises(CommandError, match="no scratch database was created"):
            call_command("verify_backup", str(path), "--scratch-db", existing, stdout=out)
        assert f"Cannot create the scratch database {existing}: " in out.getvalue()
        assert existing in _databases()  # still there: not ours to drop
    finally:
        _drop(existing)
