"""The sandboxes' one periodic job, registered with whichever Celery app is current (a shared
task: this app never imports workers). workers/celery.py schedules it only when
SANDBOXES_ENABLED, and its autodiscovery finds this module only when the app is installed."""

from celery import shared_task


@shared_task(name="switchyard.providers.deliver_sandbox_webhooks", ignore_result=True)
def deliver_sandbox_webhooks() -> int:
    """Send the in-process sandboxes' due webhooks (their timer thread's safety net)."""
    from providers.sandboxes.webhooks import deliver_due

    return deliver_due()
