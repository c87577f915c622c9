"""`manage.py reconcile [--account ACCOUNT_ID --day YYYY-MM-DD]`: reconcile provider settlement
reports now, in this process (docs/operations/reconciliation.md). Without options: every due
day of every enabled account, as the periodic job does; with both: that one account and day
(any day, run again if it was run before)."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from payments.services.reconciliation import (
    ReconciliationFailed,
    reconcile_due,
    reconciliation_run,
)
from providers.models import ProviderAccount


class Command(BaseCommand):
    help = ("Reconcile provider settlement reports: every due day of every enabled account, "
            "or one account and day (--account and --day).")

    def add_arguments(self, parser):
        parser.add_argument("--account", help="A provider account id (acct_…)")
        parser.add_argument("--day", help="A UTC day, YYYY-MM-DD")

    def handle(self, *args, account: str | None, day: str | None, **options):
        if bool(account) != bool(day):
            raise CommandError("Give both --account and --day, or neither.")
        if account and day:
            try:
                the_day = dt.date.fromisoformat(day)
            except ValueError:
                raise CommandError(f"--day {day!r} is not a date (YYYY-MM-DD).") from None
            found = ProviderAccount.objects.filter(pk=account).first()
            if found is None:
                raise CommandError(f"No provider account {account!r}.")
            try:
                results = [reconciliation_run(account=found, day=the_day)]
            except ReconciliationFailed as exc:
                raise CommandError(f"{account} {the_day}: the report could not be read: "
                                   f"{exc}") from None
        else:
            results = reconcile_due()
        for result in results:
            self.stdout.write(f"{result.account_id} {result.day}: {result.status}, "
                              f"{result.lines} lines, {result.matched} matched, "
                              f"{result.settled} settled, {result.open_discrepancies} open "
                              f"discrepancies")
        if not results:
            self.stdout.write("Nothing due.")
        if any(r.status == "failed" for r in results):
            raise CommandError("Some reports could not be read (see the runs in the admin).")
