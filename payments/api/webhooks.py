"""`/v1/webhook_endpoints` and `/v1/events`: where a merchant's events go, and the events.

Same conventions as every /v1 resource (docs/api.md): strict bodies, one error shape, scoped
to the caller's merchant and mode (another merchant's or mode's id is a 404), cursor
pagination, idempotent POSTs. An endpoint's signing secret is in the answers of create and
roll only; under an Idempotency-Key it is stored encrypted (`SecretAnswerMixin`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response

from payments.api.fields import (
    MetadataField,
    StrictBooleanField,
    StrictCharField,
    UnixTimeField,
    constant,
)
from payments.api.pagination import check_params, paginate_by_pk, parse_int_param
from payments.api.routing import object_constant
from payments.api.schema import LIST_PARAMS, PAYMENT_EXAMPLE, list_example, merchant_operation
from payments.api.serializers import (
    METADATA_HELP,
    PaymentOutput,
    RefundOutput,
    StrictSerializer,
    list_output,
)
from payments.api.views import CREATED_MAX, MerchantView
from payments.errors import ResourceMissing
from payments.events import MERCHANT_EVENT_TYPES
from payments.models import DeliveryStatus, WebhookDeliveryAttempt, WebhookEndpoint, WebhookOutbox
from payments.services.merchant_events import (
    event_created_filter,
    event_redeliver_by_hand,
    event_redelivery_count,
    event_type_filter,
)
from payments.services.webhook_endpoints import (
    MAX_ENABLED_EVENTS,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_roll_secret,
    webhook_endpoint_update,
)
from payments.services.webhook_urls import MAX_URL_LENGTH
from providers import crypto

# Enum values (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] names them).
ENABLED_EVENTS = ("*", *MERCHANT_EVENT_TYPES)
EVENT_TYPE_FILTERS = (*MERCHANT_EVENT_TYPES, "payment.*", "refund.*")
ENDPOINT_STATUSES = ("enabled", "disabled")

ENABLED_EVENTS_HELP = ('The event types sent to this endpoint, or `["*"]` for all of them '
                       '(today\'s and those added later). Duplicates are dropped.')
URL_HELP = ("Where events are POSTed. It must resolve to public internet addresses only; "
            "live mode requires https.")


# --- fields -----------------------------------------------------------------------------------
@extend_schema_field({"type": "array", "minItems": 1, "maxItems": MAX_ENABLED_EVENTS,
                      "items": {"type": "string", "enum": list(ENABLED_EVENTS)}})
class EnabledEventsField(serializers.Field):
    """A JSON array of strings; which strings is webhook_endpoints.checked_enabled_events'."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise serializers.ValidationError("Must be a list of event types.", code="invalid")
        return data

    def to_representation(self, value: list[str]) -> list[str]:
        return value


@extend_schema_field({"type": "integer", "nullable": True})
class NullableUnixTimeField(UnixTimeField):
    def to_representation(self, value: Any) -> int | None:
        return None if value is None else int(value.timestamp())


# --- webhook endpoints: requests --------------------------------------------------------------
@extend_schema_serializer(description="A URL to POST this account's events to.")
class WebhookEndpointCreateInput(StrictSerializer):
    url = StrictCharField(max_length=MAX_URL_LENGTH, help_text=URL_HELP)
    enabled_events = EnabledEventsField(help_text=ENABLED_EVENTS_HELP)
    description = StrictCharField(max_length=500, required=False, allow_blank=True, default="",
                                  help_text="Free text, for you.")
    metadata = MetadataField(required=False, default=dict, help_text=METADATA_HELP)


@extend_schema_serializer(description="The fields to change; those not sent stay as they are.")
class WebhookEndpointUpdateInput(StrictSerializer):
    url = StrictCharField(max_length=MAX_URL_LENGTH, required=False, help_text=URL_HELP)
    enabled_events = EnabledEventsField(required=False, help_text=ENABLED_EVENTS_HELP)
    description = StrictCharField(max_length=500, required=False, allow_blank=True)
    metadata = MetadataField(required=False, help_text=METADATA_HELP + " Replaces the "
                             "endpoint's metadata as a whole.")
    disabled = StrictBooleanField(required=False,
                                  help_text="`true` stops deliveries to the endpoint; `false` "
                                            "enables it again (also after Switchyard disabled "
                                            "it), clearing `disabled_reason` and "
                                            "`failing_since`.")


@extend_schema_serializer(description="Nothing to send: the body is empty (or `{}`).")
class WebhookEndpointRollSecretInput(StrictSerializer):
    pass


@extend_schema_serializer(description="Nothing to send: the body is empty (or `{}`).")
class EventRedeliverInput(StrictSerializer):
    pass


# --- webhook endpoints: responses -------------------------------------------------------------
@extend_schema_serializer(description="Where this account's events are POSTed. The signing "
                                      "secret is never shown here: only by create and "
                                      "roll_secret, once.")
class WebhookEndpointOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`we_…`")
    object = object_constant("webhook_endpoint", "WebhookEndpoint")
    url = serializers.CharField()
    description = serializers.CharField()
    enabled_events = EnabledEventsField(help_text=ENABLED_EVENTS_HELP)
    metadata = MetadataField(help_text=METADATA_HELP)
    status = serializers.SerializerMethodField()
    disabled_reason = serializers.SerializerMethodField()
    failing_since = NullableUnixTimeField(
        help_text="Since when every delivery to the endpoint has failed (Unix seconds), or "
                  "null while deliveries succeed. After 3 days of failures the endpoint is "
                  "disabled.")
    created = UnixTimeField(source="created_at", help_text="Unix seconds.")
    livemode = serializers.BooleanField()

    @extend_schema_field({"type": "string", "enum": list(ENDPOINT_STATUSES),
                          "description": "`disabled`: no events are sent to it (see "
                                         "`disabled_reason`)."})
    def get_status(self, endpoint: WebhookEndpoint) -> str:
        return "disabled" if endpoint.disabled else "enabled"

    @extend_schema_field({"type": "string", "nullable": True,
                          "description": "Why Switchyard disabled the endpoint (e.g. every "
                                         "delivery failed for 3 days); null when it is enabled "
                                         "or you disabled it."})
    def get_disabled_reason(self, endpoint: WebhookEndpoint) -> str | None:
        return endpoint.disabled_reason or None


@extend_schema_serializer(description="A webhook endpoint with its signing secret, shown this "
                                      "once: store it now.")
class WebhookEndpointWithSecretOutput(WebhookEndpointOutput):
    object = object_constant("webhook_endpoint", "WebhookEndpointWithSecret")
    secret = serializers.SerializerMethodField()

    @extend_schema_field({"type": "string", "pattern": "^whsec_",
                          "description": "The signing secret, `whsec_…`: verify each "
                                         "delivery's `Switchyard-Signature` with it. Shown "
                                         "only in this answer."})
    def get_secret(self, endpoint: WebhookEndpoint) -> str:
        return str(self.context["secret"])


class WebhookEndpointDeletedOutput(serializers.Serializer):
    id = serializers.CharField()
    object = object_constant("webhook_endpoint", "WebhookEndpointDeleted")
    deleted = serializers.BooleanField()


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> Response:
    return Response(WebhookEndpointWithSecretOutput(endpoint, context={"secret": secret}).data)


class SecretAnswerMixin:
    """Answers holding a signing secret are stored under an Idempotency-Key with the secret
    encrypted (as the endpoint keeps it), bound to the endpoint's id; a replay decrypts it."""

    @staticmethod
    def _associated(body: dict[str, Any]) -> str:
        return f"idempotent-answer:{body.get('id', '')}"

    def seal(self, body: object) -> object:
        if isinstance(body, dict) and isinstance(body.get("secret"), str):
            key_id, blob = crypto.encrypt(body["secret"], associated=self._associated(body))
            return {**body, "secret": {"key": key_id,
                                       "sealed": base64.b64encode(blob).decode()}}
        return body

    def unseal(self, body: object) -> object:
        if isinstance(body, dict) and isinstance(body.get("secret"), dict):
            sealed = body["secret"]
            secret = crypto.decrypt(sealed["key"], base64.b64decode(sealed["sealed"]),
                                    associated=self._associated(body))
            return {**body, "secret": secret}
        return body


# --- webhook endpoints: views -----------------------------------------------------------------
ENDPOINT_EXAMPLE: dict[str, Any] = {
    "id": "we_2B9xV3kPq7Lm0Zs4", "object": "webhook_endpoint",
    "url": "https://shop.example.com/switchyard/webhooks", "description": "Order service",
    "enabled_events": ["payment.succeeded", "payment.failed", "refund.succeeded"],
    "metadata": {}, "status": "enabled", "disabled_reason": None, "failing_since": None,
    "created": 1767225600, "livemode": False,
}
SECRET_EXAMPLE = {**ENDPOINT_EXAMPLE,
                  "secret": "whsec_4bJ0yq1Vt2n8cXkP9wR3sL5mH7dF6gA0eZ1uT8iO2pY"}
ENDPOINTS = ("Switchyard POSTs each event of this account and mode that an endpoint's "
             "`enabled_events` name to its URL, signed with its secret "
             "(`Switchyard-Signature`), retrying for up to 3 days until it answers 2xx.")


class WebhookEndpointListView(SecretAnswerMixin, MerchantView):
    @merchant_operation(
        operation_id="webhook_endpoints_create", method="post",
        summary="Create a webhook endpoint",
        description=ENDPOINTS + " The answer holds the endpoint's signing secret, shown this "
                    "once. A URL that resolves to a loopback, private, link-local, multicast "
                    "or reserved address is refused (`url_invalid`).",
        request=WebhookEndpointCreateInput, ok=WebhookEndpointWithSecretOutput,
        ok_description="The endpoint, with its signing secret (shown only now).",
        examples=[OpenApiExample("Some payment and refund events", request_only=True, value={
                      "url": "https://shop.example.com/switchyard/webhooks",
                      "enabled_events": ["payment.succeeded", "payment.failed",
                                         "refund.succeeded"],
                      "description": "Order service"}),
                  OpenApiExample("The endpoint and its secret", response_only=True,
                                 value=SECRET_EXAMPLE)])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(WebhookEndpointCreateInput)
        endpoint, secret = webhook_endpoint_create(
            merchant_id=self.merchant.id, livemode=self.livemode, url=data["url"],
            enabled_events=data["enabled_events"], description=data["description"],
            metadata=data["metadata"], actor=self.actor)
        return _with_secret(endpoint, secret)

    def recover(self, object_id: str) -> Response:
        endpoint = self.get_or_404(WebhookEndpoint, object_id, "webhook_endpoint")
        return _with_secret(endpoint, endpoint.stored_secrets()["current"])

    @merchant_operation(
        operation_id="webhook_endpoints_list", method="get", summary="List webhook endpoints",
        description="Webhook endpoints of this account and mode, newest first. " + ENDPOINTS,
        parameters=LIST_PARAMS, ok=list_output(WebhookEndpointOutput, "WebhookEndpointList"),
        ok_description="One page of webhook endpoints.",
        examples=[OpenApiExample("A page", response_only=True,
                                 value=list_example(ENDPOINT_EXAMPLE))])
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(WebhookEndpoint), WebhookEndpointOutput,
                                  request.query_params)


class WebhookEndpointDetailView(MerchantView):
    @merchant_operation(
        operation_id="webhook_endpoints_retrieve", method="get",
        summary="Retrieve a webhook endpoint",
        description="A webhook endpoint by its id (without its secret).", statuses=[404],
        ok=WebhookEndpointOutput, ok_description="The webhook endpoint.")
    def get(self, request, endpoint_id: str):
        return Response(WebhookEndpointOutput(
            self.get_or_404(WebhookEndpoint, endpoint_id, "webhook_endpoint")).data)

    @merchant_operation(
        operation_id="webhook_endpoints_update", method="post",
        summary="Update a webhook endpoint",
        description="Changes only the fields sent. A new `url` is checked as on create. "
                    "`disabled: false` enables an endpoint again, also one Switchyard "
                    "disabled after days of failed deliveries.",
        request=WebhookEndpointUpdateInput, ok=WebhookEndpointOutput, statuses=[404],
        ok_description="The webhook endpoint as updated.",
        examples=[OpenApiExample("Enable it again", request_only=True,
                                 value={"disabled": False})])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, endpoint_id: str):
        data = self.parse(WebhookEndpointUpdateInput)
        endpoint = self.get_or_404(WebhookEndpoint, endpoint_id, "webhook_endpoint")
        return Response(WebhookEndpointOutput(
            webhook_endpoint_update(endpoint=endpoint, actor=self.actor, **data)).data)

    def recover(self, object_id: str) -> Response:
        return Response(WebhookEndpointOutput(
            self.get_or_404(WebhookEndpoint, object_id, "webhook_endpoint")).data)

    @merchant_operation(
        operation_id="webhook_endpoints_delete", method="delete",
        summary="Delete a webhook endpoint",
        description="Deletes a webhook endpoint: nothing more is sent to it, including "
                    "deliveries still being retried. The events stay in /v1/events.",
        statuses=[404], ok=WebhookEndpointDeletedOutput,
        ok_description="The deleted endpoint's id.")
    def delete(self, request, endpoint_id: str):
        endpoint = self.get_or_404(WebhookEndpoint, endpoint_id, "webhook_endpoint")
        webhook_endpoint_delete(endpoint=endpoint, actor=self.actor)
        return Response({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})


class WebhookEndpointRollSecretView(SecretAnswerMixin, MerchantView):
    @merchant_operation(
        operation_id="webhook_endpoints_roll_secret", method="post",
        summary="Roll a webhook endpoint's secret",
        description="Replaces the endpoint's signing secret with a new one, shown this once. "
                    "For 24 hours deliveries are signed with both (two `v1=` signatures), so "
                    "you can deploy the new secret before the old one stops working. Rolling "
                    "again within those hours retires the oldest secret at once.",
        request=WebhookEndpointRollSecretInput, ok=WebhookEndpointWithSecretOutput,
        statuses=[404], ok_description="The endpoint, with its new signing secret (shown "
                                       "only now).",
        examples=[OpenApiExample("The new secret", response_only=True, value=SECRET_EXAMPLE)])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, endpoint_id: str):
        self.parse(WebhookEndpointRollSecretInput)
        endpoint = self.get_or_404(WebhookEndpoint, endpoint_id, "webhook_endpoint")
        endpoint, secret = webhook_endpoint_roll_secret(endpoint=endpoint, actor=self.actor)
        return _with_secret(endpoint, secret)

    def recover(self, object_id: str) -> Response:
        endpoint = self.get_or_404(WebhookEndpoint, object_id, "webhook_endpoint")
        return _with_secret(endpoint, endpoint.stored_secrets()["current"])


# --- delivery attempts ------------------------------------------------------------------------
# A try's row id is sequential; the API shows it as a random-looking id (the contract's ids are
# never sequential): the row id in one AES block under a key derived from SECRET_KEY, which
# turns back into the row id for `starting_after`.
ATTEMPT_PREFIX = "wda_"


def _attempt_cipher() -> Cipher[modes.ECB]:
    key = hashlib.sha256(b"switchyard webhook delivery attempt ids\0"
                         + settings.SECRET_KEY.encode()).digest()
    # ECB over exactly one block is a keyed permutation of 128-bit values: what an id needs
    return Cipher(algorithms.AES(key), modes.ECB())


def attempt_public_id(pk: int) -> str:
    encryptor = _attempt_cipher().encryptor()
    block = encryptor.update(pk.to_bytes(8, "big") + bytes(8)) + encryptor.finalize()
    return ATTEMPT_PREFIX + base64.b32encode(block).decode().rstrip("=").lower()


def attempt_pk(public_id: str) -> int | None:
    """The row id of `attempt_public_id`'s answer, or None for anything else."""
    if not public_id.startswith(ATTEMPT_PREFIX) or len(public_id) != len(ATTEMPT_PREFIX) + 26:
        return None
    try:
        block = base64.b32decode(public_id[len(ATTEMPT_PREFIX):].upper() + "======")
    except (binascii.Error, ValueError):
        return None
    decryptor = _attempt_cipher().decryptor()
    plain = decryptor.update(block) + decryptor.finalize()
    if plain[8:] != bytes(8):  # not one of ours
        return None
    return int.from_bytes(plain[:8], "big")


@extend_schema_serializer(description="One try at delivering an event to the endpoint.")
class DeliveryAttemptOutput(serializers.Serializer):
    id = serializers.SerializerMethodField()
    object = constant("webhook_delivery_attempt")
    event = serializers.CharField(source="delivery.event.event_id", help_text="`evt_…`")
    event_type = serializers.CharField(source="delivery.event.type")
    created = UnixTimeField(source="started_at", help_text="When the try started (Unix "
                                                           "seconds).")
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The HTTP status your endpoint answered, or null when no "
                                   "answer came (see `error`).")
    succeeded = serializers.SerializerMethodField()
    latency_ms = serializers.IntegerField(help_text="How long the try took, in milliseconds.")
    error = serializers.SerializerMethodField()
    response_excerpt = serializers.SerializerMethodField()
    delivery_status = serializers.ChoiceField(
        source="delivery.status", choices=DeliveryStatus.choices,
        help_text="Where the event's delivery to this endpoint stands now: `pending` (another "
                  "try is due), `succeeded`, or `failed` (no more tries).")

    @extend_schema_field({"type": "string", "pattern": "^wda_"})
    def get_id(self, attempt: WebhookDeliveryAttempt) -> str:
        return attempt_public_id(attempt.pk)

    @extend_schema_field({"type": "boolean", "description": "Whether the endpoint answered "
                                                            "2xx."})
    def get_succeeded(self, attempt: WebhookDeliveryAttempt) -> bool:
        return attempt.status_code is not None and 200 <= attempt.status_code < 300

    @extend_schema_field({"type": "string", "nullable": True,
                          "description": "Why the try failed without an HTTP answer, or what "
                                         "was wrong with it (a timeout, a refused connection, "
                                         "a redirect, which is not followed); null otherwise."})
    def get_error(self, attempt: WebhookDeliveryAttempt) -> str | None:
        return attempt.error or None

    @extend_schema_field({"type": "string", "nullable": True,
                          "description": "The start of your endpoint's answer body, or null."})
    def get_response_excerpt(self, attempt: WebhookDeliveryAttempt) -> str | None:
        return attempt.response_excerpt or None


class WebhookEndpointAttemptsView(MerchantView):
    @merchant_operation(
        operation_id="webhook_endpoints_delivery_attempts", method="get",
        summary="List an endpoint's delivery attempts",
        description="Every try at delivering an event to this endpoint, newest first: when, "
                    "what it answered and how fast. Shows why deliveries fail, and why "
                    "Switchyard disabled an endpoint.",
        parameters=[*LIST_PARAMS,
                    OpenApiParameter("event", str,
                                     description="Only the tries of this event, `evt_…`.")],
        statuses=[404], ok=list_output(DeliveryAttemptOutput, "DeliveryAttemptList"),
        ok_description="One page of delivery attempts.")
    def get(self, request, endpoint_id: str):
        params = request.query_params
        check_params(params, {"limit", "starting_after", "event"})
        endpoint = self.get_or_404(WebhookEndpoint, endpoint_id, "webhook_endpoint")
        tries = WebhookDeliveryAttempt.objects.filter(endpoint=endpoint).select_related(
            "delivery__event")
        if "event" in params:
            tries = tries.filter(delivery__event__event_id=params["event"])
        items, has_more = paginate_by_pk(
            tries, params, cursor=lambda public_id: {"pk": attempt_pk(public_id)})
        return Response({"object": "list", "has_more": has_more,
                         "data": DeliveryAttemptOutput(items, many=True).data})


# --- events -----------------------------------------------------------------------------------
@extend_schema_field(PolymorphicProxySerializer(
    component_name="EventObject", serializers={"payment": PaymentOutput, "refund": RefundOutput},
    resource_type_field_name="object"))
class EventObjectField(serializers.JSONField):
    """The payment or refund as the event recorded it."""


class EventDataOutput(serializers.Serializer):
    object = EventObjectField(help_text="The payment or refund as the API returned it when "
                                        "the event happened.")


@extend_schema_serializer(description="Something that happened to a payment or a refund. "
                                      "Webhooks carry exactly this body; a redelivery carries "
                                      "the same id.")
class EventOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`evt_…`: deduplicate deliveries by it.")
    object = constant("event")
    type = serializers.ChoiceField(choices=MERCHANT_EVENT_TYPES)
    created = serializers.IntegerField(help_text="Unix seconds.")
    livemode = serializers.BooleanField()
    # DRF's metaclass pops declared fields off the class, so this does not hide `.data`
    data = EventDataOutput()  # type: ignore[assignment]


class EventRedeliveryOutput(serializers.Serializer):
    id = serializers.CharField(help_text="The event, `evt_…`.")
    object = constant("event_redelivery")
    deliveries = serializers.IntegerField(
        help_text="How many endpoints the event is being sent to again: your enabled "
                  "endpoints whose `enabled_events` name its type.")


EVENT_EXAMPLE = {"id": "evt_2B9xW8mTq1Rn4Ja6", "object": "event", "type": "payment.succeeded",
                 "created": 1767225602, "livemode": False,
                 "data": {"object": {**PAYMENT_EXAMPLE, "status": "succeeded",
                                     "capture_method": "automatic", "amount_capturable": 0,
                                     "amount_captured": 1050,
                                     "attempts": [{**PAYMENT_EXAMPLE["attempts"][0],
                                                   "status": "captured"}]}}}
CREATED_FILTER = {"type": "integer", "minimum": 0, "maximum": CREATED_MAX}


class EventListView(MerchantView):
    @merchant_operation(
        operation_id="events_list", method="get", summary="List events",
        description="Events of this account and mode, newest first, optionally filtered: "
                    "what webhooks carry (or would have carried), for catching up after "
                    "downtime.",
        parameters=[
            *LIST_PARAMS,
            OpenApiParameter("type", str, enum=list(EVENT_TYPE_FILTERS),
                             description="Only events of this type, or of every type of a "
                                         "family: `payment.*`, `refund.*`."),
            OpenApiParameter("object_id", str,
                             description="Only the events of this payment or refund "
                                         "(`pay_…`, `re_…`)."),
            OpenApiParameter("created[gte]", CREATED_FILTER,
                             description="Only events created at or after this time (Unix "
                                         "seconds)."),
            OpenApiParameter("created[lte]", CREATED_FILTER,
                             description="Only events created at or before this time (Unix "
                                         "seconds)."),
        ],
        ok=list_output(EventOutput, "EventList"), ok_description="One page of events.",
        examples=[OpenApiExample("A page", response_only=True,
                                 value=list_example(EVENT_EXAMPLE))])
    def get(self, request):
        params = request.query_params
        check_params(params, {"limit", "starting_after", "type", "object_id", "created[gte]",
                              "created[lte]"})
        events = self.scoped(WebhookOutbox)
        if "type" in params:
            events = event_type_filter(events, params["type"])
        if "object_id" in params:
            events = events.filter(object_id=params["object_id"])
        events = event_created_filter(
            events, gte=parse_int_param(params, "created[gte]", low=0, high=CREATED_MAX),
            lte=parse_int_param(params, "created[lte]", low=0, high=CREATED_MAX))
        items, has_more = paginate_by_pk(events.only("payload"), params,
                                         cursor=lambda event_id: {"event_id": event_id})
        return Response({"object": "list", "has_more": has_more,
                         "data": [event.payload for event in items]})


def _event_or_404(view: MerchantView, event_id: str) -> WebhookOutbox:
    event = view.scoped(WebhookOutbox).filter(event_id=event_id).first()
    if event is None:
        raise ResourceMissing(f"No such event: {event_id[:60]!r}")
    return event


class EventDetailView(MerchantView):
    @merchant_operation(
        operation_id="events_retrieve", method="get", summary="Retrieve an event",
        description="An event by its id: the very body its webhooks carry.", statuses=[404],
        ok=EventOutput, ok_description="The event.",
        examples=[OpenApiExample("A payment succeeded", response_only=True,
                                 value=EVENT_EXAMPLE)])
    def get(self, request, event_id: str):
        return Response(_event_or_404(self, event_id).payload)


class EventRedeliverView(MerchantView):
    @merchant_operation(
        operation_id="events_redeliver", method="post", summary="Redeliver an event",
        description="Sends the event again, with the same id and body, to each of your "
                    "enabled endpoints whose `enabled_events` name its type: a new round of "
                    "tries (retried for up to 3 days), whether or not earlier deliveries "
                    "succeeded. Deduplicate by the event id.",
        request=EventRedeliverInput, ok=EventRedeliveryOutput, statuses=[404],
        ok_description="How many endpoints the event is being sent to again.",
        examples=[OpenApiExample("Sent to two endpoints again", response_only=True,
                                 value={"id": EVENT_EXAMPLE["id"],
                                        "object": "event_redelivery", "deliveries": 2})])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, event_id: str):
        self.parse(EventRedeliverInput)
        event = _event_or_404(self, event_id)
        return _redelivery(event, event_redeliver_by_hand(event=event))

    def recover(self, object_id: str) -> Response:
        # the redelivery is recorded by the event's row id
        event = self.scoped(WebhookOutbox).filter(pk=int(object_id)).first()
        if event is None:
            raise ResourceMissing("No such event.")
        return _redelivery(event, event_redelivery_count(event))


def _redelivery(event: WebhookOutbox, deliveries: int) -> Response:
    return Response({"id": event.event_id, "object": "event_redelivery",
                     "deliveries": deliveries})
