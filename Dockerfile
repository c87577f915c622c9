# syntax=docker/dockerfile:1
# Switchyard image: one image for web (gunicorn), Celery worker and Celery beat
# (docker-compose.yml runs it three ways; docs/operations/deployment.md).

# --- Builder: dependencies into a self-contained virtualenv ------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- Runtime -----------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/venv/bin:$PATH" \
    DJANGO_SETTINGS_MODULE=settings.production

# A fixed, numeric, unprivileged user: orchestrators that require non-root (Kubernetes'
# runAsNonRoot) can verify a number, not a name.
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /app --no-create-home switchyard

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Code stays root-owned (read-only to the app user).
COPY . /app

# Static files for whitenoise. The production settings refuse to load without their required
# variables, so throwaway values are given to this one command only: nothing is connected to
# or encrypted with them, and they are not in the image's ENV. Real ones come at run time.
RUN SECRET_KEY=collectstatic-build-only \
    VAULT_KEYS=k1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    VAULT_ACTIVE_KEY=k1 \
    FINGERPRINT_KEY=collectstatic-build-only \
    DATABASE_URL=sqlite:////tmp/collectstatic-build-only.sqlite3 \
    REDIS_URL=redis://collectstatic-build-only:6379/0 \
    ALLOWED_HOSTS=localhost \
    python manage.py collectstatic --noinput

USER 10001:10001

EXPOSE 8000

# The web process is healthy when /readyz answers 200 (database, cache, broker). Plain HTTP
# inside the container: /readyz is exempt from the HTTPS redirect. Stdlib Python, no curl.
# The worker and beat services of docker-compose.yml replace this with their own check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "/readyz"]

# gunicorn.conf.py: gthread, WEB_CONCURRENCY processes (default: the CPUs gunicorn sees; set
# it to the container's CPU limit) x GUNICORN_THREADS threads, bound to 0.0.0.0:$PORT (8000).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "settings.wsgi:application"]
