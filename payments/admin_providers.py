"""The provider models in the admin, audited: providers/admin.py has their forms and views;
here every change writes an audit row, and provider accounts get the operator actions
(disable, enable, reset the circuit breaker), each with a mandatory reason.

Registered from PaymentsConfig.ready() (payments may import providers; not the reverse).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html

from payments.admin_audit import (
    AuditedModelAdmin,
    act_with_reason,
    audit_log_url,
    client_ip,
)
from payments.admin_health import provider_health_view
from payments.audit import user_actor
from payments.services.provider_accounts import (
    AccountSnapshot,
    account_changes,
    provider_account_reset_breaker,
    provider_account_set_enabled,
)
from providers import admin as provider_admin
from providers.models import ProviderAccount, RetryRule, RoutingRule


@admin.register(ProviderAccount)
class ProviderAccountAdmin(AuditedModelAdmin, provider_admin.ProviderAccountAdmin):
    audit_object_type = "provider_account"
    actions = ["disable", "enable", "reset_breaker"]

    # Credentials: the audit row names the keys whose values changed, never a value.
    def audit_snapshot(self, obj: Any) -> dict[str, Any]:
        return account_changes(None, AccountSnapshot.of(obj))[1]

    def audit_before(self, obj: Any) -> AccountSnapshot | None:
        return AccountSnapshot.stored(obj)

    def audit_changes(self, before: Any, obj: Any
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return account_changes(before, AccountSnapshot.of(obj))

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "audit_log", "health_page")

    def get_list_display(self, request):
        return (*super().get_list_display(request), "health_page")

    # --- the provider health page (payments/admin_health.py) -------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view(
            lambda request, object_id: provider_health_view(request, object_id, self))
        return [path("<path:object_id>/health/", view,
                     name="providers_provideraccount_health"), *super().get_urls()]

    @admin.display(description="health")
    def health_page(self, account: ProviderAccount) -> str:
        if not account.pk:
            return "-"
        return format_html('<a href="{}">Last 48 hours</a>', reverse(
            "admin:providers_provideraccount_health", args=[account.pk]))

    @admin.display(description="audit log")
    def audit_log(self, account: ProviderAccount) -> str:
        if not account.pk:
            return "-"
        return format_html('<a href="{}">Changes and actions on this account</a>',
                           audit_log_url(account.pk))

    # --- operator actions (change permission: `payment operators`, not `support`) ---------
    @admin.action(description="Disable the selected accounts (routing skips them)",
                  permissions=["change"])
    def disable(self, request, queryset):
        return self._set_enabled(request, queryset, enabled=False)

    @admin.action(description="Enable the selected accounts", permissions=["change"])
    def enable(self, request, queryset):
        return self._set_enabled(request, queryset, enabled=True)

    def _set_enabled(self, request, queryset, *, enabled: bool):
        actor, ip = user_actor(request.user), client_ip(request)
        word = "enabled" if enabled else "disabled"

        def apply(account: ProviderAccount, reason: str) -> str:
            changed = provider_account_set_enabled(account=account, enabled=enabled,
                                                   actor=actor, reason=reason, ip=ip)
            return word if changed else f"was already {word}"

        return act_with_reason(self, request, queryset, action="enable" if enabled else "disable",
                               title=f"{'Enable' if enabled else 'Disable'} provider accounts",
                               apply=apply)

    @admin.action(description="Reset the circuit breaker of the selected accounts",
                  permissions=["change"])
    def reset_breaker(self, request, queryset):
        actor, ip = user_actor(request.user), client_ip(request)

        def apply(account: ProviderAccount, reason: str) -> str:
            before = provider_account_reset_breaker(account=account, actor=actor,
                                                    reason=reason, ip=ip)
            return f"breaker closed (was {before})"

        return act_with_reason(self, request, queryset, action="reset_breaker",
                               title="Reset circuit breakers", apply=apply)


@admin.register(RoutingRule)
class RoutingRuleAdmin(AuditedModelAdmin, provider_admin.RoutingRuleAdmin):
    audit_object_type = "routing_rule"
    audit_exclude = ("created_at", "updated_at")  # not operator changes


@admin.register(RetryRule)
class RetryRuleAdmin(AuditedModelAdmin, provider_admin.RetryRuleAdmin):
    audit_object_type = "retry_rule"
    audit_exclude = ("created_at", "updated_at")
