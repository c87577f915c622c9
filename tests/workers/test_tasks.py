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
