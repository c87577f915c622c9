"""What the OpenAPI schema (/v1/schema, drf-spectacular) says beyond what it reads from the
serializers: the statuses each operation can answer with, the headers, and the ranges that
services check with their own error codes (money.parse_amount, cards.validate_card) rather
than the serializers.

Every text here is for merchants: code docstrings are kept out of the schema
(DISABLE_DOCSTRING_DESCRIPTIONS), so each operation, component and field says what it says
through `extend_schema`, `extend_schema_serializer` and `help_text`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

# Printable ASCII, not starting with a space (HTTP drops leading blanks of a header value).
# The server takes any printable characters; this is what a client can send safely.
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 255,
                          "pattern": "^[!-~][ -~]*$"}

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", IDEMPOTENCY_KEY_SCHEMA, OpenApiParameter.HEADER, required=False,
    description="Makes this POST safe to retry: a retry with the same key and the same body "
                "gets the first response again (with `Idempotent-Replayed: true`) instead of "
                "doing the work twice. The same key with another body is a 400 "
                "(`idempotency_key_reused`); while the first request is still running, a 409 "
                "(`idempotency_key_in_use`). Keys are scoped to the API key's account and "
                "mode and kept at least 24 hours. An answer that changed nothing (a validation "
                "error, a wrong key, a rate limit, …) is not kept, so a corrected request may "
                "reuse the key.",
    examples=[OpenApiExample("An order's payment", value="order-123-payment")],
)

# Which answers are stored under an Idempotency-Key and can therefore come back replayed.
_REPLAYABLE = [200, 202, 402, 409, 500, 503]
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed", {"type": "string", "enum": ["true"]}, OpenApiParameter.HEADER,
    response=_REPLAYABLE,
    description="`true` when this response is the stored answer to an earlier request with "
                "the same Idempotency-Key; absent otherwise.",
)
# A retry of a request whose process died is answered from what that request did.
_RECOVERABLE = [200, 202, 402, 503]
IDEMPOTENT_RECOVERED = OpenApiParameter(
    "Idempotent-Recovered", {"type": "string", "enum": ["true"]}, OpenApiParameter.HEADER,
    response=_RECOVERABLE,
    description="`true` when the first request with this Idempotency-Key ended without an "
                "answer (its process died) and this response says what it did: the object "
                "as it is now. Later retries replay this answer. Absent otherwise.",
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After", {"type": "integer", "minimum": 1}, OpenApiParameter.HEADER, required=True,
    response=[429], description="Seconds to wait before sending another request.",
)
WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate", {"type": "string"}, OpenApiParameter.HEADER, required=True,
    response=[401], description='Always `Bearer realm="api"`.',
)
ALLOW = OpenApiParameter(
    "Allow", {"type": "string"}, OpenApiParameter.HEADER, required=True, response=[405],
    description="The methods this path accepts, comma-separated.",
)

LIMIT = OpenApiParameter(
    "limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
    description="How many objects to return, 1 to 100 (default 10).")
STARTING_AFTER = OpenApiParameter(
    "starting_after", str,
    description="A cursor: the id of the last object of the previous page. The page starts "
                "with the object created just before it.")
LIST_PARAMS = [LIMIT, STARTING_AFTER]

# --- error responses -----------------------------------------------------------------------
ERROR_DESCRIPTIONS = {
    400: "The request is invalid: malformed JSON, or a missing, unknown or invalid field or "
         "query parameter (`type: invalid_request_error`, `param` names it); or an "
         "Idempotency-Key reused with another body (`type: idempotency_error`).",
    401: "No API key, a malformed `Authorization` header, or a wrong or revoked key "
         "(`type: authentication_error`).",
    402: "The card was declined (`type: card_error`, with `decline_code`); the failed payment "
         "is in `payment`. Do not retry with the same card unless the decline is temporary.",
    404: "No such object in this account and mode (`code: resource_missing`); another "
         "account's or mode's id is a 404 too.",
    405: "The method is not allowed on this path; the `Allow` header lists those that are.",
    406: "The `Accept` header excludes JSON, the only format the API answers in.",
    409: "The object's status does not allow this change (`code: payment_state_invalid`), or a "
         "request with the same Idempotency-Key is still running "
         "(`code: idempotency_key_in_use`).",
    413: "The request body is larger than the server accepts (`code: request_too_large`).",
    415: "The body is not sent as JSON (`Content-Type: application/json`).",
    429: "Too many requests for this account (`type: rate_limit_error`); retry after "
         "`Retry-After` seconds.",
    500: "An error on Switchyard's side (`type: api_error`); it has been logged. The body never "
         "holds a stack trace.",
    503: "No provider could process the request right now and provably nothing was charged, "
         "captured, voided or refunded (`type: api_error`); retry later with the same "
         "Idempotency-Key. The payment or refund concerned, if any, is in `payment` or "
         "`refund`.",
}

ERROR_EXAMPLES = {
    400: {"error": {"type": "invalid_request_error", "code": "parameter_missing",
                    "message": "amount: This field is required.", "param": "amount"}},
    401: {"error": {"type": "authentication_error", "code": "invalid_api_key",
                    "message": "Invalid or revoked API key.", "param": None}},
    404: {"error": {"type": "invalid_request_error", "code": "resource_missing",
                    "message": "No such payment: 'pay_123'", "param": None}},
    409: {"error": {"type": "invalid_request_error", "code": "payment_state_invalid",
                    "message": "This payment is succeeded; only a payment that "
                               "requires_capture can be captured.", "param": None}},
    429: {"error": {"type": "rate_limit_error", "code": "rate_limit",
                    "message": "Too many requests; retry after the Retry-After delay.",
                    "param": None}},
}

ERROR_EXAMPLE_NAMES = {400: "A missing field", 401: "A wrong key", 404: "No such payment",
                       409: "A payment in the wrong status", 429: "Too many requests"}

# Answers every /v1 operation can give, whatever it does (400 too: a query parameter or a
# cookie holding what cannot be stored, such as a NUL character, is refused before the view).
EVERY_OPERATION = (400, 401, 405, 406, 429, 500)
# And every POST: a body (413, 415) and an Idempotency-Key (409 while it is in use).
EVERY_POST = (409, 413, 415)


def error_response(status: int) -> OpenApiResponse:
    from payments.api.serializers import ErrorOutput

    examples = [OpenApiExample(ERROR_EXAMPLE_NAMES[status], value=ERROR_EXAMPLES[status],
                               response_only=True, status_codes=[status])
                ] if status in ERROR_EXAMPLES else []
    return OpenApiResponse(ErrorOutput, description=ERROR_DESCRIPTIONS[status],
                           examples=examples)


def merchant_operation(*, operation_id: str, method: str, summary: str, description: str,
                       ok, ok_description: str, statuses: Iterable[int] = (),
                       accepted_description: str | None = None, request=None,
                       parameters: Sequence[OpenApiParameter] = (),
                       examples: Sequence[OpenApiExample] = ()):
    """`extend_schema` for one /v1 operation: `ok` is its 200 body; `statuses` the errors
    this operation adds to those every operation (and every POST) can return; with
    `accepted_description`, a 202 with the same body as the 200."""
    codes = set(EVERY_OPERATION) | set(statuses)
    params = [*parameters, RETRY_AFTER, WWW_AUTHENTICATE, ALLOW]
    if method == "post":
        codes |= set(EVERY_POST)
        params += [IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IDEMPOTENT_RECOVERED]
    responses = {200: OpenApiResponse(ok, description=ok_description)}
    if accepted_description:
        responses[202] = OpenApiResponse(ok, description=accepted_description)
    responses.update({code: error_response(code) for code in sorted(codes)})
    return extend_schema(operation_id=operation_id, summary=summary, description=description,
                         request=request, responses=responses, parameters=params,
                         examples=list(examples))


# --- constraints that services check -------------------------------------------------------
class AmountFieldSchema(OpenApiSerializerFieldExtension):
    """An amount: its range is money.parse_amount's (1 to MAX_PAYMENT_AMOUNT)."""

    target_class = "payments.api.serializers.AmountField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "integer", "minimum": 1, "maximum": settings.MAX_PAYMENT_AMOUNT}


class ExpYearFieldSchema(OpenApiSerializerFieldExtension):
    """cards.validate_card refuses an expired card and years more than 50 years ahead."""

    target_class = "payments.api.serializers.ExpYearField"

    def map_serializer_field(self, auto_schema, direction):
        year = dt.date.today().year
        return {"type": "integer", "minimum": year, "maximum": year + 50}


class StrictSerializerSchema(OpenApiSerializerExtension):
    """Request bodies reject unknown fields at every level (StrictSerializer), so their
    schemas are closed: `additionalProperties: false`."""

    target_class = "payments.api.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


# --- examples ------------------------------------------------------------------------------
CARD_EXAMPLE = {"brand": "visa", "last4": "4242", "bin": "424242", "exp_month": 12,
                "exp_year": 2030, "fingerprint": "Xt5EWLLDS7FJjR1c"}
PAYMENT_METHOD_EXAMPLE = {
    "id": "pm_2B9xQn4s8F1kLm3P", "object": "payment_method", "type": "card",
    "card": CARD_EXAMPLE,
    "billing_details": {"name": "Ada Lovelace", "email": "ada@example.com",
                        "address": {"country": "GB"}},
    "created": 1767225600, "livemode": False,
}
PAYMENT_EXAMPLE: dict[str, Any] = {
    "id": "pay_2B9xR1d7Hq0aZt6W", "object": "payment", "amount": 1050, "currency": "USD",
    "status": "requires_capture", "capture_method": "manual", "amount_capturable": 1050,
    "amount_captured": 0, "amount_refunded": 0, "payment_method": "pm_2B9xQn4s8F1kLm3P",
    "provider": "stripe-main",
    "attempts": [{"id": "att_2B9xR1eQ0c5YbN2u", "provider": "stripe-main",
                  "status": "authorized", "decline_code": None, "created": 1767225601}],
    "routing": {"rule": None, "strategy": "default_order",
                "candidates": [{"account": "stripe-main", "score": 1},
                               {"account": "adyen-main", "score": 2}],
                "skipped": [], "selected": "stripe-main",
                "order": ["stripe-main", "adyen-main"]},
    "last_error": None, "description": "Order 123", "reference": "order-123",
    "metadata": {"order_id": "123"}, "created": 1767225601, "updated": 1767225602,
    "livemode": False,
}
DECLINED_EXAMPLE = {
    "error": {"type": "card_error", "code": "card_declined",
              "message": "The card has insufficient funds.", "param": None,
              "decline_code": "insufficient_funds"},
    "payment": {**PAYMENT_EXAMPLE, "status": "failed", "capture_method": "automatic",
                "amount_capturable": 0,
                "attempts": [{**PAYMENT_EXAMPLE["attempts"][0], "status": "declined",
                              "decline_code": "insufficient_funds"}],
                "last_error": {"code": "card_declined", "decline_code": "insufficient_funds",
                               "message": "The card has insufficient funds."}},
}
REFUND_EXAMPLE = {
    "id": "re_2B9xT0pLw3Vn8Kd1", "object": "refund", "payment": "pay_2B9xR1d7Hq0aZt6W",
    "amount": 500, "currency": "USD", "status": "succeeded",
    "reason": "requested_by_customer", "metadata": {}, "created": 1767312000,
    "livemode": False,
}


def list_example(item: dict) -> dict:
    return {"object": "list", "data": [item], "has_more": False}
