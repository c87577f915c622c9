from django.conf import settings
from django.core.management.base import BaseCommand

from payments.audit import cli_actor
from payments.services.payment_methods import vault_keys_rotate


class Command(BaseCommand):
    help = ("Re-encrypt vaulted cards and provider credentials under VAULT_ACTIVE_KEY. Add the "
            "new key to VAULT_KEYS, make it active, deploy, run this; then the old key can be "
            "removed. One audit row records what was re-encrypted.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--reason", default="", help="Why (kept in the audit log)")

    def handle(self, *args, batch_size: int, reason: str, **options):
        count, accounts = vault_keys_rotate(actor=cli_actor(), reason=reason,
                                            batch_size=batch_size)
        self.stdout.write(f"Re-encrypted {count} card(s) and the credentials of {accounts} "
                          f"provider account(s) under key {settings.VAULT_ACTIVE_KEY}.")
