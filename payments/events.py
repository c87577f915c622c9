"""Every payment event type, by name: grep for the constant to find where one is written.

`PaymentEvent.type` holds these values; the merchant-webhook types of the outbox are the
`payment.<status>` and `refund.<status>` ones.
"""

from django.db import models


class EventType(models.TextChoices):
    # the payment's own life
    CREATED = "payment.created"
    CONFIRMED = "payment.confirmed"
    CANCELED = "payment.canceled"
    FAILED = "payment.failed"
    RESUMED = "payment.resumed"
    # authorization attempts (payments.services.attempts)
    ATTEMPT_STARTED = "payment.attempt_started"
    ATTEMPT_ABANDONED = "payment.attempt_abandoned"
    AUTHORIZED = "payment.authorized"
    CAPTURED = "payment.captured"
    DECLINED = "payment.declined"
    OUTCOME_UNKNOWN = "payment.outcome_unknown"
    FAILOVER = "payment.failover"
    RELEASE_REQUESTED = "payment.release_requested"
    RELEASE_FAILED = "payment.release_failed"
    DUPLICATE_CHARGE_REVERSED = "payment.duplicate_charge_reversed"
    DUPLICATE_CHARGE_REVERSAL_FAILED = "payment.duplicate_charge_reversal_failed"
    PROVIDER_EVENT_MISMATCH = "payment.provider_event_mismatch"
    FLAGGED_FOR_OPERATOR = "payment.flagged_for_operator"
    # merchant event (outbox only): the payment was flagged for an operator
    NEEDS_ATTENTION = "payment.needs_attention"
    OPERATOR_FLAG_CLEARED = "payment.operator_flag_cleared"
    OPERATION_UNSETTLED = "payment.operation_unsettled"
    # captures and voids (payments.services.modifications)
    CAPTURE_STARTED = "payment.capture_started"
    CAPTURE_PENDING = "payment.capture_pending"
    CAPTURE_ACCEPTED = "payment.capture_accepted"
    CAPTURE_OUTCOME_UNKNOWN = "payment.capture_outcome_unknown"
    CAPTURE_SUCCEEDED = "payment.capture_succeeded"
    CAPTURE_FAILED = "payment.capture_failed"
    CANCEL_STARTED = "payment.cancel_started"
    CANCEL_PENDING = "payment.cancel_pending"
    CANCEL_ACCEPTED = "payment.cancel_accepted"
    CANCEL_OUTCOME_UNKNOWN = "payment.cancel_outcome_unknown"
    CANCEL_SUCCEEDED = "payment.cancel_succeeded"
    CANCEL_FAILED = "payment.cancel_failed"
    # refunds (payments.services.refunds; the state machine names them by status)
    REFUND_CREATED = "refund.created"
    REFUND_PENDING = "refund.pending"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    REFUND_UNRESOLVED = "refund.unresolved"


# per capture/void: the events of its life
MODIFICATION_EVENTS = {
    "capture": {"started": EventType.CAPTURE_STARTED, "pending": EventType.CAPTURE_PENDING,
                "accepted": EventType.CAPTURE_ACCEPTED,
                "unknown": EventType.CAPTURE_OUTCOME_UNKNOWN,
                "succeeded": EventType.CAPTURE_SUCCEEDED, "failed": EventType.CAPTURE_FAILED},
    "cancel": {"started": EventType.CANCEL_STARTED, "pending": EventType.CANCEL_PENDING,
               "accepted": EventType.CANCEL_ACCEPTED,
               "unknown": EventType.CANCEL_OUTCOME_UNKNOWN,
               "succeeded": EventType.CANCEL_SUCCEEDED, "failed": EventType.CANCEL_FAILED},
}
REFUND_EVENTS = {"pending": EventType.REFUND_PENDING, "succeeded": EventType.REFUND_SUCCEEDED,
                 "failed": EventType.REFUND_FAILED, "unresolved": EventType.REFUND_UNRESOLVED}

# What merchants hear (webhooks) and list (/v1/events): the types an endpoint's
# `enabled_events` may name (or "*" for all of them).
MERCHANT_EVENT_TYPES = (
    "payment.processing", "payment.requires_capture", "payment.succeeded", "payment.failed",
    "payment.canceled", "payment.unresolved", EventType.NEEDS_ATTENTION.value,
    EventType.REFUND_PENDING.value, EventType.REFUND_SUCCEEDED.value,
    EventType.REFUND_FAILED.value, EventType.REFUND_UNRESOLVED.value,
)
