"""Operator views. Everything payments-related is read-only here; what an operator changes
goes through the actions of `payments.services.operator` (buttons on the change pages, each
with a form asking for the reason), which go through the state machine and the owning
services and write the audit log. The Needs-attention view lists what is stuck.

Acting needs OPERATOR_PERMISSION (superusers have it); seeing needs the view permissions:
the read-only `support` group sees everything and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from payments.admin_audit import audit_log_url, client_ip, revoke_api_keys
from payments.admin_base import ReadOnlyAdmin, ReadOnlyInline
from payments.audit import user_actor
from payments.errors import PaymentsError, ProviderFailed
from payments.models import (
    APIKey,
    AttemptStatus,
    Discrepancy,
    DiscrepancyStatus,
    IdempotencyKey,
    Merchant,
    Modification,
    ModificationStatus,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentMethod,
    PaymentStatus,
    ProviderWebhookEvent,
    ReconciliationLine,
    ReconciliationRun,
    Refund,
    RefundStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutbox,
)
from payments.money import currency_exponent, format_amount
from payments.services import idempotency, operator

# The admin index with a link to the Needs-attention view (AdminSite.index_template: an
# app's admin/index.html cannot override django.contrib.admin's, which is found first).
admin.site.index_template = "admin/payments/index.html"

# The permission an operator action needs. The `support` group has view permissions only,
# so it sees the actions' pages refused (403) and no buttons.
OPERATOR_PERMISSION = "payments.change_payment"


def can_act(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.has_perm(OPERATOR_PERMISSION))


def change_url(obj: Any) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[quote(obj.pk)])


def _link(obj: Any, text: str | None = None) -> str:
    if obj is None:
        return "-"
    return format_html('<a href="{}">{}</a>', change_url(obj), text or str(obj.pk))


def _json(value: Any) -> str:
    if value in (None, {}, []):
        return "-"
    return format_html('<pre style="margin:0; white-space:pre-wrap">{}</pre>',
                       json.dumps(value, indent=2, sort_keys=True, default=str))


def _error_text(code: str, decline_code: str | None = None, message: str = "") -> str:
    if not code:
        return "-"
    text = code + (f" ({decline_code})" if decline_code else "")
    return f"{text}: {message}" if message else text


# --- forms: every action asks why -------------------------------------------------------------
class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="What you found and why this is right (e.g. what the provider's dashboard "
                  "shows, a ticket number). Kept in the audit log; never sent to the merchant.")

    def __init__(self, *args: Any, obj: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.obj = obj

    def clean_reason(self) -> str:
        reason: str = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


CLEAR_FLAG_HELP = "Also clear the payment's needs-attention flag (you dealt with it)."


class ResolvePaymentForm(ReasonForm):
    outcome = forms.ChoiceField(widget=forms.RadioSelect, choices=[
        ("captured", "Charged and captured at the provider → succeeded"),
        ("authorized", "Authorized (not captured) at the provider → requires_capture"),
        ("failed", "Nothing charged at the provider → failed"),
    ])
    provider_reference = forms.CharField(
        required=False, max_length=128,
        help_text="The provider's id of the charge, as you read it at the provider (required "
                  "when charged).")
    clear_flag = forms.BooleanField(required=False, initial=True, help_text=CLEAR_FLAG_HELP)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("outcome") in ("captured", "authorized") and \
                not cleaned.get("provider_reference", "").strip():
            self.add_error("provider_reference", "Required when the provider charged.")
        return cleaned


class SettleForm(ReasonForm):
    outcome = forms.ChoiceField(widget=forms.RadioSelect, choices=[
        ("done", "Done at the provider"), ("not_done", "Not done at the provider")])
    provider_reference = forms.CharField(
        required=False, max_length=128,
        help_text="The provider's id of the operation, if it shows one.")
    clear_flag = forms.BooleanField(required=False, initial=True, help_text=CLEAR_FLAG_HELP)


class RefundForm(ReasonForm):
    amount = forms.DecimalField(
        required=False, min_value=Decimal(0),
        help_text="In the payment's currency, in major units (10.50); empty: all that is "
                  "left to refund.")

    def clean_amount(self) -> int | None:
        amount: Decimal | None = self.cleaned_data.get("amount")
        if amount is None:
            return None
        exponent = currency_exponent(self.obj.currency)
        minor = amount.scaleb(exponent)
        if minor != minor.to_integral_value() or minor <= 0:
            raise forms.ValidationError(
                f"Give a positive amount with at most {exponent} decimal places.")
        return int(minor)


# --- actions on change pages ---------------------------------------------------------------------
Perform = Callable[[Any, dict[str, Any], str, str | None], operator.ActionResult]


@dataclass(frozen=True)
class OperatorAction:
    name: str  # in the URL
    label: str  # the button
    help: str  # on the action's page: when to use it, what the merchant receives
    perform: Perform  # (object, cleaned form data, actor, ip)
    applies: Callable[[Any], bool]  # the button is shown when this holds
    form: type[ReasonForm] = ReasonForm


class OperatorActionsAdmin(admin.ModelAdmin):
    """Read-only pages with operator actions: a button per action that fits the object's
    state, each leading to a form (reason, and outcome where relevant); a refusal comes back
    as an error message, a success as a message naming the merchant event."""

    operator_actions: tuple[OperatorAction, ...] = ()
    change_form_template = "admin/payments/operator_change_form.html"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        return [path("<path:object_id>/operator/<slug:action>/",
                     self.admin_site.admin_view(self.operator_view),
                     name=f"{info[0]}_{info[1]}_operator"), *super().get_urls()]

    def action_url(self, obj: Any, name: str) -> str:
        info = self.opts.app_label, self.opts.model_name
        return reverse(f"admin:{info[0]}_{info[1]}_operator", args=[quote(obj.pk), name])

    def audit_object_id(self, obj: Any) -> str:
        return str(obj.pk)

    def summary(self, obj: Any) -> list[tuple[str, str]]:
        return [("Object", str(obj))]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        extra: dict[str, Any] = dict(extra_context or {})
        if obj is not None:
            extra["audit_log_url"] = audit_log_url(self.audit_object_id(obj))
            if can_act(request):
                extra["operator_buttons"] = [
                    {"label": action.label, "url": self.action_url(obj, action.name)}
                    for action in self.operator_actions if action.applies(obj)]
        return super().change_view(request, object_id, form_url, extra)

    def operator_view(self, request: HttpRequest, object_id: str, action: str
                      ) -> HttpResponse:
        spec = next((a for a in self.operator_actions if a.name == action), None)
        obj = self.get_object(request, unquote(object_id))
        if spec is None or obj is None:
            raise Http404("No such object or action.")
        if not (self.has_view_permission(request, obj) and can_act(request)):
            raise PermissionDenied
        form = spec.form(request.POST if request.method == "POST" else None, obj=obj)
        if request.method == "POST" and form.is_valid():
            try:
                result = spec.perform(obj, form.cleaned_data, user_actor(request.user),
                                      client_ip(request))
            except ProviderFailed as exc:  # started (and audited), then the provider said no
                messages.error(request, f"{spec.label}: {exc.message}")
            except PaymentsError as exc:
                messages.error(request, f"{spec.label}: refused. {exc.message}")
            else:
                messages.success(request, result.message)
            return HttpResponseRedirect(change_url(obj))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "app_label": self.opts.app_label, "original": obj,
            "title": f"{spec.label}: {obj}", "action": spec, "form": form,
            "summary": self.summary(obj), "object_url": change_url(obj),
        }
        return TemplateResponse(request, "admin/payments/operator_action.html", context)


class APIKeyInline(ReadOnlyInline):
    model = APIKey
    fields = ("id", "prefix", "livemode", "created_at", "revoked_at")
    readonly_fields = fields


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [APIKeyInline]


@admin.register(APIKey)
class APIKeyAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "merchant", "livemode", "created_at", "revoked_at")
    list_filter = ("livemode",)
    exclude = ("key_hash",)
    actions = ["revoke"]

    @admin.action(description="Revoke the selected keys", permissions=["revoke"])
    def revoke(self, request, queryset):
        return revoke_api_keys(self, request, queryset)  # audited, with a reason

    def has_revoke_permission(self, request):
        return request.user.has_perm("payments.change_apikey")


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyAdmin):
    list_display = ("id", "merchant", "brand", "last4", "exp_month", "exp_year", "livemode")
    search_fields = ("=id", "=last4", "=fingerprint")
    exclude = ("encrypted_number", "encrypted_cvc")
    ordering = ("-created_at",)


# --- payments -----------------------------------------------------------------------------------
class AttemptInline(ReadOnlyInline):
    model = PaymentAttempt
    verbose_name = "provider attempt"
    verbose_name_plural = "Provider attempts (oldest first; the id is the provider's " \
                          "idempotency key and lookup reference)"
    fields = ("id", "provider_account", "status", "provider_reference", "error",
              "sync_count", "next_sync_at", "unknown_since", "release_requested_at",
              "created_at")
    readonly_fields = fields

    @admin.display(description="error")
    def error(self, attempt: PaymentAttempt) -> str:
        return _error_text(attempt.error_code, attempt.decline_code, attempt.error_message)


class ModificationInline(ReadOnlyInline):
    model = Modification
    verbose_name = "capture or void"
    verbose_name_plural = "Captures and voids"
    fields = ("link", "kind", "amount_display", "status", "provider_reference", "error_code",
              "next_sync_at", "created_at")
    readonly_fields = fields

    @admin.display(description="id")
    def link(self, modification: Modification) -> str:
        return _link(modification)

    @admin.display(description="amount")
    def amount_display(self, modification: Modification) -> str:
        return format_amount(modification.amount, modification.payment.currency)


class RefundInline(ReadOnlyInline):
    model = Refund
    verbose_name_plural = "Refunds"
    fields = ("link", "amount_display", "status", "reason", "provider_reference",
              "failure_code", "created_at")
    readonly_fields = fields

    @admin.display(description="id")
    def link(self, refund: Refund) -> str:
        return _link(refund)

    @admin.display(description="amount")
    def amount_display(self, refund: Refund) -> str:
        return format_amount(refund.amount, refund.currency)


class EventInline(ReadOnlyInline):
    model = PaymentEvent
    verbose_name = "event"
    verbose_name_plural = "Event log (every change, oldest first)"
    fields = ("created_at", "type", "transition", "actor", "details")
    readonly_fields = fields

    @admin.display(description="status")
    def transition(self, event: PaymentEvent) -> str:
        if event.from_status == event.to_status:
            return event.to_status
        return f"{event.from_status or '∅'} → {event.to_status}"

    @admin.display(description="data")
    def details(self, event: PaymentEvent) -> str:
        return _json(event.data)


def _open_items(payment: Payment) -> bool:
    return (payment.attempts.filter(status=AttemptStatus.UNKNOWN).exists()
            or payment.modifications.filter(status__in=[ModificationStatus.PENDING,
                                                        ModificationStatus.UNKNOWN]).exists()
            or payment.refunds.filter(status__in=[RefundStatus.PENDING,
                                                  RefundStatus.UNRESOLVED]).exists())


def _resolvable(payment: Payment) -> bool:
    return payment.status == PaymentStatus.UNRESOLVED and \
        payment.attempts.filter(status=AttemptStatus.UNKNOWN).exists()


PAYMENT_ACTIONS = (
    OperatorAction(
        "sync", "Sync with the provider now",
        "Ask the provider now about this payment's unknown attempt and its pending or unknown "
        "captures, voids and refunds, whatever status sync's schedule says (e.g. after it "
        "gave up, once the provider is reachable again). The answers are applied as status "
        "sync applies them; the merchant hears of any change as usual.",
        lambda p, data, actor, ip: operator.sync_now(payment=p, actor=actor,
                                                     reason=data["reason"], ip=ip),
        _open_items),
    OperatorAction(
        "resolve", "Resolve unresolved payment",
        "Status sync could not find out what became of this payment's attempt. Look the "
        "attempt id up at the provider (it is our reference and idempotency key there) and "
        "say what you found. The merchant receives payment.succeeded, "
        "payment.requires_capture or payment.failed.",
        lambda p, data, actor, ip: operator.payment_resolve(
            payment=p, outcome=data["outcome"], provider_reference=data["provider_reference"],
            clear_flag=data["clear_flag"], actor=actor, reason=data["reason"], ip=ip),
        _resolvable, ResolvePaymentForm),
    OperatorAction(
        "refund", "Refund",
        "Refund this payment, in full or in part, through the provider, as the merchant's "
        "POST /v1/refunds would. The merchant receives refund.succeeded (or refund.failed, "
        "refund.unresolved).",
        lambda p, data, actor, ip: operator.refund_issue(
            payment=p, amount=data["amount"], actor=actor, reason=data["reason"], ip=ip),
        lambda p: p.status == PaymentStatus.SUCCEEDED and p.amount_refunded < p.amount_captured,
        RefundForm),
    OperatorAction(
        "cancel", "Cancel / void",
        "Cancel a payment not confirmed yet, or void its uncaptured authorization at the "
        "provider. The merchant receives payment.canceled (after payment.processing while "
        "the void is sent).",
        lambda p, data, actor, ip: operator.payment_void(payment=p, actor=actor,
                                                         reason=data["reason"], ip=ip),
        lambda p: p.status in (PaymentStatus.REQUIRES_CONFIRMATION,
                               PaymentStatus.REQUIRES_CAPTURE)),
    OperatorAction(
        "clear-flag", "Clear needs-attention flag",
        "You dealt with what flagged this payment (see the event log: "
        "payment.flagged_for_operator, payment.operation_unsettled, …). Nothing else "
        "changes; the merchant receives nothing.",
        lambda p, data, actor, ip: operator.flag_clear(payment=p, actor=actor,
                                                       reason=data["reason"], ip=ip),
        lambda p: p.needs_operator),
)


@admin.register(Payment)
class PaymentAdmin(OperatorActionsAdmin):
    list_display = ("id", "merchant", "amount_display", "status", "needs_operator", "card",
                    "provider_account", "livemode", "created_at")
    list_filter = ("needs_operator", "status", "livemode", "currency", "capture_method")
    list_select_related = ("merchant", "provider_account", "payment_method")
    # exact matches: operators paste ids and references
    search_fields = ("=id", "=reference", "=payment_method__last4", "=attempts__id",
                     "=attempts__provider_reference", "=modifications__id",
                     "=modifications__provider_reference", "=refunds__id")
    search_help_text = ("An id (pay_…, att_…, mod_…, re_…), the merchant's reference, a "
                        "card's last 4 digits, or a provider's reference.")
    ordering = ("-created_at", "-id")
    operator_actions = PAYMENT_ACTIONS
    fieldsets = (
        (None, {"fields": ("id", "merchant", "livemode", "status", "needs_operator",
                           "amount_display", "amounts", "capture_method", "card",
                           "provider_account", "pinned", "reference", "description",
                           "metadata_display", "cancellation_reason", "created_at",
                           "updated_at")}),
        ("Routing decision", {"fields": ("routing_decision", "routing_record")}),
        ("Last error", {"fields": ("last_error_display",)}),
        ("Merchant events", {"fields": ("merchant_events",)}),
    )
    readonly_fields = ("amount_display", "amounts", "card", "metadata_display",
                       "routing_decision", "routing_record", "last_error_display",
                       "merchant_events")
    inlines = [AttemptInline, ModificationInline, RefundInline, EventInline]

    def summary(self, payment: Payment) -> list[tuple[str, str]]:
        return [("Payment", payment.pk), ("Merchant", str(payment.merchant)),
                ("Amount", format_amount(payment.amount, payment.currency)),
                ("Status", payment.status + (" (needs attention)"
                                             if payment.needs_operator else ""))]

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, payment: Payment) -> str:
        return format_amount(payment.amount, payment.currency)

    @admin.display(description="capturable / captured / refunded")
    def amounts(self, payment: Payment) -> str:
        return " / ".join(format_amount(value, payment.currency) for value in (
            payment.amount_capturable, payment.amount_captured, payment.amount_refunded))

    @admin.display(description="card")
    def card(self, payment: Payment) -> str:
        pm = payment.payment_method
        return f"{pm.brand} •••• {pm.last4} ({pm.exp_month:02d}/{pm.exp_year})" if pm else "-"

    @admin.display(description="metadata")
    def metadata_display(self, payment: Payment) -> str:
        return _json(payment.metadata)

    @admin.display(description="summary")
    def routing_decision(self, payment: Payment) -> str:
        from providers.routing.engine import summarize

        return summarize(payment.routing)

    @admin.display(description="record")
    def routing_record(self, payment: Payment) -> str:
        return _json(payment.routing)

    @admin.display(description="last error")
    def last_error_display(self, payment: Payment) -> str:
        error = payment.last_error or {}
        return _error_text(error.get("code") or "", error.get("decline_code"),
                           error.get("message") or "")

    @admin.display(description="sent to the merchant")
    def merchant_events(self, payment: Payment) -> str:
        ids = [payment.pk, *payment.refunds.values_list("id", flat=True)]
        events = WebhookOutbox.objects.filter(object_id__in=ids).order_by("id")
        if not events:
            return "-"
        return format_html("<ul style='margin:0'>{}</ul>", format_html_join(
            "", "<li>{} <a href='{}'>{}</a> {}</li>",
            ((event.created_at.strftime("%Y-%m-%d %H:%M:%S"), change_url(event),
              event.event_id, event.type) for event in events)))


REFUND_ACTIONS = (
    OperatorAction(
        "settle", "Settle refund",
        "This refund's outcome is not known (pending or unresolved). Look it up at the "
        "provider (our reference there is the refund id) and say whether it was done. Done: "
        "it is booked on the payment and the merchant receives refund.succeeded; not done: "
        "refund.failed, and its amount is refundable again.",
        lambda r, data, actor, ip: operator.refund_resolve(
            refund=r, succeeded=data["outcome"] == "done",
            provider_reference=data["provider_reference"], clear_flag=data["clear_flag"],
            actor=actor, reason=data["reason"], ip=ip),
        lambda r: r.status in (RefundStatus.PENDING, RefundStatus.UNRESOLVED), SettleForm),
)


@admin.register(Refund)
class RefundAdmin(OperatorActionsAdmin):
    list_display = ("id", "payment", "amount_display", "status", "provider_reference",
                    "created_at")
    list_filter = ("status", "livemode")
    list_select_related = ("payment",)
    search_fields = ("=id", "=payment__id", "=provider_reference")
    ordering = ("-created_at", "-id")
    readonly_fields = ("amount_display", "payment_link")
    exclude = ("payment",)
    operator_actions = REFUND_ACTIONS

    def summary(self, refund: Refund) -> list[tuple[str, str]]:
        return [("Refund", refund.pk), ("Payment", refund.payment_id),
                ("Amount", format_amount(refund.amount, refund.currency)),
                ("Status", refund.status)]

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, refund: Refund) -> str:
        return format_amount(refund.amount, refund.currency)

    @admin.display(description="payment")
    def payment_link(self, refund: Refund) -> str:
        return _link(refund.payment)


MODIFICATION_ACTIONS = (
    OperatorAction(
        "settle", "Settle capture / void",
        "This capture or void is stuck (pending or unknown). Look it up at the provider (our "
        "reference there is its id) and say whether it was done. A capture done: "
        "payment.succeeded; a void done: payment.canceled; not done: the payment is "
        "authorized again (payment.requires_capture).",
        lambda m, data, actor, ip: operator.modification_resolve(
            modification=m, succeeded=data["outcome"] == "done",
            provider_reference=data["provider_reference"], clear_flag=data["clear_flag"],
            actor=actor, reason=data["reason"], ip=ip),
        lambda m: m.status in (ModificationStatus.PENDING, ModificationStatus.UNKNOWN),
        SettleForm),
)


@admin.register(Modification)
class ModificationAdmin(OperatorActionsAdmin):
    list_display = ("id", "payment", "kind", "amount_display", "status", "provider_reference",
                    "next_sync_at", "created_at")
    list_filter = ("kind", "status")
    list_select_related = ("payment",)
    search_fields = ("=id", "=payment__id", "=provider_reference")
    ordering = ("-created_at", "-id")
    readonly_fields = ("amount_display", "payment_link")
    exclude = ("payment",)
    operator_actions = MODIFICATION_ACTIONS

    def summary(self, modification: Modification) -> list[tuple[str, str]]:
        return [(modification.kind.title(), modification.pk),
                ("Payment", modification.payment_id),
                ("Amount", format_amount(modification.amount, modification.payment.currency)),
                ("Status", modification.status)]

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, modification: Modification) -> str:
        return format_amount(modification.amount, modification.payment.currency)

    @admin.display(description="payment")
    def payment_link(self, modification: Modification) -> str:
        return _link(modification.payment)


IDEMPOTENCY_ACTIONS = (
    OperatorAction(
        "release", "Release wedged key",
        "This key's request died while in flight, and the merchant's retries with it get "
        "409. Release it only if its request wrote nothing (no object recorded): the "
        "merchant's next request with the key then runs afresh. The merchant receives no "
        "event.",
        lambda k, data, actor, ip: operator.idempotency_key_release(
            key=k, actor=actor, reason=data["reason"], ip=ip),
        lambda k: k.in_flight),
)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(OperatorActionsAdmin):
    list_display = ("key", "merchant", "livemode", "in_flight", "created_at", "completed_at",
                    "object_id", "recoverable", "response_status")
    list_filter = ("livemode", "recoverable", ("completed_at", admin.EmptyFieldListFilter))
    search_fields = ("=key", "=object_id")
    ordering = ("-created_at", "-id")
    exclude = ("response_body",)
    operator_actions = IDEMPOTENCY_ACTIONS

    def summary(self, key: IdempotencyKey) -> list[tuple[str, str]]:
        return [("Key", key.key), ("Merchant", str(key.merchant)),
                ("Claimed", f"{key.created_at:%Y-%m-%d %H:%M:%S}"),
                ("Object", key.object_id or "none recorded")]

    @admin.display(boolean=True, description="in flight")
    def in_flight(self, key: IdempotencyKey) -> bool:
        return key.in_flight


class DeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    verbose_name_plural = "Deliveries"
    fields = ("endpoint", "status", "attempts", "last_status_code", "last_error",
              "next_attempt_at", "completed_at")
    readonly_fields = fields


EVENT_ACTIONS = (
    OperatorAction(
        "redeliver", "Redeliver event",
        "Send this event again to every enabled endpoint of the merchant that wants it, "
        "under the same event id (merchants deduplicate by it), with a new round of retries.",
        lambda e, data, actor, ip: operator.event_redeliver(event=e, actor=actor,
                                                            reason=data["reason"], ip=ip),
        lambda e: True),
)


@admin.register(WebhookOutbox)
class WebhookOutboxAdmin(OperatorActionsAdmin):
    list_display = ("event_id", "merchant", "type", "object_id", "created_at", "relayed_at")
    list_filter = ("type", "livemode")
    search_fields = ("=event_id", "=object_id")
    ordering = ("-id",)
    readonly_fields = ("payload_display",)
    exclude = ("payload",)
    inlines = [DeliveryInline]
    operator_actions = EVENT_ACTIONS

    def audit_object_id(self, event: WebhookOutbox) -> str:
        return event.event_id

    def summary(self, event: WebhookOutbox) -> list[tuple[str, str]]:
        return [("Event", event.event_id), ("Type", event.type), ("About", event.object_id)]

    @admin.display(description="payload")
    def payload_display(self, event: WebhookOutbox) -> str:
        return _json(event.payload)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "merchant", "url", "livemode", "disabled", "disabled_reason",
                    "failing_since")
    list_filter = ("disabled", "livemode")
    search_fields = ("=id", "url")
    ordering = ("-created_at", "-id")
    exclude = ("secrets_encrypted", "secrets_key_version")


@admin.register(ProviderWebhookEvent)
class ProviderWebhookEventAdmin(ReadOnlyAdmin):
    """What providers told us by webhook, and what applying it did (`outcome`); an event
    still waiting has `next_try_at` set."""

    list_display = ("id", "account", "raw_type", "success", "reference", "outcome",
                    "received_at", "processed_at", "tries")
    list_filter = ("kind", "outcome", "success")
    search_fields = ("=reference", "=provider_reference", "=operation_reference", "=event_id")
    ordering = ("-received_at",)


# --- Needs attention ------------------------------------------------------------------------------
def _age(since: dt.datetime | None, now: dt.datetime) -> str:
    if since is None:
        return "-"
    minutes = int((now - since).total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} d"


def _flag_reason(payment: Payment) -> str:
    event = payment.events.filter(type__in=[
        "payment.flagged_for_operator", "payment.operation_unsettled",
        "payment.duplicate_charge_reversal_failed", "payment.release_failed",
        "payment.provider_event_mismatch"]).order_by("-id").first()
    if event is None:
        return "unresolved for too long" if payment.status == PaymentStatus.UNRESOLVED else "-"
    return event.type.removeprefix("payment.").replace("_", " ")


def needs_attention(now: dt.datetime | None = None) -> dict[str, QuerySet[Any]]:
    """What is stuck, oldest first, by kind: flagged or long-unresolved payments, refunds
    and captures/voids past their schedule, wedged Idempotency-Keys, failing endpoints."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(minutes=settings.NEEDS_ATTENTION_UNRESOLVED_MINUTES)
    # past its schedule: given up (no next ask) or due for longer than the threshold
    unscheduled = Q(next_sync_at__isnull=True) | Q(next_sync_at__lt=cutoff)
    return {
        "payments": Payment.objects.filter(
            Q(needs_operator=True) | Q(status=PaymentStatus.UNRESOLVED, updated_at__lt=cutoff))
        .select_related("merchant").order_by("created_at"),
        "refunds": Refund.objects.filter(
            Q(status=RefundStatus.UNRESOLVED, updated_at__lt=cutoff)
            | Q(unscheduled, status__in=[RefundStatus.PENDING, RefundStatus.UNRESOLVED]))
        .select_related("payment").order_by("created_at"),
        "modifications": Modification.objects.filter(
            unscheduled, status__in=[ModificationStatus.PENDING, ModificationStatus.UNKNOWN])
        .select_related("payment").order_by("created_at"),
        "keys": idempotency.wedged(now=now).select_related("merchant").order_by("created_at"),
        "endpoints": WebhookEndpoint.objects.filter(
            Q(failing_since__isnull=False) | (Q(disabled=True) & ~Q(disabled_reason="")))
        .select_related("merchant").order_by("failing_since", "created_at"),
        "discrepancies": Discrepancy.objects.filter(status=DiscrepancyStatus.OPEN)
        .select_related("account", "run").order_by("created_at", "id"),
    }


def needs_attention_view(request: HttpRequest) -> HttpResponse:
    """/admin/payments/needs-attention/ (settings/urls.py, wrapped in admin_view)."""
    if not request.user.has_perm("payments.view_payment"):
        raise PermissionDenied
    now = timezone.now()
    found = needs_attention(now)
    acting = can_act(request)
    site = admin.site

    def actions(admin_class: OperatorActionsAdmin, obj: Any) -> list[dict[str, str]]:
        if not acting:
            return []
        return [{"label": a.label, "url": admin_class.action_url(obj, a.name)}
                for a in admin_class.operator_actions if a.applies(obj)]

    payment_admin = site._registry[Payment]
    refund_admin = site._registry[Refund]
    modification_admin = site._registry[Modification]
    key_admin = site._registry[IdempotencyKey]
    discrepancy_admin = site._registry[Discrepancy]
    assert isinstance(discrepancy_admin, OperatorActionsAdmin)
    assert isinstance(payment_admin, OperatorActionsAdmin)
    assert isinstance(refund_admin, OperatorActionsAdmin)
    assert isinstance(modification_admin, OperatorActionsAdmin)
    assert isinstance(key_admin, OperatorActionsAdmin)
    sections = [
        {"title": "Payments flagged or unresolved",
         "headers": ["payment", "merchant", "amount", "status", "why", "age"],
         "rows": [{"cells": [_link(p), p.merchant, format_amount(p.amount, p.currency),
                             p.status, _flag_reason(p), _age(p.created_at, now)],
                   "actions": actions(payment_admin, p)} for p in found["payments"]]},
        {"title": "Refunds past their schedule",
         "headers": ["refund", "payment", "amount", "status", "age"],
         "rows": [{"cells": [_link(r), _link(r.payment), format_amount(r.amount, r.currency),
                             r.status, _age(r.created_at, now)],
                   "actions": actions(refund_admin, r)} for r in found["refunds"]]},
        {"title": "Captures and voids past their schedule",
         "headers": ["operation", "payment", "kind", "amount", "status", "age"],
         "rows": [{"cells": [_link(m), _link(m.payment), m.kind,
                             format_amount(m.amount, m.payment.currency), m.status,
                             _age(m.created_at, now)],
                   "actions": actions(modification_admin, m)}
                  for m in found["modifications"]]},
        {"title": "Idempotency-Keys wedged in flight",
         "headers": ["key", "merchant", "object", "recoverable", "in flight for"],
         "rows": [{"cells": [_link(k, k.key), k.merchant, k.object_id or "-",
                             "yes" if k.recoverable else "no", _age(k.created_at, now)],
                   "actions": actions(key_admin, k)} for k in found["keys"]]},
        {"title": "Webhook endpoints failing or disabled",
         "headers": ["endpoint", "merchant", "url", "failing since", "disabled"],
         "rows": [{"cells": [_link(e), e.merchant, e.url, _age(e.failing_since, now),
                             e.disabled_reason or ("yes" if e.disabled else "no")],
                   "actions": []} for e in found["endpoints"]]},
        {"title": "Reconciliation discrepancies (provider report vs our books)",
         "headers": ["discrepancy", "kind", "account", "day", "about", "what", "age"],
         "rows": [{"cells": [_link(d), d.get_kind_display(), d.account.name, d.run.day,
                             d.payment_id or d.object_id or d.line_id, d.message,
                             _age(d.created_at, now)],
                   "actions": actions(discrepancy_admin, d)}
                  for d in found["discrepancies"]]},
    ]
    context = {**site.each_context(request), "title": "Needs attention",
               "sections": sections,
               "threshold": settings.NEEDS_ATTENTION_UNRESOLVED_MINUTES}
    return TemplateResponse(request, "admin/payments/needs_attention.html", context)


# --- reconciliation -------------------------------------------------------------------------------
DISCREPANCY_ACTIONS = (
    OperatorAction(
        "resolve", "Resolve discrepancy",
        "You looked into this difference between the provider's settlement report and our "
        "books (docs/operations/reconciliation.md says what each kind means) and dealt with "
        "it — e.g. settled or refunded the payment with its own action, or found it "
        "explained (a report corrected later, a charge made by hand at the provider). Say "
        "what you found. Only the discrepancy changes; the merchant receives nothing.",
        lambda d, data, actor, ip: operator.discrepancy_resolve(
            discrepancy=d, actor=actor, reason=data["reason"], ip=ip),
        lambda d: d.status == DiscrepancyStatus.OPEN),
)


@admin.register(Discrepancy)
class DiscrepancyAdmin(OperatorActionsAdmin):
    list_display = ("id", "kind", "status", "account", "day", "payment", "message",
                    "created_at")
    list_filter = ("status", "kind", "account__provider")
    list_select_related = ("account", "run", "payment")
    search_fields = ("=id", "=object_id", "=payment__id", "=line_id")
    search_help_text = "A discrepancy id, our id (att_…, mod_…, re_…, pay_…) or a report line."
    ordering = ("-created_at", "-id")
    operator_actions = DISCREPANCY_ACTIONS
    readonly_fields = ("payment_link", "run_link", "ours_display", "theirs_display")
    exclude = ("ours", "theirs", "payment", "run")

    def summary(self, discrepancy: Discrepancy) -> list[tuple[str, str]]:
        return [("Discrepancy", discrepancy.pk), ("Kind", discrepancy.get_kind_display()),
                ("Account", str(discrepancy.account)), ("Day", str(discrepancy.run.day)),
                ("What", discrepancy.message)]

    @admin.display(description="day", ordering="run__day")
    def day(self, discrepancy: Discrepancy) -> str:
        return str(discrepancy.run.day)

    @admin.display(description="payment")
    def payment_link(self, discrepancy: Discrepancy) -> str:
        return _link(discrepancy.payment)

    @admin.display(description="reconciliation run")
    def run_link(self, discrepancy: Discrepancy) -> str:
        return _link(discrepancy.run, str(discrepancy.run))

    @admin.display(description="ours")
    def ours_display(self, discrepancy: Discrepancy) -> str:
        return _json(discrepancy.ours)

    @admin.display(description="the provider's report")
    def theirs_display(self, discrepancy: Discrepancy) -> str:
        return _json(discrepancy.theirs)


class DiscrepancyInline(ReadOnlyInline):
    model = Discrepancy
    fields = ("link", "kind", "status", "message", "resolved_by")
    readonly_fields = fields

    @admin.display(description="id")
    def link(self, discrepancy: Discrepancy) -> str:
        return _link(discrepancy)


class ReconciliationLineInline(ReadOnlyInline):
    model = ReconciliationLine
    verbose_name_plural = "Report lines (what each matched, what it settled)"
    fields = ("line_id", "kind", "raw_type", "status", "amount", "currency", "fee",
              "provider_reference", "operation_reference", "matched_type", "matched_id",
              "settled")
    readonly_fields = fields


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ("day", "account", "status", "lines", "matched", "settled",
                    "open_discrepancies", "runs", "finished_at")
    list_filter = ("status", "account__provider")
    list_select_related = ("account",)
    search_fields = ("=account__id", "account__name")
    ordering = ("-day", "account")
    exclude = ("claim_token",)
    inlines = [DiscrepancyInline, ReconciliationLineInline]
