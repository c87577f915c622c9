"""The sandbox WSGI app of each provider type, and the path prefix its real API lives under."""

from importlib import import_module

# Where each provider's API paths start (the real base URLs include it for Adyen: …/v71).
BASE_PATHS = {"stripe": "", "adyen": "/v71", "checkout": ""}


def app_for(provider: str):
    """The WSGI app simulating `provider` (providers/sandboxes/<provider>.py: `app`)."""
    return import_module(f"providers.sandboxes.{provider}").app


# What a test-mode sandbox account is created with: placeholders the sandboxes check for
# presence only (a real account gets real ones with `manage.py provider_account add`).
SANDBOX_CREDENTIALS = {
    "stripe": {"secret_key": "sk_test_sandbox"},
    "adyen": {"api_key": "sandbox-api-key", "merchant_account": "SwitchyardSandbox"},
    "checkout": {"secret_key": "sk_sbox_sandbox", "processing_channel_id": "pc_sandbox"},
}
