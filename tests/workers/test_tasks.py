import datetime as dt

import pytest
from django.utils import timezone

from payments.models import IdempotencyKey
from workers.tasks import purge_idempotency_keys


@pytest.mark.django_db
def test_purge_task_deletes_only_expired_keys(merchant, settings):
    old = IdempotencyKey.objects.create(merchant=merchant, livemode=False, key="old",
                                        fingerprint="x")
    IdempotencyKey.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1))
    IdempotencyKey.objects.create(merchant=merchant, livemode=False, key="new", fingerprint="y")
    assert purge_idempotency_keys.delay().get() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
