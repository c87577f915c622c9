from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from payments.audit import cli_actor
from payments.models import Merchant
from payments.services.merchants import api_key_create, merchant_create

DEMO_NAME = "Demo Shop"


class Command(BaseCommand):
    help = ("Create (or reuse) the demo merchant, with a sandbox account per provider, and "
            "print a fresh test secret key with a ready-to-paste curl command. Safe to run "
            "again. Needs the sandboxes (SANDBOXES_ENABLED).")

    def add_arguments(self, parser):
        parser.add_argument("--port", default=None, help="Port for the printed curl command")

    def handle(self, *args, port=None, **options):
        import os

        if not settings.SANDBOXES_ENABLED:
            raise CommandError("The demo runs on the provider sandboxes: set "
                               "SANDBOXES_ENABLED=true (never in production).")
        port = port or os.environ.get("PORT", "8000")
        merchant = Merchant.objects.filter(name=DEMO_NAME).first()
        if merchant is None:
            merchant, test_key, _live_key = merchant_create(
                name=DEMO_NAME, sandbox_accounts=True, actor=cli_actor(), reason="seed_demo")
        else:  # keys are stored hashed, so an old one cannot be shown again: issue a new one
            _, test_key = api_key_create(merchant=merchant, livemode=False,
                                         actor=cli_actor(), reason="seed_demo")
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(self.style.SUCCESS(f"Demo merchant: {merchant.name} ({merchant.id})"))
        self.stdout.write(f"Test secret key: {test_key}")
        self.stdout.write("Try it:")
        self.stdout.write(f"  export SK={test_key} BASE={base}")
        self.stdout.write(
            "  curl -s $BASE/v1/payment_methods -H \"Authorization: Bearer $SK\" "
            "-H 'Content-Type: application/json' "
            "-d '{\"type\": \"card\", \"card\": {\"number\": \"4242424242424242\", "
            "\"exp_month\": 12, \"exp_year\": 2030, \"cvc\": \"123\"}}'"
        )
        self.stdout.write(f"API docs: {base}/v1/docs")
