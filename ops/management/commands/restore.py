"""`manage.py restore FILE [--force]` (ops/backups.py, docs/operations/backups.md)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ops.backup_crypto import BackupCryptoError
from ops.backups import BackupError, backup_restore
from payments.audit import cli_actor


class Command(BaseCommand):
    help = ("Restore a backup into the database DATABASE_URL names, which must be empty "
            "(--force: drop and replace what is there). Checks the file's checksum and "
            "decrypts every chunk before anything is written; restores in one transaction.")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--force", action="store_true",
                            help="Replace what the database holds (drops its tables)")

    def handle(self, *args, file: str, force: bool, **options):
        try:
            result = backup_restore(path=Path(file), force=force, actor=cli_actor())
        except (BackupError, BackupCryptoError) as exc:
            raise CommandError(str(exc)) from None
        checked = f"sha256 {result.sha256} checked" if result.sha256 else \
            "no checksum file beside it: not checked"
        self.stdout.write(f"Restored {Path(file).resolve()} into {result.database} "
                          f"({'decrypted' if result.encrypted else 'not encrypted'}; {checked}).")
