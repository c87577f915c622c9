"""Receiving provider webhooks: which parser reads a provider's deliveries, and how the
delivery is authenticated. Payments stores and applies the resulting `ProviderEvent`s.

Credentials that matter here, per account (encrypted with the others):
- adyen: `hmac_key` (hex, from the Customer Area webhook settings), optionally
  `hmac_key_previous` (still accepted during a rotation) and `webhook_username` /
  `webhook_password` (the Basic auth Adyen sends, checked when set);
- checkout: `webhook_secret` (the signature key of the workflow's webhook action), optionally
  `webhook_secret_previous` and `webhook_authorization` (a fixed Authorization header).
Stripe deliveries are not received yet: its status comes from lookups.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from providers.adyen import webhooks as adyen
from providers.base import InvalidWebhook, ProviderEvent
from providers.checkout import webhooks as checkout

RECEIVERS = {"adyen", "checkout"}
ACKNOWLEDGEMENTS = {"adyen": adyen.ACCEPTED}


def parse(*, provider: str, livemode: bool, credentials: Mapping[str, str], body: bytes,
          headers: Mapping[str, str]) -> list[ProviderEvent]:
    """The authentic events of one delivery; raises InvalidWebhook (400 or 401)."""
    if provider not in RECEIVERS:
        raise InvalidWebhook(f"Webhooks from {provider} are not received.", status=404)
    if provider == "checkout":
        _check_static_authorization(credentials, headers.get("authorization", ""))
        return checkout.parse(body, signature=headers.get(checkout.SIGNATURE_HEADER, ""),
                              keys=[credentials.get("webhook_secret", ""),
                                    credentials.get("webhook_secret_previous", "")])
    _check_basic_auth(credentials, headers.get("authorization", ""))
    return adyen.parse(body, livemode=livemode, hmac_keys=[
        credentials.get("hmac_key", ""), credentials.get("hmac_key_previous", "")],
        merchant_account=credentials.get("merchant_account", ""))


def acknowledgement(provider: str) -> str:
    return ACKNOWLEDGEMENTS.get(provider, "")


def _check_static_authorization(credentials: Mapping[str, str], header: str) -> None:
    """Checkout.com can send a fixed `Authorization` header set on the webhook action."""
    expected = credentials.get("webhook_authorization", "")
    if expected and not hmac.compare_digest(header.encode(), expected.encode()):
        raise InvalidWebhook("Wrong or missing Authorization header.", status=401)


def _check_basic_auth(credentials: Mapping[str, str], header: str) -> None:
    username = credentials.get("webhook_username", "")
    password = credentials.get("webhook_password", "")
    if not username and not password:
        return
    given = b""
    if header.startswith("Basic "):
        try:
            given = base64.b64decode(header[6:], validate=True)
        except (binascii.Error, ValueError):
            given = b""
    if not hmac.compare_digest(given, f"{username}:{password}".encode()):
        raise InvalidWebhook("Wrong or missing Basic credentials.", status=401)
