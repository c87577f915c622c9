"""`/v1/routing_rules` and `/v1/retry_rules`: a merchant's routing configuration, per mode.

Same conventions as every /v1 resource (docs/api.md): strict bodies, one error shape, scoped to the
caller's merchant and mode (another merchant's or mode's id is a 404), cursor pagination,
idempotent POSTs. The rules themselves are checked by providers.routing.rules, shared with the
admin; this module adds the API's own parsing (money.parse_currency / parse_amount).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from django.db import transaction
from drf_spectacular.utils import extend_schema_field
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
from payments.api.schema import LIST_PARAMS, merchant_operation
from payments.api.serializers import AmountField, StrictSerializer, list_output
from payments.api.views import MerchantView
from payments.errors import InvalidRequest
from payments.services import idempotency
from providers.models import RetryRule, RoutingRule
from providers.routing import rules
from providers.routing.retry import default_retry


@contextlib.contextmanager
def _as_invalid_request() -> Iterator[None]:
    try:
        yield
    except rules.RuleError as exc:
        raise InvalidRequest(exc.message, code=exc.code, param=exc.param) from None


def _saved(write: Callable[[], RoutingRule | RetryRule]) -> RoutingRule | RetryRule:
    """Run one of providers.routing.rules' writes (its checks' errors as 400s) in a
    transaction that also records the rule on the request's Idempotency-Key, as the payments
    services do with their objects (providers cannot import payments)."""
    with _as_invalid_request(), transaction.atomic():
        rule = write()
        idempotency.record_object(rule)
    return rule


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
    amount_gte = AmountField(required=False)
    amount_lte = AmountField(required=False)
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
ROUTING_RULES = ("When a routing rule's conditions match a payment, its strategy orders its "
                 "provider accounts. Enabled rules are tried by ascending priority and the "
                 "first match decides; without one, the accounts' own priority order applies. "
                 "Rules belong to the API key's mode.")


class RoutingRuleListView(MerchantView):
    """Routing rules of the caller's mode (ROUTING_RULES says how they apply)."""

    @merchant_operation(
        operation_id="routing_rules_create", method="post", summary="Create a routing rule",
        description=ROUTING_RULES, request=RoutingRuleCreateInput, ok=RoutingRuleOutput,
        ok_description="The routing rule.")
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(RoutingRuleCreateInput)
        rule = _saved(lambda: rules.routing_rule_create(
            merchant_id=self.merchant.id, livemode=self.livemode,
            strategy=data["strategy"], accounts=data["accounts"],
            conditions=dict(data.get("conditions") or {}), priority=data["priority"],
            enabled=data["enabled"], description=data["description"]))
        return Response(RoutingRuleOutput(rule).data)

    def recover(self, object_id: str) -> Response:
        return Response(RoutingRuleOutput(
            self.get_or_404(RoutingRule, object_id, "routing_rule")).data)

    @merchant_operation(
        operation_id="routing_rules_list", method="get", summary="List routing rules",
        description="Routing rules of this mode, newest first. " + ROUTING_RULES,
        parameters=LIST_PARAMS, ok=list_output(RoutingRuleOutput, "RoutingRuleList"),
        ok_description="One page of routing rules.")
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(RoutingRule), RoutingRuleOutput, request.query_params)


class RoutingRuleDetailView(MerchantView):
    """One routing rule: retrieve, update (only the fields sent; `conditions` replaced as a
    whole) or delete."""

    @merchant_operation(
        operation_id="routing_rules_retrieve", method="get", summary="Retrieve a routing rule",
        description="A routing rule by its id.", statuses=[404], ok=RoutingRuleOutput,
        ok_description="The routing rule.")
    def get(self, request, rule_id: str):
        return Response(RoutingRuleOutput(
            self.get_or_404(RoutingRule, rule_id, "routing_rule")).data)

    @merchant_operation(
        operation_id="routing_rules_update", method="post", summary="Update a routing rule",
        description="Changes only the fields sent; `conditions`, when sent, replaces the "
                    "rule's conditions as a whole.",
        request=RoutingRuleUpdateInput, ok=RoutingRuleOutput, statuses=[404],
        ok_description="The routing rule as updated.")
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, rule_id: str):
        data = self.parse(RoutingRuleUpdateInput)
        rule = self.get_or_404(RoutingRule, rule_id, "routing_rule")
        if "conditions" in data:
            data["conditions"] = dict(data["conditions"])
        rule = _saved(lambda: rules.routing_rule_update(rule=rule, **data))
        return Response(RoutingRuleOutput(rule).data)

    def recover(self, object_id: str) -> Response:
        return Response(RoutingRuleOutput(
            self.get_or_404(RoutingRule, object_id, "routing_rule")).data)

    @merchant_operation(
        operation_id="routing_rules_delete", method="delete", summary="Delete a routing rule",
        description="Deletes a routing rule; payments already routed keep their routing "
                    "record.", statuses=[404], ok=RoutingRuleDeletedOutput,
        ok_description="The deleted rule's id.")
    def delete(self, request, rule_id: str):
        rule = self.get_or_404(RoutingRule, rule_id, "routing_rule")
        rules.routing_rule_delete(rule=rule)
        return Response({"id": rule_id, "object": "routing_rule", "deleted": True})


class RetryRuleListView(MerchantView):
    """Overrides of which decline codes are retried on the next provider account."""

    @merchant_operation(
        operation_id="retry_rules_create", method="post", summary="Set a retry rule",
        request=RetryRuleCreateInput, ok=RetryRuleOutput, ok_description="The retry rule.",
        description="Set whether a decline code is retried on the next provider account. One "
                    "rule per decline code: setting a code again replaces its rule. Unknown "
                    "outcomes are never retried, and codes the card networks forbid retrying "
                    "(lost or stolen card, fraud, …) cannot be made retriable.")
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(RetryRuleCreateInput)
        rule = _saved(lambda: rules.retry_rule_set(
            merchant_id=self.merchant.id, livemode=self.livemode,
            decline_code=data["decline_code"], retry=data["retry"])[0])
        return Response(RetryRuleOutput(rule).data)

    def recover(self, object_id: str) -> Response:
        return Response(RetryRuleOutput(
            self.get_or_404(RetryRule, object_id, "retry_rule")).data)

    @merchant_operation(
        operation_id="retry_rules_list", method="get", summary="List retry rules",
        description="Your overrides of which decline codes are retried on the next provider "
                    "account, newest first.",
        parameters=LIST_PARAMS, ok=list_output(RetryRuleOutput, "RetryRuleList"),
        ok_description="One page of retry rules.")
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(RetryRule), RetryRuleOutput, request.query_params)


class RetryRuleDetailView(MerchantView):
    """One retry rule: retrieve or delete (the decline code returns to its default)."""

    @merchant_operation(
        operation_id="retry_rules_retrieve", method="get", summary="Retrieve a retry rule",
        description="A retry rule by its id.", statuses=[404], ok=RetryRuleOutput,
        ok_description="The retry rule.")
    def get(self, request, rule_id: str):
        return Response(RetryRuleOutput(self.get_or_404(RetryRule, rule_id, "retry_rule")).data)

    @merchant_operation(
        operation_id="retry_rules_delete", method="delete", summary="Delete a retry rule",
        description="Deletes a retry rule: its decline code is retried, or not, by default "
                    "again.", statuses=[404], ok=RetryRuleDeletedOutput,
        ok_description="The deleted rule's id.")
    def delete(self, request, rule_id: str):
        rule = self.get_or_404(RetryRule, rule_id, "retry_rule")
        rules.retry_rule_delete(rule=rule)
        return Response({"id": rule_id, "object": "retry_rule", "deleted": True})
