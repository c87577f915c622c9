"""providers.gateway.call: limits, then breaker, then retries, then the adapter."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from providers import gateway
from providers.base import (
    AuthorizeRequest,
    AuthorizeResult,
    Card,
    HardDecline,
    ModificationRequest,
    ModificationResult,
    OutcomeUnknown,
    ProviderUnavailable,
)
from providers.ids import new_id
from providers.models import SANDBOX_URL, ProviderAccount
from providers.resilience import limits
from providers.resilience.breaker import breaker_for


def make_account(**fields) -> ProviderAccount:
    defaults = {"id": new_id("acct"), "name": "test", "provider": "stripe",
                "base_url": SANDBOX_URL}
    return ProviderAccount(**{**defaults, **fields})


def authorize_request(reference: str | None = None) -> AuthorizeRequest:
    return AuthorizeRequest(reference=reference or new_id("att"), amount=1050, currency="USD",
                            card=Card(number="4242424242424242", exp_month=12, exp_year=2034,
                                      brand="visa"), capture=True)


class StubAdapter:
    """Answers from a script of exceptions, then approves; records every request."""

    def __init__(self, *errors: BaseException, delay: float = 0.0):
        self.errors = list(errors)
        self.delay = delay
        self.requests: list = []
        self._lock = threading.Lock()

    def _answer(self, request):
        with self._lock:
            self.requests.append(request)
            error = self.errors.pop(0) if self.errors else None
        if self.delay:
            time.sleep(self.delay)
        if error is not None:
            raise error

    def authorize(self, request):
        self._answer(request)
        return AuthorizeResult(provider_reference="pi_" + request.reference, captured=True)

    def capture(self, request):
        self._answer(request)
        return ModificationResult(provider_reference="ch_" + request.reference)

    cancel = refund = capture


@pytest.fixture
def stub(monkeypatch):
    """Install a StubAdapter for every account: stub(*errors, delay=…) -> the adapter."""

    def install(*errors, delay=0.0):
        adapter = StubAdapter(*errors, delay=delay)
        monkeypatch.setattr(gateway, "adapter_for", lambda account: adapter)
        return adapter

    return install


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.PROVIDER_RETRY_MAX_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_SECONDS = 2.0
    settings.PROVIDER_RETRY_BACKOFF_SECONDS = 0.01
    settings.PROVIDER_RETRY_BACKOFF_MAX_SECONDS = 0.05


def test_call_returns_the_adapters_result(stub):
    adapter = stub()
    request = authorize_request()
    result = gateway.call(make_account(), "authorize", request)
    assert result == AuthorizeResult(provider_reference="pi_" + request.reference, captured=True)
    assert adapter.requests == [request]


def test_modifications_go_through_too(stub):
    adapter = stub()
    request = ModificationRequest(reference="ref_1", provider_reference="pi_1", amount=10,
                                  currency="USD")
    for operation in ("capture", "cancel", "refund"):
        assert gateway.call(make_account(), operation, request).provider_reference == "ch_ref_1"
    assert len(adapter.requests) == 3


def test_unknown_operation_is_refused(stub):
    stub()
    with pytest.raises(ValueError):
        gateway.call(make_account(), "delete_everything", None)


def test_adapter_taxonomy_propagates_unchanged(stub):
    stub(HardDecline("no", decline_code="stolen_card"))
    with pytest.raises(HardDecline) as declined:
        gateway.call(make_account(), "authorize", authorize_request())
    assert declined.value.decline_code == "stolen_card"


def test_open_breaker_refuses_without_calling_the_adapter(stub):
    account = make_account(provider="checkout", breaker_fail_max=2)  # checkout: no retries
    adapter = stub(OutcomeUnknown(), OutcomeUnknown())
    for _ in range(2):
        with pytest.raises(OutcomeUnknown):
            gateway.call(account, "authorize", authorize_request())
    assert breaker_for(account).current_state == "open"
    with pytest.raises(ProviderUnavailable) as refused:
        gateway.call(account, "authorize", authorize_request())
    assert refused.value.code == "breaker_open"
    assert len(adapter.requests) == 2


def test_the_breaker_counts_a_call_once_after_its_retries(stub):
    account = make_account(breaker_fail_max=2)
    connect_error = ProviderUnavailable("refused", raw_code="ConnectError")
    adapter = stub(connect_error, connect_error, connect_error)
    with pytest.raises(ProviderUnavailable):
        gateway.call(account, "authorize", authorize_request())
    assert len(adapter.requests) == 3
    assert breaker_for(account).fail_counter == 1
    assert breaker_for(account).current_state == "closed"


def test_a_retry_resends_the_same_request_with_the_same_key(stub):
    adapter = stub(OutcomeUnknown("read timeout", raw_code="ReadTimeout"))
    request = authorize_request("att_same_key")
    gateway.call(make_account(provider="adyen"), "authorize", request)
    assert adapter.requests == [request, request]
    assert adapter.requests[0] is adapter.requests[1]


def test_checkout_unknown_outcome_is_not_retried(stub):
    adapter = stub(OutcomeUnknown("read timeout", raw_code="ReadTimeout"))
    with pytest.raises(OutcomeUnknown):
        gateway.call(make_account(provider="checkout"), "authorize", authorize_request())
    assert len(adapter.requests) == 1


def test_rate_limited_account_fails_fast_without_calling_the_adapter(stub):
    account = make_account(rate_limit_per_second=2)
    adapter = stub()
    gateway.call(account, "authorize", authorize_request())
    gateway.call(account, "authorize", authorize_request())
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as refused:
        gateway.call(account, "authorize", authorize_request())
    assert time.monotonic() - started < 0.5  # refused, not queued
    assert refused.value.code == "provider_rate_limited"
    assert len(adapter.requests) == 2
    assert breaker_for(account).fail_counter == 0  # our own limit is no provider failure


def test_concurrency_limited_account_fails_fast_and_releases_its_slots(stub):
    account = make_account(concurrency_limit=3)
    adapter = stub(delay=0.3)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(gateway.call, account, "authorize", authorize_request())
                   for _ in range(10)]
    outcomes = []
    for future in futures:
        try:
            future.result()
            outcomes.append("ok")
        except ProviderUnavailable as exc:
            outcomes.append(exc.code)
    assert outcomes.count("ok") == len(adapter.requests)
    assert 3 <= outcomes.count("ok") < 10
    assert set(outcomes) == {"ok", "provider_concurrency_limited"}
    assert limits.limiter().holders(account.id) == 0


def test_slots_are_released_when_the_call_fails(stub):
    account = make_account(concurrency_limit=1)
    stub(HardDecline(), OutcomeUnknown(raw_code="ReadTimeout"))
    with pytest.raises(HardDecline):
        gateway.call(account, "authorize", authorize_request())
    with pytest.raises(OutcomeUnknown):
        gateway.call(make_account(id=account.id, provider="checkout", concurrency_limit=1),
                     "authorize", authorize_request())
    assert limits.limiter().holders(account.id) == 0
    gateway.call(account, "authorize", authorize_request())


def test_concurrent_calls_through_one_breaker_run_concurrently(stub):
    """20 calls of 200 ms each: one at a time would take 4 s."""
    account = make_account()
    adapter = stub(delay=0.2)
    barrier = threading.Barrier(20)

    def one_call():
        barrier.wait()
        return gateway.call(account, "authorize", authorize_request())

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: one_call(), range(20)))
    elapsed = time.monotonic() - started
    assert len(results) == 20
    assert len(adapter.requests) == 20
    assert elapsed < 2.0, f"20 × 200 ms calls took {elapsed:.2f} s: serialized?"
    assert breaker_for(account).current_state == "closed"


def test_a_payment_outcome_through_the_real_sandbox(db, merchant):
    """The gateway with the registry's adapter for a sandbox account, end to end."""
    account = ProviderAccount.objects.get(merchant=merchant, livemode=False, provider="stripe")
    request = authorize_request()
    result = gateway.call(account, "authorize", request)
    assert result.captured
    with pytest.raises(HardDecline):
        gateway.call(account, "authorize", AuthorizeRequest(
            reference=new_id("att"), amount=1050, currency="USD", capture=True,
            card=Card(number="4000000000009995", exp_month=12, exp_year=2034, brand="visa")))
    assert breaker_for(account).fail_counter == 0


@pytest.mark.parametrize("provider", ["stripe", "adyen", "checkout"])
def test_real_adapter_retries_a_refused_connection(provider, caplog):
    """The registry's adapter at a URL nobody listens on: never connected, so retried (for
    every provider), then reported as unavailable and counted once by the breaker."""
    import logging
    import socket

    from providers.sandboxes.catalog import SANDBOX_CREDENTIALS

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    account = make_account(provider=provider, base_url=f"http://127.0.0.1:{port}",
                           connect_timeout=1.0, read_timeout=1.0, breaker_fail_max=5)
    account.set_credentials(SANDBOX_CREDENTIALS[provider])
    caplog.set_level(logging.INFO, logger="providers.http")
    with pytest.raises(ProviderUnavailable) as refused:
        gateway.call(account, "authorize", authorize_request())
    assert refused.value.raw_code == "ConnectError"
    attempts = [r for r in caplog.records if "error=ConnectError" in r.getMessage()]
    assert len(attempts) == 3
    assert breaker_for(account).fail_counter == 1
