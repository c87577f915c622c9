"""The CVC reaches the provider with a card's first authorization (or whenever the merchant
sends one with the payment), and neither it nor the card number can be read back from the
database, Redis or the logs afterwards (issue #8, item 8)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from payments import vault as card_vault
from payments.models import PaymentMethod
from payments.services import idempotency
from tests.conftest import Api

NUMBER = "4000056655665556"  # a Luhn-valid Visa number no sandbox treats specially
CVC = "947"
ACCOUNTS = ["stripe-sandbox", "adyen-sandbox", "checkout-sandbox"]
# the CVC next to a CVC-ish name, in JSON, form encoding or a log line
CVC_NEAR_NAME = re.compile(r"(cvc|cvv|security.?code)\W{0,12}" + CVC, re.IGNORECASE)


@pytest.fixture
def sent(monkeypatch) -> list[bytes]:
    """The body of every request an adapter sends (in-process sandboxes included)."""
    bodies: list[bytes] = []
    real = httpx.Client.send

    def send(self, request, **kwargs):
        bodies.append(request.read())
        return real(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", send)
    return bodies


def carries_cvc(body: bytes) -> bool:
    text = httpx.QueryParams(body.decode()).multi_items() if b"=" in body and b"{" not in body \
        else None
    if text is not None:
        return any(key.endswith("[cvc]") and value == CVC for key, value in text)
    return bool(re.search(rb'"(cvc|cvv)"\s*:\s*"' + CVC.encode() + rb'"', body))


def vault(api: Api, cvc: str | None = CVC) -> str:
    card = {"number": NUMBER, "exp_month": 12, "exp_year": 2034}
    if cvc:
        card["cvc"] = cvc
    resp = api.post("/v1/payment_methods", {"type": "card", "card": card},
                    idempotency_key=f"vault-{uuid.uuid4().hex}")
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]


def pay(api: Api, pm: str, account: str, key: str = "", **fields):
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "EUR", "confirm": True,
                                     "payment_method": pm, "provider": account, **fields},
                    idempotency_key=f"pay-{pm}-{account}-{key}")
    assert resp.status_code == 200, resp.json()
    return resp.json()


@pytest.mark.django_db
@pytest.mark.parametrize("account", ACCOUNTS)
def test_the_first_authorization_carries_the_vaulted_cvc_and_then_it_is_gone(api, sent,
                                                                            account):
    pm = vault(api)
    assert PaymentMethod.objects.get(pk=pm).encrypted_cvc is not None  # kept, encrypted
    pay(api, pm, account)
    assert any(carries_cvc(body) for body in sent)
    assert PaymentMethod.objects.get(pk=pm).encrypted_cvc is None  # erased once used
    sent.clear()
    pay(api, pm, account, key="second")  # the card's second authorization: no CVC any more
    assert sent and not any(carries_cvc(body) for body in sent)


@pytest.mark.django_db
@pytest.mark.parametrize("account", ACCOUNTS)
def test_a_cvc_sent_with_the_payment_goes_to_the_provider(api, sent, account):
    pm = vault(api, cvc=None)
    pay(api, pm, account, cvc=CVC)
    assert any(carries_cvc(body) for body in sent)
    created = api.post("/v1/payments", {"amount": 500, "currency": "EUR",
                                        "payment_method": pm, "provider": account}).json()
    sent.clear()
    resp = api.post(f"/v1/payments/{created['id']}/confirm", {"cvc": CVC})
    assert resp.status_code == 200, resp.json()
    assert any(carries_cvc(body) for body in sent)


@pytest.mark.django_db
def test_a_cvc_of_the_wrong_length_for_the_card_is_a_400(api):
    pm = vault(api, cvc=None)
    resp = api.post("/v1/payments", {"amount": 500, "currency": "EUR", "confirm": True,
                                     "payment_method": pm, "cvc": "1234"})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "cvc"


@pytest.mark.django_db
def test_a_failed_routing_keeps_the_cvc_for_the_real_first_authorization(api):
    pm = vault(api)
    resp = api.post("/v1/payments", {"amount": 500, "currency": "EUR", "confirm": True,
                                     "payment_method": pm, "provider": "no-such-account"})
    assert resp.status_code == 400
    assert PaymentMethod.objects.get(pk=pm).encrypted_cvc is not None


def _database_text() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
        chunks = []
        for table in tables:
            cursor.execute(f'SELECT t::text FROM "{table}" AS t')  # noqa: S608 - our names
            chunks += [row[0] for row in cursor.fetchall()]
    return "\n".join(chunks)


def _redis_text() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL)
    chunks = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            chunks += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == b"list":
            chunks += client.lrange(key, 0, -1)
        elif kind == b"zset":
            chunks += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"set":
            chunks += list(client.smembers(key))
        chunks.append(key)
    return b"\n".join(chunks).decode("utf-8", "replace")


@pytest.mark.django_db(transaction=True)
def test_no_card_number_or_cvc_at_rest_after_a_run(api, caplog, capfd):
    """Vault, pay on every provider, confirm with a CVC, refund, replay a key: then nothing in
    Postgres (every table, the sandboxes' included), Redis or the logs gives back the number
    or the CVC."""
    caplog.set_level(logging.DEBUG)
    for account in ACCOUNTS:
        pm = vault(api)
        paid = pay(api, pm, account)
        pay(api, pm, account)  # the same request again: replayed from its key
        api.post("/v1/refunds", {"payment": paid["id"], "amount": 100})
        created = api.post("/v1/payments", {"amount": 500, "currency": "EUR",
                                            "payment_method": pm, "provider": account}).json()
        api.post(f"/v1/payments/{created['id']}/confirm", {"cvc": CVC},
                 idempotency_key=f"confirm-{created['id']}")
    out, err = capfd.readouterr()
    for where, text in (("the database", _database_text()), ("Redis", _redis_text()),
                        ("the logs", caplog.text + out + err)):
        assert NUMBER not in text, f"the card number is in {where}"
        assert not CVC_NEAR_NAME.search(text), f"the CVC is in {where}"


def test_the_idempotency_fingerprint_says_nothing_about_the_cvc(merchant):
    """Whoever holds FINGERPRINT_KEY and a key's stored fingerprint cannot try the 1,000
    CVCs against it: the CVC counts only by its presence."""
    body = {"type": "card", "card": {"number": NUMBER, "exp_month": 12, "exp_year": 2034}}
    prints = {idempotency.request_fingerprint(
        "POST", "/v1/payment_methods", {**body, "card": {**body["card"], "cvc": f"{c:03d}"}},
        merchant_id=merchant.id) for c in range(1000)}
    assert len(prints) == 1
    assert prints != {idempotency.request_fingerprint("POST", "/v1/payment_methods", body,
                                                      merchant_id=merchant.id)}


def test_the_idempotency_fingerprint_holds_the_number_only_as_the_vault_does(merchant):
    """The number counts by the card fingerprint the payment method row stores anyway (the
    same card written with spaces is the same request; another card is not), so a key's
    fingerprint gives no more to a brute force than that row does."""
    def fingerprint(number: str) -> str:
        return idempotency.request_fingerprint(
            "POST", "/v1/payment_methods",
            {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034}},
            merchant_id=merchant.id)

    spaced = " ".join(NUMBER[i:i + 4] for i in range(0, 16, 4))
    assert fingerprint(NUMBER) == fingerprint(spaced)
    assert fingerprint(NUMBER) != fingerprint("4242424242424242")
    # what is hashed for the number is the vault's fingerprint, not the digits
    canonical = idempotency._without_card_data(
        {"card": {"number": NUMBER}}, merchant.id)
    card = card_vault.fingerprint(NUMBER, merchant_id=merchant.id)
    assert canonical == {"card": {"number": f"<card {card}>"}}


@pytest.mark.django_db
def test_a_cvc_is_not_kept_for_a_card_that_is_never_authorized(api, settings):
    from django.utils import timezone

    from payments.services.payment_methods import payment_methods_erase_stale_cvcs

    fresh, stale = vault(api), vault(api)
    PaymentMethod.objects.filter(pk=stale).update(
        created_at=timezone.now() - dt.timedelta(hours=settings.CVC_RETENTION_HOURS + 1))
    assert payment_methods_erase_stale_cvcs() == 1
    assert PaymentMethod.objects.get(pk=stale).encrypted_cvc is None
    assert PaymentMethod.objects.get(pk=fresh).encrypted_cvc is not None


@pytest.mark.django_db
def test_a_cvc_without_confirm_is_refused(api):
    pm = vault(api, cvc=None)
    resp = api.post("/v1/payments", {"amount": 500, "currency": "EUR", "payment_method": pm,
                                     "cvc": CVC})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "cvc"
