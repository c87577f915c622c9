"""`manage.py run_sandbox --provider stripe|adyen|checkout --port N` — serve a sandbox provider
over real HTTP. Point a provider account at it with
`provider_account update … --base-url http://127.0.0.1:N` (add /v71 for Adyen)."""

from django.core.management.base import BaseCommand

from providers.models import PROVIDERS
from providers.sandboxes.catalog import BASE_PATHS, app_for
from providers.sandboxes.server import make_server


class Command(BaseCommand):
    help = "Serve a sandbox provider over HTTP (same wire format as the real provider)."

    def add_arguments(self, parser):
        parser.add_argument("--provider", required=True, choices=PROVIDERS)
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args, provider: str, port: int, host: str, **options):
        server = make_server(app_for(provider), host=host, port=port)
        bound = server.server_address[1]
        self.stdout.write(f"{provider} sandbox on http://{host}:{bound}{BASE_PATHS[provider]}",
                          ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
