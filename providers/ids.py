"""Random, prefixed, non-sequential object ids (`pay_…`, `pm_…`)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A prefixed id with ~142 bits of randomness: unguessable and never sequential."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
