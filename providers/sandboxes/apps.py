from django.apps import AppConfig


class SandboxesConfig(AppConfig):
    """The provider sandboxes (simulators speaking each provider's wire format), installed
    only when SANDBOXES_ENABLED. Nothing outside this app imports it: production code reaches
    it through the transport registry filled in here."""

    name = "providers.sandboxes"
    label = "sandboxes"
    verbose_name = "Provider sandboxes"

    def ready(self) -> None:
        from providers import transports
        from providers.sandboxes.transport import SANDBOX

        transports.register("sandbox", SANDBOX)
