"""Periodic health probes of provider accounts (account management: may use the ORM).

A probe calls the adapter's cheap authenticated `probe()` and stores on the account whether it
answered (`healthy`), when, how fast and, if not, why.

The probe goes through the account's circuit breaker, and not through its limits or retries:
- breaker: a failing probe counts like any provider failure, so a provider that is down trips
  the breaker even before a payment suffers; and once the breaker's reset timeout has passed,
  the probe is the half-open trial call, so an idle account recovers without a customer's
  payment being the test. While the breaker is open the provider is not contacted and the
  account is recorded unhealthy ("breaker_open") with no latency: routing must skip it anyway.
- no limits: one call per account per minute is no load, and a busy account is not unhealthy;
- no retries: the probe reports what it saw.
"""

from __future__ import annotations

import logging
import time

from django.utils import timezone

from providers.accounts import adapter_for
from providers.base import ProviderError
from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_for

logger = logging.getLogger(__name__)

HEALTH_FIELDS = ["healthy", "health_checked_at", "health_latency_ms", "health_error"]


def probe_account(account: ProviderAccount) -> None:
    latency_ms: int | None = None
    error = ""
    try:
        adapter = adapter_for(account)
        with breaker_for(account).guard():
            started = time.monotonic()
            try:
                adapter.probe()
            finally:
                latency_ms = round((time.monotonic() - started) * 1000)
    except ProviderError as exc:
        error = f"{exc.code}: {exc.message}"
    except Exception as exc:  # an adapter bug is unhealthy too, and must not stop probe_all
        logger.exception("health probe of provider account %s raised unexpectedly", account.id)
        error = f"probe_error: {type(exc).__name__}"
    account.healthy = not error
    account.health_checked_at = timezone.now()
    account.health_latency_ms = latency_ms
    account.health_error = error[:255]
    account.save(update_fields=HEALTH_FIELDS)
    log = logger.info if account.healthy else logger.warning
    log("provider health account=%s provider=%s healthy=%s latency_ms=%s error=%s",
        account.id, account.provider, account.healthy, latency_ms, error)


def probe_all() -> int:
    """Probe every enabled account, one after another; returns how many were probed."""
    probed = 0
    for account in ProviderAccount.objects.filter(enabled=True).order_by("id"):
        try:
            probe_account(account)
        except Exception:  # e.g. the save failed: the other accounts still get probed
            logger.exception("health probe of provider account %s failed", account.id)
            continue
        probed += 1
    return probed
