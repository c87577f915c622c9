"""Ask for a status-sync pass, or a merchant-webhook relay pass, soon, by task name:
`payments` never imports `workers`.

Nothing depends on a nudge: the periodic jobs find due attempts, events, operations and
webhook deliveries anyway, so a nudge that cannot be enqueued (broker down) is logged and
dropped, never raised into the request that made it. In the embedded default (Celery eager,
no worker) a timer thread runs the task in this process instead.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery, current_app
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

SYNC_TASK = "switchyard.payments.sync_unknown_outcomes"
WEBHOOKS_TASK = "switchyard.webhooks.relay_events"


def _our_app(what: str) -> Celery | None:
    # current_app is a proxy at runtime (celery-types type it as the app itself)
    app: Celery = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.main != settings.TASK_APP_NAME:
        # the project's app is loaded by the workers app's ready(); Celery's unconfigured
        # default app would publish to amqp://localhost, where no worker of ours listens
        logger.error("%s skipped: the current Celery app is %r, not ours", what, app.main)
        return None
    return app


def nudge(delay_seconds: float) -> None:
    if not settings.STATUS_SYNC_NUDGE:
        return
    app = _our_app("status sync nudge")
    if app is None:
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


def webhooks_nudge() -> None:
    """Relay and deliver merchant events WEBHOOK_DELIVERY_DELAY_SECONDS from now (call after
    the commit that wrote them). The beat task does the same every few seconds regardless."""
    delay = settings.WEBHOOK_DELIVERY_DELAY_SECONDS
    if delay is None:
        return
    app = _our_app("webhook delivery nudge")
    if app is None:
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        _in_process_webhooks.run_in(app, delay)
        return
    if not _sent_nudges.claim(delay):
        return
    try:
        # expires: a nudge that waited longer in a queue (workers down) is stale; the beat
        # pass after the workers are back does its work
        app.send_task(WEBHOOKS_TASK, countdown=delay, expires=delay + 60, retry=False)
    except Exception:  # noqa: BLE001 - an optimisation only: the periodic pass is the guarantee
        _sent_nudges.forget()
        logger.warning("webhook delivery nudge not enqueued (the periodic pass will run it)",
                       exc_info=True)


class _SentNudges:
    """One relay nudge at a time per process: a commit whose events a relay pass asked for
    by this process will relay anyway (it runs `delay` seconds after it was sent, so after
    this commit) sends none of its own. A create+confirm commits events twice within a few
    milliseconds: one publish to the broker instead of two, and under load at most one per
    `delay` per process. A commit closer than MARGIN to that pass sends its own."""

    MARGIN_SECONDS = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due = 0.0  # time.monotonic() at which the last nudge's pass runs

    def claim(self, delay: float) -> bool:
        """True: send a nudge now (recorded as pending); False: the pending one covers it."""
        now = time.monotonic()
        with self._lock:
            if self._due - now > self.MARGIN_SECONDS:
                return False
            self._due = now + delay
            return True

    def forget(self) -> None:
        with self._lock:
            self._due = 0.0


_sent_nudges = _SentNudges()


class _InProcessWebhooks:
    """The embedded default's stand-in for beat: one timer thread per process, armed for the
    earliest moment work is due (a nudge, or the next retry of a failed delivery), which runs
    the relay task here and re-arms itself for whatever is left, so retries happen with no
    worker and no beat. One timer, not one per nudge: a burst of events or a long retry
    schedule never piles up threads."""

    RETRY_AFTER_ERROR = 5.0  # a pass that failed as a whole (SQLite busy, database restarting)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._fires_at = 0.0  # time.monotonic() of the armed timer

    def run_in(self, app: Celery, delay: float) -> None:
        fires_at = time.monotonic() + delay
        with self._lock:
            if self._timer is not None and self._fires_at <= fires_at:
                return  # an earlier (or as early) pass will do it
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(delay, self._fire, args=(app,))
            self._timer.daemon = True
            self._fires_at = fires_at
            self._timer.start()

    def _fire(self, app: Celery) -> None:
        from payments.services.webhook_delivery import seconds_until_due

        with self._lock:
            if self._timer is threading.current_thread():
                self._timer = None
        next_in: float | None = self.RETRY_AFTER_ERROR
        try:
            app.tasks[WEBHOOKS_TASK].apply()
            next_in = seconds_until_due()
        except Exception:  # noqa: BLE001 - a timer thread has no one to raise to
            logger.exception("webhook delivery pass in this process failed")
        finally:
            connection.close()
        if next_in is not None:
            # (a delivery leased by a pass still running shows as due at its lease's end)
            self.run_in(app, max(next_in, 0.1))


_in_process_webhooks = _InProcessWebhooks()
