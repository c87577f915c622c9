"""Provider accounts, and the sandboxes' own state (ledger, idempotency records, faults)."""

from __future__ import annotations

import json
from typing import Any

from django.db import models

from providers import crypto
from providers.ids import new_id

PROVIDER_CHOICES = [("stripe", "Stripe"), ("adyen", "Adyen"), ("checkout", "Checkout.com")]
PROVIDERS = [code for code, _ in PROVIDER_CHOICES]

# A base URL with this scheme means "the in-process sandbox for this provider type" (reached
# through httpx.WSGITransport). A sandbox served by `manage.py run_sandbox` is a plain
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
    base_url = models.CharField(max_length=255, default=SANDBOX_URL)
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


class SandboxCharge(models.Model):
    """The sandbox providers' own ledger: what a simulated provider believes it has charged.

    Kept apart from Switchyard's payment tables on purpose: tests count charges here to prove
    that Switchyard never charges twice, exactly as one would check a real provider's dashboard.
    """

    provider = models.CharField(max_length=16)
    provider_reference = models.CharField(
        max_length=64, unique=True, help_text="The provider's id (pi_…, pspReference, pay_…)")
    reference = models.CharField(
        max_length=80, db_index=True, blank=True,
        help_text="The merchant's reference (Switchyard sends its attempt id)")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    # authorized | captured | declined | canceled
    status = models.CharField(max_length=16)
    decline_code = models.CharField(max_length=32, blank=True)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    card_last4 = models.CharField(max_length=4, blank=True)
    card_brand = models.CharField(max_length=16, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    merchant_account = models.CharField(
        max_length=80, blank=True,
        help_text="The merchant account (Adyen) or processing channel (Checkout.com) it was "
        "made under: where its webhooks go")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.provider} {self.provider_reference} ({self.status})"


class SandboxOperation(models.Model):
    """A capture, cancel (void) or refund the sandbox performed on a charge."""

    provider = models.CharField(max_length=16)
    provider_reference = models.CharField(max_length=64, unique=True)
    reference = models.CharField(max_length=80, blank=True)
    charge = models.ForeignKey(SandboxCharge, on_delete=models.CASCADE, related_name="operations")
    kind = models.CharField(max_length=16)  # capture | cancel | refund
    amount = models.BigIntegerField()
    metadata = models.JSONField(default=dict, blank=True)  # Stripe refunds' metadata
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.provider_reference}"


class SandboxWebhookEndpoint(models.Model):
    """Where a sandbox sends the webhooks of one merchant account: the setting a real provider
    keeps in its dashboard (Adyen: Customer Area → Webhooks, one or more per merchant account,
    each with its own HMAC key). A `url` that is a bare path ("/provider_webhooks/acct_…") is
    Switchyard's own app, reached in-process."""

    provider = models.CharField(max_length=16)
    merchant_account = models.CharField(max_length=80)
    url = models.CharField(max_length=255)
    hmac_key = models.CharField(max_length=128, help_text="hex; a sandbox-only test key")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "merchant_account", "url"],
                                               name="uniq_sandbox_webhook_endpoint")]

    def __str__(self) -> str:
        return f"{self.provider} {self.merchant_account} → {self.url}"


class SandboxNotification(models.Model):
    """One webhook delivery a sandbox owes an endpoint, retried until it is acknowledged."""

    endpoint = models.ForeignKey(SandboxWebhookEndpoint, on_delete=models.CASCADE,
                                 related_name="notifications")
    body = models.TextField(help_text="The exact body sent (signatures may cover its bytes)")
    headers = models.JSONField(default=dict, blank=True)
    event_code = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.event_code} → {self.endpoint.url}"


class SandboxIdempotencyRecord(models.Model):
    """An idempotency key a sandbox has seen, with the response it will replay."""

    provider = models.CharField(max_length=16)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    completed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "key"], name="uniq_sandbox_idem_key")
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.key}"


class SandboxCondition(models.Model):
    """Conditions of one simulated provider (`manage.py sandbox_fault`), seen by every process.

    A real provider's outage hits every merchant, so conditions are per provider type.
    """

    provider = models.CharField(max_length=16, unique=True, choices=PROVIDER_CHOICES)
    outage = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    soft_decline_rate = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.provider}: outage={self.outage} latency={self.latency_ms}ms " \
               f"soft_decline_rate={self.soft_decline_rate}"


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
