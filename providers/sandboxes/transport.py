"""How production code reaches an in-process sandbox: the `sandbox://` entry of the transport
registry (providers/transports.py), registered by this app's AppConfig.ready()."""

from __future__ import annotations

import httpx

from providers.base import AccountConfig
from providers.sandboxes.catalog import BASE_PATHS, SANDBOX_CREDENTIALS, app_for
from providers.sandboxes.ledger import DropConnection, Hang
from providers.transports import LocalTransport

SANDBOX_HOST = "http://sandbox.invalid"


class SandboxTransport(httpx.BaseTransport):
    """httpx.WSGITransport to an in-process sandbox, with its faults turned into the errors a
    real network gives: a dropped connection, a read timeout."""

    def __init__(self, app):
        self._inner = httpx.WSGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._inner.handle_request(request)
        except DropConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request) from None
        except Hang:
            raise httpx.ReadTimeout("The read operation timed out", request=request) from None


def _client(config: AccountConfig) -> tuple[str, httpx.BaseTransport]:
    return (SANDBOX_HOST + BASE_PATHS[config.provider],
            SandboxTransport(app_for(config.provider)))


def _placeholder_credentials(provider: str) -> dict[str, str]:
    return dict(SANDBOX_CREDENTIALS[provider])


def _connect_account(account) -> str:
    from providers.sandboxes import webhooks

    return webhooks.connect_account(account)


SANDBOX = LocalTransport(client=_client, placeholder_credentials=_placeholder_credentials,
                         connect_account=_connect_account)
