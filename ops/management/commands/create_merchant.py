from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from payments.audit import cli_actor
from payments.models import Merchant
from payments.services.merchants import merchant_create
from providers.accounts import SANDBOX_ACCOUNTS, AccountError


class Command(BaseCommand):
    help = ("Create a merchant and print its test and live secret keys (shown once, stored only "
            "hashed); with --sandbox (the default where SANDBOXES_ENABLED) also a test-mode "
            "sandbox account per provider.")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--reason", default="", help="Why (kept in the audit log)")
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--sandbox", dest="sandbox", action="store_true", default=None,
            help="Give it one test-mode sandbox account per provider (the default where "
                 "SANDBOXES_ENABLED is true; refused where it is not).")
        group.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                           help="No sandbox accounts (the default where SANDBOXES_ENABLED is "
                                "false, as in production).")

    def handle(self, *args, name: str, sandbox: bool | None, reason: str, **options):
        name = name.strip()
        if not name:
            raise CommandError("The merchant name must not be empty.")
        if Merchant.objects.filter(name=name).exists():
            raise CommandError(f"A merchant named {name!r} already exists.")
        if sandbox is None:
            sandbox = settings.SANDBOXES_ENABLED
        try:
            merchant, test_key, live_key = merchant_create(
                name=name, sandbox_accounts=sandbox, actor=cli_actor(), reason=reason)
        except AccountError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Created merchant {merchant.name} ({merchant.id}).")
        if sandbox:
            names = ", ".join(account for account, _ in SANDBOX_ACCOUNTS)
            self.stdout.write(f"Sandbox accounts: {names}")
        else:
            self.stdout.write("No provider accounts yet: add them with "
                              "`manage.py provider_account add`.")
        self.stdout.write("Secret keys (shown once; store them safely):")
        self.stdout.write(f"  test: {test_key}")
        self.stdout.write(f"  live: {live_key}")
