"""Receiving provider webhooks: which parser reads a provider's deliveries, and how the
delivery is authenticated. Payments stores and applies the resulting `ProviderEvent`s.

Credentials that matter here, per account (encrypted with the others):
- adyen: `hmac_key` (hex, from the Customer Area webhook settings), optionally
  `hmac_key_previous` (still accepted during a rotation) and `webhook_username` /
  `webhook_password` (the Basic auth Adyen sends, checked when set);
- checkout: `webhook_secret` (the signature key of the workflow's webhook action), optionally
  `webhook_secret_previous` and `webhook_authorization` (a fixed Authorization header);
- stripe: `webhook_secret` (the endpoint's signing secret, `whsec_…`, from the Dashboard or
  the API's WebhookEndpoint), optionally `webhook_secret_previous` (still accepted while
  Stripe signs with both, during a rotation).

`precheck` runs before the account is read: what needs no credential (the body is JSON, a
`Stripe-Signature` header's shape and timestamp) is refused without a database read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from providers.adyen import webhooks as adyen
from providers.base import InvalidWebhook, ProviderEvent, webhook_json
from providers.checkout import webhooks as checkout
from providers.stripe import webhooks as stripe

RECEIVERS = {"adyen", "checkout", "stripe"}
ACKNOWLEDGEMENTS = {"adyen": adyen.ACCEPTED}


def precheck(*, body: bytes, headers: Mapping[str, str]) -> None:
    """Refuse what can be refused before reading any account: a body that is not JSON (400:
    every provider sends JSON, so the answer is the same whichever account is named) and a
    `Stripe-Signature` header that is garbled or outside Stripe's tolerance (401). `headers`
    have lower-case names."""
    if stripe.SIGNATURE_HEADER in headers:
        stripe.read_header(headers[stripe.SIGNATURE_HEADER])
    webhook_json(body)


def parse(*, provider: str, livemode: bool, credentials: Mapping[str, str], body: bytes,
          headers: Mapping[str, str]) -> list[ProviderEvent]:
    """The authentic events of one delivery; raises InvalidWebhook (400 or 401)."""
    if provider not in RECEIVERS:
        raise InvalidWebhook(f"Webhooks from {provider} are not received.", status=404)
    if provider == "stripe":
        return stripe.parse(body, header=headers.get(stripe.SIGNATURE_HEADER, ""),
                            secrets=[credentials.get("webhook_secret", ""),
                                     credentials.get("webhook_secret_previous", "")],
                            livemode=livemode)
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
