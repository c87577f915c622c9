"""A circuit breaker per provider account, shared by every process through Redis.

pybreaker keeps the state (closed / open / half-open, failure counter, opened-at) in its
CircuitRedisStorage, so a breaker tripped in one gunicorn worker is open in all of them. The
embedded default without REDIS_URL uses pybreaker's in-memory storage.

Why not `CircuitBreaker.call`: it holds the breaker's RLock for the whole guarded call, so all
calls through one breaker in a process run one at a time. Here the lock is held only to decide
(admit) and to record the result, never over the network call:

    admit()   under the lock: closed → pass; open → refuse until reset_timeout has passed, then
              become half-open; half-open → exactly one trial call, holding a probe slot that
              is shared across processes (a Redis key with an expiry, so a trial whose process
              died does not keep the breaker half-open for ever). Everyone else is refused.
    the call  outside the lock, concurrently with any other.
    record()  under the lock: a provider failure (ProviderUnavailable, OutcomeUnknown) counts
              and trips the breaker at fail_max; any answer from the provider — success,
              decline, bad request — resets the count; the trial's result closes or re-opens.

A refusal raises ProviderUnavailable(code="breaker_open"): nothing was sent, safe to fail over.

pybreaker's Redis storage keeps opened_at in whole seconds, so an open breaker may offer its
trial call up to one second before reset_timeout has passed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import pybreaker
import redis

from providers.base import OutcomeUnknown, ProviderError, ProviderUnavailable
from providers.models import ProviderAccount
from providers.resilience import retry, store

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROVIDER_FAILURES = (ProviderUnavailable, OutcomeUnknown)
CLOSED, PROBE = "closed", "probe"  # how a call was admitted


def _not_a_provider_failure(exc: BaseException) -> bool:
    return not isinstance(exc, PROVIDER_FAILURES)


class ProbeSlot:
    """At most one half-open trial call at a time, across processes; expires on its own."""

    _RELEASE = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """

    def __init__(self, client: redis.Redis | None, key: str, ttl_seconds: float):
        self._client = client
        self._key = key
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._local: tuple[str, float] | None = None  # (token, expires at) without Redis

    def acquire(self) -> str | None:
        token = uuid.uuid4().hex
        if self._client is None:
            with self._lock:
                if self._local and self._local[1] > time.monotonic():
                    return None
                self._local = (token, time.monotonic() + self.ttl_seconds)
                return token
        try:
            ok = self._client.set(self._key, token, nx=True,
                                  px=max(1, int(self.ttl_seconds * 1000)))
        except redis.RedisError:
            # pybreaker reads a closed state when Redis fails; be as lenient with the trial
            logger.exception("breaker probe slot unavailable in Redis; letting the trial pass")
            return token
        return token if ok else None

    def taken(self) -> bool:
        """Is a trial call holding the slot right now? Read-only (for routing)."""
        if self._client is None:
            with self._lock:
                return bool(self._local and self._local[1] > time.monotonic())
        try:
            return bool(self._client.exists(self._key))
        except redis.RedisError:
            return False  # as acquire(): an unreachable Redis lets the trial pass

    def clear(self) -> None:
        """Free the slot whoever holds it (an operator's reset: a trial call still in flight
        then records into a closed breaker, which is harmless)."""
        if self._client is None:
            with self._lock:
                self._local = None
            return
        self._client.delete(self._key)

    def release(self, token: str) -> None:
        if self._client is None:
            with self._lock:
                if self._local and self._local[0] == token:
                    self._local = None
            return
        try:
            self._client.eval(self._RELEASE, 1, self._key, token)
        except redis.RedisError:
            logger.exception("could not release the breaker probe slot; it expires by itself")


class BreakerOpen(ProviderUnavailable):
    code = "breaker_open"


class Admission(NamedTuple):
    """How a call was admitted: CLOSED (token None) or PROBE (the trial slot's token); and
    the failure count read with a closed state (None: not read), so that a success need not
    read it again to know whether there is a count to reset."""

    mode: str
    token: str | None
    failures: int | None = None


# Routing reads every candidate's breaker (one MGET) just before the payment's first call.
# A CLOSED state it read moments ago admits that call without reading the state again: it is
# the reading a fresh one would repeat, as old as the transaction between them (the same race
# as a breaker tripping just after any admission). Used once, by the thread that read it, and
# only within this many seconds; a state this process changes is forgotten at once.
ROUTING_READ_MAX_AGE_SECONDS = 0.5
_routing_reads = threading.local()


def _remember_closed(account_id: str, failures: int) -> None:
    reads = getattr(_routing_reads, "by_account", None)
    if reads is None:
        reads = _routing_reads.by_account = {}
    reads[account_id] = (time.monotonic(), failures)


def _recent_closed_read(account_id: str) -> int | None:
    """The failure count of a CLOSED state routing just read (taken: used once), or None."""
    reads = getattr(_routing_reads, "by_account", None)
    entry = reads.pop(account_id, None) if reads else None
    if entry is None or time.monotonic() - entry[0] > ROUTING_READ_MAX_AGE_SECONDS:
        return None
    failures: int = entry[1]
    return failures


def _forget_reads(account_id: str) -> None:
    reads = getattr(_routing_reads, "by_account", None)
    if reads:
        reads.pop(account_id, None)


class AccountBreaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker and storage, with admission and recording split around the call."""

    def __init__(self, *, name: str, fail_max: int, reset_timeout: float,
                 storage: pybreaker.CircuitBreakerStorage, probe_slot: ProbeSlot):
        super().__init__(fail_max=fail_max, reset_timeout=reset_timeout, state_storage=storage,
                         name=name, exclude=[_not_a_provider_failure])
        # pybreaker's own handle on the storage is private; this one is ours.
        self.storage = storage
        self.probe_slot = probe_slot

    # -- the concurrent replacement for pybreaker's call() -----------------------------------
    def admit(self) -> Admission:
        """Decide whether a call may go out now: (CLOSED, None, failures) or (PROBE, slot
        token). Raises BreakerOpen otherwise."""
        failures = _recent_closed_read(str(self.name))
        if failures is not None:
            return Admission(CLOSED, None, failures)
        with self._lock:
            # read from the shared storage. (pybreaker's `state` property would also "sync"
            # the local state object, which resets the shared failure counter whenever
            # another process changed the state: failures counted elsewhere would be lost.)
            state, failures = self._state_and_failures()
            if state == pybreaker.STATE_CLOSED:
                return Admission(CLOSED, None, failures)
            if state == pybreaker.STATE_OPEN and not self._reset_timeout_elapsed():
                raise self._refusal("open")
            token = self.probe_slot.acquire()
            if token is None:
                raise self._refusal("half-open, a trial call is in flight")
            if state == pybreaker.STATE_OPEN:
                self.half_open()
            return Admission(PROBE, token)

    def _state_and_failures(self) -> tuple[str, int | None]:
        """The shared state and failure count, in one round trip on Redis."""
        if not isinstance(self.storage, pybreaker.CircuitRedisStorage):
            return self.current_state, None
        keys = _storage_keys(str(self.name))
        try:
            state, failures = self.storage._redis.mget([keys["state"], keys["fail_counter"]])
        except redis.RedisError:
            # as pybreaker's storage does: a closed breaker, and no count known
            logger.exception("breaker state unavailable in Redis; treating it as closed")
            return pybreaker.STATE_CLOSED, None
        if state is None:  # never written: pybreaker's read initializes it
            return self.current_state, None
        return (state.decode() if isinstance(state, bytes) else str(state)), int(failures or 0)

    def record(self, admission: tuple[str, str | None] | Admission,
               exc: BaseException | None) -> None:
        """Record how an admitted call ended (exc None: it returned)."""
        mode, token = admission[0], admission[1]
        seen = admission[2] if len(admission) > 2 else None
        with self._lock:
            try:
                if exc is not None and not isinstance(exc, ProviderError):
                    # Not an answer in the adapter taxonomy (a bug, an interrupt): it proves
                    # nothing about the provider either way, so it neither counts nor resets.
                    return
                failed = exc is not None and self.is_system_error(exc)
                if failed:  # what routing read of this breaker may no longer hold
                    _forget_reads(str(self.name))
                for listener in self.listeners:
                    if failed and exc is not None:
                        listener.failure(self, exc)
                    else:
                        listener.success(self)
                if mode == PROBE:
                    if failed:
                        self.open()  # another reset_timeout before the next trial
                        logger.warning("breaker %s: trial call failed, open again", self.name)
                    else:
                        self.close()
                        logger.info("breaker %s: trial call succeeded, closed", self.name)
                    return
                if not failed:
                    # failures must be consecutive: a count read at admission (when there
                    # was one) need not be read again. (A failure another call records while
                    # this one is out is then reset by the next success admitted after it.)
                    if (self.storage.counter if seen is None else seen):
                        self.storage.reset_counter()
                    return
                if self.current_state != pybreaker.STATE_CLOSED:
                    # Admitted before the breaker tripped: its failure is already old news, and
                    # only the trial call decides what happens next.
                    return
                self.storage.increment_counter()
                if self.storage.counter >= self.fail_max:
                    self.open()
                    logger.warning("breaker %s: %d consecutive provider failures, open",
                                   self.name, self.fail_max)
            finally:
                if token is not None:
                    self.probe_slot.release(token)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """`with breaker.guard(): <one provider call>` — refuses, or lets the body run outside
        the breaker's lock and records how it ended."""
        admission = self.admit()
        try:
            yield
        except BaseException as exc:
            self.record(admission, exc)
            raise
        self.record(admission, None)

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """pybreaker's call(), without holding the lock over `func` (see the module doc)."""
        with self.guard():
            return func(*args, **kwargs)

    # -- helpers ------------------------------------------------------------------------------
    def _reset_timeout_elapsed(self) -> bool:
        # The same test as pybreaker's CircuitOpenState.before_call (which would also run the
        # call under the lock, so it cannot be used as is).
        opened_at = self.storage.opened_at
        return not opened_at or datetime.now(UTC) >= opened_at + timedelta(
            seconds=self.reset_timeout)

    def _refusal(self, why: str) -> BreakerOpen:
        return BreakerOpen(f"Circuit breaker for provider account {self.name} is {why}; "
                           "the request was not sent.", sent=False)


_breakers: dict[tuple[str, str], AccountBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(account: ProviderAccount) -> AccountBreaker:
    """This process's handle on the account's shared breaker, with the account's current
    thresholds."""
    client = store.redis_client()
    cache_key = (store.redis_url(), account.id)
    with _breakers_lock:
        breaker = _breakers.get(cache_key)
        if breaker is None:
            try:
                breaker = _breakers[cache_key] = _new_breaker(account, client)
            except redis.RedisError:
                # Redis is down: like pybreaker's storage on a failed read, let the call through
                # (a throwaway local breaker, not cached: Redis is tried again next call).
                logger.exception("breaker state unavailable in Redis; using a local breaker")
                breaker = _new_breaker(account, None)
    breaker.fail_max = account.breaker_fail_max
    breaker.reset_timeout = account.breaker_reset_timeout
    breaker.probe_slot.ttl_seconds = _probe_ttl(account)
    return breaker


def breaker_state(account: ProviderAccount) -> str:
    """closed | open | half-open, as every process sees it (for the admin and routing)."""
    return breaker_for(account).current_state


def breaker_reset(account: ProviderAccount) -> str:
    """Close the account's breaker for every process (an operator's decision that the
    provider is back): closed, no failures counted, no trial call slot held. Returns the
    state it was in. Raises redis.RedisError when the shared state cannot be written: a reset
    that did not happen must not look as if it had (pybreaker's storage would only log)."""
    breaker = breaker_for(account)
    client = store.redis_client()
    _forget_reads(account.id)
    with breaker._lock:
        before = breaker.current_state
        if client is not None:
            client.ping()  # pybreaker's storage swallows Redis errors; fail loudly first
        breaker.storage.reset_counter()
        breaker.close()
        breaker.probe_slot.clear()
    if breaker.current_state != pybreaker.STATE_CLOSED:
        raise redis.RedisError(f"breaker {account.id} still reads {breaker.current_state}")
    logger.warning("breaker %s: reset by an operator (was %s)", account.id, before)
    return before


def refusing(accounts: Iterable[ProviderAccount]) -> set[str]:
    """Ids of the accounts whose breaker would refuse a call right now — what `admit()` would
    decide, without its side effects (admit moves an open breaker whose reset timeout has
    passed to half-open and takes the trial slot). Refused: open within its reset timeout, or
    past it / half-open while another process holds the trial call. Read-only; one Redis
    command for all the accounts (routing asks on every payment).

    Like the breaker itself, an unreachable Redis refuses nothing."""
    accounts = list(accounts)
    client = store.redis_client()
    if client is None:
        refused = set()
        for account in accounts:
            breaker = breaker_for(account)
            if _refuses(breaker.current_state, breaker.storage.opened_at,
                        account.breaker_reset_timeout, breaker.probe_slot.taken):
                refused.add(account.id)
        return refused
    keys = []
    for account in accounts:
        names = _storage_keys(account.id)
        keys += [names["state"], names["opened_at"], names["fail_counter"],
                 store.account_key(account.id, "breaker", "probe")]
    try:
        # one MGET for every account (the single Redis that store.py connects to)
        values = client.mget(keys) if keys else []
    except redis.RedisError:
        logger.exception("breaker states unavailable in Redis; routing treats them as closed")
        return set()
    refused = set()
    for i, account in enumerate(accounts):
        state, opened_at, failures, probe = values[4 * i: 4 * i + 4]
        name = (state.decode() if isinstance(state, bytes) else state) or pybreaker.STATE_CLOSED
        opened = datetime.fromtimestamp(int(opened_at), UTC) if opened_at else None
        if _refuses(name, opened, account.breaker_reset_timeout, _is_set(probe)):
            refused.add(account.id)
        elif state is not None and name == pybreaker.STATE_CLOSED:
            _remember_closed(account.id, int(failures or 0))  # for this payment's call
    return refused


def states(accounts: Iterable[ProviderAccount]) -> dict[str, str]:
    """Each account's breaker state as every process sees it: closed | open | half-open (an
    open breaker stays "open" past its reset timeout until a call takes the trial). Read-only,
    one Redis command for all the accounts (the metrics scrape asks). Accounts whose state
    cannot be read are left out."""
    accounts = list(accounts)
    client = store.redis_client()
    if client is None:  # the embedded default: this process's own breakers
        return {a.id: breaker_for(a).current_state for a in accounts}
    keys = [_storage_keys(a.id)["state"] for a in accounts]
    try:
        values = client.mget(keys) if keys else []
    except redis.RedisError:
        logger.exception("breaker states unavailable in Redis")
        return {}
    return {a.id: ((v.decode() if isinstance(v, bytes) else v) or pybreaker.STATE_CLOSED)
            for a, v in zip(accounts, values, strict=True)}


def _storage_keys(account_id: str) -> dict[str, str]:
    """The Redis keys pybreaker's storage keeps an account's breaker in."""
    namespace = store.account_key(account_id, "breaker")
    base = pybreaker.CircuitRedisStorage.BASE_NAMESPACE
    return {name: f"{namespace}:{base}:{name}"
            for name in ("state", "opened_at", "fail_counter")}


def _is_set(value: object) -> Callable[[], bool]:
    return lambda: value is not None


def _refuses(state: str, opened_at: datetime | None, reset_timeout: float,
             probe_taken: Callable[[], bool]) -> bool:
    if state == pybreaker.STATE_CLOSED:
        return False
    if state == pybreaker.STATE_OPEN and opened_at and datetime.now(UTC) < opened_at + \
            timedelta(seconds=reset_timeout):
        return True
    return bool(probe_taken())  # the trial call: refused only while another one holds it


def _new_breaker(account: ProviderAccount, client: redis.Redis | None) -> AccountBreaker:
    if client is None:
        storage: pybreaker.CircuitBreakerStorage = pybreaker.CircuitMemoryStorage(
            pybreaker.STATE_CLOSED)
    else:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace=store.account_key(account.id, "breaker"))
    return AccountBreaker(
        name=account.id, fail_max=account.breaker_fail_max,
        reset_timeout=account.breaker_reset_timeout, storage=storage,
        probe_slot=ProbeSlot(client, store.account_key(account.id, "breaker", "probe"),
                             _probe_ttl(account)))


def _probe_ttl(account: ProviderAccount) -> float:
    return retry.worst_case_seconds(connect_timeout=account.connect_timeout,
                                    read_timeout=account.read_timeout)
