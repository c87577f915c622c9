"""`manage.py check_consistency`: every invariant of the design against the data
(payments/services/consistency.py, docs/operations/consistency.md). Exit 0 with a summary
when clean; exit 1 naming every violation (rule, object id, what is wrong) otherwise."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from payments.services.consistency import RULES, consistency_check


class Command(BaseCommand):
    help = ("Check every invariant (amounts, attempts, event log replay, outbox, vault and "
            "credentials decryptable). Exit status 1 and one line per violation if any.")

    def add_arguments(self, parser):
        parser.add_argument("--rule", action="append", choices=sorted(RULES), dest="rules",
                            help="Check only this rule (repeatable); default: all")
        parser.add_argument("--list-rules", action="store_true",
                            help="Print the rules and what each checks, then exit")
        parser.add_argument("--database", default="default", help="Database alias")

    def handle(self, *args, rules, list_rules: bool, database: str, **options):
        if list_rules:
            for name, text in RULES.items():
                self.stdout.write(f"{name}: {text}")
            return
        report = consistency_check(using=database, rules=rules)
        for violation in report.violations:
            self.stdout.write(f"VIOLATION {violation}")
        if not report.ok:
            raise CommandError(report.summary())
        self.stdout.write(f"OK: {report.summary()}")
