"""Calling a provider from payments: through the gateway, every answer classified."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from providers import base, gateway
from providers.models import ProviderAccount

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a provider call came to, in the terms the state machine needs."""

    kind: str  # approved | declined | unavailable | unknown
    result: object = None
    error: base.ProviderError | None = None


def call_provider(account: ProviderAccount, operation: str, request) -> Outcome:
    """Call `operation` (authorize, capture, cancel, refund) on the account through the
    provider gateway (limits, circuit breaker, safe retries, adapter) and classify what
    happened. Never raises: every failure becomes an outcome."""
    try:
        return Outcome("approved", result=gateway.call(account, operation, request))
    except (base.HardDecline, base.SoftDecline) as exc:
        return Outcome("declined", error=exc)
    except (base.ProviderUnavailable, base.ProviderBadRequest) as exc:
        return Outcome("unavailable", error=exc)
    except base.OutcomeUnknown as exc:
        return Outcome("unknown", error=exc)
    except Exception as exc:  # an adapter bug after sending: the money may have moved
        logger.exception("provider call raised unexpectedly; treating the outcome as unknown")
        return Outcome("unknown", error=base.OutcomeUnknown(type(exc).__name__))


def _error_body(error: base.ProviderError) -> dict:
    return {"code": error.code, "decline_code": error.decline_code, "message": error.message}
