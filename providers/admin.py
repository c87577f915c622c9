"""The provider models' admin: forms that check settings as the API and commands do, and the
ModelAdmin classes. They are registered by payments/admin_providers.py, which adds an audit row
to every change (the audit log is payments', which providers cannot import)."""

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS

from providers.accounts import AccountError, validate_account
from providers.models import ProviderAccount, RetryRule, RoutingRule
from providers.resilience.breaker import breaker_state
from providers.routing.retry import can_override, default_retry
from providers.routing.rules import RuleError, check_rule_fields, clean_decline_code


class ProviderAccountForm(forms.ModelForm):
    """Credentials are write-only: they are encrypted at rest and never shown again."""

    new_credentials = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text='JSON object, e.g. {"secret_key": "sk_live_…"}. Leave empty to keep the '
                  "current credentials; they are stored encrypted and never displayed.")

    class Meta:
        model = ProviderAccount
        fields = ("merchant", "name", "provider", "livemode", "base_url", "enabled", "priority",
                  "currencies", "fees", "connect_timeout", "read_timeout", "breaker_fail_max",
                  "breaker_reset_timeout", "rate_limit_per_second", "concurrency_limit")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        raw = cleaned.get("new_credentials", "").strip()
        if raw:
            try:
                credentials = json.loads(raw)
            except ValueError:
                raise forms.ValidationError({"new_credentials": "Not valid JSON."}) from None
            if not isinstance(credentials, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in credentials.items()):
                raise forms.ValidationError(
                    {"new_credentials": "Use an object of string keys and values."})
        else:
            credentials = self.instance.get_credentials() if self.instance.pk else {}
        self._credentials = credentials
        account = self.instance
        for name in ("provider", "base_url", "livemode", "connect_timeout", "read_timeout",
                     "fees"):
            if name in cleaned:
                setattr(account, name, cleaned[name])
        try:
            validate_account(account, credentials)
        except AccountError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned

    def save(self, commit: bool = True) -> ProviderAccount:
        account: ProviderAccount = super().save(commit=False)
        if self.cleaned_data.get("new_credentials", "").strip() or not account.pk:
            account.set_credentials(self._credentials)
        if commit:
            account.save()
        return account


class ProviderAccountAdmin(admin.ModelAdmin):
    form = ProviderAccountForm
    list_display = ("name", "merchant", "provider", "livemode", "enabled", "priority",
                    "healthy", "health_latency_ms", "health_checked_at", "breaker",
                    "base_url")
    list_filter = ("provider", "livemode", "enabled", "healthy")
    search_fields = ("name", "merchant__name")
    # Health is written by the periodic probe (providers.health), never by hand.
    readonly_fields = ("id", "created_at", "credential_keys", "healthy", "health_checked_at",
                       "health_latency_ms", "health_error", "breaker")

    @admin.display(description="breaker")
    def breaker(self, account: ProviderAccount) -> str:
        if not account.pk:
            return "-"
        return breaker_state(account)

    @admin.display(description="credentials set")
    def credential_keys(self, account: ProviderAccount) -> str:
        if not account.pk:
            return "-"
        return ", ".join(sorted(account.get_credentials())) or "-"


class RoutingRuleForm(forms.ModelForm):
    """Checked exactly as the API checks it (providers.routing.rules)."""

    class Meta:
        model = RoutingRule
        fields = ("merchant", "livemode", "priority", "enabled", "description", "conditions",
                  "strategy", "accounts")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        merchant = cleaned.get("merchant")
        if merchant is None or self.errors:
            return cleaned
        try:
            checked = check_rule_fields(
                merchant_id=merchant.pk, livemode=cleaned.get("livemode", False),
                strategy=cleaned.get("strategy"), accounts=cleaned.get("accounts"),
                conditions=cleaned.get("conditions"), priority=cleaned.get("priority"))
        except RuleError as exc:
            field = (exc.param or "").split(".", 1)[0]
            raise forms.ValidationError(
                {field if field in self.fields else NON_FIELD_ERRORS: exc.message}) from None
        cleaned.update(checked)
        return cleaned


class RoutingRuleAdmin(admin.ModelAdmin):
    form = RoutingRuleForm
    list_display = ("id", "merchant", "livemode", "priority", "enabled", "strategy",
                    "account_list", "description", "updated_at")
    list_filter = ("livemode", "enabled", "strategy")
    search_fields = ("id", "merchant__name", "description")
    ordering = ("merchant", "livemode", "priority", "created_at")
    readonly_fields = ("id", "created_at", "updated_at")

    @admin.display(description="accounts")
    def account_list(self, rule: RoutingRule) -> str:
        try:
            return ", ".join(
                f"{e['account']} ({e['weight']})" if isinstance(e, dict) else str(e)
                for e in rule.accounts)
        except (KeyError, TypeError):
            return str(rule.accounts)


class RetryRuleForm(forms.ModelForm):
    class Meta:
        model = RetryRule
        fields = ("merchant", "livemode", "decline_code", "retry")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        code, retry = cleaned.get("decline_code"), cleaned.get("retry")
        if code is None:
            return cleaned
        try:
            clean_decline_code(code)
        except RuleError as exc:
            raise forms.ValidationError({"decline_code": exc.message}) from None
        if not can_override(code, bool(retry)):
            raise forms.ValidationError(
                {"retry": f"{code} is never retried (card-network rules)."})
        return cleaned


class RetryRuleAdmin(admin.ModelAdmin):
    form = RetryRuleForm
    list_display = ("decline_code", "retry", "default", "merchant", "livemode", "updated_at")
    list_filter = ("livemode", "retry")
    search_fields = ("decline_code", "merchant__name", "id")
    readonly_fields = ("id", "created_at", "updated_at")

    @admin.display(description="default", boolean=True)
    def default(self, rule: RetryRule) -> bool:
        return default_retry(rule.decline_code)
