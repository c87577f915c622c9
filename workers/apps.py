from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        # Load the project's Celery app in every process that sets Django up (web processes
        # included), so that it is Celery's current app: a task sent by name from payments
        # (which never imports workers) goes to our broker, not to Celery's default
        # amqp://localhost.
        from workers import celery, tasks  # noqa: F401 - tasks: registered by name here too
