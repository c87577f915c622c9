from django.core.management.base import BaseCommand, CommandError

from payments.audit import cli_actor
from payments.models import APIKey
from payments.services.merchants import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key by its id (key_…) or its displayed prefix (sk_test_xxxx)."

    def add_arguments(self, parser):
        parser.add_argument("key", help="key id or prefix")
        parser.add_argument("--reason", default="", help="Why (kept in the audit log)")

    def handle(self, *args, key: str, reason: str, **options):
        matches = list(APIKey.objects.filter(id=key)) or list(APIKey.objects.filter(prefix=key))
        if not matches:
            raise CommandError("No such API key.")
        if len(matches) > 1:
            raise CommandError("That prefix matches several keys; use the key id.")
        if not api_key_revoke(key=matches[0], actor=cli_actor(), reason=reason):
            self.stdout.write(f"{matches[0].prefix}… of {matches[0].merchant} was already "
                              "revoked.")
            return
        self.stdout.write(f"Revoked {matches[0].prefix}… of {matches[0].merchant}.")
