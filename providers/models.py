"""Provider accounts and merchants' routing and retry rules (the sandboxes keep their own state
in their own app, providers/sandboxes)."""

from __future__ import annotations

import json
from typing import Any

from django.db import models

from providers import crypto
from providers.ids import new_id

PROVIDER_CHOICES = [("stripe", "Stripe"), ("adyen", "Adyen"), ("checkout", "Checkout.com")]
PROVIDERS = [code for code, _ in PROVIDER_CHOICES]

# A base URL with this scheme means "the in-process sandbox for this provider type", reached
# through the transport registry (providers/transports.py) that the sandboxes app fills where
# it is installed (SANDBOXES_ENABLED). A sandbox served by `manage.py run_sandbox` is a plain
# http://127.0.0.1:PORT URL instead.
SANDBOX_URL = "sandbox://local"


class ProviderAccount(models.Model):
    """One configured account at a provider, owned by one merchant, in one mode."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    merchant = models.ForeignKey(
        "payments.Merchant", on_delete=models.PROTECT, related_name="provider_accounts"
    )
    name = models.CharField(max_length=64, help_text="e.g. stripe-main; what `provider` pins")
    provider = models.CharField(max_length=16, choices=PROVIDER_CHOICES)
    livemode = models.BooleanField(default=False)
    # No default: an account points at a provider's API (https://…) or, where the sandboxes
    # are installed, at one of them (SANDBOX_URL) because someone said so.
    base_url = models.CharField(
        max_length=255, help_text="The provider's API, e.g. https://api.stripe.com; "
        f"{SANDBOX_URL} for the in-process sandbox (where installed)")
    enabled = models.BooleanField(default=True)
    priority = models.PositiveIntegerField(
        default=100, help_text="Lower goes first in the default provider order."
    )
    # Credentials (API keys, merchant account names) are encrypted like vaulted cards.
    credentials_encrypted = models.BinaryField(default=b"", blank=True, editable=False)
    credentials_key_version = models.CharField(max_length=32, blank=True, editable=False)
    currencies = models.JSONField(
        default=list, blank=True, help_text='Supported ISO 4217 codes, e.g. ["USD", "EUR"]; '
        "empty means every currency."
    )
    fees = models.JSONField(
        default=dict, blank=True,
        help_text='Per currency: {"USD": {"percent": "2.9", "fixed": 30}}; "*" is the '
        "default. percent is a decimal string, fixed is in minor units.",
    )
    connect_timeout = models.FloatField(default=3.0, help_text="seconds")
    read_timeout = models.FloatField(default=10.0, help_text="seconds")
    breaker_fail_max = models.PositiveIntegerField(
        default=5, help_text="Consecutive provider failures that open the circuit breaker.")
    breaker_reset_timeout = models.PositiveIntegerField(
        default=30, help_text="Seconds the breaker stays open before a half-open probe.")
    rate_limit_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per second to this account; empty = none.")
    concurrency_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests in flight at once; empty = none.")
    # Health, written by the periodic probe (workers).
    healthy = models.BooleanField(null=True, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    health_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "livemode", "name"], name="uniq_account_name_per_mode"
            )
        ]
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        mode = "live" if self.livemode else "test"
        return f"{self.name} ({self.provider}, {mode})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.id:
            self.id = new_id("acct")
        super().save(*args, **kwargs)

    @property
    def is_sandbox(self) -> bool:
        return self.base_url.startswith("sandbox://")

    def set_credentials(self, credentials: dict[str, str]) -> None:
        if not self.id:
            self.id = new_id("acct")
        self.credentials_key_version, self.credentials_encrypted = crypto.encrypt(
            json.dumps(credentials, sort_keys=True), associated=self.id)

    def get_credentials(self) -> dict[str, str]:
        if not self.credentials_encrypted:
            return {}
        credentials: dict[str, str] = json.loads(crypto.decrypt(
            self.credentials_key_version, self.credentials_encrypted, associated=self.id))
        return credentials

    def supports_currency(self, currency: str) -> bool:
        return not self.currencies or currency in self.currencies


ROUTING_STRATEGY_CHOICES = [
    ("ordered", "Ordered list"),
    ("weighted", "Weighted volume split"),
    ("least_cost", "Least cost"),
    ("success_rate", "Best success rate"),
]


class RoutingRule(models.Model):
    """A merchant's routing rule in one mode: when `conditions` match a payment, `strategy`
    orders `accounts` (see providers/routing). Enabled rules are tried by ascending priority;
    the first that matches decides; without one, the default order (accounts by priority)."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    merchant = models.ForeignKey(
        "payments.Merchant", on_delete=models.CASCADE, related_name="routing_rules"
    )
    livemode = models.BooleanField(default=False)
    priority = models.PositiveIntegerField(default=100, help_text="Lower is tried first.")
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=500, blank=True)
    conditions = models.JSONField(
        default=dict, blank=True,
        help_text='All optional, all must hold: {"amount_gte": 1000, "amount_lte": 50000, '
        '"currencies": ["USD"], "card_brands": ["visa"], "bin_prefixes": ["4242"], '
        '"billing_countries": ["US"], "metadata": {"channel": "web"}}. Empty matches every '
        "payment.")
    strategy = models.CharField(max_length=16, choices=ROUTING_STRATEGY_CHOICES,
                                default="ordered")
    accounts = models.JSONField(
        default=list, blank=True,
        help_text='Provider account names of this mode. ordered, least_cost, success_rate: '
        '["stripe-main", "adyen-main"]; weighted: [{"account": "stripe-main", "weight": 70}, '
        '{"account": "adyen-main", "weight": 30}].')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "created_at", "id"]
        indexes = [models.Index(fields=["merchant", "livemode", "priority"],
                                name="routing_rule_lookup")]

    def __str__(self) -> str:
        return f"{self.id} (priority {self.priority}, {self.strategy})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.id:
            self.id = new_id("rr")
        super().save(*args, **kwargs)


class RetryRule(models.Model):
    """A merchant's override of whether one decline code may be retried on another provider
    account (providers/routing/retry.py has the default table and what cannot be overridden)."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    merchant = models.ForeignKey(
        "payments.Merchant", on_delete=models.CASCADE, related_name="retry_rules"
    )
    livemode = models.BooleanField(default=False)
    decline_code = models.CharField(max_length=64)
    retry = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "livemode", "decline_code"],
                                    name="uniq_retry_rule_per_code")
        ]

    def __str__(self) -> str:
        return f"{self.decline_code}: {'retry' if self.retry else 'do not retry'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.id:
            self.id = new_id("rtr")
        super().save(*args, **kwargs)
