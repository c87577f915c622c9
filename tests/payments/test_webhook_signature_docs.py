"""The signature verification snippet of docs/api.md ("Webhook deliveries") works: taken out
of the markdown as merchants copy it and run against signatures made by the documented
scheme, `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, one `v1` per active secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from payments.services.webhook_endpoints import new_signing_secret

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
NOW = 1767225602
BODY = json.dumps({"id": "evt_2B9xW8mTq1Rn4Ja6", "object": "event",
                   "type": "payment.succeeded", "created": NOW, "livemode": False,
                   "data": {"object": {"id": "pay_1", "object": "payment",
                                       "description": "Crème brûlée"}}},
                  ensure_ascii=False, separators=(",", ":")).encode()


def sign(body: bytes, secrets: list[str], t: int) -> str:
    """The Switchyard-Signature header for `body`, as docs/api.md describes it."""
    signatures = [hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
                  for secret in secrets]
    return ",".join([f"t={t}", *(f"v1={s}" for s in signatures)])


@pytest.fixture(scope="module")
def verify() -> Callable[..., bool]:
    """`verify_switchyard_signature`, defined by running the documented snippet."""
    text = API_MD.read_text()
    section = text[text.index("## Webhook deliveries"):]
    snippets = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(snippets) == 1, "one Python snippet in 'Webhook deliveries'"
    namespace: dict = {}
    exec(compile(snippets[0], str(API_MD), "exec"), namespace)  # noqa: S102 (our own docs)
    assert namespace["TOLERANCE_SECONDS"] == 300
    return namespace["verify_switchyard_signature"]


def test_a_signed_delivery_verifies(verify):
    secret = new_signing_secret()
    assert verify(BODY, sign(BODY, [secret], NOW), secret, now=NOW)
    assert verify(BODY, sign(BODY, [secret], NOW - 300), secret, now=NOW)
    assert verify(BODY, sign(BODY, [secret], NOW + 300), secret, now=NOW)


def test_during_a_roll_either_secret_verifies(verify):
    new, previous = new_signing_secret(), new_signing_secret()
    header = sign(BODY, [new, previous], NOW)
    assert header.count("v1=") == 2
    assert verify(BODY, header, new, now=NOW)
    assert verify(BODY, header, previous, now=NOW)
    assert not verify(BODY, header, new_signing_secret(), now=NOW)


def test_the_snippet_uses_the_clock_by_default(verify):
    import time

    secret = new_signing_secret()
    assert verify(BODY, sign(BODY, [secret], int(time.time())), secret)


@pytest.mark.parametrize("tamper", [
    lambda body, header, secret: (body + b" ", header, secret),  # body changed
    lambda body, header, secret: (body.replace(b"1", b"2", 1), header, secret),
    lambda body, header, secret: (body, header, new_signing_secret()),  # another secret
    lambda body, header, secret: (body, header, secret[:-1]),
    lambda body, header, secret: (body, header.replace(f"t={NOW}", f"t={NOW + 1}"), secret),
    lambda body, header, secret: (body, header.split(",")[0], secret),  # no v1
    lambda body, header, secret: (body, header.replace("v1=", "v0="), secret),
    lambda body, header, secret: (body, header.split(",", 1)[1], secret),  # no t
    lambda body, header, secret: (body, "", secret),
    lambda body, header, secret: (body, header.replace(f"t={NOW}", "t=-1"), secret),
    lambda body, header, secret: (body, header.replace(f"t={NOW}", "t=１７"), secret),
])
def test_anything_else_does_not(verify, tamper):
    secret = new_signing_secret()
    body, header, key = tamper(BODY, sign(BODY, [secret], NOW), secret)
    assert not verify(body, header, key, now=NOW)


def test_an_old_or_future_timestamp_is_refused(verify):
    secret = new_signing_secret()
    assert not verify(BODY, sign(BODY, [secret], NOW - 301), secret, now=NOW)
    assert not verify(BODY, sign(BODY, [secret], NOW + 301), secret, now=NOW)
