"""Versioned-key encryption at rest (AES-256-GCM, `cryptography`), shared by the card vault
(`payments.vault`) and provider-account credentials.

Keys come from the environment (`VAULT_KEYS`, `VAULT_ACTIVE_KEY`). Each ciphertext records the
id of the key that made it, so keys rotate without downtime: new data uses the active key, old
data still decrypts with its own until re-encrypted. The owning row's id is bound in as
associated data, so a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
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
