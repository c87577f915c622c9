"""HTTP for adapters: one httpx client per provider account and process, explicit timeouts,
and the one place that decides what a transport failure means for money.

A client (its connection pool) is built once per account and process and reused by every call
and thread (httpx.Client can be shared between threads), so calls reuse kept-alive
connections instead of paying a TCP and TLS handshake each. It carries no credentials (the
adapters send them per request); it is built again when what it was built from changes (base
URL, timeouts, the in-process transport serving it). A replaced client is closed once any
call still using it must have ended; every client is closed when the process exits; a forked
child never uses its parent's (their sockets are shared with the parent).

- The request provably never left (connection refused, connect timeout, no pool slot):
  `ProviderUnavailable`, safe to fail over.
- Anything after the request may have been sent (read/write timeout, dropped connection,
  protocol error): `OutcomeUnknown`, the provider may have charged.

Logs carry our request id, method, path, status and duration; never bodies (card data).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
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
    """A new client for the account (the caller closes it); calls use `shared_client`."""
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


# A replaced client is closed this long after it was replaced: longer than any call that may
# still be using it (connect and read timeouts are at most 120 s each, times the retries).
RETIRED_CLIENT_GRACE_SECONDS = 900.0


class _ClientCache:
    """The clients of this process, one per provider account."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # account key -> (what the client was built from, the client)
        self._clients: dict[tuple[str, ...], tuple[tuple[object, ...], httpx.Client]] = {}
        self._retired: list[tuple[float, httpx.Client]] = []  # (when replaced, client)
        self._inherited: list[object] = []  # a forked child's copies of its parent's

    def get(self, config: AccountConfig) -> httpx.Client:
        key = (config.account_id,) if config.account_id else (
            config.provider, config.name, config.base_url)
        local = transports.local_transport(config.base_url) \
            if transports.is_local(config.base_url) else None
        shape = (config.provider, config.base_url, config.connect_timeout,
                 config.read_timeout, id(local))
        with self._lock:
            entry = self._clients.get(key)
            if entry is not None and entry[0] == shape:
                return entry[1]
            client = client_for(config)  # raises (nothing cached) where nothing serves it
            self._clients[key] = (shape, client)
            now = time.monotonic()
            if entry is not None:
                self._retired.append((now, entry[1]))
            due = [c for t, c in self._retired if now - t > RETIRED_CLIENT_GRACE_SECONDS]
            self._retired = [(t, c) for t, c in self._retired
                             if now - t <= RETIRED_CLIENT_GRACE_SECONDS]
        for old in due:
            old.close()
        return client

    def close_all(self) -> None:
        with self._lock:
            clients = [c for _, c in self._clients.values()] + [c for _, c in self._retired]
            self._clients, self._retired = {}, []
        for client in clients:
            client.close()

    def forget_after_fork(self) -> None:
        # The child must not use (nor close: a TLS close would end the parent's session) the
        # parent's connections; it keeps them referenced, untouched, and builds its own.
        self._inherited.append((self._clients, self._retired))
        self._lock = threading.Lock()
        self._clients, self._retired = {}, []


_clients = _ClientCache()
atexit.register(_clients.close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_clients.forget_after_fork)


def shared_client(config: AccountConfig) -> httpx.Client:
    """This process's client for the account (built on first use, kept open)."""
    return _clients.get(config)


@contextmanager
def session(config: AccountConfig, client: httpx.Client | None = None) -> Iterator[httpx.Client]:
    """The caller's client if it gave one, else the account's shared client; neither is
    closed here."""
    yield client if client is not None else shared_client(config)


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
