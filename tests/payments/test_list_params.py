"""List query parameters that are numbers (`limit`, `created[gte]`, `created[lte]`) are plain
ASCII digits: int() alone also took " 5", "+5", "1_0" and Arabic-Indic or full-width digits."""

from __future__ import annotations

import pytest

from tests.payments.test_errors import assert_error

pytestmark = pytest.mark.django_db

NOT_PLAIN_DIGITS = [" 5", "5 ", "+5", "-5", "\u0665", "\uff15", "1_0", "5.0", "0x5", "", "1e2"]


@pytest.mark.parametrize("path", ["/v1/payments", "/v1/refunds", "/v1/payment_methods",
                                  "/v1/routing_rules"])
@pytest.mark.parametrize("value", [*NOT_PLAIN_DIGITS, "0", "101", "99999999999999999999999",
                                   "1" * 5000])
def test_limit_is_plain_ascii_digits_from_1_to_100(api, path, value):
    assert_error(api.get(path, {"limit": value}), 400, "invalid_request_error",
                 "parameter_invalid", param="limit")


@pytest.mark.parametrize("value", ["1", "05", "100", "0000000000000000000000000000000042"])
def test_limit_accepts_plain_digits(api, value):
    assert api.get("/v1/payments", {"limit": value}).status_code == 200


@pytest.mark.parametrize("name", ["created[gte]", "created[lte]"])
@pytest.mark.parametrize("value", NOT_PLAIN_DIGITS)
def test_created_filters_are_plain_ascii_digits(api, name, value):
    assert_error(api.get("/v1/payments", {name: value}), 400, "invalid_request_error",
                 "parameter_invalid", param=name)
