"""Rolling authorization rate per provider account, for the success_rate strategy.

    rate = approvals / (approvals + soft declines + failures)

Hard declines are the card's fault, not the provider's: they are counted (for operators) but
left out of the rate. Failures are unavailable and unknown outcomes (a timeout is the
provider's fault even when the money moved).

Counters live in Redis, time-bucketed: one hash per account whose fields are
"<bucket>:<kind>" (bucket = unix time // ROUTING_SUCCESS_BUCKET_SECONDS, kind a|s|f|h), so a
write is one HINCRBY and a read of the window is one small Lua sum over every account's hash
(one command). The first write into a new bucket drops the buckets that left the window,
and the key expires after a window without traffic. Clocks are the callers' (NTP-synced hosts;
a bucket is 10 s, so skew does not matter). Without REDIS_URL the same counters live in
process.

An account with fewer than ROUTING_MIN_SAMPLES outcomes in the window scores the neutral prior
ROUTING_NEUTRAL_SUCCESS_RATE (0.9): a handful of results proves nothing either way, and a new or
idle account must not start first or last by accident. The engine moves a random account first
for a small exploration share of payments (ROUTING_EXPLORATION_RATE), so an account that
recovered collects fresh samples and wins its traffic back.

Stats are advisory: a Redis error never fails a payment (writes are dropped, reads score every
account with the prior).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from redis.commands.core import Script

from providers.models import ProviderAccount
from providers.outcomes import APPROVED, HARD, SOFT, UNAVAILABLE, UNKNOWN
from providers.resilience import store

logger = logging.getLogger(__name__)

KEY_PREFIX = "switchyard:routing"
_FIELD = {APPROVED: "a", SOFT: "s", UNAVAILABLE: "f", UNKNOWN: "f", HARD: "h"}

_RECORD = """
-- KEYS[1] the account's counters; ARGV: field ("<bucket>:<kind>"), oldest bucket kept, ttl
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if n == 1 then
  local oldest = tonumber(ARGV[2])
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    local bucket = tonumber(string.match(field, '^(%d+):'))
    if bucket == nil or bucket < oldest then redis.call('HDEL', KEYS[1], field) end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return n
"""

_READ = """
-- KEYS: the accounts' counters; ARGV: oldest bucket in the window, newest.
-- Returns approved, soft, failed, hard for each account, flat.
local oldest, newest = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for k = 1, #KEYS do
  local sums = {a = 0, s = 0, f = 0, h = 0}
  local flat = redis.call('HGETALL', KEYS[k])
  for i = 1, #flat, 2 do
    local bucket, kind = string.match(flat[i], '^(%d+):(%a)$')
    bucket = tonumber(bucket)
    if bucket and bucket >= oldest and bucket <= newest and sums[kind] then
      sums[kind] = sums[kind] + tonumber(flat[i + 1])
    end
  end
  local base = (k - 1) * 4
  out[base + 1], out[base + 2], out[base + 3], out[base + 4] = sums.a, sums.s, sums.f, sums.h
end
return out
"""


@dataclass(frozen=True)
class Rate:
    rate: float  # the score: the measured rate, or the prior below min_samples
    samples: int  # approvals + soft declines + failures in the window
    approved: int = 0
    soft: int = 0
    failed: int = 0
    hard: int = 0

    @property
    def measured(self) -> bool:
        return self.samples >= min_samples()


def bucket_seconds() -> int:
    return getattr(settings, "ROUTING_SUCCESS_BUCKET_SECONDS", 10)


def window_seconds() -> int:
    return getattr(settings, "ROUTING_SUCCESS_WINDOW_SECONDS", 300)


def min_samples() -> int:
    return getattr(settings, "ROUTING_MIN_SAMPLES", 20)


def neutral_rate() -> float:
    return getattr(settings, "ROUTING_NEUTRAL_SUCCESS_RATE", 0.9)


def _buckets(now: float | None) -> tuple[int, int]:
    """(oldest, newest) bucket of the window ending now; the current bucket counts."""
    size = bucket_seconds()
    newest = int((time.time() if now is None else now) // size)
    return newest - max(1, math.ceil(window_seconds() / size)) + 1, newest


def _key(account_id: str) -> str:
    return f"{KEY_PREFIX}:{{{account_id}}}:outcomes"


@lru_cache(maxsize=8)
def _scripts(client: redis.Redis) -> tuple[Script, Script]:
    """(record, read) as redis-py Scripts: EVALSHA, loading the script when Redis lacks it."""
    return client.register_script(_RECORD), client.register_script(_READ)


def _account_id(account: ProviderAccount | str) -> str:
    return account if isinstance(account, str) else account.id


# --- in process (no Redis) --------------------------------------------------------------------
class _LocalCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[int, dict[str, int]]] = defaultdict(dict)

    def add(self, account_id: str, field: str, oldest: int, newest: int) -> None:
        with self._lock:
            buckets = self._counts[account_id]
            if newest not in buckets:
                for stale in [b for b in buckets if b < oldest]:
                    del buckets[stale]
                buckets[newest] = defaultdict(int)
            buckets[newest][field] += 1

    def sums(self, account_id: str, oldest: int, newest: int) -> tuple[int, int, int, int]:
        with self._lock:
            total: dict[str, int] = defaultdict(int)
            for bucket, counts in self._counts.get(account_id, {}).items():
                if oldest <= bucket <= newest:
                    for field, n in counts.items():
                        total[field] += n
        return total["a"], total["s"], total["f"], total["h"]


_local = _LocalCounters()


# --- API --------------------------------------------------------------------------------------
def record_outcome(account: ProviderAccount | str, kind: str, *, now: float | None = None) -> None:
    """Count one provider call's outcome for the account (or its id): approved | hard | soft |
    unavailable | unknown (unknown counts as a failure). Record only calls that went out to
    the provider: a refusal by our own breaker or limits says nothing about it."""
    field = _FIELD.get(kind)
    if field is None:
        raise ValueError(f"Unknown outcome kind {kind!r}.")
    account_id = _account_id(account)
    oldest, newest = _buckets(now)
    client = store.redis_client()
    if client is None:
        _local.add(account_id, field, oldest, newest)
        return
    ttl = window_seconds() + bucket_seconds()
    try:
        _scripts(client)[0](keys=[_key(account_id)], args=[f"{newest}:{field}", oldest, ttl])
    except redis.RedisError:
        logger.exception("could not record a routing outcome in Redis; dropped")


def success_rates(accounts: Sequence[ProviderAccount | str], *,
                  now: float | None = None) -> dict[str, Rate]:
    """The rolling rate of each account (by id) over the window; one Redis round trip."""
    ids = [_account_id(a) for a in accounts]
    oldest, newest = _buckets(now)
    enough, prior = min_samples(), neutral_rate()
    client = store.redis_client()
    if client is None:
        return {i: _rate(*_local.sums(i, oldest, newest), enough, prior) for i in ids}
    try:
        flat = _scripts(client)[1](keys=[_key(i) for i in ids], args=[oldest, newest])
    except redis.RedisError:
        logger.exception("routing success rates unavailable in Redis; using the prior")
        return {i: _rate(0, 0, 0, 0, enough, prior) for i in ids}
    n = [int(count) for count in flat]  # approved, soft, failed, hard per account
    return {i: _rate(n[4 * k], n[4 * k + 1], n[4 * k + 2], n[4 * k + 3], enough, prior)
            for k, i in enumerate(ids)}


def _rate(approved: int, soft: int, failed: int, hard: int, enough: int, prior: float) -> Rate:
    samples = approved + soft + failed
    value = approved / samples if samples >= enough else prior
    return Rate(rate=value, samples=samples, approved=approved, soft=soft, failed=failed,
                hard=hard)
