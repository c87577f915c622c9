"""Shared fixtures: merchants with keys, an API client per key, a clean cache per test."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from payments.services.merchants import merchant_create
from tests.factories import payment_method


class Api:
    """A JSON client authenticated as one API key."""

    def __init__(self, key: str | None):
        self.client = APIClient()
        self.key = key

    def _headers(self, headers):
        out = {}
        if self.key:
            out["HTTP_AUTHORIZATION"] = f"Bearer {self.key}"
        for name, value in (headers or {}).items():
            out["HTTP_" + name.upper().replace("-", "_")] = value
        return out

    def get(self, path: str, params: dict | None = None, headers: dict | None = None):
        return self.client.get(path, params or {}, **self._headers(headers))

    def post(self, path: str, body: dict | None = None, headers: dict | None = None,
             idempotency_key: str | None = None):
        headers = dict(headers or {})
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self.client.post(path, body if body is not None else {}, format="json",
                                **self._headers(headers))


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield


@pytest.fixture
def merchant_keys(db):
    """(merchant, test key, live key) for a merchant made as `create_merchant` makes it."""
    return merchant_create(name=f"Shop {uuid.uuid4().hex[:8]}", sandbox_accounts=True)


@pytest.fixture
def merchant(merchant_keys):
    return merchant_keys[0]


@pytest.fixture
def api(merchant_keys) -> Api:
    return Api(merchant_keys[1])


@pytest.fixture
def live_api(merchant_keys) -> Api:
    return Api(merchant_keys[2])


@pytest.fixture
def other_api(db) -> Api:
    """Another merchant's test-mode client, for isolation checks."""
    _, test_key, _ = merchant_create(name=f"Other {uuid.uuid4().hex[:8]}", sandbox_accounts=True)
    return Api(test_key)


@pytest.fixture
def anon() -> Api:
    return Api(None)


@pytest.fixture
def card(merchant):
    """A vaulted approving test card (4242…)."""
    return payment_method(merchant)


def make_card(api: Api, number: str = "4242424242424242") -> str:
    resp = api.post("/v1/payment_methods", {
        "type": "card",
        "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"
                 if not number.startswith("3") else "1234"},
    })
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]


def pay(api: Api, number: str = "4242424242424242", **fields):
    """Create and confirm a payment with a fresh card; returns the response."""
    body = {"amount": 1050, "currency": "USD", "payment_method": make_card(api, number),
            "confirm": True, **fields}
    return api.post("/v1/payments", body)


def admin_change_url(obj) -> str:
    """The admin change page of obj, with its key quoted as the admin quotes it.

    Ids such as ``acct_2B…`` would otherwise be read back as ``acct+…`` (the admin
    unquotes ``_XX``), and the page would redirect as if the object did not exist.
    """
    from django.contrib.admin.utils import quote
    from django.urls import reverse
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[quote(obj.pk)])
