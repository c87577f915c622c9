"""Ask for a status-sync pass soon, by task name: `payments` never imports `workers`.

Nothing depends on a nudge: the periodic job finds due attempts, events and operations
anyway, so a nudge that cannot be enqueued (broker down) is logged and dropped, never raised
into the request that made it. In the embedded default (Celery eager, no worker) a timer
thread runs the task in this process instead.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery, current_app
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

SYNC_TASK = "switchyard.payments.sync_unknown_outcomes"


def nudge(delay_seconds: float) -> None:
    if not settings.STATUS_SYNC_NUDGE:
        return
    # current_app is a proxy at runtime (celery-types type it as the app itself)
    app: Celery = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.main != settings.TASK_APP_NAME:
        # the project's app is loaded by the workers app's ready(); Celery's unconfigured
        # default app would publish to amqp://localhost, where no worker of ours listens
        logger.error("status sync nudge skipped: the current Celery app is %r, not ours",
                     app.main)
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        timer = threading.Timer(delay_seconds + 0.5, _run_here, args=(app,))
        timer.daemon = True
        timer.start()
        return
    try:
        app.send_task(SYNC_TASK, countdown=delay_seconds, retry=False)
    except Exception:  # noqa: BLE001 - an optimisation only: the periodic pass is the guarantee
        logger.warning("status sync nudge not enqueued (the periodic pass will run it)",
                       exc_info=True)


def _run_here(app: Celery) -> None:
    try:
        app.tasks[SYNC_TASK].apply()
    except Exception:  # noqa: BLE001 - a timer thread has no one to raise to
        logger.exception("status sync pass in this process failed")
    finally:
        connection.close()
