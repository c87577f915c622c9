"""`/v1/routing_rules` and `/v1/retry_rules`: a merchant's routing configuration, per mode.

Same conventions as every /v1 resource (API.md): strict bodies, one error shape, scoped to the
caller's merchant and mode (another merchant's or mode's id is a 404), cursor pagination,
idempotent POSTs. The rules themselves are checked by providers.routing.rules, shared with the
admin; this module adds the API's own parsing (money.parse_currency / parse_amount).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response

from payments import money
from payments.api.fields import (
    MetadataField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    UnixTimeField,
    constant,
)
from payments.api.pagination import check_params
from payments.api.serializers import ErrorOutput, StrictSerializer, list_output
from payments.api.views import ERRORS, IDEMPOTENCY_HEADER, LIST_PARAMS, MerchantView
from payments.errors import InvalidRequest
from providers.models import RetryRule, RoutingRule
from providers.routing import rules
from providers.routing.retry import default_retry


@contextlib.contextmanager
def _as_invalid_request() -> Iterator[None]:
    try:
        yield
    except rules.RuleError as exc:
        raise InvalidRequest(exc.message, code=exc.code, param=exc.param) from None


# --- fields -----------------------------------------------------------------------------------
def object_constant(value: str, component: str):
    """`constant(value)` with its own enum id, so that two components sharing the value (the
    rule and its deletion receipt) get enums named after each component, not a hash."""
    field = constant(value)
    extend_schema_field({"type": "string", "enum": [value],
                         "x-spec-enum-id": f"{component}.object"})(type(field))
    return field


@extend_schema_field({"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "maxItems": rules.MAX_CONDITION_VALUES})
class StringListField(serializers.Field):
    """A non-empty JSON array of strings."""

    def to_internal_value(self, data):
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise serializers.ValidationError("Must be a list of strings.", code="invalid")
        if not data:
            raise serializers.ValidationError("Must not be empty; leave it out to match any "
                                              "value.", code="invalid")
        if len(data) > rules.MAX_CONDITION_VALUES:
            raise serializers.ValidationError(
                f"At most {rules.MAX_CONDITION_VALUES} values.", code="invalid")
        return data

    def to_representation(self, value):
        return value


WEIGHTED_ACCOUNT_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["account", "weight"],
    "properties": {"account": {"type": "string"},
                   "weight": {"type": "integer", "minimum": 1, "maximum": rules.MAX_WEIGHT}},
}
ACCOUNTS_SCHEMA = {
    "type": "array", "minItems": 1, "maxItems": rules.MAX_ACCOUNTS_PER_RULE,
    "description": 'Provider account names of this mode. ordered, least_cost, success_rate: '
                   '["stripe-main", "adyen-main"]; weighted: [{"account": "stripe-main", '
                   '"weight": 70}, {"account": "adyen-main", "weight": 30}].',
    "items": {"oneOf": [{"type": "string"}, WEIGHTED_ACCOUNT_SCHEMA]},
}


@extend_schema_field(ACCOUNTS_SCHEMA)
class RuleAccountsField(serializers.Field):
    """Checked against the strategy and the mode's accounts by providers.routing.rules."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("Must be a list.", code="invalid")
        return data

    def to_representation(self, value):
        return value


# --- routing rules: requests ------------------------------------------------------------------
class ConditionsInput(StrictSerializer):
    amount_gte = StrictIntegerField(required=False)
    amount_lte = StrictIntegerField(required=False)
    currencies = StringListField(required=False)
    card_brands = StringListField(required=False)
    bin_prefixes = StringListField(required=False)
    billing_countries = StringListField(required=False)
    metadata = MetadataField(required=False)

    def validate_amount_gte(self, value):
        return money.parse_amount(value, param="conditions.amount_gte")

    def validate_amount_lte(self, value):
        return money.parse_amount(value, param="conditions.amount_lte")

    def validate_currencies(self, value):
        return [money.parse_currency(c, param="conditions.currencies") for c in value]


class RoutingRuleCreateInput(StrictSerializer):
    priority = StrictIntegerField(required=False, default=100, min_value=0,
                                  max_value=rules.MAX_PRIORITY)
    enabled = StrictBooleanField(required=False, default=True)
    description = StrictCharField(max_length=500, required=False, allow_blank=True, default="")
    conditions = ConditionsInput(required=False)
    strategy = serializers.ChoiceField(choices=rules.STRATEGIES)
    accounts = RuleAccountsField()


class RoutingRuleUpdateInput(StrictSerializer):
    """Every field optional; `conditions`, when sent, replaces the rule's conditions."""

    priority = StrictIntegerField(required=False, min_value=0, max_value=rules.MAX_PRIORITY)
    enabled = StrictBooleanField(required=False)
    description = StrictCharField(max_length=500, required=False, allow_blank=True)
    conditions = ConditionsInput(required=False)
    strategy = serializers.ChoiceField(choices=rules.STRATEGIES, required=False)
    accounts = RuleAccountsField(required=False)


# --- routing rules: responses -----------------------------------------------------------------
class ConditionsOutput(serializers.Serializer):
    amount_gte = serializers.IntegerField(required=False)
    amount_lte = serializers.IntegerField(required=False)
    currencies = serializers.ListField(child=serializers.CharField(), required=False)
    card_brands = serializers.ListField(child=serializers.CharField(), required=False)
    bin_prefixes = serializers.ListField(child=serializers.CharField(), required=False)
    billing_countries = serializers.ListField(child=serializers.CharField(), required=False)
    metadata = MetadataField(required=False)


class RoutingRuleOutput(serializers.Serializer):
    id = serializers.CharField()
    object = object_constant("routing_rule", "RoutingRule")
    priority = serializers.IntegerField()
    enabled = serializers.BooleanField()
    description = serializers.CharField()
    conditions = ConditionsOutput()
    strategy = serializers.ChoiceField(choices=rules.STRATEGIES)
    accounts = RuleAccountsField()
    created = UnixTimeField(source="created_at")
    updated = UnixTimeField(source="updated_at")
    livemode = serializers.BooleanField()


class RoutingRuleDeletedOutput(serializers.Serializer):
    id = serializers.CharField()
    object = object_constant("routing_rule", "RoutingRuleDeleted")
    deleted = serializers.BooleanField()


# --- retry rules ------------------------------------------------------------------------------
class RetryRuleCreateInput(StrictSerializer):
    decline_code = StrictCharField(max_length=64)
    retry = StrictBooleanField()


class RetryRuleOutput(serializers.Serializer):
    id = serializers.CharField()
    object = object_constant("retry_rule", "RetryRule")
    decline_code = serializers.CharField()
    retry = serializers.BooleanField()
    default_retry = serializers.SerializerMethodField()
    created = UnixTimeField(source="created_at")
    updated = UnixTimeField(source="updated_at")
    livemode = serializers.BooleanField()

    def get_default_retry(self, rule) -> bool:
        return default_retry(rule.decline_code)


class RetryRuleDeletedOutput(serializers.Serializer):
    id = serializers.CharField()
    object = object_constant("retry_rule", "RetryRuleDeleted")
    deleted = serializers.BooleanField()


# --- views ------------------------------------------------------------------------------------
GET_ERRORS = {400: ErrorOutput, 401: ErrorOutput, 404: ErrorOutput, 429: ErrorOutput}


class RoutingRuleListView(MerchantView):
    """Routing rules of the caller's mode: when a rule's conditions match a payment, its
    strategy orders its provider accounts. Enabled rules are tried by ascending priority; the
    first match decides; without one, the accounts' own priority order applies."""

    @extend_schema(operation_id="routing_rules_create", request=RoutingRuleCreateInput,
                   responses={200: RoutingRuleOutput, **ERRORS},
                   parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(RoutingRuleCreateInput)
        with _as_invalid_request():
            rule = rules.routing_rule_create(
                merchant_id=self.merchant.id, livemode=self.livemode,
                strategy=data["strategy"], accounts=data["accounts"],
                conditions=dict(data.get("conditions") or {}), priority=data["priority"],
                enabled=data["enabled"], description=data["description"])
        return Response(RoutingRuleOutput(rule).data)

    @extend_schema(operation_id="routing_rules_list", parameters=LIST_PARAMS,
                   responses={200: list_output(RoutingRuleOutput, "RoutingRuleList"),
                              **GET_ERRORS})
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(RoutingRule), RoutingRuleOutput, request.query_params)


class RoutingRuleDetailView(MerchantView):
    """One routing rule: retrieve, update (only the fields sent; `conditions` replaced as a
    whole) or delete."""

    @extend_schema(operation_id="routing_rules_retrieve",
                   responses={200: RoutingRuleOutput, **GET_ERRORS})
    def get(self, request, rule_id: str):
        return Response(RoutingRuleOutput(
            self.get_or_404(RoutingRule, rule_id, "routing_rule")).data)

    @extend_schema(operation_id="routing_rules_update", request=RoutingRuleUpdateInput,
                   responses={200: RoutingRuleOutput, **ERRORS},
                   parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, rule_id: str):
        data = self.parse(RoutingRuleUpdateInput)
        rule = self.get_or_404(RoutingRule, rule_id, "routing_rule")
        if "conditions" in data:
            data["conditions"] = dict(data["conditions"])
        with _as_invalid_request():
            rule = rules.routing_rule_update(rule=rule, **data)
        return Response(RoutingRuleOutput(rule).data)

    @extend_schema(operation_id="routing_rules_delete",
                   responses={200: RoutingRuleDeletedOutput, **GET_ERRORS})
    def delete(self, request, rule_id: str):
        rule = self.get_or_404(RoutingRule, rule_id, "routing_rule")
        rules.routing_rule_delete(rule=rule)
        return Response({"id": rule_id, "object": "routing_rule", "deleted": True})


class RetryRuleListView(MerchantView):
    """Overrides of which decline codes are retried on the next provider account."""

    @extend_schema(
        operation_id="retry_rules_create", request=RetryRuleCreateInput,
        responses={200: RetryRuleOutput, **ERRORS}, parameters=[IDEMPOTENCY_HEADER],
        description="Set whether a decline code is retried on the next provider account. One "
                    "rule per decline code: setting a code again replaces its rule. Unknown "
                    "outcomes are never retried, and codes the card networks forbid retrying "
                    "(lost or stolen card, fraud, …) cannot be made retriable.")
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(RetryRuleCreateInput)
        with _as_invalid_request():
            rule, _ = rules.retry_rule_set(merchant_id=self.merchant.id, livemode=self.livemode,
                                           decline_code=data["decline_code"],
                                           retry=data["retry"])
        return Response(RetryRuleOutput(rule).data)

    @extend_schema(operation_id="retry_rules_list", parameters=LIST_PARAMS,
                   responses={200: list_output(RetryRuleOutput, "RetryRuleList"),
                              **GET_ERRORS})
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(RetryRule), RetryRuleOutput, request.query_params)


class RetryRuleDetailView(MerchantView):
    """One retry rule: retrieve or delete (the decline code returns to its default)."""

    @extend_schema(operation_id="retry_rules_retrieve",
                   responses={200: RetryRuleOutput, **GET_ERRORS})
    def get(self, request, rule_id: str):
        return Response(RetryRuleOutput(self.get_or_404(RetryRule, rule_id, "retry_rule")).data)

    @extend_schema(operation_id="retry_rules_delete",
                   responses={200: RetryRuleDeletedOutput, **GET_ERRORS})
    def delete(self, request, rule_id: str):
        rule = self.get_or_404(RetryRule, rule_id, "retry_rule")
        rules.retry_rule_delete(rule=rule)
        return Response({"id": rule_id, "object": "retry_rule", "deleted": True})
