from django.core.management.base import BaseCommand, CommandError

from payments.models import APIKey
from payments.services.merchants import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key by its id (key_…) or its displayed prefix (sk_test_xxxx)."

    def add_arguments(self, parser):
        parser.add_argument("key", help="key id or prefix")

    def handle(self, *args, key: str, **options):
        matches = list(APIKey.objects.filter(id=key)) or list(APIKey.objects.filter(prefix=key))
        if not matches:
            raise CommandError("No such API key.")
        if len(matches) > 1:
            raise CommandError("That prefix matches several keys; use the key id.")
        api_key_revoke(key=matches[0])
        self.stdout.write(f"Revoked {matches[0].prefix}… of {matches[0].merchant}.")
