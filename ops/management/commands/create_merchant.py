from django.core.management.base import BaseCommand, CommandError

from payments.models import Merchant
from payments.services.merchants import merchant_create


class Command(BaseCommand):
    help = ("Create a merchant with a test-mode sandbox account per provider, and print its "
            "test and live secret keys (shown once, stored only hashed).")

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name: str, **options):
        name = name.strip()
        if not name:
            raise CommandError("The merchant name must not be empty.")
        if Merchant.objects.filter(name=name).exists():
            raise CommandError(f"A merchant named {name!r} already exists.")
        merchant, test_key, live_key = merchant_create(name=name)
        self.stdout.write(f"Created merchant {merchant.name} ({merchant.id}).")
        self.stdout.write("Sandbox accounts: stripe-sandbox, adyen-sandbox, checkout-sandbox")
        self.stdout.write("Secret keys (shown once; store them safely):")
        self.stdout.write(f"  test: {test_key}")
        self.stdout.write(f"  live: {live_key}")
