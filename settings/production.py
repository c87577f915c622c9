"""Production settings: settings/base.py without the provider sandboxes, behind HTTPS, logging
JSON.

The Docker image runs these (DJANGO_SETTINGS_MODULE=settings.production). Everything else is
read from the environment as in base.py; SANDBOXES_ENABLED=true still turns the sandboxes on
(a demo stack, `SANDBOXES_ENABLED=true docker compose up`), never by default; LOG_FORMAT=text
still gives readable log lines.

`python manage.py check --deploy --fail-level WARNING` passes with these settings and a real
environment (tests/test_production_settings.py runs it). What each setting is for, and why the
values: docs/operations/security.md; every variable: docs/operations/deployment.md.
"""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("SANDBOXES_ENABLED", "false")
os.environ.setdefault("LOG_FORMAT", "json")  # one JSON object per line, for the aggregator

# Required, never defaulted: the embedded defaults of base.py (SQLite, local-memory cache,
# eager Celery, localhost hosts) are wrong for production, and a secret must never have a
# stand-in. All missing ones are named at once, before anything else is read. (.env is read
# first, as base.py does: docker compose passes it as the environment anyway.)
REQUIRED_ENVIRONMENT = (
    "SECRET_KEY",
    "VAULT_KEYS",
    "VAULT_ACTIVE_KEY",
    "FINGERPRINT_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "ALLOWED_HOSTS",
)
environ.Env.read_env(os.environ.get("ENV_FILE") or Path(__file__).resolve().parent.parent / ".env",
                     overwrite=False)
_missing = [name for name in REQUIRED_ENVIRONMENT if not os.environ.get(name, "").strip()]
if _missing:
    raise ImproperlyConfigured(
        "settings.production: missing required environment variable(s): "
        + ", ".join(_missing) + " (see docs/operations/deployment.md).")

from settings.base import *  # noqa: E402,F403
from settings.base import env  # noqa: E402

DEBUG = False  # never in production, whatever DEBUG says (it would show settings on errors)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
# Origins (scheme://host[:port]) whose POSTs the admin accepts besides its own host, e.g. an
# operator console on another subdomain. Empty is right when the admin is served on its host.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS ----------------------------------------------------------------------------------
# Plain HTTP is redirected to HTTPS (the proxy in front should redirect too: this is the
# backstop). Exempt: the health and metrics endpoints, which the Docker HEALTHCHECK, the
# orchestrator's probes and Prometheus call over plain HTTP inside the network (a redirect
# would fail them: nothing inside the network speaks TLS to the container). They carry no
# session or cookie; /metrics takes its own token.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Whether a request came over HTTPS: gunicorn decides, not Django. gunicorn.conf.py believes
# X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (the proxy's addresses) and sets the WSGI
# scheme from it; Django's SECURE_PROXY_SSL_HEADER would believe the header from anyone who
# reaches the port. It stays None on purpose (docs/operations/security.md).
SECURE_PROXY_SSL_HEADER = None

# HSTS: browsers refuse plain HTTP to this host for SECURE_HSTS_SECONDS (default one year,
# what the preload list asks) and, with includeSubDomains, to every subdomain.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is the registrable domain's owner's decision (it covers every host of the
# domain, and leaving the list takes months), not one service's: off unless asked for. Off,
# Django's reminder (security.W021) is silenced: it is a decision, not an oversight.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# Cookies (the admin's session and CSRF token) only over HTTPS, never readable by scripts.
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
