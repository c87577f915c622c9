"""`manage.py provider_account add|list|update|disable|enable|reset-breaker` (docs/api.md,
"Operator commands"). Every change writes an audit row (`--reason` says why)."""

from __future__ import annotations

import redis
from django.core.management.base import BaseCommand, CommandError

from payments.audit import cli_actor
from payments.errors import InvalidRequest
from payments.models import Merchant
from payments.money import parse_currency
from payments.services.provider_accounts import (
    provider_account_reset_breaker,
    provider_account_save,
    provider_account_set_enabled,
)
from providers.accounts import AccountError, fee_schedule_entry
from providers.models import PROVIDERS, SANDBOX_URL, ProviderAccount

SETTINGS = (  # option → (model field, type)
    ("connect_timeout", float), ("read_timeout", float), ("breaker_fail_max", int),
    ("breaker_reset_timeout", int), ("rate_limit", int), ("concurrency_limit", int),
    ("priority", int),
)


class Command(BaseCommand):
    help = "Manage a merchant's provider accounts (credentials are stored encrypted)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Add an account")
        update = sub.add_parser("update", help="Change an account's settings")
        for p in (add, update):
            self._account_args(p)
            p.add_argument("--base-url")
            p.add_argument("--credential", action="append", default=[], metavar="KEY=VALUE",
                           help="Repeat for each credential (secret_key=…, api_key=…)")
            p.add_argument("--currency", action="append", default=[],
                           help="Supported currency; repeat or comma-separate (default: all)")
            p.add_argument("--fee", action="append", default=[], metavar="CUR:PERCENT:FIXED",
                           help="e.g. USD:2.9:30 (fixed in minor units); * for the default")
            p.add_argument("--connect-timeout", type=float)
            p.add_argument("--read-timeout", type=float)
            p.add_argument("--breaker-fail-max", type=int)
            p.add_argument("--breaker-reset-timeout", type=int)
            p.add_argument("--rate-limit", type=int, help="requests per second")
            p.add_argument("--concurrency-limit", type=int)
            p.add_argument("--priority", type=int)
        add.add_argument("--provider", required=True, choices=PROVIDERS)
        add.add_argument("--disabled", action="store_true")
        lst = sub.add_parser("list", help="List accounts (never their credentials)")
        lst.add_argument("--merchant")
        for name in ("disable", "enable"):
            self._account_args(sub.add_parser(name, help=f"{name.title()} an account"))
        self._account_args(sub.add_parser(
            "reset-breaker", help="Close the account's circuit breaker (every process)"))

    @staticmethod
    def _account_args(parser):
        parser.add_argument("--merchant", required=True, help="merchant name")
        parser.add_argument("--name", required=True, help="account name, e.g. stripe-main")
        parser.add_argument("--mode", choices=["test", "live"], default="test")
        parser.add_argument("--reason", default="", help="Why (kept in the audit log)")

    def handle(self, *args, action: str, **options):
        try:
            getattr(self, f"_{action.replace('-', '_')}")(options)
        except (AccountError, InvalidRequest) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from None

    # --- actions ------------------------------------------------------------------------
    def _add(self, o):
        merchant = self._merchant(o["merchant"])
        livemode = o["mode"] == "live"
        if ProviderAccount.objects.filter(merchant=merchant, livemode=livemode,
                                          name=o["name"]).exists():
            raise CommandError(f"{o['merchant']} already has a {o['mode']} account "
                               f"named {o['name']!r}.")
        if livemode and not o["base_url"]:
            raise CommandError("A live account needs --base-url (the provider's live API).")
        account = ProviderAccount(merchant=merchant, name=o["name"], provider=o["provider"],
                                  livemode=livemode, base_url=o["base_url"] or SANDBOX_URL,
                                  enabled=not o["disabled"])
        credentials = self._credentials(o["credential"])
        self._apply(account, o)
        self._save(account, credentials, o)
        self.stdout.write(f"Added {account}.")

    def _update(self, o):
        account = self._account(o)
        credentials = {**account.get_credentials(), **self._credentials(o["credential"])}
        if o["base_url"]:
            account.base_url = o["base_url"]
        self._apply(account, o)
        self._save(account, credentials, o)
        self.stdout.write(f"Updated {account}.")

    def _disable(self, o):
        account = self._account(o)
        changed = provider_account_set_enabled(account=account, enabled=False,
                                               actor=cli_actor(), reason=o["reason"])
        self.stdout.write(f"Disabled {account}." if changed else f"{account} was disabled.")

    def _enable(self, o):
        account = self._account(o)
        changed = provider_account_set_enabled(account=account, enabled=True,
                                               actor=cli_actor(), reason=o["reason"])
        self.stdout.write(f"Enabled {account}." if changed else f"{account} was enabled.")

    def _reset_breaker(self, o):
        account = self._account(o)
        try:
            before = provider_account_reset_breaker(account=account, actor=cli_actor(),
                                                    reason=o["reason"])
        except redis.RedisError as exc:  # audited as failed by the service
            raise CommandError(f"Could not reset the breaker of {account}: {exc}") from None
        self.stdout.write(f"Breaker of {account} closed (was {before}).")

    def _list(self, o):
        accounts = ProviderAccount.objects.select_related("merchant").order_by(
            "merchant__name", "livemode", "priority", "name")
        if o.get("merchant"):
            accounts = accounts.filter(merchant=self._merchant(o["merchant"]))
        for a in accounts:
            keys = ",".join(sorted(a.get_credentials())) or "-"
            self.stdout.write(
                f"{a.merchant.name}\t{a.name}\t{a.provider}\t{'live' if a.livemode else 'test'}"
                f"\t{'enabled' if a.enabled else 'disabled'}\t{a.base_url}"
                f"\tcurrencies={','.join(a.currencies) or 'all'}\tcredentials={keys}")

    # --- helpers ------------------------------------------------------------------------
    def _merchant(self, name: str) -> Merchant:
        merchant = Merchant.objects.filter(name=name).first()
        if merchant is None:
            raise CommandError(f"No merchant named {name!r}.")
        return merchant

    def _account(self, o) -> ProviderAccount:
        account = ProviderAccount.objects.filter(
            merchant=self._merchant(o["merchant"]), livemode=o["mode"] == "live",
            name=o["name"]).first()
        if account is None:
            raise CommandError(f"No {o['mode']} account named {o['name']!r}.")
        return account

    @staticmethod
    def _credentials(pairs: list[str]) -> dict[str, str]:
        credentials = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key or not value:
                raise CommandError("--credential takes KEY=VALUE.")
            credentials[key] = value
        return credentials

    def _apply(self, account: ProviderAccount, o) -> None:
        currencies = [c for item in o["currency"] for c in item.split(",") if c]
        if currencies:
            account.currencies = sorted({parse_currency(c) for c in currencies})
        for item in o["fee"]:
            try:
                code, percent, fixed = item.split(":")
                fixed_value = int(fixed)
            except ValueError:
                raise CommandError("--fee takes CUR:PERCENT:FIXED, e.g. USD:2.9:30.") from None
            code = code if code == "*" else parse_currency(code)
            account.fees = {**account.fees, code: fee_schedule_entry(percent, fixed_value)}
        for option, _type in SETTINGS:
            value = o.get(option)
            if value is not None:
                field = "rate_limit_per_second" if option == "rate_limit" else option
                if value < 0:
                    raise CommandError(f"--{option.replace('_', '-')} must not be negative.")
                setattr(account, field, value)

    @staticmethod
    def _save(account: ProviderAccount, credentials: dict[str, str], o) -> None:
        # an in-process sandbox account gets placeholder credentials and webhooks to us
        provider_account_save(account=account, credentials=credentials, actor=cli_actor(),
                              reason=o["reason"])
