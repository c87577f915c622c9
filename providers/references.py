"""Our references and idempotency keys within each provider's length limits.

Our references are ids (`att_…` 28 characters, `mod_…`, `re_…`) and a few derived forms: the
release of an attempt (`<attempt>-release`, 36) and the reversal of an extra charge
(`<attempt>-reversal-<provider's charge id>`, up to 68 with Checkout.com's `pay_…` ids;
`payments.services.attempts.reversal_reference`). Providers cap them: Checkout.com's
`reference` at 50 characters, Adyen's at 80 and its Idempotency-Key at 64, Stripe's
Idempotency-Key at 255 and metadata values at 500. An adapter passes every reference and key
through `fit` with the provider's limit, at its edge, so nothing longer is ever sent.

A reference that fits is sent as it is. A longer one is cut to its first characters plus "~"
and a digest of the whole (11 base32 characters of SHA-256, 55 bits), exactly `limit` long:
- deterministic: a retry of the same operation sends the same reference and the same key, so
  the provider's idempotency still deduplicates it;
- distinct: two references that differ anywhere get different digests;
- recognisable: the start is kept, so whatever reads a reference the provider echoes back
  (webhooks, lookups) still finds our ids in it — a shortened reversal reference still starts
  with `<attempt>-reversal-` (38 characters, within even Checkout.com's 50), which is what
  `attempts.reversed_attempt_id` reads. Code that compares a provider's echo with our
  reference compares it with `fit(reference, limit)`, the form that was sent.
"""

from __future__ import annotations

import base64
import hashlib

SEPARATOR = "~"
DIGEST_LENGTH = 11


def digest(reference: str) -> str:
    raw = hashlib.sha256(reference.encode("utf-8")).digest()
    return base64.b32encode(raw).decode("ascii").lower()[:DIGEST_LENGTH]


def fit(reference: str, limit: int) -> str:
    """`reference` if it has at most `limit` characters, else its start, "~" and a digest of
    the whole, `limit` characters in all (see the module doc)."""
    if len(reference) <= limit:
        return reference
    if limit <= DIGEST_LENGTH + len(SEPARATOR):
        raise ValueError(f"A reference limit of {limit} leaves no room for a digest.")
    keep = limit - DIGEST_LENGTH - len(SEPARATOR)
    return reference[:keep] + SEPARATOR + digest(reference)
