"""Request parsing (strict: unknown fields are rejected) and response shapes of docs/api.md.

Field `help_text` and `extend_schema_serializer(description=…)` are what merchants read in
the OpenAPI schema (payments.api.schema): keep them merchant-facing.
"""

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
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
from payments.models import AttemptStatus, PaymentStatus, RefundStatus
from providers.routing import engine as routing_engine
from providers.routing import rules as routing_rules

# Enum values the API uses; settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] names them.
CAPTURE_METHODS = ("automatic", "manual")
REFUND_REASONS = ("requested_by_customer", "duplicate", "fraudulent")
PAYMENT_METHOD_TYPES = ("card",)
ERROR_TYPES = ("invalid_request_error", "idempotency_error", "authentication_error",
               "card_error", "rate_limit_error", "api_error")
# How a payment's provider accounts were ordered: a routing rule's strategy, the accounts'
# own priority order when no rule matched, or the account the merchant pinned.
ROUTING_STRATEGIES = (routing_engine.DEFAULT_ORDER, *routing_rules.STRATEGIES, "pinned")

METADATA_HELP = ("Your own key-value pairs: up to 20 keys of 1 to 40 characters, with string "
                 "values of up to 500 characters.")


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


# --- fields that services check -------------------------------------------------------------
# money.parse_amount and cards.validate_card check these, with their own error codes; the
# serializer only types them, and the schema states their ranges (payments.api.schema).
class AmountField(StrictIntegerField):
    """An amount in the currency's minor unit, 1 to MAX_PAYMENT_AMOUNT."""


class ExpYearField(StrictIntegerField):
    """A card's four-digit expiry year: not past, at most 50 years ahead."""


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": 12})
class ExpMonthField(StrictIntegerField):
    pass


@extend_schema_field({"type": "string", "minLength": 3, "maxLength": 3,
                      "pattern": "^[A-Za-z]{3}$"})
class CurrencyField(StrictCharField):
    pass


@extend_schema_field({"type": "string", "maxLength": 32, "pattern": "^[ -]*([0-9][ -]*){12,19}$"})
class CardNumberField(StrictCharField):
    pass


@extend_schema_field({"type": "string", "pattern": "^[0-9]{3,4}$"})
class CvcField(StrictCharField):
    pass


# --- requests ---------------------------------------------------------------------------
PAYMENT_CVC_HELP = ("The card's CVC, for this authorization only: sent to the provider, never "
                    "stored. Without it, the CVC given when the card was vaulted is used if "
                    "this is the card's first authorization.")

@extend_schema_serializer(description="A card to vault. The number and the CVC are never "
                                      "returned.")
class CardInput(StrictSerializer):
    number = CardNumberField(max_length=32, trim_whitespace=False,
                             help_text="The card number, 12 to 19 digits; spaces and dashes "
                                       "are ignored. Must pass the Luhn check.")
    exp_month = ExpMonthField(help_text="Expiry month, 1 to 12.")
    exp_year = ExpYearField(help_text="Four-digit expiry year. An expired card is refused.")
    cvc = CvcField(max_length=4, required=False,
                   help_text="3 digits (4 for American Express).")


class AddressInput(StrictSerializer):
    line1 = StrictCharField(max_length=200, required=False, allow_blank=True)
    line2 = StrictCharField(max_length=200, required=False, allow_blank=True)
    city = StrictCharField(max_length=100, required=False, allow_blank=True)
    state = StrictCharField(max_length=100, required=False, allow_blank=True)
    postal_code = StrictCharField(max_length=20, required=False, allow_blank=True)
    country = StrictCharField(min_length=2, max_length=2, required=False,
                              help_text="ISO 3166-1 alpha-2 country code, e.g. US.")

    def validate_country(self, value: str) -> str:
        return country_code(value)


class BillingDetailsInput(StrictSerializer):
    name = StrictCharField(max_length=200, required=False, allow_blank=True)
    email = serializers.EmailField(max_length=254, required=False)
    phone = StrictCharField(max_length=40, required=False, allow_blank=True)
    address = AddressInput(required=False)


@extend_schema_serializer(description="A card to vault, with optional billing details.")
class PaymentMethodCreateInput(StrictSerializer):
    type = serializers.ChoiceField(choices=PAYMENT_METHOD_TYPES,
                                   help_text="Always `card`.")
    card = CardInput()
    billing_details = BillingDetailsInput(
        required=False, help_text="The cardholder's details; the billing country may decide "
                                  "the route.")


@extend_schema_serializer(description="A new payment; with `confirm: true` it is authorized "
                                      "at once.")
class PaymentCreateInput(StrictSerializer):
    amount = AmountField(help_text="Amount to charge in the currency's minor unit (1050 is "
                                   "10.50 USD; JPY has no minor unit, KWD has 3 decimals).")
    currency = CurrencyField(max_length=3, help_text="Three-letter ISO 4217 code, e.g. USD.")
    payment_method = StrictCharField(max_length=40, required=False,
                                     help_text="A vaulted card, `pm_…`. Needed to confirm.")
    confirm = StrictBooleanField(required=False, default=False,
                                 help_text="Authorize now (and capture, when `capture_method` "
                                           "is automatic) instead of waiting for /confirm.")
    capture_method = serializers.ChoiceField(
        choices=CAPTURE_METHODS, required=False, default="automatic",
        help_text="`automatic`: captured as soon as it is authorized. `manual`: authorized "
                  "only, captured later with /capture.")
    description = StrictCharField(max_length=1000, required=False, allow_blank=True,
                                  default="", help_text="Free text, for you.")
    reference = StrictCharField(max_length=255, required=False, allow_blank=True, default="",
                                help_text="Your own reference, e.g. an order id; payments can "
                                          "be listed by it.")
    metadata = MetadataField(required=False, default=dict, help_text=METADATA_HELP)
    provider = StrictCharField(max_length=64, required=False,
                               help_text="Pins the payment to one of your provider accounts "
                                         "by name; routing and failover then stay on it. "
                                         "Without it, routing decides.")
    cvc = CvcField(max_length=4, required=False, help_text=PAYMENT_CVC_HELP + " With "
                   "`confirm: true` only.")


@extend_schema_serializer(description="Authorize a payment that requires confirmation.")
class PaymentConfirmInput(StrictSerializer):
    payment_method = StrictCharField(max_length=40, required=False,
                                     help_text="A vaulted card, `pm_…`; needed unless the "
                                               "payment already has one.")
    cvc = CvcField(max_length=4, required=False, help_text=PAYMENT_CVC_HELP)


@extend_schema_serializer(description="Capture an authorized payment, once.")
class PaymentCaptureInput(StrictSerializer):
    amount_to_capture = AmountField(required=False,
                                    help_text="At most the amount authorized; default all of "
                                              "it. A partial capture releases the rest.")


@extend_schema_serializer(description="Cancel a payment that is not captured yet.")
class PaymentCancelInput(StrictSerializer):
    cancellation_reason = StrictCharField(max_length=255, required=False, allow_blank=True,
                                          default="", help_text="Why, for your records.")


@extend_schema_serializer(description="Refund all or part of a succeeded payment.")
class RefundCreateInput(StrictSerializer):
    payment = StrictCharField(max_length=40, help_text="The payment to refund, `pay_…`.")
    amount = AmountField(required=False,
                         help_text="Default: all that is left to refund. Refunds of a payment "
                                   "never add up to more than its amount_captured.")
    reason = serializers.ChoiceField(choices=REFUND_REASONS, required=False,
                                     help_text="Why the payment is refunded.")
    metadata = MetadataField(required=False, default=dict, help_text=METADATA_HELP)


# --- responses --------------------------------------------------------------------------
class CardOutput(serializers.Serializer):
    brand = serializers.CharField(help_text="visa, mastercard, amex, discover, jcb, diners or "
                                            "unionpay.")
    last4 = serializers.CharField(help_text="The last four digits.")
    bin = serializers.CharField(help_text="The first six digits (issuer identification).")
    exp_month = serializers.IntegerField()
    exp_year = serializers.IntegerField()
    fingerprint = serializers.CharField(help_text="The same card number has the same "
                                                  "fingerprint within your account.")


class AddressOutput(serializers.Serializer):
    line1 = serializers.CharField(required=False)
    line2 = serializers.CharField(required=False)
    city = serializers.CharField(required=False)
    state = serializers.CharField(required=False)
    postal_code = serializers.CharField(required=False)
    country = serializers.CharField(required=False,
                                    help_text="ISO 3166-1 alpha-2 code, upper case.")


@extend_schema_serializer(description="The billing details as sent; fields not sent are "
                                      "absent.")
class BillingDetailsOutput(serializers.Serializer):
    name = serializers.CharField(required=False)
    email = serializers.EmailField(required=False)
    phone = serializers.CharField(required=False)
    address = AddressOutput(required=False)


@extend_schema_field(BillingDetailsOutput)
class BillingDetailsField(serializers.JSONField):
    """Stored as validated by BillingDetailsInput, returned as stored."""


@extend_schema_serializer(description="A vaulted card. Only brand, last four digits, BIN and "
                                      "expiry are readable.")
class PaymentMethodOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`pm_…`")
    object = constant("payment_method")
    type = serializers.ChoiceField(choices=PAYMENT_METHOD_TYPES)
    card = CardOutput(source="*")
    billing_details = BillingDetailsField()
    created = UnixTimeField(source="created_at", help_text="Unix seconds.")
    livemode = serializers.BooleanField()


@extend_schema_serializer(description="One try at one provider account.")
class AttemptOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`att_…`; also the reference the provider knows it by.")
    provider = serializers.CharField(source="provider_account.name",
                                     help_text="The provider account's name.")
    status = serializers.ChoiceField(
        choices=AttemptStatus.choices,
        help_text="`pending`: sent, no answer yet; `authorized`; `captured`; `declined`; "
                  "`failed`: the provider could not process it and nothing was charged; "
                  "`unknown`: the provider may have charged, Switchyard is finding out; "
                  "`voided`; `reversed`: an extra charge Switchyard voided or refunded.")
    decline_code = serializers.SerializerMethodField()
    created = UnixTimeField(source="created_at", help_text="Unix seconds.")

    @extend_schema_field({"type": "string", "nullable": True,
                          "description": "Why the provider declined, e.g. insufficient_funds; "
                                         "null unless declined."})
    def get_decline_code(self, attempt) -> str | None:
        return attempt.decline_code or None


@extend_schema_serializer(description="Why the latest attempt did not succeed.")
class LastErrorOutput(serializers.Serializer):
    code = serializers.CharField()
    decline_code = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class RoutingCandidateOutput(serializers.Serializer):
    account = serializers.CharField(help_text="A provider account's name.")
    score = serializers.FloatField(
        allow_null=True,
        help_text="What the strategy ordered by: the position (ordered), the account's "
                  "priority (default_order), its weight (weighted), the expected fee in minor "
                  "units (least_cost; null without a fee schedule), the success rate "
                  "(success_rate); null when pinned.")
    samples = serializers.IntegerField(required=False,
                                       help_text="success_rate only: attempts behind the rate.")


class RoutingSkipOutput(serializers.Serializer):
    account = serializers.CharField(help_text="A provider account's name.")
    # A string, not an enum: routing gains reasons as providers gain rules.
    reason = serializers.CharField(
        help_text="Why the account could not take the payment, e.g. `not_in_mode` (no such "
                  "account in this mode), `excluded` (already tried), `disabled`, "
                  "`currency_unsupported`, `breaker_open`, `rate_limited`, "
                  "`concurrency_limited`.")


@extend_schema_serializer(description="How the payment's provider accounts were chosen: empty "
                                      "until the payment is confirmed.")
class RoutingOutput(serializers.Serializer):
    rule = serializers.CharField(allow_null=True, required=False,
                                 help_text="The routing rule that matched, `rr_…`, or null.")
    strategy = serializers.ChoiceField(choices=ROUTING_STRATEGIES, required=False)
    candidates = RoutingCandidateOutput(many=True, required=False,
                                        help_text="The eligible accounts, in the order tried.")
    skipped = RoutingSkipOutput(many=True, required=False,
                                help_text="Accounts the rule named that were not eligible.")
    explored = serializers.CharField(allow_null=True, required=False,
                                     help_text="success_rate only: an account moved first to "
                                               "keep measuring it, or null.")
    selected = serializers.CharField(required=False, help_text="The first account tried.")
    order = serializers.ListField(child=serializers.CharField(), required=False,
                                  help_text="The accounts' names in the order tried; failover "
                                            "goes down this list.")


@extend_schema_field(RoutingOutput)
class RoutingField(serializers.JSONField):
    """The routing record providers.routing.engine wrote, returned as stored."""


@extend_schema_serializer(description="A payment.")
class PaymentOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`pay_…`")
    object = constant("payment")
    amount = serializers.IntegerField(help_text="In the currency's minor unit.")
    currency = serializers.CharField(help_text="Three-letter ISO 4217 code, upper case.")
    status = serializers.ChoiceField(
        choices=PaymentStatus.choices,
        help_text="`requires_confirmation`: created, not sent to a provider yet; "
                  "`processing`: being authorized; `requires_capture`: authorized, waiting "
                  "for /capture; `succeeded`: captured; `canceled`; `failed`: declined, or no "
                  "provider could process it; `unresolved`: a provider may have charged the "
                  "card and Switchyard is finding out. Do not retry an unresolved payment "
                  "with a new Idempotency-Key.")
    capture_method = serializers.ChoiceField(choices=CAPTURE_METHODS)
    amount_capturable = serializers.IntegerField(help_text="Authorized, not captured yet.")
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    payment_method = serializers.CharField(source="payment_method_id", allow_null=True,
                                           help_text="The card, `pm_…`, or null before one "
                                                     "is attached.")
    provider = serializers.SerializerMethodField()
    attempts = AttemptOutput(many=True, source="attempts.all",
                             help_text="Every try at a provider, oldest first.")
    routing = RoutingField()
    last_error = LastErrorOutput(allow_null=True)
    description = serializers.CharField()
    reference = serializers.CharField()
    metadata = MetadataField(help_text=METADATA_HELP)
    created = UnixTimeField(source="created_at", help_text="Unix seconds.")
    updated = UnixTimeField(source="updated_at", help_text="Unix seconds.")
    livemode = serializers.BooleanField()

    @extend_schema_field({"type": "string", "nullable": True,
                          "description": "The provider account the payment is pinned to or "
                                         "was authorized on, or null before routing."})
    def get_provider(self, payment) -> str | None:
        return payment.provider_account.name if payment.provider_account_id else None


@extend_schema_serializer(description="A refund of all or part of a payment.")
class RefundOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`re_…`")
    object = constant("refund")
    payment = serializers.CharField(source="payment_id", help_text="`pay_…`")
    amount = serializers.IntegerField(help_text="In the currency's minor unit.")
    currency = serializers.CharField(help_text="The payment's currency.")
    status = serializers.ChoiceField(
        choices=RefundStatus.choices,
        help_text="`pending`: sent, the provider has not confirmed it yet; `succeeded`; "
                  "`failed`; `unresolved`: the provider may have refunded, Switchyard is "
                  "finding out.")
    reason = serializers.SerializerMethodField()
    metadata = MetadataField(help_text=METADATA_HELP)
    created = UnixTimeField(source="created_at", help_text="Unix seconds.")
    livemode = serializers.BooleanField()

    @extend_schema_field({"type": "string", "nullable": True, "enum": [*REFUND_REASONS, None]})
    def get_reason(self, refund) -> str | None:
        return refund.reason or None


class ErrorBody(serializers.Serializer):
    type = serializers.ChoiceField(choices=ERROR_TYPES)
    code = serializers.CharField(help_text="Machine-readable, e.g. parameter_missing, "
                                           "resource_missing, card_declined.")
    message = serializers.CharField(help_text="For people; may change, do not parse it.")
    param = serializers.CharField(allow_null=True,
                                  help_text="The field or parameter at fault (nested fields "
                                            "dotted: card.exp_year), or null.")
    decline_code = serializers.CharField(required=False, allow_null=True,
                                         help_text="card_error only: why the card was "
                                                   "declined, e.g. insufficient_funds.")


@extend_schema_serializer(description="Every error has this shape.")
class ErrorOutput(serializers.Serializer):
    error = ErrorBody()
    payment = PaymentOutput(required=False, help_text="402, and 503 for a payment: the payment "
                                                      "as it is now.")
    refund = RefundOutput(required=False, help_text="503 from POST /v1/refunds: the refund "
                                                    "that failed.")


def list_output(item_serializer, name: str):
    """The `{"object": "list", "data": [...], "has_more": bool}` envelope for one resource."""
    list_object = constant("list")
    # Its own enum id per envelope, so the enum is named after it (PaymentListObjectEnum) as
    # the resources' `object` enums are, instead of a naming-collision warning.
    extend_schema_field({"type": "string", "enum": ["list"],
                         "x-spec-enum-id": f"{name}.object"})(type(list_object))
    envelope = type(name, (serializers.Serializer,), {
        "object": list_object,
        "data": item_serializer(many=True, help_text="Newest first."),
        "has_more": serializers.BooleanField(help_text="Whether another page follows; ask for "
                                                       "it with starting_after."),
    })
    return extend_schema_serializer(description="One page of a list.")(envelope)
