from django.apps import AppConfig
from django.conf import settings
from django.core import checks

# Adyen keeps idempotency keys for at least 7 days (docs/providers.md): status sync replays
# captures, voids, refunds and authorizations under their keys only while that holds.
ADYEN_IDEMPOTENCY_SECONDS = 7 * 24 * 3600


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"

    def ready(self) -> None:
        checks.register(check_status_sync_window)
        from django.db.models.signals import post_save

        # The audit log's admin and the provider models' audited admin live in their own
        # modules (payments/admin.py is the operator views'); the admin autodiscovery has run.
        from payments import admin_audit, admin_providers  # noqa: F401
        from payments.models import Merchant
        from payments.services.merchants import merchant_saved

        # a merchant's settings are cached with its API keys in every web process
        post_save.connect(merchant_saved, sender=Merchant,
                          dispatch_uid="payments.merchant_saved")


def check_status_sync_window(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Status sync must give up before a provider forgets an idempotency key: a replay after
    that would run as a new capture or refund."""
    if settings.STATUS_SYNC_GIVE_UP_SECONDS >= ADYEN_IDEMPOTENCY_SECONDS:
        return [checks.Error(
            "STATUS_SYNC_GIVE_UP_SECONDS must be under 7 days (604800): Adyen keeps "
            "idempotency keys that long, and status sync replays requests under them.",
            id="payments.E001")]
    return []
