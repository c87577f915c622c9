from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Every process that sets Django up scrubs card numbers from every log record,
        # whichever handler writes it (ops/logging.py).
        from ops.logging import install_record_scrubber

        install_record_scrubber()
        # ... and passes the request id on to the Celery tasks it sends, or takes it from the
        # task it runs (ops/request_id.py).
        from ops.request_id import connect_celery_signals

        connect_celery_signals()
        # A Celery worker clears stale metric files and may serve its pool's metrics
        # (ops/metrics.py).
        from ops.metrics import connect_worker_signals

        connect_worker_signals()
