"""HTTP for adapters: one httpx client per call site, explicit timeouts, and the one place that
decides what a transport failure means for money.

- The request provably never left (connection refused, connect timeout, no pool slot):
  `ProviderUnavailable`, safe to fail over.
- Anything after the request may have been sent (read/write timeout, dropped connection,
  protocol error): `OutcomeUnknown`, the provider may have charged.

Logs carry our request id, method, path, status and duration; never bodies (card data).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from providers import transports
from providers.base import AccountConfig, OutcomeUnknown, ProviderUnavailable

if TYPE_CHECKING:
    pass

logger = logging.getLogger("providers.http")


def client_for(config: AccountConfig) -> httpx.Client:
    timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
    if transports.is_local(config.base_url):
        local = transports.local_transport(config.base_url)
        if local is None:  # e.g. a sandbox:// account where the sandboxes are not installed
            raise ProviderUnavailable(
                f"Nothing serves {transports.scheme_of(config.base_url)}:// here.",
                raw_code="no_transport", sent=False)
        base_url, transport = local.client(config)
        return httpx.Client(base_url=base_url, transport=transport, timeout=timeout)
    # retries=0: whether a retry is safe is decided above this layer, never by the transport
    return httpx.Client(base_url=config.base_url, timeout=timeout,
                        transport=httpx.HTTPTransport(retries=0))


@contextmanager
def session(config: AccountConfig, client: httpx.Client | None = None) -> Iterator[httpx.Client]:
    """The caller's client if it gave one (kept open), else a new one closed afterwards."""
    if client is not None:
        yield client
        return
    own = client_for(config)
    try:
        yield own
    finally:
        own.close()


def send(client: httpx.Client, method: str, path: str, *, provider: str,
         **kwargs: Any) -> httpx.Response:
    """Send one request; classify transport failures; log without bodies."""
    request_id = "req_" + uuid.uuid4().hex[:20]
    headers = {"X-Request-Id": request_id, **kwargs.pop("headers", {})}
    started = time.monotonic()
    try:
        response = client.request(method, path, headers=headers, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        _log(provider, method, path, request_id, started, error=type(exc).__name__)
        raise ProviderUnavailable(f"Could not connect to {provider}: {type(exc).__name__}.",
                                  raw_code=type(exc).__name__, sent=False) from exc
    except httpx.TransportError as exc:
        _log(provider, method, path, request_id, started, error=type(exc).__name__)
        raise OutcomeUnknown(f"No answer from {provider} after sending: "
                             f"{type(exc).__name__}.", raw_code=type(exc).__name__) from exc
    _log(provider, method, path, request_id, started, status=response.status_code)
    return response


def _log(provider: str, method: str, path: str, request_id: str, started: float, *,
         status: int | None = None, error: str | None = None) -> None:
    logger.info("provider call provider=%s method=%s path=%s request_id=%s status=%s "
                "error=%s duration_ms=%d", provider, method, path, request_id, status, error,
                (time.monotonic() - started) * 1000)
