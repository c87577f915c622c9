"""The routing engine: which provider accounts may take a payment, in which order, and why.

    decision = route(context)            # context: providers.routing.context.RoutingContext
    decision.candidates                  # eligible ProviderAccounts, most preferred first
    decision.record                      # what is stored on the payment (`routing`)

1. Rule: the merchant's enabled rules of this mode, by ascending priority (then age); the
   first whose conditions all hold decides the candidate accounts and the strategy. No rule
   matches → the default order: every account of the mode by its priority.
2. Eligibility, before any strategy: an account is skipped, with its reason, when it is not
   an account of this mode (a rule names an account since deleted or renamed: not_in_mode),
   the caller excluded it (failover: already tried), it is disabled, it does not support the
   currency, its provider cannot represent the amount in that currency
   (amount_not_representable: e.g. 1.005 KWD at Stripe, whose three-decimal amounts end in 0;
   `providers.registry.amount_problem`, the adapters' own rule), its circuit breaker would
   refuse the call (breaker_open), or its rate limit or concurrency cap is reached
   (rate_limited / concurrency_limited). The live checks are the gateway's own, read-only:
   what routing skips the gateway would refuse.
3. Strategy, over the eligible accounts:
   - ordered: the rule's order. score = position in the rule (1 = first).
   - default_order: by account priority. score = the priority.
   - weighted: a weighted random permutation: the first account drawn with probability
     weight / total, the next among the rest the same way (Efraimidis–Spirakis keys
     u^(1/w)). score = the weight.
   - least_cost: ascending expected fee for this amount and currency from the account's fee
     schedule (the currency's entry, else "*"), in Decimal, rounded ROUND_HALF_UP to the minor
     unit; ties and accounts without a schedule (score null, last) by priority. score = the
     fee in minor units.
   - success_rate: descending rolling authorization rate (providers.routing.stats); ties by
     priority. With probability ROUTING_EXPLORATION_RATE one of the other eligible accounts,
     drawn uniformly, is moved first ("explored" in the record). score = the rate.
   A matched rule whose accounts are all ineligible yields no candidate: the rule is the
   merchant's decision (e.g. where a currency may be processed), so it does not fall through
   to the default order.

Cost (bench/bench_routing.py): `load_config` is one query while the merchant's rules are
unchanged (accounts and the rules' version; the compiled rules are cached per process) and two
after a change; pass its result to `route` to reuse it within a request. Then one Redis
command for the breakers, one for the limits when an account has one, one for success rates
with that strategy. Matching goes through an index of the rules' discrete conditions
(RuleIndex), then tests the few rules left in full.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connections, router

from providers.models import ProviderAccount, RoutingRule
from providers.registry import amount_problem
from providers.resilience import breaker, limits
from providers.routing import stats
from providers.routing.context import RoutingContext

logger = logging.getLogger(__name__)

ORDERED, WEIGHTED, LEAST_COST, SUCCESS_RATE = "ordered", "weighted", "least_cost", "success_rate"
DEFAULT_ORDER = "default_order"

NOT_IN_MODE, EXCLUDED, DISABLED = "not_in_mode", "excluded", "disabled"
CURRENCY_UNSUPPORTED, BREAKER_OPEN = "currency_unsupported", "breaker_open"
RATE_LIMITED, CONCURRENCY_LIMITED = "rate_limited", "concurrency_limited"
AMOUNT_NOT_REPRESENTABLE = "amount_not_representable"
_LIMIT_REASONS = {limits.RATE_LIMITED: RATE_LIMITED,
                  limits.CONCURRENCY_LIMITED: CONCURRENCY_LIMITED}

_HUNDRED = Decimal(100)
_MINOR_UNIT = Decimal(1)
_rng = random.Random()


@dataclass(frozen=True)
class RoutingDecision:
    candidates: tuple[ProviderAccount, ...]
    record: dict[str, Any]


# --- rules, compiled --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    strategy: str
    names: tuple[str, ...]
    weights: Mapping[str, int]  # weighted rules only
    amount_gte: int | None = None
    amount_lte: int | None = None
    currencies: frozenset[str] | None = None
    card_brands: frozenset[str] | None = None
    bin_prefixes: tuple[str, ...] | None = None
    billing_countries: frozenset[str] | None = None
    metadata: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def compile(cls, rule_id: str, strategy: str, conditions: dict[str, Any],
                accounts: list[Any]) -> CompiledRule:
        if strategy == WEIGHTED:
            weights = {entry["account"]: int(entry["weight"]) for entry in accounts}
            names = tuple(weights)
        elif strategy in (ORDERED, LEAST_COST, SUCCESS_RATE):
            weights = {}
            names = tuple(str(name) for name in accounts)
        else:
            raise ValueError(f"unknown strategy {strategy!r}")

        def optional_set(key: str, transform: Callable[[str], str] = str
                         ) -> frozenset[str] | None:
            values = conditions.get(key)
            return None if values is None else frozenset(transform(v) for v in values)

        metadata = conditions.get("metadata")
        prefixes = conditions.get("bin_prefixes")
        return cls(
            id=rule_id, strategy=strategy, names=names, weights=weights,
            amount_gte=conditions.get("amount_gte"), amount_lte=conditions.get("amount_lte"),
            currencies=optional_set("currencies", str.upper),
            card_brands=optional_set("card_brands", str.lower),
            bin_prefixes=None if prefixes is None else tuple(str(p) for p in prefixes),
            billing_countries=optional_set("billing_countries", str.upper),
            metadata=None if metadata is None else tuple(
                (str(k), str(v)) for k, v in metadata.items()),
        )

    def matches(self, ctx: RoutingContext) -> bool:
        # cheapest and most selective first
        if self.currencies is not None and ctx.currency not in self.currencies:
            return False
        if self.amount_gte is not None and ctx.amount < self.amount_gte:
            return False
        if self.amount_lte is not None and ctx.amount > self.amount_lte:
            return False
        if self.card_brands is not None and (ctx.card_brand or "").lower() not in \
                self.card_brands:
            return False
        if self.billing_countries is not None and (ctx.billing_country or "").upper() not in \
                self.billing_countries:
            return False
        if self.bin_prefixes is not None and not (ctx.card_bin and ctx.card_bin.startswith(
                self.bin_prefixes)):
            return False
        if self.metadata is not None:
            metadata = ctx.metadata
            for key, value in self.metadata:
                if metadata.get(key) != value:
                    return False
        return True


class RuleIndex:
    """Finds the first matching rule without testing every rule.

    Bit i of a mask stands for rule i (in priority order). For each condition with discrete
    values (currency, brand, country, BIN prefix, a single metadata pair) the index maps a
    value to the rules that accept it, plus the rules without that condition; AND-ing the
    masks of a payment's values leaves the rules that can still match, which are then tested
    in full (amounts, several metadata pairs), lowest bit first.
    """

    __slots__ = ("rules", "_currency", "_any_currency", "_brand", "_any_brand", "_country",
                 "_any_country", "_bin", "_any_bin", "_pair", "_any_pair")

    def __init__(self, rules: tuple[CompiledRule, ...]):
        self.rules = rules
        self._currency: dict[str, int] = {}
        self._brand: dict[str, int] = {}
        self._country: dict[str, int] = {}
        self._bin: dict[str, int] = {}
        self._pair: dict[tuple[str, str], int] = {}
        self._any_currency = self._any_brand = self._any_country = self._any_bin = 0
        self._any_pair = 0
        for i, rule in enumerate(rules):
            bit = 1 << i
            self._any_currency |= self._add(self._currency, rule.currencies, bit)
            self._any_brand |= self._add(self._brand, rule.card_brands, bit)
            self._any_country |= self._add(self._country, rule.billing_countries, bit)
            self._any_bin |= self._add(self._bin, rule.bin_prefixes, bit)
            if rule.metadata is not None and len(rule.metadata) == 1:
                self._pair[rule.metadata[0]] = self._pair.get(rule.metadata[0], 0) | bit
            else:  # no metadata condition, or several pairs: tested in full
                self._any_pair |= bit

    @staticmethod
    def _add(index: dict[str, int], values: Iterable[str] | None, bit: int) -> int:
        """Index the rule's values; returns its bit when it has no such condition."""
        if values is None:
            return bit
        for value in values:
            index[value] = index.get(value, 0) | bit
        return 0

    def first_match(self, ctx: RoutingContext) -> CompiledRule | None:
        mask = self._currency.get(ctx.currency, 0) | self._any_currency
        if mask:
            mask &= self._brand.get((ctx.card_brand or "").lower(), 0) | self._any_brand
        if mask:
            mask &= (self._country.get((ctx.billing_country or "").upper(), 0)
                     | self._any_country)
        if mask and self._bin:
            card_bin, bins = ctx.card_bin or "", self._any_bin
            for length in range(1, min(len(card_bin), 8) + 1):
                bins |= self._bin.get(card_bin[:length], 0)
            mask &= bins
        if mask and self._pair:
            pairs = self._any_pair
            for pair in ctx.metadata.items():
                pairs |= self._pair.get(pair, 0)
            mask &= pairs
        while mask:
            lowest = mask & -mask
            rule = self.rules[lowest.bit_length() - 1]
            if rule.matches(ctx):
                return rule
            mask ^= lowest
        return None


@dataclass(frozen=True)
class RoutingConfig:
    """A merchant's rules and accounts in one mode, as loaded at one moment."""

    merchant_id: str
    livemode: bool
    rules: tuple[CompiledRule, ...]
    accounts: tuple[ProviderAccount, ...]  # every account of the mode, by priority
    by_name: Mapping[str, ProviderAccount]
    index: RuleIndex | None = field(default=None, repr=False, compare=False)
    _fees: dict[tuple[str, str], tuple[Decimal, int] | None] = field(
        default_factory=dict, repr=False, compare=False)

    def first_match(self, ctx: RoutingContext) -> CompiledRule | None:
        if self.index is None:
            return next((r for r in self.rules if r.matches(ctx)), None)
        return self.index.first_match(ctx)

    def fee_entry(self, account: ProviderAccount, currency: str) -> tuple[Decimal, int] | None:
        key = (account.id, currency)
        if key not in self._fees:
            self._fees[key] = fee_entry(account, currency)
        return self._fees[key]


# Compiled rules per (merchant, mode), with the version of the rules they were compiled from.
# The accounts are read fresh on every load; the rules only when their version changed.
_RULES_CACHE: dict[tuple[str, bool], tuple[str, RuleIndex]] = {}
_RULES_CACHE_SIZE = 2048


def _rules_version_sql() -> str:
    # Every row version in PostgreSQL has its own place (ctid) and the id of the transaction
    # that wrote it (xmin). Any insert, update or delete of the merchant's rules in this mode,
    # through the ORM, queryset.update() or raw SQL alike, changes that list of pairs: across
    # transactions xmin differs, and within one transaction a new version never takes the
    # place of one the transaction can still see. So its hash is the rules' version. (In scan
    # order, unsorted: another order of the same rows only costs a needless reload.)
    rules = RoutingRule._meta.db_table
    return (f"SELECT COALESCE(MD5(STRING_AGG(r.ctid::text || '@' || r.xmin::text, ',')), "
            f"'none') FROM {rules} r WHERE r.merchant_id = %s AND r.livemode = %s")


@lru_cache(maxsize=1)
def _accounts_sql() -> str:
    # Raw SQL: the same rows as the ORM's filter(...).order_by("priority", "name"), without
    # compiling the query on every payment (a third of the load's time).
    accounts = ProviderAccount._meta.db_table
    return (f"SELECT a.*, ({_rules_version_sql()}) AS rules_version FROM {accounts} a "
            "WHERE a.merchant_id = %s AND a.livemode = %s ORDER BY a.priority, a.name")


def load_config(merchant_id: str, livemode: bool) -> RoutingConfig:
    """The merchant's enabled rules and all its accounts in this mode: at most two queries.

    On PostgreSQL one query reads the accounts (fresh, every time) with the version of the
    rules; the rules themselves are read and compiled again only when that version changed
    (a second query), so a change, however it was written, is seen by the next decision.
    Elsewhere (the embedded SQLite default) both are read every time.
    """
    database = router.db_for_read(ProviderAccount)
    key = (merchant_id, livemode)
    version = None
    if connections[database].vendor == "postgresql":
        accounts = tuple(ProviderAccount.objects.db_manager(database).raw(
            _accounts_sql(), (merchant_id, livemode, merchant_id, livemode)))
        # rules_version is a column of _accounts_sql(), not a model field
        version = accounts[0].rules_version if accounts else None  # type: ignore[attr-defined]
    else:
        accounts = tuple(ProviderAccount.objects.using(database).filter(
            merchant_id=merchant_id, livemode=livemode).order_by("priority", "name"))
    cached = _RULES_CACHE.get(key)
    if version is not None and cached is not None and cached[0] == version:
        index = cached[1]
    else:
        index = RuleIndex(_load_rules(merchant_id, livemode, database))
        if version is not None:
            if len(_RULES_CACHE) >= _RULES_CACHE_SIZE:
                _RULES_CACHE.pop(next(iter(_RULES_CACHE)), None)  # the oldest entry
            _RULES_CACHE[key] = (version, index)
    return RoutingConfig(merchant_id=merchant_id, livemode=livemode, rules=index.rules,
                         accounts=accounts, by_name={a.name: a for a in accounts},
                         index=index)


def _load_rules(merchant_id: str, livemode: bool, database: str) -> tuple[CompiledRule, ...]:
    rows = (RoutingRule.objects.using(database)
            .filter(merchant_id=merchant_id, livemode=livemode, enabled=True)
            .order_by("priority", "created_at", "id")
            .values_list("id", "strategy", "conditions", "accounts"))
    rules = []
    for rule_id, strategy, conditions, accounts in rows:
        try:
            rules.append(CompiledRule.compile(rule_id, strategy, conditions or {},
                                              accounts or []))
        except (AttributeError, KeyError, TypeError, ValueError):
            # stored behind the API's and the admin's back: never fail a payment over it
            logger.exception("routing rule %s is malformed; skipped", rule_id)
    return tuple(rules)


# --- fees -------------------------------------------------------------------------------------
def fee_entry(account: ProviderAccount, currency: str) -> tuple[Decimal, int] | None:
    """(percent, fixed minor units) of the account's fee schedule for the currency, else its
    "*" entry; None without one (or with one that cannot be read)."""
    fees = account.fees or {}
    entry = fees.get(currency) or fees.get("*")
    if not entry:
        return None
    try:
        percent = Decimal(str(entry.get("percent", "0")))
        fixed = entry.get("fixed", 0)
        if isinstance(fixed, bool) or not isinstance(fixed, int) or not percent.is_finite():
            raise ValueError(fixed)
    except (AttributeError, InvalidOperation, ValueError):
        logger.warning("provider account %s has an unreadable %s fee entry", account.id, currency)
        return None
    return percent, fixed


def expected_fee(account: ProviderAccount, amount: int, currency: str, *,
                 entry: tuple[Decimal, int] | None = None) -> int | None:
    """The account's fee for this payment in minor units: amount × percent / 100, rounded
    half up to the minor unit, plus the fixed part; None without a fee schedule."""
    entry = entry if entry is not None else fee_entry(account, currency)
    if entry is None:
        return None
    percent, fixed = entry
    variable = (Decimal(amount) * percent / _HUNDRED).quantize(_MINOR_UNIT,
                                                                 rounding=ROUND_HALF_UP)
    return int(variable) + fixed


def exploration_rate() -> float:
    return getattr(settings, "ROUTING_EXPLORATION_RATE", 0.05)


# --- the decision -----------------------------------------------------------------------------
def route(context: RoutingContext, *, config: RoutingConfig | None = None,
          rng: random.Random | None = None) -> RoutingDecision:
    """Decide the candidate accounts for a payment (see the module doc)."""
    if config is None:
        config = load_config(context.merchant_id, context.livemode)
    elif (config.merchant_id, config.livemode) != (context.merchant_id, context.livemode):
        raise ValueError("RoutingConfig of another merchant or mode.")
    rng = rng or _rng

    rule = config.first_match(context)
    if rule is None:
        strategy = DEFAULT_ORDER
        names: tuple[str, ...] = tuple(a.name for a in config.accounts)
    else:
        strategy, names = rule.strategy, rule.names

    reasons: dict[str, str] = {}
    static: list[ProviderAccount] = []
    exclude = context.exclude_account_ids
    for name in names:
        account = config.by_name.get(name)
        if account is None:
            reasons[name] = NOT_IN_MODE
        elif account.id in exclude:
            reasons[name] = EXCLUDED
        elif not account.enabled:
            reasons[name] = DISABLED
        elif not account.supports_currency(context.currency):
            reasons[name] = CURRENCY_UNSUPPORTED
        elif amount_problem(account.provider, context.amount, context.currency) is not None:
            reasons[name] = AMOUNT_NOT_REPRESENTABLE
        else:
            static.append(account)
    eligible = static
    if static:
        refused = breaker.refusing(static)
        for account in static:
            if account.id in refused:
                reasons[account.name] = BREAKER_OPEN
        remaining = [a for a in static if a.id not in refused]
        limited = limits.refusals(remaining) if remaining else {}
        for account in remaining:
            if account.id in limited:
                reasons[account.name] = _LIMIT_REASONS.get(limited[account.id], RATE_LIMITED)
        eligible = [a for a in remaining if a.id not in limited]

    record: dict[str, Any] = {"rule": rule.id if rule else None, "strategy": strategy}
    if strategy == SUCCESS_RATE:
        ordered, scored, explored = _by_success_rate(eligible, rng)
        record["explored"] = explored
    elif strategy == WEIGHTED:
        assert rule is not None  # only a rule is weighted (the default order is not)
        ordered, scored = _weighted(eligible, rule.weights, rng)
    elif strategy == LEAST_COST:
        ordered, scored = _least_cost(eligible, context, config)
    elif strategy == ORDERED:
        ordered = eligible  # already in the rule's order
        position = {name: i for i, name in enumerate(names, start=1)}
        scored = [{"account": a.name, "score": position[a.name]} for a in ordered]
    else:
        ordered = eligible  # accounts are loaded by priority
        scored = [{"account": a.name, "score": a.priority} for a in ordered]
    record["candidates"] = scored
    record["skipped"] = [{"account": name, "reason": reasons[name]}
                         for name in names if name in reasons]
    return RoutingDecision(candidates=tuple(ordered), record=record)


def _weighted(eligible: list[ProviderAccount], weights: Mapping[str, int],
              rng: random.Random) -> tuple[list[ProviderAccount], list[dict[str, Any]]]:
    keyed = [(rng.random() ** (1.0 / weights[a.name]), a) for a in eligible]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    ordered = [a for _, a in keyed]
    return ordered, [{"account": a.name, "score": weights[a.name]} for a in ordered]


def _least_cost(eligible: list[ProviderAccount], context: RoutingContext,
                config: RoutingConfig) -> tuple[list[ProviderAccount], list[dict[str, Any]]]:
    fees = {a.id: expected_fee(a, context.amount, context.currency,
                               entry=config.fee_entry(a, context.currency)) for a in eligible}
    ordered = sorted(eligible, key=lambda a: (fees[a.id] is None, fees[a.id] or 0, a.priority,
                                              a.name))
    return ordered, [{"account": a.name, "score": fees[a.id]} for a in ordered]


def _by_success_rate(eligible: list[ProviderAccount], rng: random.Random
                     ) -> tuple[list[ProviderAccount], list[dict[str, Any]], str | None]:
    rates = stats.success_rates(eligible) if eligible else {}
    ordered = sorted(eligible, key=lambda a: (-rates[a.id].rate, a.priority, a.name))
    explored = None
    if len(ordered) > 1 and rng.random() < exploration_rate():
        pick = rng.randrange(1, len(ordered))
        explored = ordered[pick].name
        ordered.insert(0, ordered.pop(pick))
    # basis: window (the rolling rate), hourly (the prior from the last hours: the window
    # held too few samples) or neutral (no prior either); kept for operators, not in the API
    scored = [{"account": a.name, "score": round(rates[a.id].rate, 4),
               "samples": rates[a.id].samples, "basis": rates[a.id].basis} for a in ordered]
    return ordered, scored, explored


def summarize(record: dict[str, Any]) -> str:
    """A routing record in one line, for operators (admin, logs):
    "rule rr_… (weighted): stripe-main 70, adyen-main 30; skipped: checkout-main breaker_open"."""
    if not record:
        return "-"
    rule = record.get("rule")
    head = f"rule {rule} ({record.get('strategy')})" if rule else str(record.get("strategy"))
    candidates = ", ".join(f"{c.get('account')} {c.get('score')}"
                           for c in record.get("candidates") or []) or "no candidate"
    text = f"{head}: {candidates}"
    if record.get("explored"):
        text += f"; explored {record['explored']}"
    skipped = record.get("skipped") or []
    if skipped:
        text += "; skipped: " + ", ".join(f"{s.get('account')} {s.get('reason')}"
                                          for s in skipped)
    return text
