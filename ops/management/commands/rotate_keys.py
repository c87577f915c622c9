from django.conf import settings
from django.core.management.base import BaseCommand

from payments.services.payment_methods import (
    payment_methods_reencrypt,
    provider_credentials_reencrypt,
)


class Command(BaseCommand):
    help = ("Re-encrypt vaulted cards and provider credentials under VAULT_ACTIVE_KEY. Add the new key to VAULT_KEYS, "
            "make it active, deploy, run this; then the old key can be removed.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size: int, **options):
        count = payment_methods_reencrypt(batch_size=batch_size)
        accounts = provider_credentials_reencrypt()
        self.stdout.write(f"Re-encrypted {count} card(s) and the credentials of {accounts} "
                          f"provider account(s) under key {settings.VAULT_ACTIVE_KEY}.")
