"""The Celery app. Tasks are thin: they take ids and call a service.

Embedded default: no REDIS_URL, so tasks run eagerly in the calling process.
"""

import logging
import os

from celery import Celery, signals
from celery.schedules import crontab
from django.conf import settings
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")

app = Celery("switchyard")  # settings.TASK_APP_NAME: payments sends tasks by name to it
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_time_limit=300,
    task_soft_time_limit=240,
    task_default_queue="default",
    task_queues=[Queue("payments"), Queue("webhooks"), Queue("default")],
    # Task names are "switchyard.<area>.<job>"; each area has its queue.
    task_routes={
        "switchyard.payments.*": {"queue": "payments"},
        "switchyard.webhooks.*": {"queue": "webhooks"},
        "switchyard.cleanup.*": {"queue": "default"},
        "switchyard.reports.*": {"queue": "default"},
        "switchyard.stats.*": {"queue": "default"},
        "switchyard.reconciliation.*": {"queue": "default"},
    },
    beat_schedule={
        "purge-idempotency-keys": {
            "task": "switchyard.cleanup.purge_idempotency_keys",
            "schedule": 3600.0,
        },
        "sync-unknown-outcomes": {
            "task": "switchyard.payments.sync_unknown_outcomes",
            "schedule": 10.0,
            "options": {"expires": 9.0},
        },
        "relay-webhook-events": {
            "task": "switchyard.webhooks.relay_events",
            "schedule": 5.0,
            "options": {"expires": 4.5},
        },
        # five minutes past each hour: the hour just ended (its last calls have answered),
        # the hours before it again, and any hour missed (payments.services.provider_stats)
        "aggregate-provider-stats": {
            "task": "switchyard.stats.aggregate_provider_hours",
            "schedule": crontab(minute=5),
            "options": {"expires": 50 * 60.0},
        },
        "probe-provider-accounts": {
            "task": "switchyard.providers.probe_accounts",
            "schedule": 60.0,
            # a probe that could not start within its minute is stale: the next one is due
            "options": {"expires": 55.0},
        },
        "expire-abandoned-payments": {
            "task": "switchyard.cleanup.expire_payments",
            "schedule": 600.0,
            "options": {"expires": 590.0},
        },
        "prune-retention": {
            "task": "switchyard.cleanup.prune_retention",
            "schedule": 3600.0,
            "options": {"expires": 3590.0},
        },
        # hourly at :15 (UTC): the first run after midnight builds the day that just ended;
        # the others build nothing unless a day was missed (beat or workers down)
        "build-settlement-reports": {
            "task": "switchyard.reports.build_settlement_reports",
            "schedule": crontab(minute=15),
        },
        # daily work (each account's previous day, and missed days), checked hourly: a day
        # is sent once it is due and until it is completed
        "reconcile-settlements": {
            "task": "switchyard.reconciliation.run_due",
            "schedule": 3600.0,
            "options": {"expires": 3000.0},
        },
    },
)
if settings.SANDBOXES_ENABLED:
    # The sandboxes' webhooks (their task lives in the sandboxes app, found by the
    # autodiscovery below only where that app is installed): a production beat has no
    # sandbox job.
    app.conf.beat_schedule["deliver-sandbox-webhooks"] = {
        "task": "switchyard.providers.deliver_sandbox_webhooks",
        "schedule": 5.0,
        "options": {"expires": 4.5},
    }
app.autodiscover_tasks(["workers"], related_name="tasks")
app.autodiscover_tasks()  # every installed app's tasks module (the sandboxes' when installed)


@signals.setup_logging.connect
def use_django_logging(loglevel=None, **kwargs) -> None:
    """Workers and beat log through settings.LOGGING, as the web processes do.

    Left to itself, Celery empties the root logger's handlers and installs its own, without
    the card-number scrubber that LOGGING puts on every handler (a worker log line once
    printed a card number in clear). A receiver of this signal makes Celery leave logging
    alone, its task loggers included, so LOGGING is the one config of every process.
    """
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    if loglevel:  # the worker's --loglevel still decides, as it does with Celery's set-up
        logging.getLogger().setLevel(loglevel)
    # Celery redirects print() and stray writes to its logger only when it sets logging up
    # itself; do it here, so that they pass the same handlers (and scrubber).
    if app.conf.worker_redirect_stdouts:
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)
