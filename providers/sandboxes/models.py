"""The sandbox providers' own state: their ledger, idempotency records, fault conditions and
webhook endpoints. Disposable test data: these tables exist only where the sandboxes app is
installed (SANDBOXES_ENABLED), never in a production database."""

from __future__ import annotations

from django.db import models

from providers.models import PROVIDER_CHOICES


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
    hmac_key = models.CharField(max_length=128, help_text="The signature key, a sandbox-only "
                                "test key (hex for Adyen, whsec_… for Stripe)")
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
    event_code = models.CharField(max_length=64)  # Stripe's event types run to 40+
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


class SandboxSettlementFault(models.Model):
    """A discrepancy planted in a sandbox's settlement report (`ledger.plant_settlement_fault`):
    the report shows one ledger line otherwise than the ledger has it (left out, another
    amount, currency or fee), so that reconciliation can be shown to find each kind. A line
    is named by its operation reference: the capture's or refund's id at the provider, or the
    charge's own id for a charge captured with its authorization. Test data only."""

    provider = models.CharField(max_length=16)
    operation_reference = models.CharField(max_length=64)
    omit = models.BooleanField(default=False, help_text="Leave the line out of the report")
    amount = models.BigIntegerField(null=True, blank=True,
                                    help_text="Report this amount (the provider's units)")
    currency = models.CharField(max_length=3, blank=True, help_text="Report this currency")
    fee = models.BigIntegerField(null=True, blank=True,
                                 help_text="Report this fee (the provider's units)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "operation_reference"],
                                               name="uniq_sandbox_settlement_fault")]

    def __str__(self) -> str:
        return f"{self.provider} {self.operation_reference}"
