"""Request parsing (strict: unknown fields are rejected) and response shapes of API.md."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from payments.api.fields import (
    MetadataField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    UnixTimeField,
    constant,
    country_code,
)
from payments.models import PaymentStatus, RefundStatus


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know, at every level: a typo must not be silently ignored."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Expected a JSON object."]}, code="invalid")
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {unknown[0]: [serializers.ErrorDetail("Unknown field.", code="parameter_unknown")]}
            )
        return super().to_internal_value(data)


# --- requests ---------------------------------------------------------------------------
class CardInput(StrictSerializer):
    number = StrictCharField(max_length=32, trim_whitespace=False)
    exp_month = StrictIntegerField()
    exp_year = StrictIntegerField()
    cvc = StrictCharField(max_length=4, required=False)


class AddressInput(StrictSerializer):
    line1 = StrictCharField(max_length=200, required=False, allow_blank=True)
    line2 = StrictCharField(max_length=200, required=False, allow_blank=True)
    city = StrictCharField(max_length=100, required=False, allow_blank=True)
    state = StrictCharField(max_length=100, required=False, allow_blank=True)
    postal_code = StrictCharField(max_length=20, required=False, allow_blank=True)
    country = StrictCharField(min_length=2, max_length=2, required=False)

    def validate_country(self, value: str) -> str:
        return country_code(value)


class BillingDetailsInput(StrictSerializer):
    name = StrictCharField(max_length=200, required=False, allow_blank=True)
    email = serializers.EmailField(max_length=254, required=False)
    phone = StrictCharField(max_length=40, required=False, allow_blank=True)
    address = AddressInput(required=False)


class PaymentMethodCreateInput(StrictSerializer):
    type = serializers.ChoiceField(choices=["card"])
    card = CardInput()
    billing_details = BillingDetailsInput(required=False)


class PaymentCreateInput(StrictSerializer):
    amount = StrictIntegerField()
    currency = StrictCharField(max_length=3)
    payment_method = StrictCharField(max_length=40, required=False)
    confirm = StrictBooleanField(required=False, default=False)
    capture_method = serializers.ChoiceField(choices=["automatic", "manual"], required=False,
                                             default="automatic")
    description = StrictCharField(max_length=1000, required=False, allow_blank=True,
                                  default="")
    reference = StrictCharField(max_length=255, required=False, allow_blank=True, default="")
    metadata = MetadataField(required=False, default=dict)
    provider = StrictCharField(max_length=64, required=False)


class PaymentConfirmInput(StrictSerializer):
    payment_method = StrictCharField(max_length=40, required=False)


class PaymentCaptureInput(StrictSerializer):
    amount_to_capture = StrictIntegerField(required=False)


class PaymentCancelInput(StrictSerializer):
    cancellation_reason = StrictCharField(max_length=255, required=False, allow_blank=True,
                                          default="")


class RefundCreateInput(StrictSerializer):
    payment = StrictCharField(max_length=40)
    amount = StrictIntegerField(required=False)
    reason = serializers.ChoiceField(
        choices=["requested_by_customer", "duplicate", "fraudulent"], required=False,
        default="")
    metadata = MetadataField(required=False, default=dict)


# --- responses --------------------------------------------------------------------------
class CardOutput(serializers.Serializer):
    brand = serializers.CharField()
    last4 = serializers.CharField()
    bin = serializers.CharField()
    exp_month = serializers.IntegerField()
    exp_year = serializers.IntegerField()
    fingerprint = serializers.CharField()


class PaymentMethodOutput(serializers.Serializer):
    id = serializers.CharField()
    object = constant("payment_method")
    type = serializers.CharField()
    card = CardOutput(source="*")
    billing_details = serializers.JSONField()
    created = UnixTimeField(source="created_at")
    livemode = serializers.BooleanField()


class AttemptOutput(serializers.Serializer):
    id = serializers.CharField()
    provider = serializers.CharField(source="provider_account.name")
    status = serializers.CharField()
    decline_code = serializers.SerializerMethodField()
    created = UnixTimeField(source="created_at")

    @extend_schema_field({"type": "string", "nullable": True})
    def get_decline_code(self, attempt) -> str | None:
        return attempt.decline_code or None


class LastErrorOutput(serializers.Serializer):
    code = serializers.CharField()
    decline_code = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class PaymentOutput(serializers.Serializer):
    id = serializers.CharField()
    object = constant("payment")
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=PaymentStatus.choices)
    capture_method = serializers.CharField()
    amount_capturable = serializers.IntegerField()
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    payment_method = serializers.CharField(source="payment_method_id", allow_null=True)
    provider = serializers.SerializerMethodField()
    attempts = AttemptOutput(many=True, source="attempts.all")
    routing = serializers.JSONField()
    last_error = LastErrorOutput(allow_null=True)
    description = serializers.CharField()
    reference = serializers.CharField()
    metadata = MetadataField()
    created = UnixTimeField(source="created_at")
    updated = UnixTimeField(source="updated_at")
    livemode = serializers.BooleanField()

    @extend_schema_field({"type": "string", "nullable": True})
    def get_provider(self, payment) -> str | None:
        return payment.provider_account.name if payment.provider_account_id else None


class RefundOutput(serializers.Serializer):
    id = serializers.CharField()
    object = constant("refund")
    payment = serializers.CharField(source="payment_id")
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=RefundStatus.choices)
    reason = serializers.SerializerMethodField()
    metadata = MetadataField()
    created = UnixTimeField(source="created_at")
    livemode = serializers.BooleanField()

    @extend_schema_field({"type": "string", "nullable": True})
    def get_reason(self, refund) -> str | None:
        return refund.reason or None


class ErrorBody(serializers.Serializer):
    type = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    decline_code = serializers.CharField(required=False)


class ErrorOutput(serializers.Serializer):
    error = ErrorBody()
    payment = PaymentOutput(required=False)
    refund = RefundOutput(required=False)


def list_output(item_serializer, name: str):
    """The `{"object": "list", "data": [...], "has_more": bool}` envelope for one resource."""
    list_object = constant("list")
    # Its own enum id per envelope, so the enum is named after it (PaymentListObjectEnum) as
    # the resources' `object` enums are, instead of a naming-collision warning.
    extend_schema_field({"type": "string", "enum": ["list"],
                         "x-spec-enum-id": f"{name}.object"})(type(list_object))
    return type(name, (serializers.Serializer,), {
        "object": list_object,
        "data": item_serializer(many=True),
        "has_more": serializers.BooleanField(),
    })
