"""Circuit breaker, rate limit, concurrency cap and retry policy per provider account.

Real Redis (settings.REDIS_URL); the in-process fallbacks of the embedded default are checked
too. Accounts are unsaved model instances with fresh ids: nothing here needs the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pybreaker
import pytest

from providers.base import (
    HardDecline,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
    SoftDecline,
)
from providers.ids import new_id
from providers.models import SANDBOX_URL, ProviderAccount
from providers.resilience import limits, retry, store
from providers.resilience.breaker import (
    AccountBreaker,
    BreakerOpen,
    breaker_for,
    breaker_reset,
)
from tests.conftest import rewind_breaker

ROOT = Path(__file__).resolve().parents[2]


def make_account(**fields) -> ProviderAccount:
    defaults = {"id": new_id("acct"), "name": "test", "provider": "stripe",
                "base_url": SANDBOX_URL}
    return ProviderAccount(**{**defaults, **fields})


def guarded(breaker, exc: BaseException | None = None):
    """One call through the breaker that raises `exc` (or returns "ok")."""
    with breaker.guard():
        if exc is not None:
            raise exc
        return "ok"


def fail(breaker, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        guarded(breaker, exc)


@pytest.fixture(params=["redis", "local"])
def backend(request, settings):
    """Run a test against Redis and against the embedded default's in-process state."""
    if request.param == "local":
        settings.REDIS_URL = ""
    return request.param


# --- circuit breaker -----------------------------------------------------------------------
def test_routings_closed_read_admits_the_next_call_once_and_no_failure_is_bypassed(
        monkeypatch):
    """Routing reads every candidate's breaker just before the payment's first call; a
    CLOSED state it read admits that call without a second read, once, while it is fresh,
    and never after a failure this process recorded."""
    from providers.resilience import breaker as module
    from tests.counting import count_work

    account = make_account(breaker_fail_max=2)
    breaker = breaker_for(account)
    assert guarded(breaker) == "ok"  # the breaker's state exists in Redis

    assert module.refusing([account]) == set()  # routing's read: closed
    with count_work() as work:
        first = breaker.admit()
        second = breaker.admit()
    assert first.mode == second.mode == "closed"
    assert work.ours.redis == 1  # the first admission used routing's read; the second read

    module.refusing([account])
    monkeypatch.setattr(module, "ROUTING_READ_MAX_AGE_SECONDS", 0.0)
    time.sleep(0.01)
    with count_work() as work:
        breaker.admit()
    assert work.ours.redis == 1  # too old: read again
    monkeypatch.undo()

    in_flight = [breaker.admit(), breaker.admit()]  # two calls out
    module.refusing([account])  # routing reads: closed
    for admission in in_flight:
        breaker.record(admission, ProviderUnavailable())  # both fail: open
    with pytest.raises(BreakerOpen):
        breaker.admit()  # routing's read is not used after a failure recorded here


def test_a_success_resets_failures_counted_before_its_admission():
    """A success admitted while failures were counted resets them (failures must be
    consecutive), without reading the count again."""
    account = make_account(breaker_fail_max=3)
    breaker = breaker_for(account)
    fail(breaker, ProviderUnavailable())
    fail(breaker, ProviderUnavailable())
    admission = breaker.admit()
    assert admission.failures == 2
    breaker.record(admission, None)
    assert breaker.fail_counter == 0
    fail(breaker, ProviderUnavailable())
    fail(breaker, ProviderUnavailable())
    assert breaker.current_state == "closed"  # 2 of 3 since the success


def test_an_operator_reset_closes_the_breaker_and_frees_the_trial_slot(backend):
    account = make_account(breaker_fail_max=2, breaker_reset_timeout=30)
    breaker = breaker_for(account)
    fail(breaker, ProviderUnavailable())
    fail(breaker, ProviderUnavailable())
    rewind_breaker(account, 31)
    admission = breaker.admit()  # the half-open trial call, in flight
    assert breaker.current_state == "half-open" and breaker.probe_slot.taken()
    assert breaker_reset(account) == "half-open"
    assert breaker.current_state == "closed" and breaker.fail_counter == 0
    assert not breaker.probe_slot.taken()
    assert guarded(breaker) == "ok"
    breaker.record(admission, None)  # the old trial ending late changes nothing
    assert breaker.current_state == "closed"


def test_breaker_state_lives_in_redis(settings):
    assert settings.REDIS_URL
    account = make_account(breaker_fail_max=1)
    breaker = breaker_for(account)
    assert isinstance(breaker.storage, pybreaker.CircuitRedisStorage)
    fail(breaker, ProviderUnavailable(raw_code="ConnectError"))
    key = store.account_key(account.id, "breaker") + ":pybreaker:state"
    assert store.redis_client().get(key) == b"open"


def test_breaker_trips_after_fail_max_provider_failures(backend):
    breaker = breaker_for(make_account(breaker_fail_max=3))
    fail(breaker, ProviderUnavailable())
    fail(breaker, OutcomeUnknown())
    assert breaker.current_state == "closed"
    fail(breaker, ProviderUnavailable())
    assert breaker.current_state == "open"
    with pytest.raises(ProviderUnavailable) as refused:
        guarded(breaker)
    assert refused.value.code == "breaker_open"
    assert isinstance(refused.value, BreakerOpen)


def test_declines_and_bad_requests_never_count(backend):
    breaker = breaker_for(make_account(breaker_fail_max=2))
    for _ in range(5):
        fail(breaker, HardDecline(decline_code="insufficient_funds"))
        fail(breaker, SoftDecline())
        fail(breaker, ProviderBadRequest())
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0


def test_failures_must_be_consecutive(backend):
    breaker = breaker_for(make_account(breaker_fail_max=2))
    fail(breaker, OutcomeUnknown())
    fail(breaker, HardDecline())  # the provider answered: it is up
    fail(breaker, OutcomeUnknown())
    assert breaker.current_state == "closed"
    assert guarded(breaker) == "ok"
    assert breaker.fail_counter == 0


def test_an_unexpected_exception_neither_counts_nor_resets(backend):
    breaker = breaker_for(make_account(breaker_fail_max=2))
    fail(breaker, OutcomeUnknown())
    fail(breaker, KeyError("adapter bug"))
    assert breaker.fail_counter == 1
    fail(breaker, OutcomeUnknown())
    assert breaker.current_state == "open"


def due_for_a_trial() -> tuple[ProviderAccount, AccountBreaker]:
    """An account whose breaker tripped once and whose reset timeout has since passed."""
    account = make_account(breaker_fail_max=1, breaker_reset_timeout=30)
    breaker = breaker_for(account)
    fail(breaker, ProviderUnavailable())
    rewind_breaker(account, 31)
    return account, breaker


def test_half_open_trial_success_closes_the_breaker(backend):
    account = make_account(breaker_fail_max=1, breaker_reset_timeout=30)
    breaker = breaker_for(account)
    fail(breaker, ProviderUnavailable())
    with pytest.raises(BreakerOpen):
        guarded(breaker)
    rewind_breaker(account, 25)
    with pytest.raises(BreakerOpen):  # not yet
        guarded(breaker)
    rewind_breaker(account, 6)
    assert guarded(breaker) == "ok"
    assert breaker.current_state == "closed"
    assert guarded(breaker) == "ok"


def test_half_open_trial_failure_opens_it_again(backend):
    _, breaker = due_for_a_trial()
    fail(breaker, OutcomeUnknown())
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpen):
        guarded(breaker)


def test_half_open_lets_one_trial_call_through_at_a_time(backend):
    _, breaker = due_for_a_trial()
    trial_started, finish_trial = threading.Event(), threading.Event()

    def trial():
        with breaker.guard():
            trial_started.set()
            finish_trial.wait(5)

    thread = threading.Thread(target=trial)
    thread.start()
    assert trial_started.wait(5)
    assert breaker.current_state == "half-open"
    for _ in range(5):
        with pytest.raises(BreakerOpen):
            guarded(breaker)
    finish_trial.set()
    thread.join(5)
    assert breaker.current_state == "closed"
    assert guarded(breaker) == "ok"


def test_a_trial_whose_process_died_does_not_block_recovery(settings):
    account, breaker = due_for_a_trial()
    breaker.admit()  # a trial admitted, then its process dies: nothing is ever recorded
    assert breaker.current_state == "half-open"
    with pytest.raises(BreakerOpen):
        guarded(breaker)
    # the trial's slot expires on its own: bring its expiry forward instead of waiting it out
    client, slot = store.redis_client(), store.account_key(account.id, "breaker", "probe")
    assert 0 < client.pttl(slot) <= breaker.probe_slot.ttl_seconds * 1000
    client.pexpire(slot, 1)
    deadline = time.monotonic() + 5
    while client.exists(slot) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guarded(breaker) == "ok"
    assert breaker.current_state == "closed"


def test_thresholds_follow_the_account():
    account = make_account(breaker_fail_max=5, breaker_reset_timeout=30)
    breaker_for(account)
    account.breaker_fail_max, account.breaker_reset_timeout = 1, 7
    breaker = breaker_for(account)
    assert (breaker.fail_max, breaker.reset_timeout) == (1, 7)


_CHILD = r"""
import sys
import django

django.setup()
from providers.base import OutcomeUnknown
from providers.models import ProviderAccount
from providers.resilience.breaker import (
    AccountBreaker,
    BreakerOpen,
    breaker_for,
    breaker_reset,
)

account_id, action, fail_max, reset_timeout = sys.argv[1:5]
account = ProviderAccount(id=account_id, name="x", provider="stripe",
                          breaker_fail_max=int(fail_max),
                          breaker_reset_timeout=int(reset_timeout))
breaker = breaker_for(account)
outcome = "-"
try:
    with breaker.guard():
        if action == "fail":
            raise OutcomeUnknown("timed out")
    outcome = "passed"
except BreakerOpen:
    outcome = "refused"
except OutcomeUnknown:
    outcome = "failed"
print(outcome, breaker.current_state)
"""


def run_child(settings, account: ProviderAccount, action: str) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test",
           "REDIS_URL": settings.REDIS_URL}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, account.id, action, str(account.breaker_fail_max),
         str(account.breaker_reset_timeout)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_breaker_state_is_shared_between_processes(settings):
    account = make_account(breaker_fail_max=2, breaker_reset_timeout=30)
    breaker = breaker_for(account)
    # tripped in a child process → open here
    assert run_child(settings, account, "fail") == ["failed", "closed"]
    assert run_child(settings, account, "fail") == ["failed", "open"]
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpen):
        guarded(breaker)

    # and vice versa: tripped here → a child process refuses without calling
    other = make_account(breaker_fail_max=2, breaker_reset_timeout=30)
    assert run_child(settings, other, "pass") == ["passed", "closed"]
    other_breaker = breaker_for(other)
    fail(other_breaker, ProviderUnavailable())
    fail(other_breaker, ProviderUnavailable())
    assert run_child(settings, other, "pass") == ["refused", "open"]


def test_a_trial_call_in_another_process_recovers_the_breaker_here(settings):
    account = make_account(breaker_fail_max=1, breaker_reset_timeout=30)
    breaker = breaker_for(account)
    fail(breaker, ProviderUnavailable())
    assert run_child(settings, account, "pass") == ["refused", "open"]
    rewind_breaker(account, 31)
    assert run_child(settings, account, "pass") == ["passed", "closed"]
    assert breaker.current_state == "closed"
    assert guarded(breaker) == "ok"


# --- rate limit ----------------------------------------------------------------------------
def acquire_concurrently(account: ProviderAccount, n: int, *, now_ms: int | None = None
                         ) -> tuple[list[str], float]:
    """n threads acquire at once; returns ("" for a grant, else the refusal code) and the
    seconds between the first and the last acquisition."""
    barrier = threading.Barrier(n)
    results: list[str] = []
    stamps: list[float] = []
    lock = threading.Lock()

    def worker():
        barrier.wait()
        stamp = time.monotonic()
        try:
            lease = limits.try_acquire(account, now_ms=now_ms)
        except ProviderUnavailable as exc:
            outcome = exc.code
        else:
            outcome = ""
            lease.release()
        with lock:
            results.append(outcome)
            stamps.extend([stamp, time.monotonic()])

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, max(stamps) - min(stamps)


# As many threads as the Redis pool has connections: a thread left waiting for one would be
# let through by design (an unreachable limiter refuses nothing) and blur what is measured.
RACERS = store.MAX_CONNECTIONS
LIMIT = RACERS // 2


def test_rate_limit_grants_exactly_the_limit_within_one_window(backend):
    account = make_account(rate_limit_per_second=LIMIT)
    results, _ = acquire_concurrently(account, RACERS, now_ms=1_000_000)  # one pinned instant
    assert results.count("") == LIMIT
    assert results.count("provider_rate_limited") == RACERS - LIMIT


def test_rate_limit_never_grants_more_than_the_limit_on_real_time(backend):
    account = make_account(rate_limit_per_second=LIMIT)
    results, spread = acquire_concurrently(account, RACERS)
    granted = results.count("")
    assert granted <= LIMIT
    if spread < 1.0:  # all within one window: exactly the limit
        assert granted == LIMIT


def test_rate_limit_window_slides(backend):
    account = make_account(rate_limit_per_second=3)
    t0 = 5_000_000
    for offset in (0, 100, 200):
        limits.try_acquire(account, now_ms=t0 + offset)
    with pytest.raises(ProviderUnavailable, match="rate limit"):
        limits.try_acquire(account, now_ms=t0 + 999)
    limits.try_acquire(account, now_ms=t0 + 1000)  # the first grant left the window
    with pytest.raises(ProviderUnavailable):
        limits.try_acquire(account, now_ms=t0 + 1050)
    limits.try_acquire(account, now_ms=t0 + 1100)


def test_a_refused_call_takes_nothing(backend):
    account = make_account(rate_limit_per_second=1, concurrency_limit=1)
    lease = limits.try_acquire(account, now_ms=10_000)
    with pytest.raises(ProviderUnavailable) as refused:
        limits.try_acquire(account, now_ms=10_500)
    assert refused.value.code == "provider_concurrency_limited"
    lease.release()
    with pytest.raises(ProviderUnavailable) as refused:
        limits.try_acquire(account, now_ms=10_600)
    assert refused.value.code == "provider_rate_limited"
    assert limits.limiter().holders(account.id) == 0  # the rate refusal left no lease behind


# --- concurrency cap -----------------------------------------------------------------------
def test_concurrency_cap_holds_under_contention_and_releases(backend):
    account = make_account(concurrency_limit=5)
    in_flight, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    refused_all = threading.Event()  # every worker not holding a slot has been refused

    def worker():
        barrier.wait()
        try:
            with limits.limited(account):
                with lock:
                    in_flight[0] += 1
                    peak[0] = max(peak[0], in_flight[0])
                    if len(outcomes) + in_flight[0] == 20:
                        refused_all.set()
                # hold the slot until every other worker has tried (bounded: 10 s)
                refused_all.wait(10)
                with lock:
                    in_flight[0] -= 1
        except ProviderUnavailable as exc:
            with lock:
                outcomes.append(exc.code)
                if len(outcomes) + in_flight[0] == 20:
                    refused_all.set()
        else:
            with lock:
                outcomes.append("")

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak[0] <= 5
    assert 5 <= outcomes.count("") < 20
    assert set(outcomes) == {"", "provider_concurrency_limited"}
    assert limits.limiter().holders(account.id) == 0
    with limits.limited(account):  # slots are free again
        pass


def test_an_expired_lease_of_a_dead_holder_is_reclaimed(backend):
    account = make_account(concurrency_limit=2)
    lease_ms = limits.Limits.of(account).lease_ms
    t0 = 50_000_000
    limits.try_acquire(account, now_ms=t0)  # two holders die mid-call: never released
    limits.try_acquire(account, now_ms=t0 + 10)
    with pytest.raises(ProviderUnavailable) as refused:
        limits.try_acquire(account, now_ms=t0 + lease_ms - 1)
    assert refused.value.code == "provider_concurrency_limited"
    lease = limits.try_acquire(account, now_ms=t0 + lease_ms + 1)  # one lease expired
    with pytest.raises(ProviderUnavailable):
        limits.try_acquire(account, now_ms=t0 + lease_ms + 2)
    lease.release()


def test_lease_outlives_the_longest_legitimate_call():
    account = make_account(connect_timeout=3.0, read_timeout=10.0)
    attempts = retry.setting("PROVIDER_RETRY_MAX_ATTEMPTS")
    assert limits.Limits.of(account).lease_ms >= attempts * 13_000


def test_an_account_without_limits_takes_no_lease(backend):
    account = make_account()
    lease = limits.try_acquire(account)
    assert not lease.holds_slot
    assert limits.limiter().holders(account.id) == 0


# --- retry policy --------------------------------------------------------------------------
class Flaky:
    """Raises the given exceptions in turn, then returns "ok"; records every call."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def fast_retries(settings):
    settings.PROVIDER_RETRY_MAX_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_SECONDS = 2.0
    settings.PROVIDER_RETRY_BACKOFF_SECONDS = 0.01
    settings.PROVIDER_RETRY_BACKOFF_MAX_SECONDS = 0.05
    return settings


@pytest.mark.parametrize("provider", ["stripe", "adyen", "checkout"])
@pytest.mark.parametrize("raw_code", ["ConnectError", "ConnectTimeout"])
def test_never_connected_is_retried_for_every_provider(fast_retries, provider, raw_code):
    fn = Flaky(ProviderUnavailable(raw_code=raw_code), ProviderUnavailable(raw_code=raw_code))
    assert retry.call_with_retry(provider, fn) == "ok"
    assert fn.calls == 3


@pytest.mark.parametrize("provider", ["stripe", "adyen"])
def test_unknown_outcome_is_retried_for_replaying_providers(fast_retries, provider):
    fn = Flaky(OutcomeUnknown(raw_code="ReadTimeout"))
    assert retry.call_with_retry(provider, fn) == "ok"
    assert fn.calls == 2


@pytest.mark.parametrize("later", [
    ProviderUnavailable(raw_code="ConnectError"),  # the retry could not connect
    ProviderUnavailable("503 before processing", raw_code="503"),  # the retry was refused
    ProviderBadRequest("422 on the retry", raw_code="422"),
])
def test_unknown_first_try_stays_unknown_whatever_a_retry_says(fast_retries, later):
    """A later "not processed" speaks only of the retry: the first try may have charged, so
    reporting "unavailable" would let the payment fail over and charge twice."""
    first = OutcomeUnknown(raw_code="ReadTimeout")
    fn = Flaky(first, later, later)
    with pytest.raises(OutcomeUnknown) as info:
        retry.call_with_retry("stripe", fn)
    assert info.value is first


def test_unknown_outcome_is_not_retried_for_checkout(fast_retries):
    fn = Flaky(OutcomeUnknown(raw_code="ReadTimeout"))
    with pytest.raises(OutcomeUnknown):
        retry.call_with_retry("checkout", fn)
    assert fn.calls == 1


def test_unknown_provider_is_treated_as_not_replaying(fast_retries):
    fn = Flaky(OutcomeUnknown())
    with pytest.raises(OutcomeUnknown):
        retry.call_with_retry("newpay", fn)
    assert fn.calls == 1


@pytest.mark.parametrize("error", [
    HardDecline(decline_code="stolen_card"),
    SoftDecline(),
    ProviderBadRequest(),
    ProviderUnavailable("503 before processing", raw_code="503"),  # the provider said no
    ProviderUnavailable(code="provider_rate_limited"),
    BreakerOpen(),
    ValueError("adapter bug"),
], ids=lambda e: type(e).__name__ + ":" + getattr(e, "code", ""))
def test_never_retried(fast_retries, error):
    fn = Flaky(error)
    with pytest.raises(type(error)):
        retry.call_with_retry("stripe", fn)
    assert fn.calls == 1


def test_retries_are_bounded_in_attempts(fast_retries):
    fn = Flaky(*[ProviderUnavailable(raw_code="ConnectError")] * 10)
    with pytest.raises(ProviderUnavailable):
        retry.call_with_retry("stripe", fn)
    assert fn.calls == 3


def test_retries_are_bounded_in_time(settings):
    settings.PROVIDER_RETRY_MAX_ATTEMPTS = 1000
    settings.PROVIDER_RETRY_MAX_SECONDS = 0.5
    settings.PROVIDER_RETRY_BACKOFF_SECONDS = 0.05
    settings.PROVIDER_RETRY_BACKOFF_MAX_SECONDS = 0.1
    fn = Flaky(*[OutcomeUnknown()] * 1000)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown):
        retry.call_with_retry("adyen", fn)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.1 + 0.2  # budget + one backoff + generous slack
    assert 2 <= fn.calls < 1000


def test_default_policy_is_bounded_to_about_two_seconds():
    assert retry.DEFAULTS["PROVIDER_RETRY_MAX_SECONDS"] <= 2.0
    assert retry.DEFAULTS["PROVIDER_RETRY_MAX_ATTEMPTS"] <= 5


def test_a_refused_connection_is_classified_as_never_connected():
    """The contract the retry policy relies on: providers.http.send names the httpx error."""
    import socket

    import httpx

    from providers import http

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(ProviderUnavailable) as refused:
        http.send(client, "POST", "/v1/payment_intents", provider="stripe")
    assert refused.value.raw_code in retry.NEVER_CONNECTED
    assert retry.is_retry_safe("checkout", refused.value)
