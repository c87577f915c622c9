"""The card vault through the API: POST/GET /v1/payment_methods (docs/api.md, "Payment methods").

What a merchant sees (the exact response shape, strict validation with a `param` that names the
field), and what nobody may see: the full number and the CVC never come back, never reach an
error body or a log record, and the number is stored only encrypted under a versioned key.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pytest
from cryptography.exceptions import InvalidTag
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import override_settings

from ops.logging import CardNumberScrubFilter, scrub
from payments import vault
from payments.cards import validate_card
from payments.errors import InvalidRequest
from payments.models import PaymentMethod
from payments.services.payment_methods import card_for_provider
from tests.conftest import assert_invalid, make_card

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
MASTERCARD_2_SERIES = "2223003122003222"
AMEX = "378282246310005"
LUHN_FAILING = "4242424242424241"

PM_KEYS = {"id", "object", "type", "card", "billing_details", "created", "livemode"}
CARD_KEYS = {"brand", "last4", "bin", "exp_month", "exp_year", "fingerprint"}


def with_check_digit(partial: str) -> str:
    """`partial` plus the Luhn check digit (an implementation independent of the app's)."""
    for check in "0123456789":
        candidate = partial + check
        total = 0
        for i, ch in enumerate(reversed(candidate)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d // 10 + d % 10
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def card_body(number: str = VISA, *, exp_month=12, exp_year=2034, cvc="123", **extra) -> dict:
    card = {"number": number, "exp_month": exp_month, "exp_year": exp_year}
    if cvc is not None:
        card["cvc"] = cvc
    return {"type": "card", "card": card, **extra}


def has_cvc(document) -> bool:
    """Any key naming a CVC, anywhere. (Keys, not the whole text: random ids may contain the
    letters "cvc" by chance.)"""
    if isinstance(document, dict):
        return any("cvc" in key.lower() or "cvv" in key.lower() or has_cvc(value)
                   for key, value in document.items())
    if isinstance(document, list):
        return any(has_cvc(item) for item in document)
    return False


def leaves(value):
    """Every key and every scalar value in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


# --- success shape --------------------------------------------------------------------------
def test_create_returns_exactly_the_documented_shape(api):
    body = card_body(VISA, exp_month=12, exp_year=2030, cvc="739",
                     billing_details={"name": "Ada Lovelace", "email": "ada@example.com",
                                      "address": {"country": "US"}})
    resp = api.post("/v1/payment_methods", body)
    assert resp.status_code == 200, resp.json()
    pm = resp.json()
    assert set(pm) == PM_KEYS
    assert pm["id"].startswith("pm_") and len(pm["id"]) > 10
    assert pm["object"] == "payment_method"
    assert pm["type"] == "card"
    assert set(pm["card"]) == CARD_KEYS
    assert pm["card"]["brand"] == "visa"
    assert pm["card"]["last4"] == "4242"
    assert pm["card"]["bin"] == "424242"
    assert pm["card"]["exp_month"] == 12 and pm["card"]["exp_year"] == 2030
    assert isinstance(pm["card"]["fingerprint"], str) and len(pm["card"]["fingerprint"]) >= 16
    assert pm["billing_details"] == {"name": "Ada Lovelace", "email": "ada@example.com",
                                     "address": {"country": "US"}}
    assert isinstance(pm["created"], int)
    assert abs(pm["created"] - dt.datetime.now(tz=dt.UTC).timestamp()) < 60
    assert pm["livemode"] is False

    text = resp.content.decode()
    assert VISA not in text
    assert not has_cvc(pm)
    assert "739" not in [str(v) for v in leaves(pm)]
    assert "number" not in set(leaves(pm))


def test_get_returns_the_same_object_and_never_the_number_or_cvc(api):
    created = api.post("/v1/payment_methods", card_body(VISA, cvc="739")).json()
    resp = api.get(f"/v1/payment_methods/{created['id']}")
    assert resp.status_code == 200
    assert resp.json() == created
    text = resp.content.decode()
    assert VISA not in text and not has_cvc(resp.json())
    assert "739" not in [str(v) for v in leaves(resp.json())]


def test_list_shows_vaulted_cards_newest_first_without_numbers(api):
    first = make_card(api, VISA)
    second = make_card(api, MASTERCARD)
    resp = api.get("/v1/payment_methods")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"object", "data", "has_more"}
    assert body["object"] == "list" and body["has_more"] is False
    assert [pm["id"] for pm in body["data"]] == [second, first]
    assert all(set(pm) == PM_KEYS and set(pm["card"]) == CARD_KEYS for pm in body["data"])
    text = resp.content.decode()
    assert VISA not in text and MASTERCARD not in text and not has_cvc(body)

    page = api.get("/v1/payment_methods", {"limit": 1}).json()
    assert [pm["id"] for pm in page["data"]] == [second] and page["has_more"] is True


def test_unknown_payment_method_is_404(api):
    resp = api.get("/v1/payment_methods/pm_doesnotexist")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "resource_missing"


# --- brands ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "brand", "cvc"),
    [
        (VISA, "visa", "123"),
        ("4222222222222", "visa", "123"),  # 13-digit Visa
        (MASTERCARD, "mastercard", "123"),
        (MASTERCARD_2_SERIES, "mastercard", "123"),
        (AMEX, "amex", "1234"),
        ("6011111111111117", "discover", "123"),
        ("3530111333300000", "jcb", "123"),
    ],
)
def test_brand_last4_and_bin(api, number, brand, cvc):
    resp = api.post("/v1/payment_methods", card_body(number, cvc=cvc))
    assert resp.status_code == 200, resp.json()
    card = resp.json()["card"]
    assert card["brand"] == brand
    assert card["last4"] == number[-4:]
    assert card["bin"] == number[:6]
    assert number not in resp.content.decode()


def test_spaces_and_dashes_in_the_number_are_ignored(api):
    plain = api.post("/v1/payment_methods", card_body(VISA)).json()
    spaced = api.post("/v1/payment_methods", card_body("4242 4242 4242 4242")).json()
    dashed = api.post("/v1/payment_methods", card_body("4242-4242-4242-4242")).json()
    assert spaced["card"]["last4"] == dashed["card"]["last4"] == "4242"
    assert spaced["card"]["fingerprint"] == dashed["card"]["fingerprint"] \
        == plain["card"]["fingerprint"]


def test_cvc_is_optional(api):
    resp = api.post("/v1/payment_methods", card_body(VISA, cvc=None))
    assert resp.status_code == 200, resp.json()


# --- card number validation -----------------------------------------------------------------
def test_luhn_failure_is_incorrect_number_and_not_echoed(api):
    resp = api.post("/v1/payment_methods", card_body(LUHN_FAILING))
    assert_invalid(resp, param="card.number", code="incorrect_number")
    assert LUHN_FAILING not in resp.content.decode()
    assert not PaymentMethod.objects.exists()


@pytest.mark.parametrize(
    "number",
    [
        "4242abcd42424242",
        "4242.4242.4242.4242",
        "",
        "42424242424",  # 11 digits: too short
        "4242424242424242424242",  # 22 digits: too long
        "4242424242424242424241",
        "4" * 33,  # longer than any card number field
        # digits outside ASCII: isdigit() says yes, but no card number is written like this
        "\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12"
        "\uff14\uff12",
        "\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662\u0664\u0662"
        "\u0664\u0662",
        "424242424242424\u00b2",  # a superscript two: isdigit() but not int()
    ],
)
def test_malformed_numbers_are_400_on_card_number(api, number):
    resp = api.post("/v1/payment_methods", card_body(number))
    assert_invalid(resp, param="card.number")
    if number:
        assert number not in resp.content.decode()
    assert not PaymentMethod.objects.exists()


def test_number_must_be_a_string(api):
    resp = api.post("/v1/payment_methods", card_body(4242424242424242))
    assert_invalid(resp, param="card.number")
    assert "4242424242424242" not in resp.content.decode()


def test_unsupported_brand(api):
    number = with_check_digit("999999999999999")  # 16 digits, Luhn-valid, no known IIN
    resp = api.post("/v1/payment_methods", card_body(number))
    error = assert_invalid(resp, param="card.number", code="card_brand_unsupported")
    assert number not in json.dumps(error)


@pytest.mark.parametrize(
    "number",
    [
        with_check_digit("4" + "2" * 12),  # a 14-digit Visa
        with_check_digit("37" + "8" * 13),  # a 16-digit Amex
        with_check_digit("5555" + "5" * 10),  # a 15-digit Mastercard
    ],
)
def test_wrong_length_for_the_brand(api, number):
    resp = api.post("/v1/payment_methods", card_body(number))
    assert_invalid(resp, param="card.number", code="invalid_number")
    assert number not in resp.content.decode()


# --- expiry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("month", [0, 13, -1])
def test_exp_month_out_of_range(api, month):
    resp = api.post("/v1/payment_methods", card_body(exp_month=month))
    assert_invalid(resp, param="card.exp_month", code="invalid_expiry_month")


def test_expired_last_year(api):
    resp = api.post("/v1/payment_methods",
                    card_body(exp_month=12, exp_year=dt.date.today().year - 1))
    assert_invalid(resp, code="expired_card", param="card.exp_year")
    assert not PaymentMethod.objects.exists()


def test_expired_earlier_this_year_but_this_month_is_still_valid(api):
    today = dt.date.today()
    current = api.post("/v1/payment_methods",
                       card_body(exp_month=today.month, exp_year=today.year))
    assert current.status_code == 200, current.json()
    if today.month > 1:
        resp = api.post("/v1/payment_methods",
                        card_body(exp_month=today.month - 1, exp_year=today.year))
        assert_invalid(resp, code="expired_card", param="card.exp_year")


@pytest.mark.parametrize(
    ("exp_month", "exp_year", "valid"),
    [(3, 2026, True), (4, 2026, True), (1, 2027, True), (2, 2026, False), (12, 2025, False),
     (1, 2026, False)],
)
def test_expiry_boundary_on_a_fixed_day(exp_month, exp_year, valid):
    """A card is valid through the last day of its expiry month."""
    today = dt.date(2026, 3, 31)
    if valid:
        assert validate_card(VISA, exp_month, exp_year, "123", today=today) == (VISA, "visa")
    else:
        with pytest.raises(InvalidRequest) as info:
            validate_card(VISA, exp_month, exp_year, "123", today=today)
        assert info.value.code == "expired_card"


@pytest.mark.parametrize(
    ("field", "value"),
    [("exp_year", "2030"), ("exp_year", 2030.0), ("exp_year", None), ("exp_month", "12"),
     ("exp_month", True)],
)
def test_expiry_must_be_json_integers(api, field, value):
    body = card_body()
    body["card"][field] = value
    resp = api.post("/v1/payment_methods", body)
    assert_invalid(resp, param=f"card.{field}")


def test_exp_year_must_be_four_digits_and_plausible(api):
    assert_invalid(api.post("/v1/payment_methods", card_body(exp_year=34)),
                   param="card.exp_year")
    assert_invalid(api.post("/v1/payment_methods",
                            card_body(exp_year=dt.date.today().year + 60)),
                   param="card.exp_year")


# --- CVC ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "cvc"),
    [
        (VISA, "12"),
        (VISA, "1234"),  # 4 digits on a Visa
        (AMEX, "123"),  # 3 digits on an Amex
        (VISA, "12a"),
        (VISA, "12345"),
        (VISA, ""),
        (VISA, 123),
        (VISA, "\uff11\uff12\uff13"),  # full-width digits
    ],
)
def test_bad_cvc(api, number, cvc):
    resp = api.post("/v1/payment_methods", card_body(number, cvc=cvc))
    assert_invalid(resp, param="card.cvc")
    assert number not in resp.content.decode()
    assert not PaymentMethod.objects.exists()


# --- request structure ----------------------------------------------------------------------
def test_missing_card(api):
    assert_invalid(api.post("/v1/payment_methods", {"type": "card"}), param="card",
                   code="parameter_missing")


def test_missing_number(api):
    body = card_body()
    del body["card"]["number"]
    assert_invalid(api.post("/v1/payment_methods", body), param="card.number",
                   code="parameter_missing")


def test_missing_type(api):
    body = card_body()
    del body["type"]
    assert_invalid(api.post("/v1/payment_methods", body), param="type",
                   code="parameter_missing")


@pytest.mark.parametrize("type_", ["bank_account", "CARD", "", None, 1])
def test_type_other_than_card(api, type_):
    assert_invalid(api.post("/v1/payment_methods", {**card_body(), "type": type_}),
                   param="type")


@pytest.mark.parametrize("card", ["4242424242424242", [], None])
def test_card_must_be_an_object(api, card):
    resp = api.post("/v1/payment_methods", {"type": "card", "card": card})
    assert_invalid(resp, param="card")
    assert VISA not in resp.content.decode()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**card_body(), "customer": "cus_123"}, "customer"),
        (card_body(name="x"), "name"),
        ({"type": "card", "card": {**card_body()["card"], "holder": "Ada"}}, "card.holder"),
        ({"type": "card", "card": {**card_body()["card"], "cvv": "123"}}, "card.cvv"),
        (card_body(billing_details={"name": "Ada", "company": "ACME"}),
         "billing_details.company"),
        (card_body(billing_details={"address": {"country": "US", "street": "Main"}}),
         "billing_details.address.street"),
    ],
)
def test_unknown_fields_are_rejected_and_named(api, body, param):
    resp = api.post("/v1/payment_methods", body)
    error = assert_invalid(resp, param=param, code="parameter_unknown")
    assert param in error["message"]
    assert not PaymentMethod.objects.exists()


@pytest.mark.parametrize(
    ("billing_details", "param"),
    [
        ({"email": "not-an-email"}, "billing_details.email"),
        ({"address": {"country": "USA"}}, "billing_details.address.country"),
        ({"address": {"country": "1A"}}, "billing_details.address.country"),
        ({"name": 5}, "billing_details.name"),
        ("Ada", "billing_details"),
    ],
)
def test_invalid_billing_details(api, billing_details, param):
    resp = api.post("/v1/payment_methods", card_body(billing_details=billing_details))
    assert_invalid(resp, param=param)


@pytest.mark.parametrize(
    "country",
    # "ßa" used to be upper-cased into "SSA"; "XX", "ZZ", "AA" are not assigned; the rest are
    # not two ASCII letters as sent (full-width, combining marks, dotted I, digits, length).
    ["\u00dfa", "XX", "ZZ", "AA", "\uff35\uff33", "U\u0306S", "\u0130T", "u", "USA", "1A",
     "U ", ""],
)
def test_billing_country_must_be_an_iso_3166_alpha_2_code(api, country):
    resp = api.post("/v1/payment_methods",
                    card_body(billing_details={"address": {"country": country}}))
    assert_invalid(resp, param="billing_details.address.country")
    assert not PaymentMethod.objects.exists()


@pytest.mark.parametrize(("country", "stored"), [("US", "US"), ("de", "DE"), ("Fr", "FR")])
def test_billing_country_in_ascii_letters_is_stored_upper_case(api, country, stored):
    resp = api.post("/v1/payment_methods",
                    card_body(billing_details={"address": {"country": country}}))
    assert resp.status_code == 200, resp.json()
    assert resp.json()["billing_details"]["address"]["country"] == stored
    assert PaymentMethod.objects.get().billing_details["address"]["country"] == stored


# --- fingerprints ---------------------------------------------------------------------------
def test_same_card_twice_gives_two_payment_methods_with_one_fingerprint(api):
    first = api.post("/v1/payment_methods", card_body(VISA, exp_year=2030)).json()
    second = api.post("/v1/payment_methods", card_body(VISA, exp_year=2031)).json()
    other = api.post("/v1/payment_methods", card_body(MASTERCARD)).json()
    assert first["id"] != second["id"]
    assert first["card"]["fingerprint"] == second["card"]["fingerprint"]
    assert other["card"]["fingerprint"] != first["card"]["fingerprint"]
    assert VISA not in first["card"]["fingerprint"]


def test_fingerprints_differ_between_merchants(api, other_api):
    mine = api.post("/v1/payment_methods", card_body(VISA)).json()
    theirs = other_api.post("/v1/payment_methods", card_body(VISA)).json()
    assert mine["card"]["fingerprint"] != theirs["card"]["fingerprint"]


# --- encryption at rest ---------------------------------------------------------------------
def test_number_is_encrypted_at_rest(api):
    pm_id = make_card(api, VISA)
    pm = PaymentMethod.objects.get(id=pm_id)
    blob = bytes(pm.encrypted_number)
    assert VISA.encode() not in blob
    assert VISA.encode("utf-16-le") not in blob
    assert pm.key_version == settings.VAULT_ACTIVE_KEY
    assert vault.decrypt(pm.key_version, blob, associated=pm.id) == VISA
    # The readable fields are only the ones docs/api.md allows.
    assert (pm.last4, pm.bin, pm.brand) == ("4242", "424242", "visa")


def test_ciphertext_is_bound_to_its_row_and_its_key(api):
    pm = PaymentMethod.objects.get(id=make_card(api, VISA))
    other = PaymentMethod.objects.get(id=make_card(api, MASTERCARD))
    with pytest.raises(InvalidTag):  # copied onto another row, it does not decrypt
        vault.decrypt(pm.key_version, pm.encrypted_number, associated=other.id)
    wrong_key = next(k for k in settings.VAULT_KEYS if k != pm.key_version)
    with pytest.raises(InvalidTag):
        vault.decrypt(wrong_key, pm.encrypted_number, associated=pm.id)
    # two encryptions of the same number never give the same ciphertext (random nonce)
    again = PaymentMethod.objects.get(id=make_card(api, VISA))
    assert bytes(again.encrypted_number) != bytes(pm.encrypted_number)


def test_no_table_holds_the_number_in_clear(api):
    """Vault, pay and refund with an Idempotency-Key, then read every row of every table."""
    number = "4000056655665556"
    resp = api.post("/v1/payment_methods", card_body(number), idempotency_key="vault-1")
    assert resp.status_code == 200, resp.json()
    payment = api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                        "payment_method": resp.json()["id"]},
                       idempotency_key="pay-1")
    assert payment.status_code == 200, payment.json()
    refund = api.post("/v1/refunds", {"payment": payment.json()["id"], "amount": 50},
                      idempotency_key="refund-1")
    assert refund.status_code == 200, refund.json()

    hex_number = number.encode().hex()
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
        assert "payments_paymentmethod" in tables
        for table in tables:
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            for (row,) in cursor.fetchall():
                assert number not in row, table
                assert hex_number not in row, table


def test_no_cache_entry_holds_the_number(api):
    number = "4000056655665556"
    pm_id = make_card(api, number)
    resp = api.post("/v1/payments", {"amount": 1050, "currency": "USD", "confirm": True,
                                     "payment_method": pm_id})
    assert resp.status_code == 200
    client = cache._cache.get_client()
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    assert keys, "the rate limiter should have written to the cache"
    for key in keys:
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key) or b""
        elif kind == b"hash":
            value = b"".join(k + v for k, v in client.hgetall(key).items())
        elif kind == b"zset":
            value = b"".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"set":
            value = b"".join(client.smembers(key))
        elif kind == b"list":
            value = b"".join(client.lrange(key, 0, -1))
        else:
            value = b""
        assert number.encode() not in key + value


# --- key rotation ---------------------------------------------------------------------------
def test_old_key_still_decrypts_and_new_cards_use_the_active_key(api):
    assert settings.VAULT_ACTIVE_KEY == "k2"
    with override_settings(VAULT_ACTIVE_KEY="k1"):
        old_id = make_card(api, "4000000000000002")  # the sandbox declines this number
    new_id = make_card(api, VISA)

    old = PaymentMethod.objects.get(id=old_id)
    new = PaymentMethod.objects.get(id=new_id)
    assert old.key_version == "k1"
    assert new.key_version == "k2"
    assert vault.decrypt("k1", old.encrypted_number, associated=old.id) == "4000000000000002"
    assert vault.decrypt("k2", new.encrypted_number, associated=new.id) == VISA
    assert card_for_provider(old).number == "4000000000000002"

    # End to end under the new active key: the provider receives the right number for each
    # (the sandbox answers by number), so both decrypt correctly in the payment path.
    declined = api.post("/v1/payments", {"amount": 500, "currency": "USD", "confirm": True,
                                         "payment_method": old_id})
    assert declined.status_code == 402, declined.json()
    assert declined.json()["error"]["decline_code"] == "generic_decline"
    approved = api.post("/v1/payments", {"amount": 500, "currency": "USD", "confirm": True,
                                         "payment_method": new_id})
    assert approved.status_code == 200, approved.json()
    assert approved.json()["status"] == "succeeded"


def test_fingerprint_does_not_depend_on_the_vault_key(api):
    with override_settings(VAULT_ACTIVE_KEY="k1"):
        old = api.post("/v1/payment_methods", card_body(VISA)).json()
    new = api.post("/v1/payment_methods", card_body(VISA)).json()
    assert old["card"]["fingerprint"] == new["card"]["fingerprint"]


# --- no card number in error bodies ---------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        card_body(LUHN_FAILING),
        card_body(VISA, exp_month=13),
        card_body(VISA, exp_year=2001),
        card_body(VISA, cvc="1"),
        card_body(AMEX, cvc="123"),
        card_body(VISA, exp_year="2030"),
        {**card_body(VISA), "extra": True},
        card_body(VISA, billing_details={"email": "nope"}),
    ],
)
def test_no_error_body_contains_the_number(api, body):
    number = body["card"]["number"]
    resp = api.post("/v1/payment_methods", body)
    assert resp.status_code == 400
    assert number not in resp.content.decode()


def test_card_number_sent_as_an_id_is_not_echoed(api):
    """A merchant pasting a card number where an id belongs gets a 404 without it."""
    payment = api.post("/v1/payments", {"amount": 100, "currency": "USD",
                                        "payment_method": VISA})
    assert payment.status_code == 404
    assert payment.json()["error"]["param"] == "payment_method"
    assert VISA not in payment.content.decode()
    detail = api.get(f"/v1/payment_methods/{VISA}")
    assert detail.status_code == 404
    assert VISA not in detail.content.decode()
    unknown_path = api.get(f"/v1/cards/{VISA}")
    assert unknown_path.status_code == 404
    assert VISA not in unknown_path.content.decode()


# --- logs -----------------------------------------------------------------------------------
def _record_texts(records) -> list[str]:
    texts = []
    formatter = logging.Formatter()
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(vars(record)))
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
    return texts


def test_no_log_record_contains_the_number(api, caplog):
    caplog.set_level(logging.DEBUG)
    failing = "4000056655665557"  # fails the Luhn check
    succeeding = "4000056655665556"
    assert api.post("/v1/payment_methods", card_body(failing)).status_code == 400
    assert api.post("/v1/payment_methods", card_body(succeeding, cvc="987")).status_code == 200
    assert api.post("/v1/payment_methods",
                    card_body(succeeding, exp_month=13)).status_code == 400
    pm_id = make_card(api, succeeding)
    paid = api.post("/v1/payments", {"amount": 100, "currency": "USD", "confirm": True,
                                     "payment_method": pm_id})
    assert paid.status_code == 200
    assert caplog.records, "the 400s should at least have been logged by django.request"
    for text in _record_texts(caplog.records):
        assert failing not in text
        assert succeeding not in text


# --- ops.logging: the safety net for everything else --------------------------------------
@pytest.mark.parametrize(
    "number",
    [VISA, "4242 4242 4242 4242", "4242-4242-4242-4242", AMEX, MASTERCARD_2_SERIES,
     "4222222222222", with_check_digit("4" * 18)],
)
def test_scrub_masks_card_numbers(number):
    text = f"charging card={number}, amount=1050"
    cleaned = scrub(text)
    assert number not in cleaned
    assert "".join(ch for ch in number if ch.isdigit()) not in cleaned
    assert cleaned == "charging card=[redacted], amount=1050"


@pytest.mark.parametrize(
    "text",
    [
        "took 1795822613 s",  # a timestamp: too short
        "amount=99999999",
        "pay_4242abc",
        "id 12345678901234567890123",  # a 23-digit reference: no card is that long
    ],
)
def test_scrub_leaves_other_text_alone(text):
    assert scrub(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "created[gte] must be between 0 and 137438953472.",  # the service's own bound
        "card 4242424242424241 declined",  # fails Luhn: not a card number
        "reference 1234 5678 9012 3457",  # card-shaped; no 12-19 digits of it pass Luhn
    ],
)
def test_scrub_leaves_numbers_that_fail_luhn_alone(text):
    assert scrub(text) == text


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        (f"card {VISA} 1050", "card [redacted] 1050"),
        ("amount 1050 4242 4242 4242 4242", "amount 1050 [redacted]"),
        (f"{VISA}-{AMEX}", "[redacted]"),
        (f"order 42 paid with {AMEX}, refund 7", "order 42 paid with [redacted], refund 7"),
    ],
)
def test_scrub_finds_a_card_number_among_other_digit_groups(text, cleaned):
    assert scrub(text) == cleaned


def test_scrub_filter_cleans_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CardNumberScrubFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("card %s declined", VISA)
        logger.warning("plain message with %d", 42)
        try:
            raise ValueError(f"provider rejected {AMEX}")
        except ValueError:
            logger.exception("provider call failed for %s", "4242 4242 4242 4242")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    assert VISA not in output and AMEX not in output and "4242 4242 4242 4242" not in output
    assert "INFO card [redacted] declined" in output
    assert "WARNING plain message with 42" in output
    assert "ValueError: provider rejected [redacted]" in output
    assert "Traceback" in output  # the traceback itself is kept, only the number goes


def test_configured_console_handler_scrubs():
    """settings.LOGGING attaches the filter to the handler that writes every log line."""
    handlers = logging.getLogger().handlers
    console = [h for h in handlers
               if any(isinstance(f, CardNumberScrubFilter) for f in h.filters)]
    assert console, "the root logger's console handler must carry CardNumberScrubFilter"
