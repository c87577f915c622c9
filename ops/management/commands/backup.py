"""`manage.py backup [--dir DIR] [--keep N]` (ops/backups.py, docs/operations/backups.md)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ops.backup_crypto import BackupCryptoError
from ops.backups import BackupError, backup_create
from payments.audit import cli_actor


class Command(BaseCommand):
    help = ("Dump the database (pg_dump custom format, compressed; encrypted when "
            "BACKUP_ENCRYPTION_KEY is set) with a checksum and a manifest of row counts, keep "
            "the newest N backups, and print the file's absolute path and SHA-256.")

    def add_arguments(self, parser):
        parser.add_argument("--dir", help=f"Directory (default BACKUP_DIR: {settings.BACKUP_DIR})")
        parser.add_argument("--keep", type=int, help="Backups of this database to keep there, "
                            f"the new one included; 0 keeps all (default BACKUP_KEEP: "
                            f"{settings.BACKUP_KEEP})")
        encryption = parser.add_mutually_exclusive_group()
        encryption.add_argument("--encrypt", action="store_true", default=None,
                                help="Refuse to run unless BACKUP_ENCRYPTION_KEY is set")
        encryption.add_argument("--no-encrypt", action="store_false", dest="encrypt",
                                help="Do not encrypt, even with BACKUP_ENCRYPTION_KEY set")

    def handle(self, *args, dir: str | None, keep: int | None, encrypt: bool | None,
               **options):
        directory = Path(dir or settings.BACKUP_DIR)
        keep = settings.BACKUP_KEEP if keep is None else keep
        if keep < 0:
            raise CommandError("--keep must be 0 or more.")
        try:
            result = backup_create(directory=directory, keep=keep, actor=cli_actor(),
                                   encrypt=encrypt)
        except (BackupError, BackupCryptoError) as exc:
            raise CommandError(str(exc)) from None
        for path in result.removed:
            self.stderr.write(f"removed {path} (retention: keep {keep})")
        rows = sum(t["rows"] for t in result.tables.values())
        self.stderr.write(f"{len(result.tables)} tables, {rows} rows, {result.size} bytes, "
                          f"{'encrypted' if result.encrypted else 'NOT encrypted'}")
        self.stdout.write(f"{result.path}\nsha256 {result.sha256}")
