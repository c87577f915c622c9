"""The card vault: card numbers encrypted at rest (`providers.crypto`: AES-256-GCM with
versioned keys, the payment method id bound in as associated data) and card fingerprints."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from providers.crypto import decrypt, encrypt

__all__ = ["decrypt", "encrypt", "fingerprint"]


def fingerprint(number: str, *, merchant_id: str) -> str:
    """Same card, same merchant → same fingerprint; reveals nothing about the number."""
    message = f"{merchant_id}:{number}".encode()
    return hmac.new(settings.FINGERPRINT_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]
