"""`manage.py sandbox_fault --provider stripe|adyen|checkout [--outage on|off] [--latency-ms N]
[--soft-decline-rate 0..1] [--clear]` — conditions of a simulated provider, seen by every
process (they live in the database)."""

from django.core.management.base import BaseCommand, CommandError

from providers.models import PROVIDERS
from providers.sandboxes.models import SandboxCondition


class Command(BaseCommand):
    help = "Set or clear a sandbox provider's conditions (outage, latency, soft-decline rate)."

    def add_arguments(self, parser):
        parser.add_argument("--provider", required=True, choices=PROVIDERS)
        parser.add_argument("--outage", choices=["on", "off"])
        parser.add_argument("--latency-ms", type=int)
        parser.add_argument("--soft-decline-rate", type=float)
        parser.add_argument("--clear", action="store_true", help="back to normal")

    def handle(self, *args, provider, outage, latency_ms, soft_decline_rate, clear, **options):
        if latency_ms is not None and not 0 <= latency_ms <= 120_000:
            raise CommandError("--latency-ms must be between 0 and 120000.")
        if soft_decline_rate is not None and not 0 <= soft_decline_rate <= 1:
            raise CommandError("--soft-decline-rate must be between 0 and 1.")
        condition, _ = SandboxCondition.objects.get_or_create(provider=provider)
        if clear:
            condition.outage, condition.latency_ms, condition.soft_decline_rate = False, 0, 0.0
        if outage is not None:
            condition.outage = outage == "on"
        if latency_ms is not None:
            condition.latency_ms = latency_ms
        if soft_decline_rate is not None:
            condition.soft_decline_rate = soft_decline_rate
        condition.save()
        self.stdout.write(str(condition))
