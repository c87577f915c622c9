"""A production start (settings.production, SANDBOXES_ENABLED not set) has no sandboxes: its
database gets no sandbox table, and no sandbox module is imported by setting Django up, the
URLconf, the WSGI app or the Celery app, whose beat has no sandbox job. Run in a subprocess
on a fresh SQLite database, so nothing the suite imported or migrated can hide an import."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys
import django
from django.conf import settings

django.setup()
from django.core.management import call_command, get_commands
from django.db import connection

call_command("migrate", "--noinput", verbosity=0)
tables = sorted(connection.introspection.table_names())

from django.urls import get_resolver
get_resolver().url_patterns  # loads settings.urls and every URLconf it includes
from importlib import import_module
import_module("settings.wsgi").application  # the WSGI app, as gunicorn loads it
from workers.celery import app
app.loader.import_default_modules()  # what a worker or beat imports at start: autodiscovery
from providers.accounts import validate_account, AccountError
from providers.models import SANDBOX_URL, ProviderAccount

try:
    validate_account(ProviderAccount(provider="stripe", base_url=SANDBOX_URL), {})
    refused = ""
except AccountError as exc:
    refused = str(exc)

from django.contrib.auth.models import Group

print(json.dumps({
    "groups": sorted(Group.objects.values_list("name", flat=True)),
    "sign_in": [settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME.total_seconds(),
                settings.AUTHENTICATION_BACKENDS[0], settings.MIDDLEWARE[-1],
                settings.SESSION_COOKIE_AGE, settings.SESSION_SAVE_EVERY_REQUEST],
    "sandboxes_enabled": settings.SANDBOXES_ENABLED,
    "installed": list(settings.INSTALLED_APPS),
    "tables": tables,
    # (the providers app's migrations that made and dropped its old sandbox tables aside)
    "modules": sorted(m for m in sys.modules if "sandbox" in m and ".migrations." not in m),
    "beat": sorted(app.conf.beat_schedule),
    "tasks": sorted(t for t in app.tasks if t.startswith("switchyard.")),
    "commands": sorted(c for c in get_commands() if "sandbox" in c),
    "refused": refused,
}))
'''


def test_production_start_has_no_sandbox_tables_modules_or_jobs(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "SANDBOXES_ENABLED",
                        "CELERY_TASK_ALWAYS_EAGER", "DJANGO_SETTINGS_MODULE")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "settings.production",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'production.sqlite3'}",
        "SECRET_KEY": "test-only", "FINGERPRINT_KEY": "test-only", "VAULT_ACTIVE_KEY": "k1",
        "VAULT_KEYS": "k1=dGVzdC1vbmx5LXZhdWx0LWtleS1vbmUtMzJieXRlcyE=",
        # required by production settings; nothing here may connect to it (port 1)
        "REDIS_URL": "redis://127.0.0.1:1/0", "ALLOWED_HOSTS": "api.example.com",
    })
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])

    assert found["sandboxes_enabled"] is False
    assert "providers.sandboxes" not in found["installed"]
    assert "providers_provideraccount" in found["tables"]  # the database did migrate
    assert [t for t in found["tables"] if "sandbox" in t] == []
    assert found["modules"] == []
    assert "deliver-sandbox-webhooks" not in found["beat"]
    assert "sync-unknown-outcomes" in found["beat"]
    assert "switchyard.providers.deliver_sandbox_webhooks" not in found["tasks"]
    assert "switchyard.payments.sync_unknown_outcomes" in found["tasks"]
    assert found["commands"] == []  # run_sandbox, sandbox_fault, sandbox_webhook
    assert "SANDBOXES_ENABLED" in found["refused"]  # a sandbox:// account cannot be set up
    # the admin's groups, lockout and idle sessions are production's too
    assert found["groups"] == ["payment operators", "support"]
    assert "axes_accessattempt" in found["tables"]
    assert found["sign_in"] == [5, 900.0, "axes.backends.AxesStandaloneBackend",
                                "axes.middleware.AxesMiddleware", 1800, True]


def test_the_suite_runs_with_the_sandboxes():
    """The other side of the switch: tests (and `make run`) have the app, its task and job."""
    from django.conf import settings

    from workers.celery import app

    assert settings.SANDBOXES_ENABLED
    assert "providers.sandboxes" in settings.INSTALLED_APPS
    assert "deliver-sandbox-webhooks" in app.conf.beat_schedule
