"""`/v1/reports`: the merchant's daily settlement reports (payments.services.reports builds
them), listed, retrieved as JSON and downloaded as CSV (docs/api.md, "Reports")."""

from __future__ import annotations

import datetime as dt
import re

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from payments.api.fields import UnixTimeField
from payments.api.pagination import check_params, paginate
from payments.api.routing import object_constant
from payments.api.schema import (
    ALLOW,
    EVERY_OPERATION,
    LIST_PARAMS,
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    error_response,
    list_example,
    merchant_operation,
)
from payments.api.serializers import list_output
from payments.api.views import MerchantView
from payments.errors import InvalidRequest
from payments.models import SettlementReport
from payments.services.reports import report_csv

MINOR = "In the currency's minor unit."


@extend_schema_serializer(description="A daily settlement report: what one UTC day booked in "
                                      "one currency, in this mode.")
class ReportOutput(serializers.Serializer):
    id = serializers.CharField(help_text="`rpt_…`")
    object = object_constant("settlement_report", "SettlementReport")
    day = serializers.DateField(help_text="The UTC day (YYYY-MM-DD).")
    currency = serializers.CharField(help_text="Three-letter ISO 4217 code, upper case.")
    payments_count = serializers.IntegerField(
        help_text="Payments authorized that day (or authorized and captured at once): each "
                  "counted on the day it was first authorized.")
    amount_authorized = serializers.IntegerField(
        help_text="The amounts of those payments. " + MINOR)
    captures_count = serializers.IntegerField(
        help_text="Captures booked that day (an automatic capture included).")
    amount_captured = serializers.IntegerField(help_text="What those captures took. " + MINOR)
    refunds_count = serializers.IntegerField(help_text="Refunds that succeeded that day.")
    amount_refunded = serializers.IntegerField(help_text="What they gave back. " + MINOR)
    fees = serializers.IntegerField(
        help_text="Provider fees on that day's captures, from the fee schedule of the "
                  "provider account that took each payment (percent rounded half up to the "
                  "minor unit, plus the fixed fee); refunds return no fee. " + MINOR)
    net = serializers.IntegerField(
        help_text="amount_captured − amount_refunded − fees. " + MINOR)
    livemode = serializers.BooleanField()
    built = UnixTimeField(source="built_at",
                          help_text="When the report was last built (Unix seconds).")


REPORT_EXAMPLE = {
    "id": "rpt_2B9xV3mKq7Ls0Pd4", "object": "settlement_report", "day": "2026-01-01",
    "currency": "USD", "payments_count": 3, "amount_authorized": 4500, "captures_count": 2,
    "amount_captured": 3000, "refunds_count": 1, "amount_refunded": 500, "fees": 147,
    "net": 2353, "livemode": False, "built": 1767226500,
}
CSV_EXAMPLE = (
    "id,day,currency,livemode,payments_count,amount_authorized,captures_count,"
    "amount_captured,refunds_count,amount_refunded,fees,net\r\n"
    "rpt_2B9xV3mKq7Ls0Pd4,2026-01-01,USD,false,3,4500,2,3000,1,500,147,2353\r\n")

DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DAY_FILTER = {"type": "string", "format": "date", "pattern": DAY_PATTERN}


def _day_param(params, name: str) -> dt.date | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if not re.fullmatch(DAY_PATTERN, raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date written YYYY-MM-DD.",
                             code="parameter_invalid", param=name) from None


class ReportListView(MerchantView):
    @merchant_operation(
        operation_id="reports_list", method="get", summary="List settlement reports",
        description="Daily settlement reports of this account and mode, one per UTC day and "
                    "currency that booked something, newest day first. A day's reports are "
                    "built shortly after it ends.",
        parameters=[
            *LIST_PARAMS,
            OpenApiParameter("day[gte]", DAY_FILTER,
                             description="Only reports of this day (YYYY-MM-DD) or later."),
            OpenApiParameter("day[lte]", DAY_FILTER,
                             description="Only reports of this day (YYYY-MM-DD) or earlier."),
            OpenApiParameter("currency", {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                             description="Only reports in this currency (ISO 4217)."),
        ],
        ok=list_output(ReportOutput, "SettlementReportList"),
        ok_description="One page of reports.",
        examples=[OpenApiExample("A page", response_only=True,
                                 value=list_example(REPORT_EXAMPLE))])
    def get(self, request):
        params = request.query_params
        check_params(params, {"limit", "starting_after", "day[gte]", "day[lte]", "currency"})
        reports = self.scoped(SettlementReport)
        since, until = _day_param(params, "day[gte]"), _day_param(params, "day[lte]")
        if since is not None:
            reports = reports.filter(day__gte=since)
        if until is not None:
            reports = reports.filter(day__lte=until)
        if "currency" in params:
            currency = params["currency"]
            if not re.fullmatch(r"[A-Za-z]{3}", currency):
                raise InvalidRequest("currency must be a three-letter ISO 4217 code.",
                                     code="parameter_invalid", param="currency")
            reports = reports.filter(currency=currency.upper())
        items, has_more = paginate(reports, params, by="day")
        return Response({"object": "list", "has_more": has_more,
                         "data": ReportOutput(items, many=True).data})


class ReportDetailView(MerchantView):
    @merchant_operation(
        operation_id="reports_retrieve", method="get", summary="Retrieve a settlement report",
        description="A daily settlement report by its id.", statuses=[404], ok=ReportOutput,
        ok_description="The report.",
        examples=[OpenApiExample("A day in USD", response_only=True, value=REPORT_EXAMPLE)])
    def get(self, request, report_id: str):
        return Response(ReportOutput(
            self.get_or_404(SettlementReport, report_id, "settlement_report")).data)


class CSVRenderer(BaseRenderer):
    """Lets `Accept: text/csv` through content negotiation; the view writes the CSV itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


def _csv_operation():
    """The schema of the CSV download: a text/csv 200, errors in the usual JSON shape."""
    codes = sorted(set(EVERY_OPERATION) | {404})
    responses = {(200, "text/csv"): OpenApiResponse(
        OpenApiTypes.STR, description="The report as CSV (UTF-8): a header row naming the "
                                      "columns, then the report's row, as in the JSON form.",
        examples=[OpenApiExample("A day in USD", value=CSV_EXAMPLE, media_type="text/csv",
                                 response_only=True)])}
    responses.update({(code, "application/json"): error_response(code) for code in codes})
    return extend_schema(
        operation_id="reports_csv", summary="Download a settlement report as CSV",
        description="The same report as `GET /v1/reports/{report_id}`, as a CSV file "
                    "(`text/csv`, with a header row).",
        responses=responses,
        parameters=[RETRY_AFTER, WWW_AUTHENTICATE, ALLOW,
                    # DRF's ?format= renderer override: not part of the contract
                    OpenApiParameter("format", exclude=True)])


class ReportCSVView(MerchantView):
    renderer_classes = [JSONRenderer, CSVRenderer]

    @_csv_operation()
    def get(self, request, report_id: str):
        check_params(request.query_params, set())
        report = self.get_or_404(SettlementReport, report_id, "settlement_report")
        response = HttpResponse(report_csv(report), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="settlement_{report.day:%Y-%m-%d}_{report.currency}_'
            f'{report.id}.csv"')
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        # errors are JSON, as everywhere, whatever the negotiation picked
        if isinstance(response, Response):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
