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

An account with fewer than ROUTING_MIN_SAMPLES outcomes in the window scores its prior: a
handful of results proves nothing either way. The prior is the account's rate over the last
completed hours (ROUTING_PRIOR_HOURS, 24), in the same terms, when those hours hold at least
ROUTING_MIN_SAMPLES outcomes: the hourly aggregation (payments.services.provider_stats, which
owns those numbers; providers never imports payments) hands it over with `set_priors` every
hour, and it lapses after ROUTING_PRIOR_TTL_SECONDS if that job stops. Without one (a new or
idle account, or the job not run yet) the prior is the neutral ROUTING_NEUTRAL_SUCCESS_RATE
(0.9), so that such an account does not start first or last by accident. The engine moves a random account first
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
from collections.abc import Mapping, Sequence
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
-- KEYS: the accounts' counters, then their priors (as many); ARGV: oldest bucket in the
-- window, newest. Returns approved, soft, failed, hard, prior approved, prior samples for
-- each account, flat.
local oldest, newest = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = #KEYS / 2
local out = {}
for k = 1, n do
  local sums = {a = 0, s = 0, f = 0, h = 0}
  local flat = redis.call('HGETALL', KEYS[k])
  for i = 1, #flat, 2 do
    local bucket, kind = string.match(flat[i], '^(%d+):(%a)$')
    bucket = tonumber(bucket)
    if bucket and bucket >= oldest and bucket <= newest and sums[kind] then
      sums[kind] = sums[kind] + tonumber(flat[i + 1])
    end
  end
  local base = (k - 1) * 6
  out[base + 1], out[base + 2], out[base + 3], out[base + 4] = sums.a, sums.s, sums.f, sums.h
  local prior = redis.call('HMGET', KEYS[n + k], 'a', 'n')
  out[base + 5], out[base + 6] = tonumber(prior[1]) or 0, tonumber(prior[2]) or 0
end
return out
"""

# Where the rate comes from (Rate.basis)
WINDOW, HOURLY, NEUTRAL = "window", "hourly", "neutral"


@dataclass(frozen=True)
class Rate:
    rate: float  # the score: the measured rate, or the prior below min_samples
    samples: int  # approvals + soft declines + failures in the window
    approved: int = 0
    soft: int = 0
    failed: int = 0
    hard: int = 0
    # window: measured over the rolling window; hourly: the prior from the last hours;
    # neutral: the neutral prior
    basis: str = NEUTRAL

    @property
    def measured(self) -> bool:
        return self.samples >= min_samples()


@dataclass(frozen=True)
class Prior:
    """An account's outcomes over the last completed hours, in the rolling rate's terms."""

    approved: int
    samples: int  # approvals + soft declines + failures


def bucket_seconds() -> int:
    return getattr(settings, "ROUTING_SUCCESS_BUCKET_SECONDS", 10)


def window_seconds() -> int:
    return getattr(settings, "ROUTING_SUCCESS_WINDOW_SECONDS", 300)


def min_samples() -> int:
    return getattr(settings, "ROUTING_MIN_SAMPLES", 20)


def neutral_rate() -> float:
    return getattr(settings, "ROUTING_NEUTRAL_SUCCESS_RATE", 0.9)


def prior_ttl_seconds() -> int:
    return getattr(settings, "ROUTING_PRIOR_TTL_SECONDS", 3 * 3600)


def _buckets(now: float | None) -> tuple[int, int]:
    """(oldest, newest) bucket of the window ending now; the current bucket counts."""
    size = bucket_seconds()
    newest = int((time.time() if now is None else now) // size)
    return newest - max(1, math.ceil(window_seconds() / size)) + 1, newest


def _key(account_id: str) -> str:
    return f"{KEY_PREFIX}:{{{account_id}}}:outcomes"


def _prior_key(account_id: str) -> str:
    return f"{KEY_PREFIX}:{{{account_id}}}:prior"


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
# account id → (prior, expires at: time.monotonic())
_local_priors: dict[str, tuple[Prior, float]] = {}
_local_priors_lock = threading.Lock()


def _local_prior(account_id: str) -> Prior:
    with _local_priors_lock:
        entry = _local_priors.get(account_id)
    if entry is None or entry[1] < time.monotonic():
        return Prior(0, 0)
    return entry[0]


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


def set_priors(priors: Mapping[str, Prior], *, ttl: int | None = None) -> None:
    """Hand routing each account's (by id) outcomes over the last completed hours: its score
    while the rolling window is thin. Each lapses after `ttl` seconds
    (ROUTING_PRIOR_TTL_SECONDS) unless handed over again. Advisory: a Redis error is logged
    and the priors dropped."""
    ttl = prior_ttl_seconds() if ttl is None else ttl
    client = store.redis_client()
    if client is None:
        expires = time.monotonic() + ttl
        with _local_priors_lock:
            _local_priors.update({i: (p, expires) for i, p in priors.items()})
        return
    try:
        pipe = client.pipeline(transaction=False)
        for account_id, prior in priors.items():
            key = _prior_key(account_id)
            pipe.hset(key, mapping={"a": prior.approved, "n": prior.samples})
            pipe.expire(key, ttl)
        pipe.execute()
    except redis.RedisError:
        logger.exception("could not store routing priors in Redis; dropped")


def success_rates(accounts: Sequence[ProviderAccount | str], *,
                  now: float | None = None) -> dict[str, Rate]:
    """The rolling rate of each account (by id) over the window, or its prior while the
    window is thin; one Redis round trip."""
    ids = [_account_id(a) for a in accounts]
    oldest, newest = _buckets(now)
    enough, neutral = min_samples(), neutral_rate()
    client = store.redis_client()
    if client is None:
        return {i: _rate(*_local.sums(i, oldest, newest), _local_prior(i), enough, neutral)
                for i in ids}
    try:
        flat = _scripts(client)[1](keys=[_key(i) for i in ids] + [_prior_key(i) for i in ids],
                                   args=[oldest, newest])
    except redis.RedisError:
        logger.exception("routing success rates unavailable in Redis; using the prior")
        return {i: _rate(0, 0, 0, 0, Prior(0, 0), enough, neutral) for i in ids}
    # approved, soft, failed, hard, prior approved, prior samples per account
    n = [int(count) for count in flat]
    return {i: _rate(n[6 * k], n[6 * k + 1], n[6 * k + 2], n[6 * k + 3],
                     Prior(n[6 * k + 4], n[6 * k + 5]), enough, neutral)
            for k, i in enumerate(ids)}


def _rate(approved: int, soft: int, failed: int, hard: int, prior: Prior, enough: int,
          neutral: float) -> Rate:
    samples = approved + soft + failed
    if samples >= enough:
        value, basis = approved / samples, WINDOW
    elif prior.samples >= enough:
        value, basis = min(1.0, prior.approved / prior.samples), HOURLY
    else:
        value, basis = neutral, NEUTRAL
    return Rate(rate=value, samples=samples, approved=approved, soft=soft, failed=failed,
                hard=hard, basis=basis)
