from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Every process that sets Django up scrubs card numbers from every log record,
        # whichever handler writes it (ops/logging.py).
        from ops.logging import install_record_scrubber

        install_record_scrubber()
