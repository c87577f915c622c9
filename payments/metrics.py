"""Business metrics (Prometheus). No per-merchant labels."""

from prometheus_client import Counter

duplicate_charges_reversed = Counter(
    "switchyard_duplicate_charges_reversed_total",
    "Extra charges found by status sync and voided or refunded automatically.",
    ["provider"],
)
