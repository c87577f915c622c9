"""Provider accounts and the sandboxes' ledger."""

from django.db import models

PROVIDER_CHOICES = [("stripe", "Stripe"), ("adyen", "Adyen"), ("checkout", "Checkout.com")]

# A base URL with this scheme means "the in-process sandbox for this provider type".
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

    def save(self, *args, **kwargs):
        if not self.id:
            from providers.ids import new_id

            self.id = new_id("acct")
        super().save(*args, **kwargs)

    @property
    def is_sandbox(self) -> bool:
        return self.base_url.startswith("sandbox://")


class SandboxCharge(models.Model):
    """The sandbox providers' own ledger: what a simulated provider believes it has charged.

    Kept apart from Switchyard's payment tables on purpose: tests count charges here to prove
    that Switchyard never charges twice, exactly as one would check a real provider's dashboard.
    """

    provider = models.CharField(max_length=16)
    reference = models.CharField(max_length=64, help_text="The caller's idempotency key")
    provider_reference = models.CharField(max_length=64, unique=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16)  # authorized | captured | declined | canceled
    decline_code = models.CharField(max_length=32, blank=True)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "reference"], name="uniq_sandbox_ref")
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.provider_reference} ({self.status})"


class SandboxOperation(models.Model):
    """A capture, cancel or refund the sandbox performed, keyed by the caller's reference."""

    provider = models.CharField(max_length=16)
    reference = models.CharField(max_length=64)
    charge = models.ForeignKey(SandboxCharge, on_delete=models.CASCADE, related_name="operations")
    kind = models.CharField(max_length=16)  # capture | cancel | refund
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "reference"], name="uniq_sandbox_op_ref")
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.reference}"
