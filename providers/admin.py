from django.contrib import admin

from providers.models import ProviderAccount
from providers.resilience.breaker import breaker_state


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    list_display = ("name", "merchant", "provider", "livemode", "enabled", "priority",
                    "healthy", "health_latency_ms", "health_checked_at", "breaker",
                    "base_url")
    list_filter = ("provider", "livemode", "enabled", "healthy")
    search_fields = ("name", "merchant__name")
    # Health is written by the periodic probe (providers.health), never by hand.
    readonly_fields = ("id", "created_at", "healthy", "health_checked_at", "health_latency_ms",
                       "health_error", "breaker")

    @admin.display(description="breaker")
    def breaker(self, account: ProviderAccount) -> str:
        if not account.pk:
            return "-"
        return breaker_state(account)
