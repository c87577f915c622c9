"""Rate limit (requests per second) and concurrency cap per provider account.

Both are checked and taken in ONE atomic step (a Lua script in Redis), so a call either gets
both or neither and nothing has to be handed back on a refusal:

- rate: a sliding one-second log (a sorted set of grant times). A grant is added only when
  fewer than `rate_limit_per_second` grants lie in the last second, so no one-second window
  ever holds more than the limit (a fixed window would allow twice the limit across a
  boundary).
- concurrency: leases (a sorted set of holder tokens scored by their expiry). A holder removes
  its lease when its call ends; a holder whose process died never does, so expired leases are
  dropped before counting. A lease outlives the longest legitimate call (timeouts × attempts +
  retry budget, see retry.worst_case_seconds).

Times come from the Redis server (one clock for every process) unless a test pins `now_ms`.
A limited account fails fast with ProviderUnavailable ("provider_rate_limited" /
"provider_concurrency_limited"): nothing was sent, the caller may fail over; nobody queues.

Without Redis (the embedded default) the same rules run in process under a lock. If Redis is
unreachable the limits let calls through (logged): they protect the provider from us, and a
provider that is overloaded anyway answers 429/503, which the adapters report as unavailable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis

from providers.base import ProviderUnavailable
from providers.models import ProviderAccount
from providers.resilience import retry, store

logger = logging.getLogger(__name__)

WINDOW_MS = 1000
RATE_LIMITED, CONCURRENCY_LIMITED = "provider_rate_limited", "provider_concurrency_limited"

# The time in ms: the one pinned by a test, else the Redis server's clock (one for every process).
_NOW_MS = """
local function now_ms(pinned)
  if pinned ~= '' then return tonumber(pinned) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_ACQUIRE = _NOW_MS + """
-- KEYS[1] rate log (zset: token -> grant time ms), KEYS[2] leases (zset: token -> expiry ms)
-- ARGV: rate limit (0 = none), window ms, concurrency limit (0 = none), lease ms, token, now ms
local now = now_ms(ARGV[6])
local rate, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then return 'provider_concurrency_limited' end
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rate then return 'provider_rate_limited' end
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], window)
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], lease)
end
return ''
"""

# Would `_ACQUIRE` refuse now? The same tests, read-only (nothing removed, nothing added), for
# several accounts in one call: KEYS are each account's rate log and leases, ARGV[1] the
# window (ms), ARGV[2] now (ms, '' for the server's clock), then each account's rate limit and
# concurrency limit. Returns one refusal code ('' = would be granted) per account. (Several
# accounts' keys in one script: fine on the single Redis that store.py connects to.)
_PEEK = _NOW_MS + """
local now = now_ms(ARGV[2])
local window = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 2 do
  local rate, cap = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local refusal = ''
  if cap > 0 and redis.call('ZCOUNT', KEYS[2 * i], '(' .. now, '+inf') >= cap then
    refusal = 'provider_concurrency_limited'
  elseif rate > 0 and redis.call('ZCOUNT', KEYS[2 * i - 1], '(' .. (now - window), '+inf')
      >= rate then
    refusal = 'provider_rate_limited'
  end
  out[i] = refusal
end
return out
"""


@dataclass(frozen=True)
class Limits:
    rate_per_second: int  # 0: none
    concurrency: int  # 0: none
    lease_ms: int

    @classmethod
    def of(cls, account: ProviderAccount) -> Limits:
        lease = retry.worst_case_seconds(connect_timeout=account.connect_timeout,
                                         read_timeout=account.read_timeout)
        return cls(rate_per_second=account.rate_limit_per_second or 0,
                   concurrency=account.concurrency_limit or 0, lease_ms=int(lease * 1000))


class RedisLimiter:
    def __init__(self, client: redis.Redis):
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._peek = client.register_script(_PEEK)

    def acquire(self, account_id: str, limits: Limits, token: str,
                now_ms: int | None) -> str:
        """'' when granted, else the refusal code."""
        keys = [store.account_key(account_id, "rate"), store.account_key(account_id, "leases")]
        args: list[str | int | float] = [
            limits.rate_per_second, WINDOW_MS, limits.concurrency, limits.lease_ms, token,
            "" if now_ms is None else now_ms]
        try:
            refusal = self._acquire(keys=keys, args=args)
        except redis.RedisError:
            logger.exception("provider limits unavailable in Redis; letting the call through")
            return ""
        return refusal.decode() if isinstance(refusal, bytes) else refusal

    def peek(self, checks: list[tuple[str, Limits]], now_ms: int | None) -> dict[str, str]:
        """Refusal code per account id that `acquire` would refuse now (one command)."""
        keys: list[str] = []
        args: list[str | int | float] = [WINDOW_MS, "" if now_ms is None else now_ms]
        for account_id, limits in checks:
            keys += [store.account_key(account_id, "rate"), store.account_key(account_id, "leases")]
            args += [limits.rate_per_second, limits.concurrency]
        try:
            replies = self._peek(keys=keys, args=args)
        except redis.RedisError:
            logger.exception("provider limits unavailable in Redis; routing ignores them")
            return {}
        out = {}
        for (account_id, _), reply in zip(checks, replies, strict=True):
            refusal = reply.decode() if isinstance(reply, bytes) else reply
            if refusal:
                out[account_id] = refusal
        return out

    def release(self, account_id: str, token: str) -> None:
        try:
            self._client.zrem(store.account_key(account_id, "leases"), token)
        except redis.RedisError:
            logger.exception("could not release a provider concurrency lease; it will expire")

    def holders(self, account_id: str) -> int:
        return self._client.zcard(store.account_key(account_id, "leases"))


class LocalLimiter:
    """The same rules in process, for the embedded default without Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, deque[float]] = defaultdict(deque)
        self._leases: dict[str, dict[str, float]] = defaultdict(dict)

    def acquire(self, account_id: str, limits: Limits, token: str,
                now_ms: int | None) -> str:
        now = time.monotonic() * 1000 if now_ms is None else now_ms
        with self._lock:
            leases = self._leases[account_id]
            if limits.concurrency:
                for holder, expires in list(leases.items()):
                    if expires <= now:
                        del leases[holder]
                if len(leases) >= limits.concurrency:
                    return CONCURRENCY_LIMITED
            if limits.rate_per_second:
                grants = self._grants[account_id]
                while grants and grants[0] <= now - WINDOW_MS:
                    grants.popleft()
                if len(grants) >= limits.rate_per_second:
                    return RATE_LIMITED
                grants.append(now)
            if limits.concurrency:
                leases[token] = now + limits.lease_ms
            return ""

    def peek(self, checks: list[tuple[str, Limits]], now_ms: int | None) -> dict[str, str]:
        now = time.monotonic() * 1000 if now_ms is None else now_ms
        out = {}
        with self._lock:
            for account_id, limits in checks:
                leases = self._leases[account_id]
                grants = self._grants[account_id]
                if limits.concurrency and sum(
                        1 for expires in leases.values() if expires > now) >= limits.concurrency:
                    out[account_id] = CONCURRENCY_LIMITED
                elif limits.rate_per_second and sum(
                        1 for granted in grants if granted > now - WINDOW_MS
                ) >= limits.rate_per_second:
                    out[account_id] = RATE_LIMITED
        return out

    def release(self, account_id: str, token: str) -> None:
        with self._lock:
            self._leases[account_id].pop(token, None)

    def holders(self, account_id: str) -> int:
        with self._lock:
            return len(self._leases[account_id])


_local = LocalLimiter()
_redis_limiters: dict[str, RedisLimiter] = {}


def limiter() -> RedisLimiter | LocalLimiter:
    client = store.redis_client()
    if client is None:
        return _local
    url = store.redis_url()
    if url not in _redis_limiters:
        _redis_limiters[url] = RedisLimiter(client)
    return _redis_limiters[url]


@dataclass
class Lease:
    account_id: str
    token: str
    holds_slot: bool
    _backend: RedisLimiter | LocalLimiter

    def release(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self._backend.release(self.account_id, self.token)


def try_acquire(account: ProviderAccount, *, now_ms: int | None = None) -> Lease:
    """Take a rate-limit grant and a concurrency slot for one call, or raise
    ProviderUnavailable at once. Release the lease when the call ends."""
    limits = Limits.of(account)
    backend = limiter()
    token = uuid.uuid4().hex
    if limits.rate_per_second or limits.concurrency:
        refusal = backend.acquire(account.id, limits, token, now_ms)
        if refusal:
            what = "rate limit" if refusal == RATE_LIMITED else "concurrency limit"
            raise ProviderUnavailable(
                f"Provider account {account.id} is at its {what}; the request was not sent.",
                code=refusal, sent=False)
    return Lease(account.id, token, holds_slot=bool(limits.concurrency), _backend=backend)


def refusals(accounts: Iterable[ProviderAccount], *,
             now_ms: int | None = None) -> dict[str, str]:
    """Which of these accounts `try_acquire` would refuse right now, and why: account id →
    "provider_rate_limited" | "provider_concurrency_limited". Read-only (takes no grant, no
    slot), one Redis round trip for all of them, none when no account has a limit. For
    routing; like the limits themselves, an unreachable Redis refuses nothing."""
    checks = [(account.id, Limits(rate_per_second=account.rate_limit_per_second or 0,
                                  concurrency=account.concurrency_limit or 0, lease_ms=0))
              for account in accounts
              if account.rate_limit_per_second or account.concurrency_limit]  # no lease taken
    if not checks:
        return {}
    return limiter().peek(checks, now_ms)


@contextlib.contextmanager
def limited(account: ProviderAccount) -> Iterator[Lease]:
    lease = try_acquire(account)
    try:
        yield lease
    finally:
        lease.release()
