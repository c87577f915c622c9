"""Provider call latency (Prometheus), measured by the gateway around each request an adapter
sends (every try of a retried call; never a call refused by a limit or an open breaker,
which sends nothing). The business counters are in payments/metrics.py."""

from __future__ import annotations

from prometheus_client import Histogram

provider_latency = Histogram(
    "switchyard_provider_latency_seconds",
    "Time a provider took to answer one request (each try of a retried call), by provider "
    "and operation (authorize, capture, cancel, refund, reverse, lookup, "
    "lookup_modification, release), errors and timeouts included.",
    ["provider", "operation"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0),
)
