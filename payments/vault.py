"""Card-number encryption at rest with versioned keys (AES-256-GCM, `cryptography`).

Keys come from the environment (`VAULT_KEYS`, `VAULT_ACTIVE_KEY`). Each ciphertext records the
id of the key that made it, so keys rotate without downtime: new cards use the active key,
old ones still decrypt with theirs until re-encrypted. The payment method id is bound in as
associated data, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _keys() -> dict[str, bytes]:
    keys = {}
    for key_id, encoded in settings.VAULT_KEYS.items():
        raw = base64.b64decode(encoded)
        if len(raw) != 32:
            raise ImproperlyConfigured(f"Vault key {key_id!r} must be 32 bytes, base64-encoded.")
        keys[key_id] = raw
    if settings.VAULT_ACTIVE_KEY not in keys:
        raise ImproperlyConfigured("VAULT_ACTIVE_KEY must name one of VAULT_KEYS.")
    return keys


def encrypt(plaintext: str, *, associated: str) -> tuple[str, bytes]:
    """Return (key id, nonce + ciphertext) under the active key."""
    key_id = settings.VAULT_ACTIVE_KEY
    nonce = os.urandom(12)
    sealed = AESGCM(_keys()[key_id]).encrypt(nonce, plaintext.encode(), associated.encode())
    return key_id, nonce + sealed


def decrypt(key_id: str, blob: bytes, *, associated: str) -> str:
    blob = bytes(blob)
    key = _keys().get(key_id)
    if key is None:
        raise ImproperlyConfigured(f"Vault key {key_id!r} is not configured.")
    return AESGCM(key).decrypt(blob[:12], blob[12:], associated.encode()).decode()


def fingerprint(number: str, *, merchant_id: str) -> str:
    """Same card, same merchant → same fingerprint; reveals nothing about the number."""
    message = f"{merchant_id}:{number}".encode()
    return hmac.new(settings.FINGERPRINT_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]
