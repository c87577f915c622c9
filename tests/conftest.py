"""Shared fixtures: merchants with keys, an API client per key, a clean cache per test."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

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
    return merchant_create(actor="test", name=f"Shop {uuid.uuid4().hex[:8]}", sandbox_accounts=True)


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
    _, test_key, _ = merchant_create(actor="test", name=f"Other {uuid.uuid4().hex[:8]}", sandbox_accounts=True)
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


def pay(api: Api, number: str = "4242424242424242", *, pm: str | None = None,
        amount: int = 1050, currency: str = "USD", provider: str | None = None,
        idempotency_key: str | None = None, **fields):
    """Create and confirm a payment; returns the response.

    With a fresh vaulted card of `number`, or the vaulted payment method `pm`; routed, or
    pinned to the provider account named `provider`; other body fields as given."""
    body = {"amount": amount, "currency": currency,
            "payment_method": pm if pm is not None else make_card(api, number),
            "confirm": True, **fields}
    if provider is not None:
        body["provider"] = provider
    return api.post("/v1/payments", body, idempotency_key=idempotency_key)


ERROR_KEYS = {"type", "code", "message", "param"}
ANY = object()  # assert_error(..., param=ANY): whatever the error names


def assert_error(resp, status: int, type_: str, code: str | None = None, *,
                 param: str | None | object = None, card_error: bool = False,
                 with_payment: bool = False) -> dict:
    """The response is the docs/api.md error shape, and only that: `status`, the error's
    `type_`, its `code` (when given), its `param` (None unless given; ANY: not checked).
    A card error carries its decline_code and the payment; `with_payment`: the payment too
    (a provider failure after the payment was made)."""
    assert resp.status_code == status, resp.content
    assert resp["Content-Type"].startswith("application/json")
    body = resp.json()
    error = body["error"]
    assert set(body) == ({"error", "payment"} if card_error or with_payment else {"error"})
    assert set(error) == (ERROR_KEYS | {"decline_code"} if card_error else ERROR_KEYS)
    assert error["type"] == type_, error
    if code is not None:
        assert error["code"] == code, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if param is not ANY:
        assert error["param"] == param, error
    text = resp.content.decode()
    assert "Traceback" not in text and 'File "' not in text
    return error


def assert_invalid(resp, *, param: str | None, code: str | None = None,
                   named_in_message: bool = False) -> dict:
    """A 400 invalid_request_error on `param` (also named in its message if asked)."""
    error = assert_error(resp, 400, "invalid_request_error", code, param=param)
    if named_in_message:
        assert param in error["message"], error
    return error


def admin_change_url(obj) -> str:
    """The admin change page of obj, with its key quoted as the admin quotes it.

    Ids such as ``acct_2B…`` would otherwise be read back as ``acct+…`` (the admin
    unquotes ``_XX``), and the page would redirect as if the object did not exist.
    """
    from django.contrib.admin.utils import quote
    from django.urls import reverse
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[quote(obj.pk)])


def rewind_breaker(account, seconds: int) -> None:
    """Move the account's breaker trip back in time, as if `seconds` had passed since it opened.

    Waiting on the clock instead would race with a loaded machine (and pybreaker's Redis storage
    keeps opened_at in whole seconds, so the wait would be up to a second shorter than asked)."""
    from datetime import timedelta

    import pybreaker

    from providers.resilience import store
    from providers.resilience.breaker import breaker_for

    breaker = breaker_for(account)
    if isinstance(breaker.storage, pybreaker.CircuitRedisStorage):
        # pybreaker's setter only moves opened_at forward; the stored value is epoch seconds
        namespace = store.account_key(account.id, "breaker")
        store.redis_client().decrby(
            f"{namespace}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:opened_at", seconds)
    else:
        breaker.storage.opened_at -= timedelta(seconds=seconds)


@pytest.fixture
def serve_sandbox() -> Iterator[Callable[[str], str]]:
    """serve_sandbox(provider) -> the base URL (with the provider's API path, /v71 for Adyen)
    of that provider's sandbox served over real HTTP on 127.0.0.1, in a thread, until the test
    ends. Teardown waits (bounded) for the request threads to finish: a hanging request sleeps
    SANDBOX_HANG_SECONDS before it closes its connection."""
    from providers.sandboxes.catalog import BASE_PATHS, app_for
    from providers.sandboxes.server import make_server

    before = set(threading.enumerate())
    servers = []

    def serve(provider: str) -> str:
        server = make_server(app_for(provider))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}{BASE_PATHS[provider]}"

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)
    for leftover in set(threading.enumerate()) - before:
        if "process_request_thread" in leftover.name:  # a request the server still serves
            leftover.join(10)


# A public address (TEST-NET ranges are "reserved", so not these) that names under
# example.com resolve to in tests: the SSRF guard resolves webhook hosts, and the test
# machine may have no DNS.
PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture
def public_dns(monkeypatch) -> dict[str, list[str]]:
    """socket.getaddrinfo answers PUBLIC_ADDRESS for `*.example.com`, the addresses set in the
    returned dict for the names in it, and the real answer for anything else."""
    import socket

    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        addresses = answers.get(name) or ([PUBLIC_ADDRESS] if name.endswith("example.com")
                                          else None)
        if addresses is None:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port or 0)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers
