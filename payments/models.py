"""The payments domain. Every row that a merchant can see carries `merchant` and `livemode`,
and every query in the API is scoped by both.

Where a payment changes state: `payments/state_machine.py`, and only there.
"""

import json
from typing import Any

from django.db import models
from django.utils import timezone

from providers import crypto
from providers.ids import new_id


class PrefixedIdModel(models.Model):
    """A model whose primary key is a random prefixed id (`pay_…`)."""

    id_prefix = ""
    id = models.CharField(primary_key=True, max_length=40, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.id

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.id:
            self.id = new_id(self.id_prefix)
        super().save(*args, **kwargs)


class Merchant(PrefixedIdModel):
    id_prefix = "mer"
    name = models.CharField(max_length=200, unique=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty uses the default."
    )

    def __str__(self) -> str:
        return self.name

    # The authenticated "user" of an API request is its merchant.
    is_authenticated = True


class APIKey(PrefixedIdModel):
    """A secret key, stored only as a SHA-256 hash: the key itself is shown once."""

    id_prefix = "key"
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="api_keys")
    livemode = models.BooleanField()
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=20, help_text="First characters, to recognise the key")
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.merchant})"


class PaymentMethod(PrefixedIdModel):
    """A vaulted card. The number is encrypted; brand, last4, BIN and expiry are readable."""

    id_prefix = "pm"
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    livemode = models.BooleanField()
    type = models.CharField(max_length=16, default="card")
    brand = models.CharField(max_length=16)
    last4 = models.CharField(max_length=4)
    bin = models.CharField(max_length=8)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    fingerprint = models.CharField(max_length=64, db_index=True)
    encrypted_number = models.BinaryField()
    key_version = models.CharField(max_length=32, help_text="Which vault key encrypted it")
    billing_details = models.JSONField(default=dict)
    # The CVC given when the card was vaulted, encrypted under the same vault key, kept only
    # until the card's first authorization starts (PCI DSS: sensitive authentication data
    # may be kept until authorization, never after), then erased.
    encrypted_cvc = models.BinaryField(null=True, blank=True, editable=False)


class PaymentStatus(models.TextChoices):
    REQUIRES_CONFIRMATION = "requires_confirmation"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"
    FAILED = "failed"
    UNRESOLVED = "unresolved"


class Payment(PrefixedIdModel):
    id_prefix = "pay"
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    livemode = models.BooleanField()
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=32, choices=PaymentStatus.choices)
    capture_method = models.CharField(max_length=16, default="automatic")
    amount_capturable = models.BigIntegerField(default=0)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    payment_method = models.ForeignKey(
        PaymentMethod, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    provider_account = models.ForeignKey(
        "providers.ProviderAccount",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The account the payment is pinned to or was authorized on.",
    )
    pinned = models.BooleanField(default=False, help_text="The merchant chose the provider")
    routing = models.JSONField(default=dict, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    description = models.CharField(max_length=1000, blank=True)
    reference = models.CharField(max_length=255, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    cancellation_reason = models.CharField(max_length=255, blank=True)
    needs_operator = models.BooleanField(
        default=False, db_index=True,
        help_text="Status sync gave up: an operator must settle this payment.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["merchant", "livemode", "-created_at", "-id"]),
            # /v1/payments?status=…: a page of a rare status (unresolved) is read from its
            # own rows, not found by walking every payment of the merchant
            models.Index(fields=["merchant", "livemode", "status", "-created_at", "-id"],
                         name="payment_status_list_idx"),
            # the cleanup job's abandoned payments, oldest first (a small slice of the table)
            models.Index(fields=["created_at"], name="payment_awaiting_confirm_idx",
                         condition=models.Q(status="requires_confirmation")),
            # the metrics scrape: how many are unresolved and since when (ops/metrics.py)
            models.Index(fields=["updated_at"], name="payment_unresolved_idx",
                         condition=models.Q(status="unresolved")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0)
                & models.Q(amount_captured__gte=0)
                & models.Q(amount_captured__lte=models.F("amount"))
                & models.Q(amount_refunded__gte=0)
                & models.Q(amount_refunded__lte=models.F("amount_captured")),
                name="payment_amounts_consistent",
            )
        ]


class AttemptStatus(models.TextChoices):
    PENDING = "pending"  # sent (or about to be) to the provider, no answer yet
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    DECLINED = "declined"
    FAILED = "failed"  # provider unavailable: provably nothing charged
    UNKNOWN = "unknown"  # the provider may have charged; status sync must find out
    VOIDED = "voided"
    # an extra charge (found after another attempt succeeded, or on a payment that failed)
    # that Switchyard voided or refunded
    REVERSED = "reversed"


class PaymentAttempt(PrefixedIdModel):
    """One try at one provider. Its id is the provider idempotency key and lookup reference."""

    id_prefix = "att"
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="attempts")
    provider_account = models.ForeignKey(
        "providers.ProviderAccount", on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=16, choices=AttemptStatus.choices)
    provider_reference = models.CharField(max_length=128, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    decline_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    # Status sync of an unknown outcome: when to ask the provider next, how often it was asked
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    sync_count = models.PositiveIntegerField(default=0)
    unknown_since = models.DateTimeField(null=True, blank=True)
    # set when status sync asked the provider to release (cancel) whatever it holds under the
    # attempt's reference: from then on the provider's answer to that decides the attempt
    release_requested_at = models.DateTimeField(null=True, blank=True)
    # How long the authorization call took as payments saw it (payments.services.
    # provider_calls: the gateway's safe retries included), in ms; None when it was never
    # sent (our breaker or limits refused it) or recorded before this was measured.
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # at most one successful attempt per payment (DESIGN.md invariant)
            models.UniqueConstraint(
                fields=["payment"],
                condition=models.Q(status__in=["authorized", "captured"]),
                name="one_successful_attempt_per_payment",
            )
        ]

    @property
    def provider_idempotency_key(self) -> str:
        return self.id


class PaymentEvent(models.Model):
    """Append-only log of every state change; replaying it gives the payment's state."""

    id = models.BigAutoField(primary_key=True)
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=64)
    from_status = models.CharField(max_length=32, blank=True)
    to_status = models.CharField(max_length=32, blank=True)
    data = models.JSONField(default=dict)
    actor = models.CharField(max_length=100, default="api")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # the daily settlement report reads a day's events by time
        indexes = [models.Index(fields=["created_at"], name="payment_event_created_idx")]


class ModificationStatus(models.TextChoices):
    PENDING = "pending"  # sent, or accepted by a provider that confirms asynchronously
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # provably not done
    UNKNOWN = "unknown"  # the provider may have done it; it must be asked


class Modification(PrefixedIdModel):
    """A capture or a void of an authorization. Its id is the provider idempotency key.

    Providers such as Adyen and Checkout.com only accept a modification at once and confirm it
    later (webhook or status lookup): until then it stays `pending` and the payment stays
    `processing`.
    """

    id_prefix = "mod"
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="modifications")
    attempt = models.ForeignKey(PaymentAttempt, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=[("capture", "capture"), ("cancel", "cancel")])
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=ModificationStatus.choices)
    provider_reference = models.CharField(max_length=128, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    # When status sync asks the provider about it next (pending or unknown); None once
    # settled or given up to an operator
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]


class RefundStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNRESOLVED = "unresolved"


class Refund(PrefixedIdModel):
    id_prefix = "re"
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    livemode = models.BooleanField()
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=RefundStatus.choices)
    reason = models.CharField(max_length=32, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    provider_reference = models.CharField(max_length=128, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    # as Modification.next_sync_at
    next_sync_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["merchant", "livemode", "-created_at", "-id"])]
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="refund_pos")]


class IdempotencyKey(models.Model):
    """A merchant's Idempotency-Key: the unique constraint is what makes it hold under races."""

    id = models.BigAutoField(primary_key=True)
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    livemode = models.BooleanField()
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    # When the current claim was made (a retry that takes over the key of a request that
    # died makes a new one): the claim's identity, and where the retention period starts.
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The object the request created or started changing (pay_…, re_…, pm_…, rr_…), written
    # in the same transaction as the object: if the request dies, a retry answers from it.
    # Empty: nothing written yet.
    object_id = models.CharField(max_length=64, blank=True, default="", db_default="")
    # Does the request record its object? False for keys claimed by code that did not (and
    # by endpoints that do not): such a key whose request died stays in flight for an
    # operator, since nothing says whether it did anything. The database default is False
    # so that a process still running older code claims keys that are not recoverable.
    recoverable = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "livemode", "key"], name="uniq_idempotency_key"
            )
        ]

    @property
    def in_flight(self) -> bool:
        return self.completed_at is None


class WebhookOutbox(models.Model):
    """The merchant's events (`evt_…`, served by /v1/events), each written in the same
    transaction as the state change it announces, with its exact webhook body (`payload`).

    The relay fans an event out into one `WebhookDelivery` per matching endpoint and sets
    `relayed_at`; nothing depends on a nudge arriving: a periodic task relays what is left.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=40, unique=True)
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    livemode = models.BooleanField()
    type = models.CharField(max_length=64)
    # the payment or refund the event is about (pay_…, re_…)
    object_id = models.CharField(max_length=40, blank=True, default="", db_index=True)
    payload = models.JSONField()
    # not auto_now_add: the envelope's `created` is this very value
    created_at = models.DateTimeField(default=timezone.now)
    relayed_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = "event"
        indexes = [
            models.Index(fields=["merchant", "livemode", "-id"], name="event_list_idx"),
            # /v1/events?type=…: a rare type's page without walking every event
            models.Index(fields=["merchant", "livemode", "type", "-id"],
                         name="event_type_list_idx"),
            # /v1/events?created[lte|gte]=…: a window far from the newest events is found
            # by time (the planner picks this or event_list_idx by how many rows match)
            models.Index(fields=["merchant", "livemode", "created_at"],
                         name="event_created_list_idx"),
            # retention: the oldest events of every merchant
            models.Index(fields=["created_at"], name="event_created_idx"),
            # the metrics scrape: the relay's backlog (ops/metrics.py)
            models.Index(fields=["created_at"], name="event_unrelayed_idx",
                         condition=models.Q(relayed_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class WebhookEndpoint(PrefixedIdModel):
    """Where a merchant wants its events POSTed. The signing secret (`whsec_…`) is shown
    once; it is stored encrypted like provider credentials. After a roll the previous
    secret keeps signing beside the new one until `previous_secret_expires_at`."""

    id_prefix = "we"
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    livemode = models.BooleanField()
    url = models.CharField(max_length=2048)
    description = models.CharField(max_length=500, blank=True)
    enabled_events = models.JSONField(default=list, help_text='Event types, or ["*"].')
    metadata = models.JSONField(default=dict, blank=True)
    disabled = models.BooleanField(default=False)
    # why Switchyard disabled it (e.g. failing for 3 days); empty when the merchant did
    disabled_reason = models.CharField(max_length=500, blank=True)
    # since when every delivery has failed (None: the last one succeeded)
    failing_since = models.DateTimeField(null=True, blank=True, db_index=True)
    secrets_encrypted = models.BinaryField(default=b"", editable=False)
    secrets_key_version = models.CharField(max_length=32, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["merchant", "livemode", "-created_at", "-id"],
                                name="endpoint_list_idx")]

    def set_secrets(self, current: str, previous: str = "") -> None:
        if not self.id:
            self.id = new_id(self.id_prefix)
        self.secrets_key_version, self.secrets_encrypted = crypto.encrypt(
            json.dumps({"current": current, "previous": previous}), associated=self.id)

    def stored_secrets(self) -> dict[str, str]:
        """{"current": …, "previous": …}, decrypted."""
        stored: dict[str, str] = json.loads(crypto.decrypt(
            self.secrets_key_version, bytes(self.secrets_encrypted), associated=self.id))
        return stored

    def signing_secrets(self, now: Any) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one
        while its 24 hours run."""
        stored = self.stored_secrets()
        active = [stored["current"]]
        if (stored.get("previous") and self.previous_secret_expires_at is not None
                and now < self.previous_secret_expires_at):
            active.append(stored["previous"])
        return active


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # due at next_attempt_at (or being sent: claimed until then)
    SUCCEEDED = "succeeded"  # a 2xx came back
    FAILED = "failed"  # retried for the whole retry period, or the endpoint was disabled


class WebhookDelivery(models.Model):
    """One event to one endpoint, until it is acknowledged (at least once)."""

    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(WebhookOutbox, on_delete=models.CASCADE,
                              related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE,
                                 related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # pending: when it is due next; a sender that claims it moves this past its send, so a
    # sender killed mid-send leaves it due again once the claim runs out
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # when the current round of tries started (first send, or a redelivery by hand): the
    # retry period runs from here
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"],
                                               name="one_delivery_per_event_endpoint")]
        # the metrics scrape: pending deliveries and the oldest's age (ops/metrics.py)
        indexes = [models.Index(fields=["created_at"], name="delivery_pending_idx",
                                condition=models.Q(status="pending"))]


class WebhookDeliveryAttempt(models.Model):
    """The log of every delivery try: when, the HTTP status, how long, what came back."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE,
                                 related_name="tries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-id"]


class AuditLog(models.Model):
    """Append-only record of every operator action, credential change and key revocation,
    written in the same transaction as the change. The database refuses UPDATE and DELETE
    on this table (trigger in migration 0010)."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # "user:<username>" for the admin, "cli:<os user>" for management commands
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=100, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=200, default="ok")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_id}"


class ProviderWebhookEvent(models.Model):
    """An event a provider sent by webhook, stored as soon as it is received and authentic,
    applied afterwards (`payments.services.provider_events`). One row per account and
    provider event: redeliveries of the same event find the row and change nothing."""

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey("providers.ProviderAccount", on_delete=models.PROTECT,
                                related_name="+")
    event_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=16)  # authorization | capture | cancel | refund | …
    success = models.BooleanField()
    reference = models.CharField(max_length=128, blank=True, db_index=True)
    provider_reference = models.CharField(max_length=128, blank=True)
    operation_reference = models.CharField(max_length=128, blank=True)
    amount = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    decline_code = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    raw_type = models.CharField(max_length=64, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    # set while the event waits to be applied; None once applied
    next_try_at = models.DateTimeField(null=True, blank=True, db_index=True)
    tries = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=64, blank=True, help_text="What applying it did")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "event_id"],
                                               name="uniq_provider_event_per_account")]
        # retention: events applied longest ago
        indexes = [models.Index(fields=["processed_at"], name="provider_event_processed_idx")]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.raw_type or self.kind} {self.reference} ({self.outcome or 'pending'})"


class SettlementReport(PrefixedIdModel):
    """One merchant's daily settlement report in one mode and currency (a UTC day), built
    from the payments' event log by `payments.services.reports`; docs/api.md ("Reports")
    says what each column means. Rebuilding a day replaces its rows in one transaction
    (same id, new figures)."""

    id_prefix = "rpt"
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    livemode = models.BooleanField()
    day = models.DateField()
    currency = models.CharField(max_length=3)
    # amounts in the currency's minor unit
    payments_count = models.PositiveIntegerField(default=0)
    amount_authorized = models.BigIntegerField(default=0)
    captures_count = models.PositiveIntegerField(default=0)
    amount_captured = models.BigIntegerField(default=0)
    refunds_count = models.PositiveIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    fees = models.BigIntegerField(default=0)
    net = models.BigIntegerField(default=0)
    built_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["merchant", "livemode", "day", "currency"],
                                               name="one_report_per_merchant_day_currency")]
        indexes = [models.Index(fields=["merchant", "livemode", "-day", "-id"],
                                name="report_list_idx")]


class SettlementReportDay(models.Model):
    """A UTC day whose settlement reports were built (for every merchant): the daily job
    builds the days that have none, so a missed day is caught up."""

    day = models.DateField(primary_key=True)
    built_at = models.DateTimeField()
    reports = models.PositiveIntegerField(default=0, help_text="How many reports it made")

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d}"
class ProviderHourlyStats(models.Model):
    """Per provider account and UTC hour: the authorization attempts started in that hour, by
    outcome, and their latency percentiles. Written only by the hourly aggregation
    (payments.services.provider_stats, an upsert per account and hour); read by the admin's
    provider health page and, summed over the last hours, by routing as its prior."""

    id = models.BigAutoField(primary_key=True)
    provider_account = models.ForeignKey("providers.ProviderAccount", on_delete=models.CASCADE,
                                         related_name="+")
    hour = models.DateTimeField(help_text="Start of the UTC hour")
    attempts = models.PositiveIntegerField(default=0, help_text="Volume: every attempt")
    approved = models.PositiveIntegerField(default=0)
    declined_soft = models.PositiveIntegerField(default=0)
    declined_hard = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(
        default=0, help_text="Provider errors: not processed, or unknown then found so")
    refused = models.PositiveIntegerField(
        default=0, help_text="Never sent: our breaker or limits refused the call")
    unknown = models.PositiveIntegerField(default=0, help_text="Outcome still unknown")
    pending = models.PositiveIntegerField(default=0, help_text="Still in flight")
    latency_samples = models.PositiveIntegerField(default=0)
    latency_p50_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_p95_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_p99_ms = models.PositiveIntegerField(null=True, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = "provider hourly stats"
        verbose_name_plural = "provider hourly stats"
        ordering = ["-hour", "provider_account_id"]
        constraints = [models.UniqueConstraint(fields=["provider_account", "hour"],
                                               name="uniq_provider_stats_hour")]
        indexes = [models.Index(fields=["hour"], name="provider_stats_hour_idx")]

    def __str__(self) -> str:
        return f"{self.provider_account_id} {self.hour:%Y-%m-%d %H:00}"

    @property
    def decided(self) -> int:
        """Attempts with a final answer: approved, declined, or a provider error."""
        return self.approved + self.declined_soft + self.declined_hard + self.errors

    @property
    def success_rate(self) -> float | None:
        """approved / decided (None without a decided attempt)."""
        return self.approved / self.decided if self.decided else None
# --- reconciliation against the providers' settlement reports --------------------------------
class ReconciliationRunStatus(models.TextChoices):
    PENDING = "pending"  # made, not run yet
    RUNNING = "running"  # claimed by a worker until `claimed_until`
    COMPLETED = "completed"
    FAILED = "failed"  # the report could not be fetched or read (`error`); run again later


class ReconciliationRun(models.Model):
    """One provider account's settlement report of one UTC day, matched against our records
    (`payments.services.reconciliation`). One row per account and day: running the day again
    re-matches it in place."""

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey("providers.ProviderAccount", on_delete=models.PROTECT,
                                related_name="+")
    day = models.DateField()
    status = models.CharField(max_length=16, choices=ReconciliationRunStatus.choices,
                              default=ReconciliationRunStatus.PENDING)
    source = models.CharField(max_length=255, blank=True, help_text="The report read")
    # the worker's claim: its token, and until when it holds the run (a dead worker's claim
    # runs out by itself)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0, help_text="How often it was run")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lines = models.PositiveIntegerField(default=0, help_text="Lines in the report")
    matched = models.PositiveIntegerField(default=0, help_text="Lines matched to our records")
    settled = models.PositiveIntegerField(
        default=0, help_text="Captures, refunds and attempts whose unknown or pending outcome "
                             "the report settled")
    open_discrepancies = models.PositiveIntegerField(default=0)
    fees = models.JSONField(default=dict, blank=True,
                            help_text="The provider's fees in the report, per currency "
                                      "(minor units)")
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "account_id"]
        constraints = [models.UniqueConstraint(fields=["account", "day"],
                                               name="uniq_reconciliation_run")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.day:%Y-%m-%d} ({self.status})"


class ReconciliationLine(models.Model):
    """One line of a run's report as read, and what of ours it matched (replaced when the day
    is run again)."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE,
                            related_name="report_lines")
    line_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=16)  # capture | refund | chargeback | fee | other
    raw_type = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, blank=True)
    our_reference = models.CharField(max_length=128, blank=True)
    payment_reference = models.CharField(max_length=128, blank=True)
    provider_reference = models.CharField(max_length=128, blank=True, db_index=True)
    operation_reference = models.CharField(max_length=128, blank=True)
    amount = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    fee = models.BigIntegerField(default=0)
    fee_currency = models.CharField(max_length=3, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    # attempt | modification | refund | reversal, and its id; empty: matched nothing of ours
    matched_type = models.CharField(max_length=16, blank=True)
    matched_id = models.CharField(max_length=64, blank=True, db_index=True)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="+")
    # what reconciliation settled from this line (e.g. "attempt_captured"), if anything
    settled = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "line_id"],
                                               name="uniq_reconciliation_line")]

    def __str__(self) -> str:
        return f"{self.raw_type or self.kind} {self.line_id}"


class DiscrepancyKind(models.TextChoices):
    ONLY_OURS = "only_ours"  # we recorded it as done; the provider's report lacks it
    ONLY_THEIRS = "only_theirs"  # the provider settled it; we have nothing that matches
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    STATUS_MISMATCH = "status_mismatch"  # settled at the provider; not done in our books
    FEE_MISMATCH = "fee_mismatch"  # the provider's fee differs from the account's schedule


class DiscrepancyStatus(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"


class Discrepancy(PrefixedIdModel):
    """A difference between a provider's settlement report and our records, for an operator
    (docs/operations/reconciliation.md). One per run and `key` (its kind and what it is
    about): running a day again finds the same one, never a second."""

    id_prefix = "dsc"
    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE,
                            related_name="discrepancies")
    account = models.ForeignKey("providers.ProviderAccount", on_delete=models.PROTECT,
                                related_name="+")
    kind = models.CharField(max_length=24, choices=DiscrepancyKind.choices)
    key = models.CharField(max_length=200, editable=False)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="+")
    # ours: attempt | modification | refund (and its id); theirs: the report line's id
    object_type = models.CharField(max_length=16, blank=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    line_id = models.CharField(max_length=200, blank=True)
    ours = models.JSONField(default=dict, blank=True)
    theirs = models.JSONField(default=dict, blank=True)
    message = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=DiscrepancyStatus.choices,
                              default=DiscrepancyStatus.OPEN)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # "user:<name>" for an operator; "reconciliation" when a later run no longer finds it
    resolved_by = models.CharField(max_length=200, blank=True)
    resolution = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "discrepancies"
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["run", "key"],
                                               name="uniq_discrepancy_per_run")]
        indexes = [models.Index(fields=["status", "created_at"], name="discrepancy_open_idx")]

    def __str__(self) -> str:
        return f"{self.id} {self.kind}"
