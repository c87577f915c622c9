"""Switchyard settings, read from the environment (12-factor, django-environ).

The embedded default (what `make run` uses) needs no services: SQLite, local-memory cache,
Celery eager, sandboxes in-process. Setting DATABASE_URL / REDIS_URL switches to Postgres /
Redis. Secrets (SECRET_KEY, VAULT_KEYS, FINGERPRINT_KEY) have no defaults: `make run` writes
random ones into a git-ignored `.env` file, production injects real ones. Production runs
settings/production.py (this file without the sandboxes); the tests run settings/test.py.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The variables of `.env` (written by `make run`) fill in what the environment does not set;
# ENV_FILE names another file (the tests of settings.production point it at nothing, so that
# a developer's .env cannot supply what a production environment lacks).
ENV_FILE = os.environ.get("ENV_FILE") or str(BASE_DIR / ".env")
environ.Env.read_env(ENV_FILE, overwrite=False)

# --- Secrets: required, never defaulted -------------------------------------------------
SECRET_KEY = env.str("SECRET_KEY")
# Versioned vault keys, "ID=base64-32-bytes,ID=…"; VAULT_ACTIVE_KEY names the one that encrypts.
VAULT_KEYS = env.dict("VAULT_KEYS")
VAULT_ACTIVE_KEY = env.str("VAULT_ACTIVE_KEY")
# HMAC key for card fingerprints (same card → same fingerprint within one merchant).
FINGERPRINT_KEY = env.str("FINGERPRINT_KEY")

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served by us (no CDN)
    "axes",  # admin login lockout (below)
    "django_prometheus",  # /metrics: requests, latency, database (ops/metrics.py)
    "providers",
    "payments",
    "workers",
    "ops",
]

# The provider sandboxes (simulators of Stripe, Adyen and Checkout.com with test cards and
# faults) are their own app, installed only when this is true: on for the embedded default
# (`make run`) and the tests, off in production (settings/production.py, the Docker image).
# Off, the database has no sandbox tables, beat no sandbox job, and no sandbox module is
# imported; an account whose base URL is sandbox:// cannot be used.
SANDBOXES_ENABLED = env.bool("SANDBOXES_ENABLED", default=True)
if SANDBOXES_ENABLED:
    INSTALLED_APPS.append("providers.sandboxes")

MIDDLEWARE = [
    # First and (but for axes) last: django-prometheus' request counts and latencies.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # An X-Request-Id on every response, for the access log (gunicorn.conf.py), and in every
    # log line of the request and of the Celery tasks it queues (ops/request_id.py).
    "ops.request_id.RequestIdMiddleware",
    # First: a NUL or lone surrogate in the path, query or cookies is refused before anything
    # can send it to Postgres (payments/api/input_guard.py).
    "payments.api.input_guard.InputGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# --- Admin sign-in: lockout and idle sessions ---------------------------------------------
# django-axes counts failed sign-ins per username and client IP together (one attacker cannot
# lock every operator out from elsewhere, and a guessed username from one address is stopped)
# and refuses the next one, right password or not, until the cool-off has passed. Its backend
# must come first so a locked-out attempt never reaches the password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # the count is of consecutive failures
# Behind a proxy, REMOTE_ADDR is the proxy's: run gunicorn with --forwarded-allow-ips and a
# proxy that sets it, or every operator shares one address (the audit log records it too).
# Sessions expire when idle, not at a fixed time after sign-in: every request pushes the
# expiry SESSION_IDLE_TIMEOUT_SECONDS ahead; a session left alone that long is gone.
SESSION_COOKIE_AGE = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True

ROOT_URLCONF = "settings.urls"
WSGI_APPLICATION = "settings.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores -----------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'switchyard.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # services open their own transactions
# Persistent connections: a process keeps its database connection for CONN_MAX_AGE seconds
# and every request reuses it, instead of opening one per request (a TCP and authentication
# handshake, and a new server process on Postgres). Health-checked before a request reuses
# it, so a connection the server or the network dropped is replaced, never failed on. Celery
# workers keep theirs the same way (Celery's Django fixup closes them only when unusable or
# older than this). Each process holds one connection per thread: size Postgres'
# max_connections for every web and worker process and thread (0 closes after each request).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
if DATABASES["default"]["ENGINE"].endswith(".sqlite3"):
    # The embedded default writes from several threads at once (requests, the status-sync
    # nudge, the sandboxes' webhook timer). A deferred SQLite transaction that reads, then
    # writes while another holds the write lock fails at once with "database is locked" (no
    # busy wait can resolve two read locks both upgrading); one that takes the write lock when
    # it begins waits for it instead, up to `timeout` seconds.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20})
# django-prometheus' wrappers of the same backends count queries, errors and connections
# (django_db_*): the engine is otherwise Django's own, its options unchanged.
_METRICS_ENGINES = {
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
DATABASES["default"]["ENGINE"] = _METRICS_ENGINES.get(DATABASES["default"]["ENGINE"],
                                                      DATABASES["default"]["ENGINE"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="switchyard"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery (see workers/celery.py) ------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
# A web process must not hang on a broker that is down: it only sends nudges.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 5}
# The name of the project's Celery app (workers/celery.py); payments sends tasks by name to
# the current app only when it is this one.
TASK_APP_NAME = "switchyard"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True

# --- Money and API limits -------------------------------------------------------------
# Largest amount accepted, in the currency's minor unit.
MAX_PAYMENT_AMOUNT = env.int("MAX_PAYMENT_AMOUNT", default=99_999_999)
# Requests per merchant per minute, unless the merchant has its own limit.
MERCHANT_RATE_LIMIT_PER_MINUTE = env.int("MERCHANT_RATE_LIMIT_PER_MINUTE", default=6000)
# How long a process keeps an API key (and its merchant's settings) without asking Postgres;
# a revocation or a saved merchant reaches every process at its next request regardless
# (payments.services.merchants, "Authenticating a request"). 0 reads the key every request.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=60)
# How long the CVC given when a card is vaulted is kept, encrypted, waiting for the card's
# first authorization; erased then, or after this long (the hourly cleanup).
CVC_RETENTION_HOURS = env.int("CVC_RETENTION_HOURS", default=24)
# How long an Idempotency-Key and its stored response are kept.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# A key still in flight this long belongs to a request whose process died: a retry recovers
# it (payments.services.idempotency). Longer than any request can last: a confirmation
# trying several provider accounts, each call up to its connect and read timeouts plus
# bounded retries, stays under about two minutes (gunicorn's gthread workers, gunicorn.conf.py,
# do not cut a slow request short: it bounds itself); 300 s adds room for clock differences
# between hosts. A bound too short would still not run anything twice (a request whose key
# was taken over can no longer write its object; one that wrote it is answered from it),
# but could answer a slow request's retry with 202 while it is still working.
IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS = env.int("IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS",
                                                default=300)

# --- Authorization: failover and status sync of unknown outcomes ------------------------
# Provider attempts per payment, the first included (failover only after a soft decline or a
# provably-not-processed error).
PAYMENT_MAX_ATTEMPTS = env.int("PAYMENT_MAX_ATTEMPTS", default=3)
# When status sync asks a provider about an unknown outcome: these delays (seconds, from the
# unknown outcome), then every STATUS_SYNC_REPEAT_SECONDS until STATUS_SYNC_GIVE_UP_SECONDS,
# after which the payment stays unresolved and is flagged for an operator.
STATUS_SYNC_SCHEDULE = [int(x) for x in env.list(
    "STATUS_SYNC_SCHEDULE", default=["10", "60", "300", "1800", "7200"])]
STATUS_SYNC_REPEAT_SECONDS = env.int("STATUS_SYNC_REPEAT_SECONDS", default=6 * 3600)
STATUS_SYNC_GIVE_UP_SECONDS = env.int("STATUS_SYNC_GIVE_UP_SECONDS", default=3 * 24 * 3600)
# An attempt still pending this long after it was sent belongs to a process that died
# mid-call: status sync treats its outcome as unknown. Longer than any live call can last.
# After this many lookups that could not tell, a provider that can release an authorization by
# our reference (Adyen's technical cancel) is asked to; its webhook then ends the attempt.
STATUS_SYNC_RELEASE_AFTER_LOOKUPS = env.int("STATUS_SYNC_RELEASE_AFTER_LOOKUPS", default=2)
STATUS_SYNC_PENDING_GRACE_SECONDS = env.int("STATUS_SYNC_PENDING_GRACE_SECONDS", default=600)
# Captures, voids and refunds a provider accepted but has not confirmed are looked up (where
# the provider can tell) once they are this old, then on every sync pass after as long again.
MODIFICATION_SYNC_AFTER_SECONDS = env.int("MODIFICATION_SYNC_AFTER_SECONDS", default=60)
# Nudge a sync pass right after an unknown outcome (a task by name; a timer thread in the
# embedded default). The periodic job does not depend on it.
STATUS_SYNC_NUDGE = env.bool("STATUS_SYNC_NUDGE", default=True)

# The admin's Needs-attention view lists payments and refunds unresolved for longer than
# this, and captures, voids and refunds whose status sync is overdue by as long (or given up).
NEEDS_ATTENTION_UNRESOLVED_MINUTES = env.int("NEEDS_ATTENTION_UNRESOLVED_MINUTES", default=15)

# --- Routing (providers/routing) ------------------------------------------------------------
ROUTING_EXPLORATION_RATE = env.float("ROUTING_EXPLORATION_RATE", default=0.05)
ROUTING_SUCCESS_WINDOW_SECONDS = env.int("ROUTING_SUCCESS_WINDOW_SECONDS", default=300)
ROUTING_SUCCESS_BUCKET_SECONDS = env.int("ROUTING_SUCCESS_BUCKET_SECONDS", default=10)
ROUTING_MIN_SAMPLES = env.int("ROUTING_MIN_SAMPLES", default=20)
ROUTING_NEUTRAL_SUCCESS_RATE = env.float("ROUTING_NEUTRAL_SUCCESS_RATE", default=0.9)
ROUTING_MAX_RULES = env.int("ROUTING_MAX_RULES", default=500)
# While an account's rolling window holds fewer than ROUTING_MIN_SAMPLES outcomes, it scores
# its rate over the last ROUTING_PRIOR_HOURS completed hours (the hourly provider stats, if
# they hold that many), handed to routing by the hourly aggregation; a prior not handed over
# again within ROUTING_PRIOR_TTL_SECONDS lapses (the neutral rate then).
ROUTING_PRIOR_HOURS = env.int("ROUTING_PRIOR_HOURS", default=24)
ROUTING_PRIOR_TTL_SECONDS = env.int("ROUTING_PRIOR_TTL_SECONDS", default=3 * 3600)

# --- Hourly provider stats (payments.services.provider_stats) -------------------------------
# Each hourly run recomputes the last PROVIDER_STATS_RECOMPUTE_HOURS completed hours (outcomes
# that were unknown or pending settle later), and every hour since the last one it stored,
# at most PROVIDER_STATS_CATCHUP_HOURS back (a beat that was down for a day catches up).
PROVIDER_STATS_RECOMPUTE_HOURS = env.int("PROVIDER_STATS_RECOMPUTE_HOURS", default=6)
PROVIDER_STATS_CATCHUP_HOURS = env.int("PROVIDER_STATS_CATCHUP_HOURS", default=7 * 24)

# --- Sandbox providers (used only when SANDBOXES_ENABLED) ---------------------------------
# How long a sandbox served over HTTP stays silent for "times out before commit" (card
# 4000000000000606) before closing the connection; clients time out first.
SANDBOX_HANG_SECONDS = env.float("SANDBOX_HANG_SECONDS", default=15.0)
# For how long resends of a request whose connection dropped after commit (card
# 4000000000000408) drop too, so that immediate safe retries cannot resolve it and the payment
# shows the unresolved path; later lookups and replays get the stored answer.
SANDBOX_DROP_WINDOW_SECONDS = env.float("SANDBOX_DROP_WINDOW_SECONDS", default=5.0)
# The in-process sandboxes deliver their webhooks this many seconds after the request that
# caused them (a timer thread); the beat task delivers whatever that missed.
SANDBOX_WEBHOOK_DELAY_SECONDS = env.float("SANDBOX_WEBHOOK_DELAY_SECONDS", default=1.0)

# Merchant webhooks (payments.services.webhook_urls): hosts, as written in the URL, that may
# be reached although they resolve to a non-public address (local development only; empty
# in production). `make run` and `make worker` set 127.0.0.1,localhost when unset.
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
# Sending them (payments.services.webhook_delivery): each POST gets this long per phase
# (connect, write, read), and redirects are not followed.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# A sender claims a delivery by moving its next_attempt_at this far ahead, and commits, before
# it sends: a sender killed mid-send leaves it due again after this long (at least once). Longer
# than a send can last, so that a live send is not sent a second time by another sender.
WEBHOOK_CLAIM_LEASE_SECONDS = env.float("WEBHOOK_CLAIM_LEASE_SECONDS", default=60.0)
# Retry n after a failure waits between half and all of BASE * 2**(n-1) s (equal jitter),
# at most MAX; a delivery still failing RETRY_PERIOD after its first try is failed, and an
# endpoint every delivery of which has failed for DISABLE_AFTER is disabled.
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=10.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=6 * 3600.0)
WEBHOOK_RETRY_PERIOD_SECONDS = env.int("WEBHOOK_RETRY_PERIOD_SECONDS", default=3 * 24 * 3600)
WEBHOOK_DISABLE_AFTER_SECONDS = env.int("WEBHOOK_DISABLE_AFTER_SECONDS",
                                        default=3 * 24 * 3600)
# One delivery pass claims no new delivery after this long (it ends well inside the task's
# time limit); the next pass goes on.
WEBHOOK_DELIVERY_PASS_SECONDS = env.float("WEBHOOK_DELIVERY_PASS_SECONDS", default=60.0)
# After a transaction that wrote merchant events commits, relay and deliver them this many
# seconds later: a task sent by name (a timer thread in this process in the embedded default,
# which also runs the retries there, having no beat). None: no nudge; the beat task (every
# 5 s) still delivers everything.
WEBHOOK_DELIVERY_DELAY_SECONDS = env.float("WEBHOOK_DELIVERY_DELAY_SECONDS", default=0.5)

# --- Provider resilience (providers/resilience): retries only where provably safe -----------
PROVIDER_RETRY_MAX_ATTEMPTS = env.int("PROVIDER_RETRY_MAX_ATTEMPTS", default=3)
PROVIDER_RETRY_MAX_SECONDS = env.float("PROVIDER_RETRY_MAX_SECONDS", default=2.0)
PROVIDER_RETRY_BACKOFF_SECONDS = env.float("PROVIDER_RETRY_BACKOFF_SECONDS", default=0.1)
PROVIDER_RETRY_BACKOFF_MAX_SECONDS = env.float("PROVIDER_RETRY_BACKOFF_MAX_SECONDS", default=1.0)

# --- Cleanup, retention and reports (payments.services.cleanup, .reports; workers/tasks.py) ---
# A payment still requires_confirmation this long after it was created expires: canceled, with
# cancellation_reason "abandoned" (the merchant gets payment.canceled).
PAYMENT_EXPIRE_AFTER_SECONDS = env.int("PAYMENT_EXPIRE_AFTER_SECONDS", default=24 * 3600)
# Merchant events (/v1/events) are kept this long, with their deliveries and delivery
# attempts (Stripe keeps events 30 days); an event with a delivery still pending is kept until
# it ends. Provider webhook events are kept this long after they were applied.
WEBHOOK_EVENT_RETENTION_DAYS = env.int("WEBHOOK_EVENT_RETENTION_DAYS", default=30)
PROVIDER_EVENT_RETENTION_DAYS = env.int("PROVIDER_EVENT_RETENTION_DAYS", default=30)
# Cleanup jobs work in batches of this many rows (one transaction each) and stop claiming new
# batches after CLEANUP_PASS_SECONDS (well inside the task time limit); the next run goes on.
CLEANUP_BATCH_SIZE = env.int("CLEANUP_BATCH_SIZE", default=500)
CLEANUP_PASS_SECONDS = env.float("CLEANUP_PASS_SECONDS", default=120.0)
# Daily settlement reports (UTC days): a day is built once it has been over for this long
# (transactions that began before midnight have committed), and a build catches up at most
# this many missed days back.
SETTLEMENT_REPORT_DELAY_SECONDS = env.int("SETTLEMENT_REPORT_DELAY_SECONDS", default=600)
SETTLEMENT_REPORT_CATCH_UP_DAYS = env.int("SETTLEMENT_REPORT_CATCH_UP_DAYS", default=7)

# --- REST framework ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["payments.api.authentication.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["payments.api.authentication.IsMerchant"],
    "DEFAULT_PARSER_CLASSES": ["payments.api.input_guard.GuardedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["payments.api.throttling.MerchantRateThrottle"],
    "EXCEPTION_HANDLER": "payments.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchyard merchant API",
    "DESCRIPTION": (
        "One REST API for payments across many providers. Authenticate with "
        "`Authorization: Bearer sk_test_…` (or `sk_live_…`): the key's mode decides which "
        "objects a request sees and creates. Amounts are integers in the currency's minor unit "
        "(1050 USD is $10.50). Every POST takes an `Idempotency-Key` header, and every error "
        "has one shape: `{\"error\": {\"type\", \"code\", \"message\", \"param\"}}`."),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Merchants read the schema: its texts are written for them (payments/api/schema.py), not
    # taken from code docstrings.
    "DISABLE_DOCSTRING_DESCRIPTIONS": True,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "ENUM_NAME_OVERRIDES": {
        "PaymentStatus": "payments.models.PaymentStatus",
        "AttemptStatus": "payments.models.AttemptStatus",
        "RefundStatus": "payments.models.RefundStatus",
        "CaptureMethod": "payments.api.serializers.CAPTURE_METHODS",
        "RefundReason": "payments.api.serializers.REFUND_REASONS",
        "PaymentMethodType": "payments.api.serializers.PAYMENT_METHOD_TYPES",
        "ErrorType": "payments.api.serializers.ERROR_TYPES",
        "RoutingDecisionStrategy": "payments.api.serializers.ROUTING_STRATEGIES",
        "RoutingRuleStrategy": "providers.routing.rules.STRATEGIES",
        "EventType": "payments.events.MERCHANT_EVENT_TYPES",
        "EnabledEventType": "payments.api.webhooks.ENABLED_EVENTS",
        "WebhookEndpointStatus": "payments.api.webhooks.ENDPOINT_STATUSES",
        "WebhookDeliveryStatus": "payments.models.DeliveryStatus",
    },
    # Swagger UI's JavaScript and CSS come from drf-spectacular-sidecar through our own static
    # files (whitenoise): /v1/docs works offline and loads no code from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Misc --------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

WHITENOISE_USE_FINDERS = True  # admin assets without collectstatic in the embedded default

# --- Logs (ops/logging.py) ---------------------------------------------------------------
# LOG_FORMAT=json: one JSON object per line (time, level, logger, message, request_id, and
# task_id / task_name in a Celery task), for a log aggregator; the default of
# settings.production. text: one readable line, the default here (`make run`, `make dev`).
# Both carry the request id, and both pass the card-number scrubber.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("json", "text"):
    raise ValueError(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "scrub_card_numbers": {"()": "ops.logging.CardNumberScrubFilter"},
        "request_context": {"()": "ops.logging.RequestContextFilter"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "ops.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["scrub_card_numbers", "request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Metrics (ops/metrics.py, docs/operations/monitoring.md) --------------------------------
# /metrics answers a scraper that sends `Authorization: Bearer <METRICS_TOKEN>` or connects
# from an address in METRICS_ALLOWED_IPS (addresses or networks, matched against the TCP peer,
# REMOTE_ADDR, never a forwarded header; a request relayed by a proxy, which carries its
# forwarding headers, needs the token). With neither set it answers nobody (403).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
for _entry in METRICS_ALLOWED_IPS:  # a typo fails the start, not every scrape
    ipaddress.ip_network(_entry.strip(), strict=False)
# Several processes (gunicorn workers, Celery's pool) add their metrics up through files in
# PROMETHEUS_MULTIPROC_DIR, which must be in the environment of every process before it starts
# (prometheus_client reads it when it is imported); unset, each process counts alone.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# A Celery worker serves its pool's metrics on this port (same token or allowlist), when set
# and PROMETHEUS_MULTIPROC_DIR is: a worker in its own container or host is scraped there.
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", default="0.0.0.0")

# --- Error tracking (ops/sentry.py) ---------------------------------------------------------
# Sentry starts only when SENTRY_DSN is set; events are scrubbed of card numbers, CVCs, keys,
# secrets and authorization headers before they leave, and carry no personal data.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="production")
SENTRY_RELEASE = env.str("SENTRY_RELEASE", default="")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
if SENTRY_DSN:
    from ops.sentry import init_sentry

    init_sentry(dsn=SENTRY_DSN, environment=SENTRY_ENVIRONMENT, release=SENTRY_RELEASE or None,
                traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)
# --- Reconciliation against provider settlement reports (docs/operations/reconciliation.md) --
# A UTC day is reconciled once it has been over for this many hours (the providers' reports of
# the day are complete by then) ...
RECONCILIATION_DELAY_HOURS = env.int("RECONCILIATION_DELAY_HOURS", default=2)
# ... and days missed (workers down, a provider's report unreadable) are caught up this far
# back; older days are only run by hand (`manage.py reconcile`).
RECONCILIATION_CATCH_UP_DAYS = env.int("RECONCILIATION_CATCH_UP_DAYS", default=7)
# How long a worker's claim on a run lasts (a worker killed mid-run frees it after this).
RECONCILIATION_LEASE_SECONDS = env.int("RECONCILIATION_LEASE_SECONDS", default=900)

# --- Backups and consistency checks (ops/backups.py, docs/operations/backups.md) ------------
# Where `manage.py backup` writes (--dir overrides) and how many backups of the database it
# keeps there (--keep overrides; 0 keeps all). Backups are readable by their owner only.
BACKUP_DIR = env.str("BACKUP_DIR", default=str(BASE_DIR / "backups"))
BACKUP_KEEP = env.int("BACKUP_KEEP", default=14)
# 32 random bytes, base64: when set, backups are encrypted (AES-256-GCM, streamed) with it.
# Keep it apart from the database and the backups (a secrets manager): without it no
# encrypted backup can be restored. Retired keys, comma-separated, still decrypt old backups.
BACKUP_ENCRYPTION_KEY = env.str("BACKUP_ENCRYPTION_KEY", default="")
BACKUP_DECRYPTION_KEYS = env.list("BACKUP_DECRYPTION_KEYS", default=[])
# pg_dump and pg_restore of the server's major version; empty: found on PATH.
BACKUP_PG_BIN_DIR = env.str("BACKUP_PG_BIN_DIR", default="")
# check_consistency's outbox rule looks at changes of the last N days (0: all), since outbox
# rows older than their retention are pruned (the cleanup job): the retention by default.
CONSISTENCY_OUTBOX_WINDOW_DAYS = env.int("CONSISTENCY_OUTBOX_WINDOW_DAYS",
                                         default=WEBHOOK_EVENT_RETENTION_DAYS)
