"""`manage.py verify_backup FILE` (ops/backups.py, docs/operations/backups.md)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ops.backup_crypto import BackupCryptoError
from ops.backups import BackupError, backup_verify
from payments.audit import cli_actor


class Command(BaseCommand):
    help = ("Restore a backup into a scratch database on the same server, run the "
            "consistency check there, compare every table's row count and checksum with the "
            "backup's manifest, and drop the scratch database. Exit 1 on any problem.")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--scratch-db", help="Name of the scratch database (default: "
                            "<database>_verify_<random>); it must not exist")

    def handle(self, *args, file: str, scratch_db: str | None, **options):
        try:
            result = backup_verify(path=Path(file), actor=cli_actor(), scratch_name=scratch_db)
        except (BackupError, BackupCryptoError) as exc:
            raise CommandError(str(exc)) from None
        for problem in result.problems:
            self.stdout.write(f"PROBLEM {problem}")
        if result.consistency_summary:
            self.stdout.write(f"consistency: {result.consistency_summary}")
        scratch = (f"scratch database {result.scratch_database} dropped"
                   if result.scratch_created else "no scratch database was created")
        if not result.ok:
            raise CommandError(f"{Path(file).name}: {len(result.problems)} problem(s); "
                               f"{scratch}.")
        self.stdout.write(f"OK: {Path(file).resolve()} restores ({result.tables} tables, "
                          f"{result.rows} rows, as the manifest says) and is consistent; "
                          f"{scratch}.")
