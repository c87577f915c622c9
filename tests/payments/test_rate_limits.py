"""Request rate limits are per merchant and per mode (issue #8, #11).

A leaked or runaway `sk_test_…` key must not be able to use up the merchant's live limit: the
count is kept per (merchant, mode of the API key), atomically in Redis.
"""

from __future__ import annotations

import types

import pytest
from django.conf import settings
from django.core.cache import caches

from payments.api import throttling
from tests.conftest import Api
from tests.factories import new_key
from tests.payments.test_errors import assert_error
from tests.threads import in_threads

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_window(monkeypatch):
    """Pin the clock 15 s into a one-minute window, so that every request shares it."""
    now = 1_800_000_000.0 // 60 * 60 + 15
    monkeypatch.setattr(throttling, "time", types.SimpleNamespace(time=lambda: now))


def test_the_limit_is_counted_in_redis():
    # the property under test is the shared, atomic counter, not a per-process one
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    assert type(caches["default"]).__name__ == "RedisCache"


def test_exhausting_the_test_mode_limit_leaves_live_requests_alone(
        api, live_api, merchant, one_window):
    merchant.rate_limit_per_minute = 3
    merchant.save()
    for _ in range(3):
        assert api.get("/v1/payments").status_code == 200
    assert_error(api.get("/v1/payments"), 429, "rate_limit_error", "rate_limit")
    assert_error(api.post("/v1/payments", {"amount": 100, "currency": "USD"}), 429,
                 "rate_limit_error", "rate_limit")

    for _ in range(3):
        assert live_api.get("/v1/payments").status_code == 200
    assert_error(live_api.get("/v1/payments"), 429, "rate_limit_error", "rate_limit")
    # and the test mode is still throttled, not reset by the live traffic
    assert api.get("/v1/payments").status_code == 429


def test_exhausting_the_live_limit_leaves_test_requests_alone(api, live_api, merchant,
                                                              one_window):
    merchant.rate_limit_per_minute = 2
    merchant.save()
    for _ in range(2):
        assert live_api.get("/v1/payments").status_code == 200
    assert live_api.get("/v1/payments").status_code == 429
    assert api.get("/v1/payments").status_code == 200


def test_keys_of_one_mode_share_its_limit(merchant, one_window):
    merchant.rate_limit_per_minute = 2
    merchant.save()
    first, second = Api(new_key(merchant)), Api(new_key(merchant))
    live = Api(new_key(merchant, livemode=True))
    assert first.get("/v1/payments").status_code == 200
    assert second.get("/v1/payments").status_code == 200
    # another test-mode key of the same merchant is the same budget, not a fresh one
    assert first.get("/v1/payments").status_code == 429
    assert second.get("/v1/payments").status_code == 429
    assert live.get("/v1/payments").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_test_mode_requests_cannot_exceed_the_limit_nor_touch_live(
        merchant_keys, one_window):
    merchant, test_key, live_key = merchant_keys
    merchant.rate_limit_per_minute = 5
    merchant.save()
    statuses = in_threads(12, lambda i: Api(test_key).get("/v1/payments").status_code)
    assert sorted(statuses) == [200] * 5 + [429] * 7
    assert Api(live_key).get("/v1/payments").status_code == 200


def test_a_request_is_counted_with_its_window_expiry_in_one_round_trip(api):
    """The window counter and its expiry are written together (MULTI/EXEC), with the read of
    the API keys' revocation generation: one Redis round trip per request (once the process
    knows the key), and no counter is ever left without an expiry."""
    from django.core.cache import cache

    from tests.counting import count_work

    assert api.get("/v1/payments").status_code == 200  # the process learns the key
    with count_work() as work:
        assert api.get("/v1/payments").status_code == 200
    assert [command for _, command in work.commands] == ["PIPELINE INCRBY,EXPIRE,GET"]
    client = cache._cache.get_client()
    keys = client.keys("*ratelimit*")
    assert len(keys) == 1 and int(client.get(keys[0])) == 2
    assert 0 < client.ttl(keys[0]) <= 120
