"""Operator views. Payments are read-only here: state changes go through the state machine."""

from django.contrib import admin

from payments.admin_audit import revoke_api_keys
from payments.models import (
    APIKey,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentMethod,
    ProviderWebhookEvent,
    Refund,
    WebhookOutbox,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


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
    search_fields = ("id", "last4", "fingerprint")
    exclude = ("encrypted_number",)


class AttemptInline(ReadOnlyInline):
    model = PaymentAttempt
    fields = ("id", "provider_account", "status", "provider_reference", "error_code",
              "decline_code", "sync_count", "next_sync_at", "release_requested_at",
              "created_at")
    readonly_fields = fields


class EventInline(ReadOnlyInline):
    model = PaymentEvent
    fields = ("created_at", "type", "from_status", "to_status", "actor", "data")
    readonly_fields = fields


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = ("id", "amount", "status", "reason", "created_at")
    readonly_fields = fields


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "merchant", "amount", "currency", "status", "needs_operator",
                    "provider_account", "livemode", "created_at")
    list_filter = ("needs_operator", "status", "livemode", "currency", "capture_method")
    search_fields = ("id", "reference", "attempts__id", "attempts__provider_reference")
    readonly_fields = ("routing_decision",)
    inlines = [AttemptInline, RefundInline, EventInline]

    @admin.display(description="routing decision")
    def routing_decision(self, payment: Payment) -> str:
        from providers.routing.engine import summarize

        return summarize(payment.routing)


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "payment", "amount", "currency", "status", "created_at")
    list_filter = ("status", "livemode")
    search_fields = ("id", "payment__id")


@admin.register(WebhookOutbox)
class WebhookOutboxAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "merchant", "type", "created_at", "relayed_at")
    list_filter = ("type",)


@admin.register(ProviderWebhookEvent)
class ProviderWebhookEventAdmin(ReadOnlyAdmin):
    """What providers told us by webhook, and what applying it did (`outcome`); an event
    still waiting has `next_try_at` set."""

    list_display = ("id", "account", "raw_type", "success", "reference", "outcome",
                    "received_at", "processed_at", "tries")
    list_filter = ("kind", "outcome", "success")
    search_fields = ("reference", "provider_reference", "operation_reference", "event_id")
