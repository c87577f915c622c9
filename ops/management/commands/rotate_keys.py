from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from payments.audit import cli_actor
from payments.services.payment_methods import RotationIncomplete, vault_keys_rotate


class Command(BaseCommand):
    help = ("Re-encrypt vaulted cards, provider credentials and webhook signing secrets under "
            "VAULT_ACTIVE_KEY, online (short transactions, rows others hold locked are "
            "skipped and retried). Add the new key to VAULT_KEYS, make it active, deploy "
            "everywhere, run this; when it succeeds the old key can be removed. One audit "
            "row records what was re-encrypted. Exit 1 if rows are left under old keys.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500,
                            help="Cards per transaction (accounts and endpoints: one each)")
        parser.add_argument("--passes", type=int, default=10,
                            help="Passes over rows left under old keys (locked by others)")
        parser.add_argument("--reason", default="", help="Why (kept in the audit log)")

    def handle(self, *args, batch_size: int, passes: int, reason: str, **options):
        try:
            count, accounts = vault_keys_rotate(actor=cli_actor(), reason=reason,
                                                batch_size=batch_size, passes=passes)
        except RotationIncomplete as exc:
            raise CommandError(f"Rotation incomplete: {exc}") from None
        self.stdout.write(f"Re-encrypted {count} card(s) and the credentials of {accounts} "
                          f"provider account(s) under key {settings.VAULT_ACTIVE_KEY}; nothing "
                          "is left under another key.")
