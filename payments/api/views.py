"""Thin views: parse input, call one service, serialize the result."""

from __future__ import annotations

import datetime as dt

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status as http
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import money
from payments.api import serializers as s
from payments.api.errors import exception_handler
from payments.api.pagination import check_params, paginate, parse_int_param
from payments.errors import InvalidRequest, ResourceMissing
from payments.models import Payment, PaymentMethod, PaymentStatus, Refund
from payments.services import idempotency
from payments.services.modifications import payment_cancel, payment_capture
from payments.services.payment_methods import payment_method_create, payment_method_get
from payments.services.payments import payment_confirm, payment_create
from payments.services.refunds import refund_create


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer sk_test_…|sk_live_…` in the schema."""

    target_class = "payments.api.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk_test_… | sk_live_…",
                "description": "A secret API key; its mode (test or live) decides which "
                               "objects the request sees."}


ERRORS = {400: s.ErrorOutput, 401: s.ErrorOutput, 404: s.ErrorOutput, 409: s.ErrorOutput,
          429: s.ErrorOutput}
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
    description="Makes the POST safe to retry (≤ 255 characters, kept 24 hours).")
LIST_PARAMS = [
    OpenApiParameter("limit", int, description="1–100, default 10"),
    OpenApiParameter("starting_after", str, description="id of the last object of the "
                     "previous page"),
]

# Responses that changed nothing are not stored under an Idempotency-Key, so the merchant can
# fix the request and retry with the same key (Stripe's rule).
_NOT_STORED = {400, 401, 403, 404, 405, 406, 415, 429}


class MerchantView(APIView):
    """Base of every /v1 view: the caller's merchant and mode, scoped lookups, idempotent
    POSTs (`idempotent`)."""

    @property
    def merchant(self):
        return self.request.user

    @property
    def livemode(self) -> bool:
        return self.request.auth.livemode

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

    def idempotent(self, handler, request, *args, **kwargs) -> Response:
        """Run a POST handler under the request's Idempotency-Key, if it sent one."""
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return handler(request, *args, **kwargs)
        key = idempotency.validate_key(key)
        claim = idempotency.claim(
            merchant=self.merchant, livemode=self.livemode, key=key,
            fingerprint=idempotency.request_fingerprint(request.method, request.path,
                                                        request.data),
        )
        if claim.replay:
            return Response(claim.row.response_body, status=claim.row.response_status,
                            headers={"Idempotent-Replayed": "true"})
        try:
            response = handler(request, *args, **kwargs)
        except Exception as exc:
            response = exception_handler(exc, {"view": self, "request": request})
        if response.status_code in _NOT_STORED:
            idempotency.release(claim.row)
        else:
            idempotency.complete(claim.row, status=response.status_code, body=response.data)
        return response


def _payment_response(payment: Payment) -> Response:
    code = http.HTTP_202_ACCEPTED if payment.status == PaymentStatus.UNRESOLVED else 200
    return Response(s.PaymentOutput(payment).data, status=code)


# --- payment methods ----------------------------------------------------------------------
class PaymentMethodListView(MerchantView):
    @extend_schema(operation_id="payment_methods_create", request=s.PaymentMethodCreateInput,
                   responses={200: s.PaymentMethodOutput, **ERRORS},
                   parameters=[IDEMPOTENCY_HEADER])
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

    @extend_schema(operation_id="payment_methods_list", parameters=LIST_PARAMS,
                   responses={200: s.list_output(s.PaymentMethodOutput, "PaymentMethodList"),
                              **ERRORS})
    def get(self, request):
        check_params(request.query_params, {"limit", "starting_after"})
        return self.list_response(self.scoped(PaymentMethod), s.PaymentMethodOutput, request.query_params)


class PaymentMethodDetailView(MerchantView):
    @extend_schema(operation_id="payment_methods_retrieve",
                   responses={200: s.PaymentMethodOutput, **ERRORS})
    def get(self, request, pm_id: str):
        return Response(s.PaymentMethodOutput(
            self.get_or_404(PaymentMethod, pm_id, "payment_method")).data)


# --- payments -----------------------------------------------------------------------------
PAYMENT_RESPONSES = {200: s.PaymentOutput, 202: s.PaymentOutput, 402: s.ErrorOutput,
                     503: s.ErrorOutput, **ERRORS}


class PaymentListView(MerchantView):
    @extend_schema(operation_id="payments_create", request=s.PaymentCreateInput,
                   responses=PAYMENT_RESPONSES, parameters=[IDEMPOTENCY_HEADER])
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
        )
        return _payment_response(payment)

    @extend_schema(
        operation_id="payments_list",
        parameters=[*LIST_PARAMS,
                    OpenApiParameter("status", str, enum=PaymentStatus.values),
                    OpenApiParameter("reference", str),
                    OpenApiParameter("created[gte]", int, description="Unix seconds"),
                    OpenApiParameter("created[lte]", int, description="Unix seconds")],
        responses={200: s.list_output(s.PaymentOutput, "PaymentList"), **ERRORS},
    )
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
            seconds = parse_int_param(params, name, low=0, high=2**37)
            if seconds is not None:
                moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
                if lookup == "lte":  # API times are whole seconds: include that whole second
                    moment += dt.timedelta(seconds=1) - dt.timedelta(microseconds=1)
                qs = qs.filter(**{f"created_at__{lookup}": moment})
        return self.list_response(qs, s.PaymentOutput, params)


class PaymentDetailView(MerchantView):
    @extend_schema(operation_id="payments_retrieve", responses={200: s.PaymentOutput, **ERRORS})
    def get(self, request, payment_id: str):
        return Response(s.PaymentOutput(self.get_or_404(Payment, payment_id, "payment")).data)


class PaymentConfirmView(MerchantView):
    @extend_schema(operation_id="payments_confirm", request=s.PaymentConfirmInput,
                   responses=PAYMENT_RESPONSES, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, payment_id: str):
        data = self.parse(s.PaymentConfirmInput)
        payment = self.get_or_404(Payment, payment_id, "payment")
        pm = None
        if "payment_method" in data:
            pm = payment_method_get(merchant=self.merchant, livemode=self.livemode,
                                    pm_id=data["payment_method"], param="payment_method")
        return _payment_response(payment_confirm(payment=payment, payment_method=pm))


class PaymentCaptureView(MerchantView):
    @extend_schema(operation_id="payments_capture", request=s.PaymentCaptureInput,
                   responses=PAYMENT_RESPONSES, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, payment_id: str):
        data = self.parse(s.PaymentCaptureInput)
        payment = self.get_or_404(Payment, payment_id, "payment")
        amount = data.get("amount_to_capture")
        if amount is not None:
            amount = money.parse_amount(amount, param="amount_to_capture")
        return _payment_response(payment_capture(payment=payment, amount=amount))


class PaymentCancelView(MerchantView):
    @extend_schema(operation_id="payments_cancel", request=s.PaymentCancelInput,
                   responses=PAYMENT_RESPONSES, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request, *args, **kwargs):
        return self.idempotent(self.handle_post, request, *args, **kwargs)

    def handle_post(self, request, payment_id: str):
        data = self.parse(s.PaymentCancelInput)
        payment = self.get_or_404(Payment, payment_id, "payment")
        return _payment_response(payment_cancel(payment=payment,
                                                reason=data["cancellation_reason"]))


# --- refunds ------------------------------------------------------------------------------
class RefundListView(MerchantView):
    @extend_schema(operation_id="refunds_create", request=s.RefundCreateInput,
                   responses={200: s.RefundOutput, 202: s.RefundOutput, 503: s.ErrorOutput,
                              **ERRORS},
                   parameters=[IDEMPOTENCY_HEADER])
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
        refund = refund_create(payment=payment, amount=amount, reason=data["reason"],
                               metadata=data["metadata"])
        code = http.HTTP_202_ACCEPTED if refund.status == "unresolved" else 200
        return Response(s.RefundOutput(refund).data, status=code)

    @extend_schema(operation_id="refunds_list",
                   parameters=[*LIST_PARAMS, OpenApiParameter("payment", str)],
                   responses={200: s.list_output(s.RefundOutput, "RefundList"), **ERRORS})
    def get(self, request):
        params = request.query_params
        check_params(params, {"limit", "starting_after", "payment"})
        qs = self.scoped(Refund)
        if "payment" in params:
            qs = qs.filter(payment_id=params["payment"])
        return self.list_response(qs, s.RefundOutput, params)


class RefundDetailView(MerchantView):
    @extend_schema(operation_id="refunds_retrieve", responses={200: s.RefundOutput, **ERRORS})
    def get(self, request, refund_id: str):
        return Response(s.RefundOutput(self.get_or_404(Refund, refund_id, "refund")).data)
