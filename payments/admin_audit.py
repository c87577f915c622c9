"""The audit log in the admin (read-only, for everyone), and what audited admin actions share:
the acting user and IP, the mandatory-reason confirmation page, audit rows for form saves.

Registered from PaymentsConfig.ready(), so payments/admin.py stays the operator views'.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

from axes.helpers import get_client_ip_address
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from payments.admin_base import ReadOnlyAdmin
from payments.audit import audit_record, user_actor
from payments.models import APIKey, AuditLog
from payments.services.merchants import api_key_revoke


def client_ip(request: HttpRequest) -> str | None:
    """The client's address as django-axes sees it (so a lockout and an audit row name the
    same address); None if it is not an IP address."""
    ip = get_client_ip_address(request)
    try:
        return str(ipaddress.ip_address(ip)) if ip else None
    except ValueError:
        return None


def audit_log_url(object_id: str) -> str:
    """The audit log filtered to one object (linked from the objects' admin pages)."""
    return f"{reverse('admin:payments_auditlog_changelist')}?object_id={object_id}"


def _pretty(value: Any) -> str:
    if value is None:
        return "-"
    return format_html(
        '<pre style="margin:0; white-space:pre-wrap">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder))


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included: the database refuses changes anyway
    (migration 0010's trigger); the admin does not offer them."""

    list_display = ("at", "actor", "action", "object_type", "object_id", "outcome", "ip",
                    "reason_excerpt")
    list_filter = ("action", "object_type", "actor")
    # `?object_id=<id>` (what the objects' pages link to) filters the list: object_id is a
    # plain field of this model, which the admin accepts as a query-string lookup.
    search_fields = ("=object_id", "actor")
    ordering = ("-id",)
    date_hierarchy = "at"
    fields = ("at", "actor", "ip", "action", "object_type", "object_id", "outcome", "reason",
              "before_pretty", "after_pretty")
    readonly_fields = fields

    @admin.display(description="reason")
    def reason_excerpt(self, row: AuditLog) -> str:
        return row.reason if len(row.reason) <= 80 else row.reason[:79] + "…"

    @admin.display(description="before")
    def before_pretty(self, row: AuditLog) -> str:
        return _pretty(row.before)

    @admin.display(description="after")
    def after_pretty(self, row: AuditLog) -> str:
        return _pretty(row.after)


# --- audited actions with a mandatory reason -------------------------------------------------
class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
                             help_text="Mandatory: kept in the audit log with the change.")

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


def act_with_reason(modeladmin: admin.ModelAdmin, request: HttpRequest,
                    queryset: models.QuerySet, *, action: str, title: str,
                    apply: Callable[[Any, str], str]) -> TemplateResponse | None:
    """Run an admin action on each selected object once the operator has given a reason:
    the first POST (from the changelist) shows the confirmation page; the second ("apply")
    calls `apply(obj, reason)` per object, which writes its own audit row and returns what
    to tell the operator. One object that fails does not stop the others."""
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        reason = form.cleaned_data["reason"]
        for obj in queryset:
            try:
                message = apply(obj, reason)
            except Exception as exc:  # noqa: BLE001 - reported to the operator, audited as failed
                modeladmin.message_user(request, f"{obj}: {title} failed ({exc})",
                                        messages.ERROR)
            else:
                modeladmin.message_user(request, f"{obj}: {message}", messages.SUCCESS)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "queryset": queryset,
        "form": form,
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/payments/audited_action.html", context)


def revoke_api_keys(modeladmin: admin.ModelAdmin, request: HttpRequest,
                    queryset: models.QuerySet[APIKey]) -> TemplateResponse | None:
    """The API keys' "revoke" action (payments/admin.py), audited, with a reason."""
    actor, ip = user_actor(request.user), client_ip(request)

    def revoke(key: APIKey, reason: str) -> str:
        done = api_key_revoke(key=key, actor=actor, reason=reason, ip=ip)
        return "revoked" if done else "was already revoked"

    return act_with_reason(modeladmin, request, queryset, action="revoke",
                           title="Revoke the selected keys", apply=revoke)


# --- audited form saves ----------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


class AuditedModelAdmin(admin.ModelAdmin):
    """Every add, change and delete through this admin writes an audit row (inside the
    admin's transaction): the fields that changed, before and after."""

    audit_object_type = ""
    audit_exclude: tuple[str, ...] = ()

    def audit_snapshot(self, obj: models.Model) -> dict[str, Any]:
        return json_safe({f.attname: getattr(obj, f.attname)
                          for f in obj._meta.concrete_fields
                          if f.attname not in self.audit_exclude})

    def audit_changes(self, before: Any, obj: models.Model
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        after = self.audit_snapshot(obj)
        if before is None:
            return None, after
        names = [n for n in after if before.get(n) != after[n]]
        return {n: before.get(n) for n in names}, {n: after[n] for n in names}

    def audit_before(self, obj: models.Model) -> Any:
        stored = type(obj)._default_manager.filter(pk=obj.pk).first() if obj.pk else None
        return self.audit_snapshot(stored) if stored is not None else None

    def _audit(self, request: HttpRequest, obj: models.Model, action: str,
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        audit_record(actor=user_actor(request.user), action=f"{self.audit_object_type}.{action}",
                     object_type=self.audit_object_type, object_id=str(obj.pk), before=before,
                     after=after, ip=client_ip(request))

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            before = self.audit_before(obj) if change else None
            super().save_model(request, obj, form, change)
            old, new = self.audit_changes(before, obj)
            self._audit(request, obj, "update" if change else "create", old, new)

    def delete_model(self, request, obj):
        with transaction.atomic():
            before = self.audit_snapshot(obj)
            pk = obj.pk
            super().delete_model(request, obj)
            obj.pk = pk  # Django clears it on delete; the row names what was deleted
            self._audit(request, obj, "delete", before, None)

    def delete_queryset(self, request, queryset):
        # one by one, so that each deleted object gets its row (the bulk delete would not)
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)
