"""Backups of the Postgres database: `manage.py backup`, `restore`, `verify_backup`
(docs/operations/backups.md).

- A backup is `pg_dump --format=custom` (compressed), taken in an exported snapshot so that
  the row counts and table checksums written beside it (the manifest) describe exactly the
  data in the dump, encrypted as it streams when `BACKUP_ENCRYPTION_KEY` is set
  (`ops.backup_crypto`), written to `<name>.partial` and renamed when complete, readable by
  its owner only. Beside it: `<name>.sha256` (`sha256sum -c` format) and
  `<name>.manifest.json`.
- Passwords never reach a command line: pg_dump and pg_restore get their connection from
  the environment (PGHOST, PGUSER, …) and the password from a temporary passfile (0600).
- A restore goes into an empty database (or, forced, replaces what is there) in one
  transaction: if anything fails, nothing is left half-restored.
- Verification restores into a scratch database, runs the consistency check there, compares
  every table's row count and checksum with the manifest, and drops the scratch database,
  whatever happened.

Postgres only: the embedded default's SQLite file is refused with a message saying so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import connections, transaction

from ops import backup_crypto
from payments.audit import audit_record

MANIFEST_VERSION = 1
RESTORE_LOCK_TIMEOUT = 60.0  # seconds
READ_SIZE = 1 << 20
_NAME = re.compile(r"^(?P<prefix>.+-)(?P<stamp>\d{8}T\d{6}\.\d{6}Z)\.dump(?P<enc>\.enc)?$")
# Settings under which a row's text is the same in every session (checksums compare them).
_STABLE_SESSION = ("SET TIME ZONE 'UTC'", "SET DateStyle = 'ISO, YMD'",
                   "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 1",
                   "SET bytea_output = 'hex'")


class BackupError(Exception):
    """A backup, restore or verification that cannot be done; the message says why."""


# --- connections ------------------------------------------------------------------------------
def require_postgres(alias: str = "default") -> dict[str, Any]:
    settings_dict: dict[str, Any] = connections[alias].settings_dict
    if connections[alias].vendor != "postgresql":
        raise BackupError(
            f"Backups work on PostgreSQL only; this database is {connections[alias].vendor} "
            f"({settings_dict['NAME']}). The embedded default's SQLite file is backed up by "
            "copying it while the server is stopped; set DATABASE_URL to a Postgres "
            "database to use backup, restore and verify_backup.")
    return settings_dict


def _escape_passfile(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def pg_environment(settings_dict: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The environment for pg_dump/pg_restore/psql to reach `settings_dict`'s server: host,
    port, user and SSL options as PG* variables, the password in a passfile that exists
    only while the block runs. The database is given with --dbname (a name, no secret)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for name, variable in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER")):
        if settings_dict.get(name):
            env[variable] = str(settings_dict[name])
    options = settings_dict.get("OPTIONS") or {}
    for option, variable in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"),
                             ("sslcert", "PGSSLCERT"), ("sslkey", "PGSSLKEY"),
                             ("connect_timeout", "PGCONNECT_TIMEOUT")):
        if options.get(option):
            env[variable] = str(options[option])
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    env["PGAPPNAME"] = "switchyard-backup"
    password = settings_dict.get("PASSWORD") or ""
    if not password:
        env["PGPASSFILE"] = os.devnull  # never a ~/.pgpass meant for someone else
        yield env
        return
    fd, passfile = tempfile.mkstemp(prefix="switchyard-pgpass-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"*:*:*:*:{_escape_passfile(password)}\n")
        env["PGPASSFILE"] = passfile
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(passfile)


def pg_tool(name: str) -> str:
    directory = getattr(settings, "BACKUP_PG_BIN_DIR", "")
    path = os.path.join(directory, name) if directory else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise BackupError(f"{name} was not found (install the PostgreSQL client tools of "
                          "the server's major version, or set BACKUP_PG_BIN_DIR).")
    return path


def _raw_connection(settings_dict: dict[str, Any], dbname: str | None = None) -> Any:
    """A psycopg2 connection of its own (outside Django's transaction handling)."""
    import psycopg2  # type: ignore[import-untyped]

    params = {"dbname": dbname or settings_dict["NAME"], "user": settings_dict.get("USER") or None,
              "password": settings_dict.get("PASSWORD") or None,
              "host": settings_dict.get("HOST") or None,
              "port": settings_dict.get("PORT") or None,
              "application_name": "switchyard-backup"}
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items()
               if k in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")}
    try:
        return psycopg2.connect(**{k: v for k, v in params.items() if v is not None},
                                **options)
    except psycopg2.OperationalError as exc:
        raise BackupError(f"Cannot connect to database {params['dbname']}: "
                          f"{str(exc).strip()}") from None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- table fingerprints -----------------------------------------------------------------------
def user_tables(cursor: Any) -> list[str]:
    cursor.execute("""
        SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
          AND schemaname NOT LIKE 'pg_temp%' AND schemaname NOT LIKE 'pg_toast%'
        ORDER BY 1""")
    return [row[0] for row in cursor.fetchall()]


def table_fingerprints(cursor: Any, *, where: dict[str, str] | None = None
                       ) -> dict[str, dict[str, Any]]:
    """Per table: its row count and an order-independent checksum of its rows (the sum of
    the first 64 bits of each row's MD5, as text under fixed session settings). One pass
    over each table, no sort. `where`: a condition for some tables (tests exclude rows)."""
    for statement in _STABLE_SESSION:
        cursor.execute(statement)
    result = {}
    for table in user_tables(cursor):
        condition = (where or {}).get(table, "true")
        cursor.execute(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)"
            f"::bigint), 0)::text FROM {table} AS t WHERE {condition}")
        count, checksum = cursor.fetchone()
        result[table] = {"rows": count, "checksum": checksum}
    return result


def database_fingerprints(settings_dict: dict[str, Any], dbname: str | None = None
                          ) -> dict[str, dict[str, Any]]:
    connection = _raw_connection(settings_dict, dbname)
    try:
        connection.set_session(readonly=True, isolation_level="REPEATABLE READ")
        with connection.cursor() as cursor:
            return table_fingerprints(cursor)
    finally:
        connection.close()


def relation_count(settings_dict: dict[str, Any], dbname: str) -> int:
    """Tables, views, sequences… outside the system schemas: 0 for an empty database."""
    connection = _raw_connection(settings_dict, dbname)
    try:
        with connection.cursor() as cursor:
            cursor.execute("""
                SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'""")
            count: int = cursor.fetchone()[0]
            return count
    finally:
        connection.close()


# --- files ------------------------------------------------------------------------------------
def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class _HashingFile:
    """Writes through to a file, hashing and counting what it writes."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def configured_keys() -> list[bytes]:
    """The keys a backup may be decrypted with: BACKUP_ENCRYPTION_KEY, then the retired ones
    of BACKUP_DECRYPTION_KEYS."""
    keys = []
    if settings.BACKUP_ENCRYPTION_KEY:
        keys.append(backup_crypto.parse_key(settings.BACKUP_ENCRYPTION_KEY))
    for i, encoded in enumerate(settings.BACKUP_DECRYPTION_KEYS):
        keys.append(backup_crypto.parse_key(encoded, name=f"BACKUP_DECRYPTION_KEYS[{i}]"))
    return keys


# --- backup -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupResult:
    path: Path
    sha256: str
    size: int
    encrypted: bool
    tables: dict[str, dict[str, Any]]
    removed: list[Path] = field(default_factory=list)


def backup_create(*, directory: Path, keep: int, actor: str, alias: str = "default",
                  encrypt: bool | None = None) -> BackupResult:
    """Dump the database of `alias` into `directory`, then keep only the newest `keep`
    backups of that database there (0: keep all). One audit row records it (or its
    failure). `encrypt`: None encrypts when BACKUP_ENCRYPTION_KEY is set."""
    settings_dict = require_postgres(alias)
    key = backup_crypto.parse_key(settings.BACKUP_ENCRYPTION_KEY) \
        if settings.BACKUP_ENCRYPTION_KEY else None
    if encrypt and key is None:
        raise BackupError("--encrypt needs BACKUP_ENCRYPTION_KEY (32 bytes, base64) in the "
                          "environment.")
    if encrypt is False:
        key = None
    dbname = settings_dict["NAME"]
    try:
        result = _dump(settings_dict, Path(directory).resolve(), key)
        removed = prune(Path(directory).resolve(), prefix=_prefix(dbname), keep=keep)
    except BaseException as exc:
        with transaction.atomic(using=alias):
            audit_record(actor=actor, action="backup.create", object_type="database",
                         object_id=dbname, outcome=f"failed: {str(exc)[:180]}")
        raise
    result = BackupResult(result.path, result.sha256, result.size, result.encrypted,
                          result.tables, removed)
    with transaction.atomic(using=alias):
        audit_record(actor=actor, action="backup.create", object_type="database",
                     object_id=dbname, after={
                         "file": str(result.path), "sha256": result.sha256,
                         "bytes": result.size, "encrypted": result.encrypted,
                         "tables": len(result.tables),
                         "removed": [p.name for p in removed]})
    return result


def _prefix(dbname: str) -> str:
    return f"switchyard-{re.sub(r'[^A-Za-z0-9_.]', '_', dbname)}-"


def _dump(settings_dict: dict[str, Any], directory: Path, key: bytes | None) -> BackupResult:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    name = f"{_prefix(settings_dict['NAME'])}{now:%Y%m%dT%H%M%S.%f}Z.dump"
    path = directory / (name + (".enc" if key else ""))
    partial = path.with_name(path.name + ".partial")
    pg_dump = pg_tool("pg_dump")

    # The counts and checksums, and the dump, read one snapshot: this transaction exports
    # it, pg_dump imports it (--snapshot), and it stays open until pg_dump is done.
    snapshot_connection = _raw_connection(settings_dict)
    try:
        snapshot_connection.set_session(readonly=True, isolation_level="REPEATABLE READ")
        with snapshot_connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot, server_version = cursor.fetchone()
            tables = table_fingerprints(cursor)
        command = [pg_dump, "--format=custom", "--compress=6", "--no-password",
                   f"--snapshot={snapshot}", f"--dbname={settings_dict['NAME']}"]
        with pg_environment(settings_dict) as env, \
                tempfile.TemporaryFile() as errors:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    sink = _HashingFile(handle)
                    writer = backup_crypto.EncryptingWriter(sink, key) if key else None
                    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors,
                                               env=env)
                    assert process.stdout is not None
                    while block := process.stdout.read(READ_SIZE):
                        (writer or sink).write(block)
                    code = process.wait()
                    if code != 0:
                        errors.seek(0)
                        raise BackupError(f"pg_dump failed (exit {code}): "
                                          f"{errors.read().decode(errors='replace').strip()}")
                    if writer:
                        writer.close()
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                raise
        version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
    finally:
        snapshot_connection.rollback()
        snapshot_connection.close()

    sha256 = sink.digest.hexdigest()
    _write_private(checksum_path(path), f"{sha256}  {path.name}\n")
    manifest = {
        "format": "switchyard-backup-manifest", "version": MANIFEST_VERSION,
        "file": path.name, "sha256": sha256, "bytes": sink.size,
        "created_at": now.isoformat(), "database": settings_dict["NAME"],
        "server_version": server_version, "pg_dump": version,
        "encrypted": bool(key),
        "encryption": ({"format_version": backup_crypto.FORMAT_VERSION,
                        "key_id": backup_crypto.key_id(key).hex()} if key else None),
        "tables": tables,
    }
    _write_private(manifest_path(path), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return BackupResult(path, sha256, sink.size, bool(key), tables)


def backups_in(directory: Path, *, prefix: str) -> list[Path]:
    """This database's backups in `directory`, oldest first (names sort by time)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir()
             if (m := _NAME.match(p.name)) and m["prefix"] == prefix and p.is_file()]
    return sorted(found, key=lambda p: p.name.removesuffix(".enc"))


def prune(directory: Path, *, prefix: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups (with their sidecars); 0 keeps all."""
    if keep <= 0:
        return []
    backups = backups_in(directory, prefix=prefix)
    removed = backups[:-keep]
    for path in removed:
        for sidecar in (path, checksum_path(path), manifest_path(path)):
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
    return removed


# --- reading a backup -------------------------------------------------------------------------
def check_file(path: Path) -> str | None:
    """Check the file against its sidecar checksum and manifest, where they exist; returns
    the checksum found in one of them (None: neither exists). BackupError on a mismatch."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file.")
    expected = []
    sidecar = checksum_path(path)
    if sidecar.is_file():
        expected.append(("checksum file", sidecar.read_text().split()[0]))
    manifest = read_manifest(path)
    if manifest is not None:
        expected.append(("manifest", manifest.get("sha256", "")))
    if not expected:
        return None
    actual = file_sha256(path)
    for source, value in expected:
        if value != actual:
            raise BackupError(f"{path.name} is corrupt: its SHA-256 is {actual}, its {source} "
                              f"says {value}.")
    return actual


def read_manifest(path: Path) -> dict[str, Any] | None:
    candidate = manifest_path(path)
    if not candidate.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(candidate.read_text())
    except ValueError:
        raise BackupError(f"{candidate.name} is not valid JSON.") from None
    if manifest.get("format") != "switchyard-backup-manifest":
        raise BackupError(f"{candidate.name} is not a Switchyard backup manifest.")
    return manifest


def plaintext_chunks(path: Path, keys: Iterable[bytes]) -> Iterator[bytes]:
    """The pg_dump archive inside a backup file, decrypted if it is encrypted."""
    with path.open("rb") as handle:
        head = handle.read(8)
        handle.seek(0)
        if backup_crypto.is_encrypted(head):
            key_list = list(keys)
            if not key_list:
                raise BackupError(f"{path.name} is encrypted: set BACKUP_ENCRYPTION_KEY to "
                                  "the key it was made with.")
            try:
                yield from backup_crypto.decrypt_stream(handle, key_list)
            except backup_crypto.BackupCryptoError as exc:
                raise BackupError(f"{path.name}: {exc}") from None
            return
        if not head.startswith(b"PGDMP"):
            raise BackupError(f"{path.name} is neither a Switchyard backup nor a pg_dump "
                              "custom-format archive.")
        while block := handle.read(READ_SIZE):
            yield block


def check_decryptable(path: Path, keys: Iterable[bytes]) -> None:
    """Read the whole file through decryption (every chunk authenticated) before anything
    is written to a database: a wrong key or a corrupt file is reported first."""
    for _ in plaintext_chunks(path, keys):
        pass


# --- restore ----------------------------------------------------------------------------------
def _pg_restore(path: Path, keys: list[bytes], settings_dict: dict[str, Any], dbname: str,
                *, clean: bool) -> None:
    command = [pg_tool("pg_restore"), "--no-password", "--no-owner", "--no-acl",
               "--single-transaction", "--exit-on-error", f"--dbname={dbname}"]
    if clean:
        command += ["--clean", "--if-exists"]
    with pg_environment(settings_dict) as env, tempfile.TemporaryFile() as errors, \
            _lock_watchdog(settings_dict) as watchdog:
        env["PGAPPNAME"] = watchdog.application_name
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=errors,
                                   stderr=errors, env=env)
        assert process.stdin is not None
        failure: BaseException | None = None
        try:
            for block in plaintext_chunks(path, keys):
                process.stdin.write(block)
            process.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit code and message say why
        except BaseException as exc:
            # kill it before it sees the end of its input: its transaction must not commit
            process.kill()
            failure = exc
        code = process.wait()
        if failure is not None:
            raise failure
        if code != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()[-2000:]
            if watchdog.canceled:
                raise BackupError(
                    f"pg_restore waited more than {RESTORE_LOCK_TIMEOUT:g} s for a lock "
                    "another session holds on a table, and was stopped; nothing was "
                    "restored. Stop the service's web, worker and beat processes before "
                    "restoring over a database.")
            raise BackupError(f"pg_restore failed (exit {code}): {message}")


class _Watchdog:
    def __init__(self) -> None:
        self.application_name = f"switchyard-restore-{secrets.token_hex(4)}"
        self.canceled = False
        self.stop = threading.Event()


@contextlib.contextmanager
def _lock_watchdog(settings_dict: dict[str, Any]) -> Iterator[_Watchdog]:
    """Cancel the restore's statement when it has waited RESTORE_LOCK_TIMEOUT seconds for a
    lock (a table another session uses cannot be dropped): pg_restore then fails and its one
    transaction rolls back, instead of waiting for ever behind a running service. (pg_restore
    resets lock_timeout itself, so the server's own setting cannot do this.)"""
    watchdog = _Watchdog()

    def watch() -> None:
        connection = _raw_connection(settings_dict, "postgres")
        connection.autocommit = True
        try:
            while not watchdog.stop.wait(0.5):
                with connection.cursor() as cursor:
                    cursor.execute("""
                        SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a
                        JOIN pg_locks l ON l.pid = a.pid
                        WHERE a.application_name = %s AND NOT l.granted
                          AND l.waitstart < now() - make_interval(secs => %s)""",
                                   [watchdog.application_name, RESTORE_LOCK_TIMEOUT])
                    if cursor.fetchall():
                        watchdog.canceled = True
        finally:
            connection.close()

    thread = threading.Thread(target=watch, name="restore-lock-watchdog", daemon=True)
    thread.start()
    try:
        yield watchdog
    finally:
        watchdog.stop.set()
        thread.join(10)


@dataclass(frozen=True)
class RestoreResult:
    database: str
    sha256: str | None
    encrypted: bool


def backup_restore(*, path: Path, force: bool, actor: str, alias: str = "default"
                   ) -> RestoreResult:
    """Restore a backup into the database of `alias`, which must be empty unless `force`
    (then what is there is dropped and replaced, in the restore's one transaction). The
    file is checked first (sidecar checksum, decryption of every chunk). An audit row in
    the restored database records the restore."""
    settings_dict = require_postgres(alias)
    dbname = settings_dict["NAME"]
    path = Path(path).resolve()
    sha256 = check_file(path)
    keys = configured_keys()
    check_decryptable(path, keys)
    with path.open("rb") as handle:
        encrypted = backup_crypto.is_encrypted(handle.read(8))
    existing = relation_count(settings_dict, dbname)
    if existing and not force:
        raise BackupError(f"Database {dbname} is not empty ({existing} tables, sequences or "
                          "views): restore into an empty database, or pass --force to drop "
                          "and replace what is there.")
    _pg_restore(path, keys, settings_dict, dbname, clean=bool(existing))
    with transaction.atomic(using=alias):
        audit_record(actor=actor, action="backup.restore", object_type="database",
                     object_id=dbname, after={"file": str(path), "sha256": sha256,
                                              "encrypted": encrypted, "forced": bool(existing)})
    return RestoreResult(dbname, sha256, encrypted)


# --- verify -----------------------------------------------------------------------------------
@dataclass
class VerifyResult:
    scratch_database: str
    problems: list[str]
    tables: int = 0
    rows: int = 0
    consistency_summary: str = ""
    scratch_created: bool = False  # (and dropped again: the scratch database never stays)

    @property
    def ok(self) -> bool:
        return not self.problems


@contextlib.contextmanager
def scratch_database(settings_dict: dict[str, Any], name: str) -> Iterator[str]:
    """A new empty database `name` on the same server, dropped when the block ends (also
    after an error or an interrupt)."""
    maintenance = _raw_connection(settings_dict, "postgres")
    maintenance.autocommit = True
    try:
        import psycopg2

        try:
            with maintenance.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0 "
                               "ENCODING 'UTF8'")
        except psycopg2.Error as exc:
            raise BackupError(f"Cannot create the scratch database {name}: "
                              f"{str(exc).strip()}") from None
        try:
            yield name
        finally:
            with maintenance.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        maintenance.close()


@contextlib.contextmanager
def django_alias(settings_dict: dict[str, Any], dbname: str) -> Iterator[str]:
    """A Django connection alias, in this thread, for another database on the same server
    (made for the occasion: it is in no settings)."""
    from django.db.utils import load_backend

    alias = f"backup_scratch_{secrets.token_hex(4)}"
    backend = load_backend(settings_dict["ENGINE"])
    wrapper = backend.DatabaseWrapper({**settings_dict, "NAME": dbname, "CONN_MAX_AGE": 0},
                                      alias)
    connections[alias] = wrapper
    try:
        yield alias
    finally:
        wrapper.close()
        with contextlib.suppress(AttributeError):
            del connections[alias]


def backup_verify(*, path: Path, actor: str, alias: str = "default",
                  scratch_name: str | None = None) -> VerifyResult:
    """Restore the backup into a scratch database, check it there (consistency, and every
    table's rows against the manifest written when it was taken), drop the scratch
    database. The result lists every problem; an audit row records the verification."""
    from payments.services.consistency import consistency_check

    settings_dict = require_postgres(alias)
    path = Path(path).resolve()
    name = scratch_name or f"{settings_dict['NAME'][:40]}_verify_{secrets.token_hex(4)}"
    result = VerifyResult(scratch_database=name, problems=[])
    try:
        check_file(path)
        manifest = read_manifest(path)
        if manifest is None:
            raise BackupError(f"{manifest_path(path).name} is missing: without it the row "
                              "counts and checksums cannot be compared.")
        keys = configured_keys()
        check_decryptable(path, keys)
        with scratch_database(settings_dict, name):
            result.scratch_created = True
            _pg_restore(path, keys, settings_dict, name, clean=False)
            restored = database_fingerprints(settings_dict, name)
            result.problems += compare_fingerprints(manifest["tables"], restored)
            result.tables = len(restored)
            result.rows = sum(t["rows"] for t in restored.values())
            with django_alias(settings_dict, name) as scratch:
                report = consistency_check(using=scratch)
            result.consistency_summary = report.summary()
            result.problems += [f"consistency: {v}" for v in report.violations]
    except BackupError as exc:
        result.problems.append(str(exc))
    with transaction.atomic(using=alias):
        audit_record(actor=actor, action="backup.verify", object_type="database",
                     object_id=settings_dict["NAME"],
                     after={"file": str(path), "tables": result.tables, "rows": result.rows,
                            "problems": len(result.problems)},
                     outcome="ok" if result.ok else f"failed: {result.problems[0][:180]}")
    return result


def compare_fingerprints(expected: dict[str, dict[str, Any]],
                         actual: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for table in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(table), actual.get(table)
        if got is None:
            problems.append(f"table {table}: in the manifest, missing from the restore")
        elif want is None:
            problems.append(f"table {table}: restored, not in the manifest")
        elif want["rows"] != got["rows"]:
            problems.append(f"table {table}: {got['rows']} rows restored, the manifest says "
                            f"{want['rows']}")
        elif want["checksum"] != got["checksum"]:
            problems.append(f"table {table}: rows differ from the backup's (checksum)")
    return problems
