"""`manage.py sandbox_webhook connect --account acct_… --url https://switchyard.example` —
make a sandbox served by `run_sandbox` send an account's webhooks to Switchyard over HTTP
(what an operator sets in the provider's dashboard: the URL and a signature key — an HMAC key
for Adyen and Checkout.com, a `whsec_…` signing secret for Stripe — which is stored in the
account's credentials too). `list` shows the sandbox's endpoints, `remove --account`
deletes an account's. In-process (`sandbox://`) accounts are connected when created."""

from django.core.management.base import BaseCommand, CommandError

from providers.models import ProviderAccount
from providers.sandboxes import webhooks
from providers.sandboxes.models import SandboxWebhookEndpoint


class Command(BaseCommand):
    help = "Connect a sandbox account's webhooks to Switchyard's URL, list or remove them."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["connect", "list", "remove"])
        parser.add_argument("--account", help="provider account id (acct_…)")
        parser.add_argument("--url", help="Switchyard's base URL, e.g. http://127.0.0.1:8000")

    def handle(self, *args, action, account, url, **options):
        if action == "list":
            for endpoint in SandboxWebhookEndpoint.objects.order_by("provider", "id"):
                self.stdout.write(f"{endpoint.provider} {endpoint.merchant_account} → "
                                  f"{endpoint.url}")
            return
        if not account:
            raise CommandError("--account is required.")
        found = ProviderAccount.objects.filter(pk=account).first()
        if found is None:
            raise CommandError(f"No provider account {account!r}.")
        if action == "remove":
            count, _ = SandboxWebhookEndpoint.objects.filter(
                url__endswith=f"/provider_webhooks/{found.id}").delete()
            self.stdout.write(f"Removed {count} endpoint(s) of {found}.")
            return
        if not url or not url.startswith(("http://", "https://")):
            raise CommandError("--url must be Switchyard's http(s) base URL.")
        if found.livemode or found.base_url.startswith("https://"):
            raise CommandError(f"{found} is not a sandbox account: configure its webhooks in "
                               "the provider's dashboard.")
        endpoint = webhooks.connect_account(found, base_url=url)
        if not endpoint:
            raise CommandError(f"The {found.provider} sandbox sends no webhooks.")
        self.stdout.write(f"{found} webhooks → {endpoint}")
