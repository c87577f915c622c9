"""Money: integer amounts in the currency's minor unit and ISO 4217 codes (DESIGN.md, "Money").

Unit tests of `payments.money`, then the same rules through POST /v1/payments (created without
`confirm`, so nothing reaches a provider): a bad amount or currency is a 400 naming the field.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from payments import money
from payments.errors import InvalidRequest
from payments.models import Payment
from tests.conftest import assert_invalid


# --- payments.money ------------------------------------------------------------------------
@pytest.mark.parametrize(("currency", "exponent"),
                         [("JPY", 0), ("KRW", 0), ("USD", 2), ("EUR", 2), ("GBP", 2),
                          ("KWD", 3), ("BHD", 3), ("TND", 3)])
def test_currency_exponent(currency, exponent):
    assert money.currency_exponent(currency) == exponent


def test_exponents_follow_iso_4217_where_display_conventions_differ():
    # CLDR (Babel) shows these with other decimals; ISO 4217, which providers use, does not.
    assert money.currency_exponent("HUF") == 2
    assert money.currency_exponent("IDR") == 2
    assert money.currency_exponent("IQD") == 3
    assert money.currency_exponent("CLP") == 0


def test_exponents_come_from_the_iso_table():
    import iso4217

    for code in ("JPY", "USD", "KWD"):
        assert money.currency_exponent(code) == iso4217.Currency(code).exponent


def test_fund_codes_are_not_card_currencies():
    assert not {"CLF", "USN", "BOV", "CHE", "CHW", "COU", "MXV", "UYI"} & money.CURRENCIES


@pytest.mark.parametrize("value", ["USD", "usd", "Usd", "JPY", "kwd", "EUR", "CHF", "XOF"])
def test_parse_currency_accepts_iso_codes_in_any_case(value):
    assert money.parse_currency(value) == value.upper()


@pytest.mark.parametrize(
    "value",
    [
        "XYZ",  # no such currency
        "US",
        "USDX",
        "",
        "840",  # the numeric ISO code is not what the API takes
        "XXX",  # "no currency"
        "XTS",  # reserved for testing
        "XAU",  # gold
        "DEM",  # Deutsche Mark, replaced by the euro in 2002
        "FRF",
        "ESP",
        "HRK",  # Croatian kuna, replaced by the euro in 2023
        "VEF",
        "ZWD",
    ],
)
def test_parse_currency_rejects_codes_not_in_use(value):
    with pytest.raises(InvalidRequest) as info:
        money.parse_currency(value)
    assert info.value.param == "currency"


@pytest.mark.parametrize("value", [None, 840, ["USD"], {"code": "USD"}, True])
def test_parse_currency_rejects_non_strings(value):
    with pytest.raises(InvalidRequest) as info:
        money.parse_currency(value)
    assert info.value.param == "currency"


def test_currencies_include_the_common_ones():
    assert {"USD", "EUR", "GBP", "JPY", "KWD", "CHF", "AUD", "CAD", "INR", "BRL", "XOF",
            "XAF"} <= money.CURRENCIES
    assert all(len(code) == 3 and code.isupper() for code in money.CURRENCIES)


@pytest.mark.parametrize("value", [1, 1050, 99_999_999])
def test_parse_amount_accepts_positive_integers(value):
    assert money.parse_amount(value) == value


@pytest.mark.parametrize(
    ("value", "code"),
    [(0, "amount_too_small"), (-1, "amount_too_small"), (True, "amount_invalid"),
     (False, "amount_invalid"), (10.0, "amount_invalid"), (10.5, "amount_invalid"),
     ("1050", "amount_invalid"), (None, "amount_invalid"),
     (100_000_000, "amount_too_large")],
)
def test_parse_amount_rejects(value, code):
    with pytest.raises(InvalidRequest) as info:
        money.parse_amount(value)
    assert info.value.code == code
    assert info.value.param == "amount"


def test_parse_amount_names_the_given_param():
    with pytest.raises(InvalidRequest) as info:
        money.parse_amount(0, param="amount_to_capture")
    assert info.value.param == "amount_to_capture"
    assert "amount_to_capture" in info.value.message


# --- through the API -----------------------------------------------------------------------
def create(api, pm_id, **fields):
    return api.post("/v1/payments", {"amount": 1050, "currency": "USD",
                                     "payment_method": pm_id, **fields})


@pytest.fixture
def pm_id(api):
    resp = api.post("/v1/payment_methods", {
        "type": "card",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034}})
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]


def test_valid_payment_is_created_without_confirming(api, pm_id):
    resp = create(api, pm_id)
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["amount"] == 1050 and body["currency"] == "USD"
    assert body["status"] == "requires_confirmation"
    assert body["attempts"] == []


@pytest.mark.parametrize("currency", ["XYZ", "DEM", "XXX", "XAU"])
def test_unknown_currency(api, pm_id, currency):
    resp = create(api, pm_id, currency=currency)
    error = assert_invalid(resp, param="currency", code="currency_invalid", named_in_message=True)
    assert "ISO 4217" in error["message"]
    assert not Payment.objects.exists()


@pytest.mark.parametrize("currency", ["US", "USDX", "", 840, None, True])
def test_malformed_currency(api, pm_id, currency):
    assert_invalid(create(api, pm_id, currency=currency), param="currency", named_in_message=True)
    assert not Payment.objects.exists()


def test_missing_currency_and_amount(api, pm_id):
    assert_invalid(api.post("/v1/payments", {"amount": 100, "payment_method": pm_id}),
                   param="currency", code="parameter_missing", named_in_message=True)
    assert_invalid(api.post("/v1/payments", {"currency": "USD", "payment_method": pm_id}),
                   param="amount", code="parameter_missing", named_in_message=True)


def test_lower_case_currency_is_accepted_and_returned_upper_case(api, pm_id):
    resp = create(api, pm_id, currency="usd")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["currency"] == "USD"
    assert Payment.objects.get(id=resp.json()["id"]).currency == "USD"
    assert api.get(f"/v1/payments/{resp.json()['id']}").json()["currency"] == "USD"


@pytest.mark.parametrize(
    "amount",
    [
        "1050",  # a string
        10.5,  # a float with a fraction
        10.0,  # a float without one: still not an integer amount
        1050.0,
        True,  # JSON true is not 1
        False,
        [1050],
        {"value": 1050},
    ],
)
def test_amount_must_be_a_json_integer(api, pm_id, amount):
    error = assert_invalid(create(api, pm_id, amount=amount), param="amount", named_in_message=True)
    assert "integer" in error["message"]
    assert not Payment.objects.exists()


def test_amount_null(api, pm_id):
    error = assert_invalid(create(api, pm_id, amount=None), param="amount", named_in_message=True)
    assert "null" in error["message"]


@pytest.mark.parametrize("amount", [0, -1, -1050])
def test_amount_must_be_positive(api, pm_id, amount):
    error = assert_invalid(create(api, pm_id, amount=amount), param="amount",
                           code="amount_too_small", named_in_message=True)
    assert "greater than zero" in error["message"]
    assert not Payment.objects.exists()


def test_amount_above_the_maximum(api, pm_id):
    with override_settings(MAX_PAYMENT_AMOUNT=5000):
        error = assert_invalid(create(api, pm_id, amount=5001), param="amount",
                               code="amount_too_large", named_in_message=True)
        assert "5000" in error["message"]
        assert create(api, pm_id, amount=5000).status_code == 200
    assert Payment.objects.count() == 1


def test_default_maximum_and_huge_amounts(api, pm_id):
    limit = settings.MAX_PAYMENT_AMOUNT
    assert create(api, pm_id, amount=limit).status_code == 200
    assert_invalid(create(api, pm_id, amount=limit + 1), param="amount",
                   code="amount_too_large", named_in_message=True)
    # larger than a Postgres bigint: still a clean 400, never a database error
    assert_invalid(create(api, pm_id, amount=2**70), param="amount", named_in_message=True)


def test_jpy_amount_is_whole_yen(api, pm_id):
    resp = create(api, pm_id, amount=500, currency="JPY")
    assert resp.status_code == 200, resp.json()
    assert (resp.json()["amount"], resp.json()["currency"]) == (500, "JPY")


def test_kwd_amount_in_fils(api, pm_id):
    resp = create(api, pm_id, amount=1250, currency="KWD")
    assert resp.status_code == 200, resp.json()
    assert (resp.json()["amount"], resp.json()["currency"]) == (1250, "KWD")


def test_jpy_payment_is_charged_in_whole_units(api, pm_id):
    resp = create(api, pm_id, amount=500, currency="JPY", confirm=True)
    assert resp.status_code == 200, resp.json()
    assert resp.json()["status"] == "succeeded"
    assert resp.json()["amount_captured"] == 500


@pytest.mark.parametrize(("field", "value"), [("amount_to_capture", "100"),
                                              ("amount_to_capture", 1.5),
                                              ("amount_to_capture", 0)])
def test_capture_amount_follows_the_same_rules(api, pm_id, field, value):
    payment = create(api, pm_id, capture_method="manual", confirm=True).json()
    assert payment["status"] == "requires_capture"
    resp = api.post(f"/v1/payments/{payment['id']}/capture", {field: value})
    assert_invalid(resp, param=field, named_in_message=True)
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == "requires_capture"


@pytest.mark.parametrize("amount", ["50", 0, -5, 5.0, True])
def test_refund_amount_follows_the_same_rules(api, pm_id, amount):
    payment = create(api, pm_id, confirm=True).json()
    assert payment["status"] == "succeeded"
    resp = api.post("/v1/refunds", {"payment": payment["id"], "amount": amount})
    assert_invalid(resp, param="amount", named_in_message=True)
    assert api.get(f"/v1/payments/{payment['id']}").json()["amount_refunded"] == 0


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (1050, "USD", "10.50 USD"), (1000, "JPY", "1,000 JPY"), (1500, "KWD", "1.500 KWD"),
    (123456789, "EUR", "1,234,567.89 EUR"), (5, "usd", "0.05 USD"),
])
def test_format_amount_reads_in_major_units(amount, currency, text):
    """What operators read in the admin; the API itself speaks minor units only."""
    assert money.format_amount(amount, currency) == text
