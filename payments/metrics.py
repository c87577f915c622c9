"""Business metrics (Prometheus), counted where the work happens. No per-merchant labels.

The names are stable (dashboards and docs/operations/alerts.yml use them); every one is listed
with its meaning in docs/operations/monitoring.md. Gauges read from the database (unresolved
payments, backlogs) and the breakers are computed at scrape time by ops/metrics.py; the
provider latency histogram is in providers/metrics.py (measured by the gateway).
"""

from __future__ import annotations

from prometheus_client import Counter

from providers import outcomes

attempts = Counter(
    "switchyard_attempts_total",
    "Authorization attempts sent to a provider account, by provider and the call's outcome "
    "(approved, declined, unavailable, unknown); decline_code is the normalized decline code "
    "of a decline (\"other\" for a code outside the normalized table), empty otherwise.",
    ["provider", "outcome", "decline_code"],
)

compensations = Counter(
    "switchyard_compensations_total",
    "Extra charges found by status sync or a provider webhook and voided or refunded "
    "automatically (double-charge compensation).",
    ["provider"],
)

provider_webhook_events = Counter(
    "switchyard_provider_webhook_events_total",
    "Provider webhook events applied, by provider, event kind and what applying them did.",
    ["provider", "kind", "outcome"],
)

# Every decline code the normalized tables can produce (providers/outcomes.py; Checkout.com's
# ranges map to codes of its table too): the label's values are bounded by them, whatever a
# provider sends.
DECLINE_CODES: frozenset[str] = frozenset(
    o.decline_code for table in (outcomes.DECLINES, outcomes.RESULTS)
    for o in table.values() if o.decline_code
)


def decline_code_label(decline_code: str | None) -> str:
    if not decline_code:
        return "other"
    return decline_code if decline_code in DECLINE_CODES else "other"


def count_attempt(*, provider: str, outcome: str, decline_code: str | None) -> None:
    """One authorization call's outcome. `decline_code` counts only for a decline."""
    code = decline_code_label(decline_code) if outcome == "declined" else ""
    attempts.labels(provider=provider, outcome=outcome, decline_code=code).inc()
