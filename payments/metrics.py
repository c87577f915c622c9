"""Business metrics (Prometheus). No per-merchant labels."""

from prometheus_client import Counter

duplicate_charges_reversed = Counter(
    "switchyard_duplicate_charges_reversed_total",
    "Extra charges found by status sync and voided or refunded automatically.",
    ["provider"],
)

provider_webhook_events = Counter(
    "switchyard_provider_webhook_events_total",
    "Provider webhook events applied, by provider, event kind and what applying them did.",
    ["provider", "kind", "outcome"],
)
