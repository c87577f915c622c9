"""Thin views: parse input, call one service, serialize the result."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import cast

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiParameter
from rest_framework import status as http
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import money
from payments.api import serializers as s
from payments.api.errors import changed_nothing, exception_handler
from payments.api.pagination import check_params, paginate, parse_int_param
from payments.api.schema import (
    DECLINED_EXAMPLE,
    LIST_PARAMS,
    PAYMENT_EXAMPLE,
    PAYMENT_METHOD_EXAMPLE,
    REFUND_EXAMPLE,
    list_example,
    merchant_operation,
)
from payments.cards import validate_cvc
from payments.errors import InvalidRequest, PaymentsError, ResourceMissing
from payments.models import APIKey, Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from payments.services import idempotency
from payments.services.modifications import (
    payment_cancel,
    payment_capture,
    raise_for_failed_modification,
)
from payments.services.payment_methods import payment_method_create, payment_method_get
from payments.services.payments import (
    payment_confirm,
    payment_create,
    raise_for_recorded_failure,
)
from payments.services.refunds import raise_for_failed_refund, refund_create


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer sk_test_…|sk_live_…` in the schema."""

    target_class = "payments.api.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk_test_… | sk_live_…",
                "description": "A secret API key; its mode (test or live) decides which "
                               "objects the request sees."}


UNRESOLVED = ("The outcome is unknown: a provider may have charged the card, and Switchyard "
              "is finding out (status `unresolved`). Do not retry with a new Idempotency-Key; "
              "retrieve the payment later to see how it ended.")
DECLINED = OpenApiExample("Declined", value=DECLINED_EXAMPLE, response_only=True,
                          status_codes=[402])

# Upper bound of the created[gte|lte] filters (Unix seconds, far past any real date).
CREATED_MAX = 2**37


class MerchantView(APIView):
    """Base of every /v1 view: the caller's merchant and mode, scoped lookups, idempotent
    POSTs (`idempotent`)."""

    @property
    def merchant(self):
        return self.request.user

    @property
    def livemode(self) -> bool:
        # APIKeyAuthentication authenticates with an APIKey
        return cast(APIKey, self.request.auth).livemode

    @property
    def actor(self) -> str:
        """Who acts, for the audit log: the API key (by id; never the secret)."""
        return f"api_key:{cast(APIKey, self.request.auth).pk}"

    def parse(self, serializer_class, data=None) -> dict:
        serializer = serializer_class(data=self.request.data if data is None else data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def scoped(self, model):
        return model.objects.filter(merchant=self.merchant, livemode=self.livemode)

    def get_or_404(self, model, object_id: str, kind: str):
        obj = self.scoped(model).filter(id=object_id).first()
        if obj is None:
            raise ResourceMissing(f"No such {kind}: {object_id[:60]!r}")
        return obj

    def list_response(self, queryset, serializer_class, params) -> Response:
        """One page of `queryset` in the API's list envelope."""
        items, has_more = paginate(queryset, params)
        return Response({"object": "list", "has_more": has_more,
                         "data": serializer_class(items, many=True).data})

    # A view whose POST records the object it creates or starts changing (the services call
    # `idempotency.record_object`) defines `recover(object_id) -> Response`: the answer, from
    # that object as it is now, to a request of its that died. Without it, the key of a
    # request that died stays in flight (409).
    recover: Callable[[str], Response] | None = None

    # A view whose answer carries a secret shown once (a webhook endpoint's signing secret)
    # keeps that secret encrypted in the answer stored under an Idempotency-Key (kept 24 h,
    # and in backups): `seal` turns an answer into what is stored, `unseal` back into what
    # is sent.
    def seal(self, body: object) -> object:
        return body

    def unseal(self, body: object) -> object:
        return body

    def idempotent(self, handler, request, *args, **kwargs) -> Response:
        """Run a POST handler under the request's Idempotency-Key, if it sent one (docs/api.md,
        "Idempotency"): replay the stored answer of a request that did something; release
        the key after an answer that changed nothing, so that it can be retried; recover the
        key of a request that died."""
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return handler(request, *args, **kwargs)
        key = idempotency.validate_key(key)
        claim = idempotency.claim(
            merchant=self.merchant, livemode=self.livemode, key=key,
            fingerprint=idempotency.request_fingerprint(request.method, request.path,
                                                        request.data,
                                                        merchant_id=self.merchant.id),
            recover=None if self.recover is None else self._recovered_answer,
        )
        if claim.replay or claim.recovered:
            header = "Idempotent-Replayed" if claim.replay else "Idempotent-Recovered"
            return Response(self.unseal(claim.row.response_body),
                            status=claim.row.response_status, headers={header: "true"})
        try:
            with idempotency.running(claim.row):
                response = handler(request, *args, **kwargs)
        except Exception as exc:
            response = exception_handler(exc, {"view": self, "request": request})
            # An error that changed nothing releases the key. So does an unexpected one (a
            # 500) where the view records its object: `release` keeps the key, with this
            # answer, if the request got as far as writing its object.
            if changed_nothing(exc) or (self.recover is not None
                                        and not isinstance(exc, PaymentsError)):
                idempotency.release(claim.row, status=response.status_code,
                                    body=self.seal(response.data))
                return response
        idempotency.complete(claim.row, status=response.status_code,
                             body=self.seal(response.data))
        return response

    def _recovered_answer(self, object_id: str) -> tuple[int, object]:
        assert self.recover is not None  # offered to idempotency.claim only then
        try:
            response = self.recover(object_id)
        except PaymentsError as exc:  # the answer is an error: a decline, a failed capture
            response = exception_handler(exc, {"view": self, "request": self.request})
        return response.status_code, self.seal(response.data)


def _payment_response(payment: Payment) -> Response:
    code = http.HTTP_202_ACCEPTED if payment.status == PaymentStatus.UNRESOLVED else 200
    return Response(s.PaymentOutput(payment).data, status=code)


def _recovered_payment_response(payment: Payment) -> Response:
    """The answer to a payment request whose process died after it began: the payment as it
    is now, 202 while its outcome is not known yet (status sync finishes what the request
    left), a failed one as 402 or 503 like the live answer."""
    raise_for_recorded_failure(payment)
    pending = payment.status in (PaymentStatus.PROCESSING, PaymentStatus.UNRESOLVED)
    return Response(s.PaymentOutput(payment).data,
                    status=http.HTTP_202_ACCEPTED if pending else 200)


# --- payment methods ----------------------------------------------------------------------
class PaymentMethodListView(MerchantView):
    @merchant_operation(
        operation_id="payment_methods_create", method="post",
        summary="Vault a card",
        description="Tokenizes a card: the number is stored encrypted and the CVC only checked "
                    "(never stored). Use the returned `pm_…` id to pay.",
        request=s.PaymentMethodCreateInput, ok=s.PaymentMethodOutput,
        ok_description="The vaulted card.",
        examples=[
            OpenApiExample("A card with billing details", request_only=True, value={
                "type": "card",
                "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                         "cvc": "123"},
                "billing_details": {"name": "Ada Lovelace", "email": "ada@example.com",
                                    "address": {"country": "GB"}}}),
            OpenApiExample("The vaulted card", response_only=True,
                           value=PAYMENT_METHOD_EXAMPLE),
        ])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(s.PaymentMethodCreateInput)
        card = data["card"]
        pm = payment_method_create(
            merchant=self.merchant, livemode=self.livemode, number=card["number"],
            exp_month=card["exp_month"], exp_year=card["exp_year"], cvc=card.get("cvc"),
            billing_details=data.get("billing_details"),
        )
        return Response(s.PaymentMethodOutput(pm).data)

    def recover(self, object_id: str) -> Response:
        return Response(s.PaymentMethodOutput(
            self.get_or_404(PaymentMethod, object_id, "payment_method")).data)

    @merchant_operation(
        operation_id="payment_methods_list", method="get", summary="List vaulted cards",
        description="Vaulted cards of this account and mode, newest first.",
        parameters=LIST_PARAMS, ok=s.list_output(s.PaymentMethodOutput, "PaymentMethodList"),
        ok_description="One page of cards.",
        examples=[OpenApiExample("A page", response_only=True,
                                 value=list_example(PAYMENT_METHOD_EXAMPLE))])
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(PaymentMethod), s.PaymentMethodOutput, request.query_params)


class PaymentMethodDetailView(MerchantView):
    @merchant_operation(
        operation_id="payment_methods_retrieve", method="get", summary="Retrieve a card",
        description="A vaulted card by its id.", statuses=[404], ok=s.PaymentMethodOutput,
        ok_description="The vaulted card.")
    def get(self, request, pm_id: str):
        return Response(s.PaymentMethodOutput(
            self.get_or_404(PaymentMethod, pm_id, "payment_method")).data)


# --- payments -----------------------------------------------------------------------------

class PaymentListView(MerchantView):
    @merchant_operation(
        operation_id="payments_create", method="post", summary="Create a payment",
        description="Creates a payment in `requires_confirmation`. With `confirm: true` it is "
                    "authorized at once, on the provider account routing picks (or the one "
                    "`provider` pins), failing over to another account only when that is "
                    "safe; with `capture_method: automatic` it is captured too. A declined "
                    "card is a 402 with the failed payment in the body.",
        request=s.PaymentCreateInput, ok=s.PaymentOutput, statuses=[402, 404, 503],
        ok_description="The payment (`succeeded`, `requires_capture` or, without confirm, "
                       "`requires_confirmation`).",
        accepted_description=UNRESOLVED,
        examples=[
            OpenApiExample("Authorize now, capture later", request_only=True, value={
                "amount": 1050, "currency": "USD", "payment_method": "pm_2B9xQn4s8F1kLm3P",
                "confirm": True, "capture_method": "manual", "description": "Order 123",
                "reference": "order-123", "metadata": {"order_id": "123"}}),
            OpenApiExample("Authorized, waiting for capture", response_only=True,
                           value=PAYMENT_EXAMPLE),
            DECLINED,
        ])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(s.PaymentCreateInput)
        amount = money.parse_amount(data["amount"])
        currency = money.parse_currency(data["currency"])
        pm = None
        if "payment_method" in data:
            pm = payment_method_get(merchant=self.merchant, livemode=self.livemode,
                                    pm_id=data["payment_method"], param="payment_method")
        payment = payment_create(
            merchant=self.merchant,
            livemode=self.livemode,
            amount=amount,
            currency=currency,
            payment_method=pm,
            capture_method=data["capture_method"],
            description=data["description"],
            reference=data["reference"],
            metadata=data["metadata"],
            provider=data.get("provider"),
            confirm=data["confirm"],
            cvc=_cvc(data, pm, confirm=data["confirm"]),
        )
        return _payment_response(payment)

    def recover(self, object_id: str) -> Response:
        return _recovered_payment_response(self.get_or_404(Payment, object_id, "payment"))

    @merchant_operation(
        operation_id="payments_list", method="get", summary="List payments",
        description="Payments of this account and mode, newest first, optionally filtered.",
        parameters=[
            *LIST_PARAMS,
            OpenApiParameter("status", str, enum=PaymentStatus.values,
                             description="Only payments in this status."),
            OpenApiParameter("reference", str,
                             description="Only payments with this reference."),
            OpenApiParameter("created[gte]", {"type": "integer", "minimum": 0,
                                              "maximum": CREATED_MAX},
                             description="Only payments created at or after this time (Unix "
                                         "seconds)."),
            OpenApiParameter("created[lte]", {"type": "integer", "minimum": 0,
                                              "maximum": CREATED_MAX},
                             description="Only payments created at or before this time (Unix "
                                         "seconds)."),
        ],
        ok=s.list_output(s.PaymentOutput, "PaymentList"), ok_description="One page of payments.",
        examples=[OpenApiExample("A page", response_only=True,
                                 value=list_example(PAYMENT_EXAMPLE))])
    def get(self, request):
        params = request.query_params
        check_params(params, {"limit", "starting_after", "status", "reference",
                              "created[gte]", "created[lte]"})
        qs = self.scoped(Payment).select_related("provider_account").prefetch_related(
            "attempts__provider_account")
        if "status" in params:
            if params["status"] not in PaymentStatus.values:
                raise InvalidRequest(f"status must be one of {', '.join(PaymentStatus.values)}.",
                                     code="parameter_invalid", param="status")
            qs = qs.filter(status=params["status"])
        if "reference" in params:
            qs = qs.filter(reference=params["reference"])
        for name, lookup in (("created[gte]", "gte"), ("created[lte]", "lte")):
            seconds = parse_int_param(params, name, low=0, high=CREATED_MAX)
            if seconds is not None:
                moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
                if lookup == "lte":  # API times are whole seconds: include that whole second
                    moment += dt.timedelta(seconds=1) - dt.timedelta(microseconds=1)
                qs = qs.filter(**{f"created_at__{lookup}": moment})
        return self.list_response(qs, s.PaymentOutput, params)


class PaymentDetailView(MerchantView):
    @merchant_operation(
        operation_id="payments_retrieve", method="get", summary="Retrieve a payment",
        description="A payment by its id, with its attempts and routing decision.",
        statuses=[404], ok=s.PaymentOutput, ok_description="The payment.")
    def get(self, request, payment_id: str):
        return Response(s.PaymentOutput(self.get_or_404(Payment, payment_id, "payment")).data)


class PaymentConfirmView(MerchantView):
    @merchant_operation(
        operation_id="payments_confirm", method="post", summary="Confirm a payment",
        description="Authorizes a payment in `requires_confirmation` (and captures it when "
                    "`capture_method` is automatic). A declined card is a 402 with the failed "
                    "payment in the body.",
        request=s.PaymentConfirmInput, ok=s.PaymentOutput, statuses=[402, 404, 503],
        ok_description="The payment (`succeeded` or `requires_capture`).",
        accepted_description=UNRESOLVED,
        examples=[OpenApiExample("With a card", request_only=True,
                                 value={"payment_method": "pm_2B9xQn4s8F1kLm3P"}),
                  OpenApiExample("Authorized, waiting for capture", response_only=True,
                           value=PAYMENT_EXAMPLE),
                  DECLINED])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, payment_id: str):
        data = self.parse(s.PaymentConfirmInput)
        payment = self.get_or_404(Payment, payment_id, "payment")
        pm = None
        if "payment_method" in data:
            pm = payment_method_get(merchant=self.merchant, livemode=self.livemode,
                                    pm_id=data["payment_method"], param="payment_method")
        return _payment_response(payment_confirm(
            payment=payment, payment_method=pm, cvc=_cvc(data, pm or payment.payment_method)))

    def recover(self, object_id: str) -> Response:
        return _recovered_payment_response(self.get_or_404(Payment, object_id, "payment"))


def _cvc(data: dict, pm, *, confirm: bool = True) -> str | None:
    """The `cvc` sent with a payment, checked against its card's brand; only with the
    authorization it is for (it is never kept for a later one)."""
    if data.get("cvc") is None:
        return None
    if not confirm:
        raise InvalidRequest("cvc is only accepted with confirm: true (it is used for that "
                             "authorization and never kept); send it to /confirm instead.",
                             code="parameter_invalid", param="cvc")
    if pm is None:
        raise InvalidRequest("cvc needs a payment_method.", code="parameter_missing",
                             param="payment_method")
    return validate_cvc(pm.brand, data["cvc"])


class PaymentCaptureView(MerchantView):
    @merchant_operation(
        operation_id="payments_capture", method="post", summary="Capture a payment",
        description="Captures a payment in `requires_capture`, once: all of it, or "
                    "`amount_to_capture` of it (the rest is released).",
        request=s.PaymentCaptureInput, ok=s.PaymentOutput, statuses=[404, 503],
        ok_description="The payment, `succeeded`.",
        accepted_description="The provider's answer was lost: the capture may have happened "
                             "(status `unresolved`). Retrieve the payment later.",
        examples=[OpenApiExample("Capture part of it", request_only=True,
                                 value={"amount_to_capture": 800}),
                  OpenApiExample("Captured", response_only=True, value={
                      **PAYMENT_EXAMPLE, "status": "succeeded", "amount_capturable": 0,
                      "amount_captured": 800,
                      "attempts": [{**PAYMENT_EXAMPLE["attempts"][0],
                                    "status": "captured"}]})])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, payment_id: str):
        data = self.parse(s.PaymentCaptureInput)
        payment = self.get_or_404(Payment, payment_id, "payment")
        amount = data.get("amount_to_capture")
        if amount is not None:
            amount = money.parse_amount(amount, param="amount_to_capture")
        return _payment_response(payment_capture(payment=payment, amount=amount))

    def recover(self, object_id: str) -> Response:
        payment = self.get_or_404(Payment, object_id, "payment")
        return _recovered_payment_response(raise_for_failed_modification(payment, "capture"))


class PaymentCancelView(MerchantView):
    @merchant_operation(
        operation_id="payments_cancel", method="post", summary="Cancel a payment",
        description="Cancels a payment in `requires_confirmation`, or voids the authorization "
                    "of one in `requires_capture`.",
        request=s.PaymentCancelInput, ok=s.PaymentOutput, statuses=[404, 503],
        ok_description="The payment, `canceled`.",
        accepted_description="The provider's answer was lost: the void may have happened "
                             "(status `unresolved`). Retrieve the payment later.",
        examples=[OpenApiExample("With a reason", request_only=True,
                                 value={"cancellation_reason": "requested_by_customer"})])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, payment_id: str):
        data = self.parse(s.PaymentCancelInput)
        payment = self.get_or_404(Payment, payment_id, "payment")
        return _payment_response(payment_cancel(payment=payment,
                                                reason=data["cancellation_reason"]))

    def recover(self, object_id: str) -> Response:
        payment = self.get_or_404(Payment, object_id, "payment")
        return _recovered_payment_response(raise_for_failed_modification(payment, "cancel"))


# --- refunds ------------------------------------------------------------------------------
class RefundListView(MerchantView):
    @merchant_operation(
        operation_id="refunds_create", method="post", summary="Refund a payment",
        description="Refunds all or part of a `succeeded` payment. Several partial refunds are "
                    "allowed; together they never exceed the payment's `amount_captured`.",
        request=s.RefundCreateInput, ok=s.RefundOutput, statuses=[404, 503],
        ok_description="The refund (`succeeded`, or `pending` until the provider confirms "
                       "it).",
        accepted_description="The provider's answer was lost: the refund may have happened "
                             "(status `unresolved`). Retrieve the refund later.",
        examples=[OpenApiExample("Refund part of it", request_only=True, value={
                      "payment": "pay_2B9xR1d7Hq0aZt6W", "amount": 500,
                      "reason": "requested_by_customer"}),
                  OpenApiExample("Refunded", response_only=True, value=REFUND_EXAMPLE)])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request):
        data = self.parse(s.RefundCreateInput)
        payment = self.scoped(Payment).filter(id=data["payment"]).first()
        if payment is None:
            raise ResourceMissing(f"No such payment: {data['payment'][:60]!r}", param="payment")
        amount = data.get("amount")
        if amount is not None:
            amount = money.parse_amount(amount)
        refund = refund_create(payment=payment, amount=amount, reason=data.get("reason", ""),
                               metadata=data["metadata"])
        code = http.HTTP_202_ACCEPTED if refund.status == "unresolved" else 200
        return Response(s.RefundOutput(refund).data, status=code)

    def recover(self, object_id: str) -> Response:
        """The refund as it is now; 202 while the provider's answer is not known (pending:
        the request that died may not have sent it)."""
        refund = raise_for_failed_refund(self.get_or_404(Refund, object_id, "refund"))
        pending = refund.status in (RefundStatus.PENDING, RefundStatus.UNRESOLVED)
        return Response(s.RefundOutput(refund).data,
                        status=http.HTTP_202_ACCEPTED if pending else 200)

    @merchant_operation(
        operation_id="refunds_list", method="get", summary="List refunds",
        description="Refunds of this account and mode, newest first.",
        parameters=[*LIST_PARAMS,
                    OpenApiParameter("payment", str,
                                     description="Only the refunds of this payment.")],
        ok=s.list_output(s.RefundOutput, "RefundList"), ok_description="One page of refunds.",
        examples=[OpenApiExample("A page", response_only=True,
                                 value=list_example(REFUND_EXAMPLE))])
    def get(self, request):
        params = request.query_params
        check_params(params, {"limit", "starting_after", "payment"})
        qs = self.scoped(Refund)
        if "payment" in params:
            qs = qs.filter(payment_id=params["payment"])
        return self.list_response(qs, s.RefundOutput, params)


class RefundDetailView(MerchantView):
    @merchant_operation(
        operation_id="refunds_retrieve", method="get", summary="Retrieve a refund",
        description="A refund by its id.", statuses=[404], ok=s.RefundOutput,
        ok_description="The refund.")
    def get(self, request, refund_id: str):
        return Response(s.RefundOutput(self.get_or_404(Refund, refund_id, "refund")).data)
