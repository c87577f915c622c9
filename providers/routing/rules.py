"""Routing and retry rules: validation and writes, shared by the API and the admin.

Everything a rule holds is checked here before it is stored, so the engine can trust what it
loads (it still skips, and logs, a rule that was broken behind its back). Errors are
`RuleError`s that name the offending parameter with the API's dotted notation
(`conditions.currencies`, `accounts`); the API turns them into 400s, the admin into form errors.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import iso4217
from django.conf import settings
from django.db import transaction

from providers.models import ProviderAccount, RetryRule, RoutingRule
from providers.routing.retry import DECLINE_CLASSES, can_override

STRATEGIES = ("ordered", "weighted", "least_cost", "success_rate")
CONDITION_KEYS = ("amount_gte", "amount_lte", "currencies", "card_brands", "bin_prefixes",
                  "billing_countries", "metadata")
# The brands the vault recognises (payments/cards.py; a test keeps the two lists equal).
CARD_BRANDS = ("amex", "visa", "mastercard", "discover", "jcb", "diners", "unionpay")
MAX_ACCOUNTS_PER_RULE = 20
MAX_CONDITION_VALUES = 100
MAX_WEIGHT = 1_000_000
MAX_PRIORITY = 1_000_000
MAX_AMOUNT = 10**15  # far above any MAX_PAYMENT_AMOUNT; only keeps JSON integers sane
_ISO_CURRENCIES = frozenset(c.code for c in iso4217.Currency)


def max_rules() -> int:
    """Rules per merchant and mode: matching is linear in them (see bench/bench_routing.py)."""
    return getattr(settings, "ROUTING_MAX_RULES", 500)


class RuleError(ValueError):
    def __init__(self, message: str, *, param: str | None, code: str = "parameter_invalid"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


# --- conditions -------------------------------------------------------------------------------
def _string_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{param} must be a list of strings.", param=param)
    if not value:
        raise RuleError(f"{param} must not be empty; leave it out to match any value.",
                        param=param)
    if len(value) > MAX_CONDITION_VALUES:
        raise RuleError(f"{param} has at most {MAX_CONDITION_VALUES} values.", param=param)
    return value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _amount(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise RuleError(f"{param} must be a positive integer in the currency's minor unit.",
                        param=param)
    return value


def clean_conditions(conditions: Any) -> dict[str, Any]:
    """The conditions, checked and normalized (upper-case codes, no duplicates, no empties)."""
    if conditions is None:
        return {}
    if not isinstance(conditions, dict):
        raise RuleError("conditions must be an object.", param="conditions")
    unknown = sorted(set(conditions) - set(CONDITION_KEYS))
    if unknown:
        raise RuleError(f"Unknown condition {unknown[0]!r}; use one of "
                        f"{', '.join(CONDITION_KEYS)}.", param=f"conditions.{unknown[0]}",
                        code="parameter_unknown")
    out: dict[str, Any] = {}
    for key in ("amount_gte", "amount_lte"):
        if conditions.get(key) is not None:
            out[key] = _amount(conditions[key], f"conditions.{key}")
    if "amount_gte" in out and "amount_lte" in out and out["amount_gte"] > out["amount_lte"]:
        raise RuleError("conditions.amount_gte must not be above conditions.amount_lte.",
                        param="conditions.amount_gte")
    if "currencies" in conditions:
        param = "conditions.currencies"
        codes = [c.upper() for c in _string_list(conditions["currencies"], param)]
        bad = [c for c in codes if c not in _ISO_CURRENCIES]
        if bad:
            raise RuleError(f"Unknown currency {bad[0]!r}: use ISO 4217 codes such as USD.",
                            param=param, code="currency_invalid")
        out["currencies"] = _unique(codes)
    if "card_brands" in conditions:
        param = "conditions.card_brands"
        brands = [b.lower() for b in _string_list(conditions["card_brands"], param)]
        bad = [b for b in brands if b not in CARD_BRANDS]
        if bad:
            raise RuleError(f"Unknown card brand {bad[0]!r}; use one of "
                            f"{', '.join(CARD_BRANDS)}.", param=param)
        out["card_brands"] = _unique(brands)
    if "bin_prefixes" in conditions:
        param = "conditions.bin_prefixes"
        prefixes = _string_list(conditions["bin_prefixes"], param)
        bad = [p for p in prefixes if not (p.isascii() and p.isdigit() and 1 <= len(p) <= 8)]
        if bad:
            raise RuleError("conditions.bin_prefixes are 1 to 8 digits (the start of a BIN).",
                            param=param)
        out["bin_prefixes"] = _unique(prefixes)
    if "billing_countries" in conditions:
        param = "conditions.billing_countries"
        countries = [c.upper() for c in _string_list(conditions["billing_countries"], param)]
        bad = [c for c in countries if not (len(c) == 2 and c.isascii() and c.isalpha())]
        if bad:
            raise RuleError("conditions.billing_countries are ISO 3166-1 alpha-2 codes "
                            "such as US.", param=param)
        out["billing_countries"] = _unique(countries)
    if "metadata" in conditions:
        param = "conditions.metadata"
        metadata = conditions["metadata"]
        if not isinstance(metadata, dict) or not metadata:
            raise RuleError("conditions.metadata must be a non-empty object of strings.",
                            param=param)
        if len(metadata) > 20:
            raise RuleError("conditions.metadata has at most 20 keys.", param=param)
        for key, value in metadata.items():
            if not key or len(key) > 40 or not isinstance(value, str) or len(value) > 500:
                raise RuleError("conditions.metadata maps keys of 1 to 40 characters to "
                                "strings of at most 500 characters.", param=param)
        out["metadata"] = dict(metadata)
    return out


# --- strategy and accounts --------------------------------------------------------------------
def account_names(strategy: str, accounts: list[Any]) -> list[str]:
    """The account names a (valid) rule refers to, in its order."""
    if strategy == "weighted":
        return [entry["account"] for entry in accounts]
    return list(accounts)


def clean_accounts(strategy: Any, accounts: Any, *, known_names: Collection[str]) -> list[Any]:
    """The rule's accounts for its strategy, checked against the names of the mode's accounts.

    ordered, least_cost, success_rate: ["name", …]; weighted: [{"account": name, "weight": n}].
    """
    if strategy not in STRATEGIES:
        raise RuleError(f"strategy must be one of {', '.join(STRATEGIES)}.", param="strategy")
    if not isinstance(accounts, list) or not accounts:
        raise RuleError("accounts must be a non-empty list.", param="accounts")
    if len(accounts) > MAX_ACCOUNTS_PER_RULE:
        raise RuleError(f"accounts has at most {MAX_ACCOUNTS_PER_RULE} entries.",
                        param="accounts")
    if strategy == "weighted":
        cleaned: list[Any] = []
        for entry in accounts:
            if (not isinstance(entry, dict) or set(entry) != {"account", "weight"}
                    or not isinstance(entry["account"], str)):
                raise RuleError('A weighted rule lists {"account": name, "weight": n} objects.',
                                param="accounts")
            weight = entry["weight"]
            if (isinstance(weight, bool) or not isinstance(weight, int)
                    or not 0 < weight <= MAX_WEIGHT):
                raise RuleError(f"Each weight is a positive integer up to {MAX_WEIGHT}.",
                                param="accounts")
            cleaned.append({"account": entry["account"], "weight": weight})
    else:
        if not all(isinstance(name, str) for name in accounts):
            raise RuleError(f"A {strategy} rule lists account names (strings).",
                            param="accounts")
        cleaned = list(accounts)
    names = account_names(strategy, cleaned)
    if len(set(names)) != len(names):
        raise RuleError("accounts lists an account twice.", param="accounts")
    missing = [name for name in names if name not in known_names]
    if missing:
        raise RuleError(f"No provider account named {missing[0][:64]!r} in this mode.",
                        param="accounts", code="provider_unknown")
    return cleaned


def clean_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise RuleError(f"priority must be an integer from 0 to {MAX_PRIORITY}.",
                        param="priority")
    return value


def mode_account_names(merchant_id: str, livemode: bool) -> set[str]:
    return set(ProviderAccount.objects.filter(merchant_id=merchant_id, livemode=livemode)
               .values_list("name", flat=True))


# --- writes -----------------------------------------------------------------------------------
_UNSET: Any = object()
T = TypeVar("T")


def routing_rule_create(*, merchant_id: str, livemode: bool, strategy: str, accounts: list[Any],
                        conditions: dict[str, Any] | None = None, priority: int = 100,
                        enabled: bool = True, description: str = "") -> RoutingRule:
    rule = RoutingRule(merchant_id=merchant_id, livemode=livemode)
    return _save_rule(rule, strategy=strategy, accounts=accounts, conditions=conditions or {},
                      priority=priority, enabled=enabled, description=description,
                      creating=True)


def routing_rule_update(*, rule: RoutingRule, strategy: str = _UNSET,
                        accounts: list[Any] = _UNSET,
                        conditions: dict[str, Any] = _UNSET, priority: int = _UNSET,
                        enabled: bool = _UNSET, description: str = _UNSET) -> RoutingRule:
    """Change the given fields (conditions are replaced as a whole); the result is checked
    as a whole, so a new strategy needs accounts of its shape."""
    def pick(value: T, current: T) -> T:
        return current if value is _UNSET else value

    return _save_rule(rule, strategy=pick(strategy, rule.strategy),
                      accounts=pick(accounts, rule.accounts),
                      conditions=pick(conditions, rule.conditions),
                      priority=pick(priority, rule.priority), enabled=pick(enabled, rule.enabled),
                      description=pick(description, rule.description), creating=False)


def _save_rule(rule: RoutingRule, *, strategy: str, accounts: list[Any],
               conditions: dict[str, Any], priority: int, enabled: bool, description: str,
               creating: bool) -> RoutingRule:
    cleaned = check_rule_fields(merchant_id=rule.merchant_id, livemode=rule.livemode,
                                strategy=strategy, accounts=accounts, conditions=conditions,
                                priority=priority)
    rule.priority, rule.conditions, rule.accounts = (
        cleaned["priority"], cleaned["conditions"], cleaned["accounts"])
    rule.strategy = strategy
    rule.enabled = bool(enabled)
    rule.description = description
    with transaction.atomic():
        if creating:
            count = RoutingRule.objects.filter(merchant_id=rule.merchant_id,
                                               livemode=rule.livemode).count()
            if count >= max_rules():
                raise RuleError(f"A merchant has at most {max_rules()} routing rules per mode.",
                                param=None, code="routing_rules_limit")
        rule.save()
    return rule


def routing_rule_delete(*, rule: RoutingRule) -> None:
    rule.delete()


def clean_decline_code(decline_code: Any) -> str:
    if not isinstance(decline_code, str) or decline_code not in DECLINE_CLASSES:
        raise RuleError("decline_code must be one of the decline codes Switchyard reports "
                        "(e.g. do_not_honor, processing_error).", param="decline_code",
                        code="decline_code_unknown")
    return decline_code


def retry_rule_set(*, merchant_id: str, livemode: bool, decline_code: str,
                   retry: bool) -> tuple[RetryRule, bool]:
    """Set the merchant's override for one decline code (one rule per code: setting it again
    replaces it). Returns (rule, created)."""
    decline_code = clean_decline_code(decline_code)
    if not can_override(decline_code, retry):
        raise RuleError(f"{decline_code} is never retried: the issuer will not approve it "
                        "and card-network rules forbid retrying it.", param="retry",
                        code="decline_code_not_retriable")
    with transaction.atomic():
        rule, created = RetryRule.objects.select_for_update().get_or_create(
            merchant_id=merchant_id, livemode=livemode, decline_code=decline_code,
            defaults={"retry": retry})
        if not created and rule.retry != retry:
            rule.retry = retry
            rule.save(update_fields=["retry", "updated_at"])
    return rule, created


def retry_rule_delete(*, rule: RetryRule) -> None:
    rule.delete()


def check_rule_fields(*, merchant_id: str, livemode: bool, strategy: Any, accounts: Any,
                      conditions: Any, priority: Any) -> Mapping[str, Any]:
    """Everything `routing_rule_create` checks, without saving (the admin form uses it)."""
    return {
        "priority": clean_priority(priority),
        "conditions": clean_conditions(conditions),
        "accounts": clean_accounts(strategy, accounts,
                                   known_names=mode_account_names(merchant_id, livemode)),
    }
