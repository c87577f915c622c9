from django.contrib import admin

from providers.models import ProviderAccount


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    list_display = ("name", "merchant", "provider", "livemode", "enabled", "priority",
                    "base_url")
    list_filter = ("provider", "livemode", "enabled")
    search_fields = ("name", "merchant__name")
    readonly_fields = ("id", "created_at")
