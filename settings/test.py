"""Test settings: real Postgres and Redis on localhost (override with DATABASE_URL/REDIS_URL).

The keys below are throwaway test keys, not secrets: they only ever encrypt test card numbers.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault(
    "VAULT_KEYS",
    "k1=dGVzdC1vbmx5LXZhdWx0LWtleS1vbmUtMzJieXRlcyE=,k2=dGVzdC1vbmx5LXZhdWx0LWtleS10d28tMzJieXRlcyE=",
)
os.environ.setdefault("VAULT_ACTIVE_KEY", "k2")
os.environ.setdefault("FINGERPRINT_KEY", "test-only-fingerprint-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/switchyard")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "true")
os.environ.setdefault("SANDBOXES_ENABLED", "true")  # the suite runs on the sandboxes

from settings.base import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

SANDBOX_HANG_SECONDS = 2.0
STATUS_SYNC_NUDGE = False  # tests run status sync explicitly
SANDBOX_WEBHOOK_DELAY_SECONDS = None  # and deliver sandbox webhooks explicitly
WEBHOOK_DELIVERY_DELAY_SECONDS = None  # and relay and deliver merchant webhooks explicitly
# Retries keep their count and their time budget, but back off for a millisecond, not 0.1-1 s:
# no test waits on a backoff (tests of the backoff itself set their own values).
PROVIDER_RETRY_BACKOFF_SECONDS = 0.001
PROVIDER_RETRY_BACKOFF_MAX_SECONDS = 0.001
