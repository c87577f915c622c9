from django.core.management.base import BaseCommand, CommandError

from payments.audit import cli_actor
from payments.models import Merchant
from payments.services.merchants import api_key_create


class Command(BaseCommand):
    help = ("Issue a new secret API key to a merchant (e.g. to replace a leaked one before "
            "revoking it with revoke_api_key). The key is printed once and stored only as a "
            "hash.")

    def add_arguments(self, parser):
        parser.add_argument("merchant", help="merchant id (mer_…) or exact name")
        parser.add_argument("--mode", choices=["test", "live"], default="test",
                            help="the key's mode (default: test)")
        parser.add_argument("--reason", default="", help="Why (kept in the audit log)")

    def handle(self, *args, merchant: str, mode: str, reason: str, **options):
        matches = (list(Merchant.objects.filter(id=merchant))
                   or list(Merchant.objects.filter(name=merchant)))
        if not matches:
            raise CommandError("No such merchant.")
        if len(matches) > 1:
            raise CommandError("That name matches several merchants; use the merchant id.")
        key, raw = api_key_create(merchant=matches[0], livemode=mode == "live",
                                  actor=cli_actor(), reason=reason)
        self.stdout.write(f"New {mode} key for {matches[0]} ({key.id}), shown once:\n  {raw}")
