import datetime as dt

import pytest
from django.utils import timezone

from payments.models import IdempotencyKey
from workers.tasks import purge_idempotency_keys


@pytest.mark.django_db
def test_purge_task_deletes_only_expired_finished_keys(merchant, settings):
    now = timezone.now()
    old = now - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
    for key, completed in (("old", now), ("new", now), ("old-in-flight", None)):
        IdempotencyKey.objects.create(merchant=merchant, livemode=False, key=key,
                                      fingerprint="x", completed_at=completed)
    IdempotencyKey.objects.filter(key__startswith="old").update(created_at=old)
    assert purge_idempotency_keys.delay().get() == 1
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == [
        "new", "old-in-flight"]


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_delivers_the_sandboxes_due_webhooks(api):
    from payments.models import ProviderWebhookEvent
    from providers.sandboxes.tasks import deliver_sandbox_webhooks
    from tests.conftest import make_card
    from workers.celery import app

    api.post("/v1/payments", {"amount": 500, "currency": "EUR", "confirm": True,
                              "provider": "adyen-sandbox",
                              "payment_method": make_card(api, "4242424242424242")})
    assert deliver_sandbox_webhooks.delay().get() == 1
    assert ProviderWebhookEvent.objects.get().raw_type == "AUTHORISATION"
    assert app.conf.beat_schedule["deliver-sandbox-webhooks"]["task"] == \
        deliver_sandbox_webhooks.name
