# syntax=docker/dockerfile:1
# Switchyard image: one image for web (gunicorn), Celery worker and Celery beat.

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

RUN groupadd --system switchyard \
    && useradd --system --gid switchyard --home-dir /app --no-create-home switchyard

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Code stays root-owned (read-only to the app user).
COPY . /app

# Static files for whitenoise. The settings refuse to load without secrets, so throwaway
# values are given to this one command only; they are not baked into the image's ENV and
# nothing is encrypted with them. Real secrets are injected at run time.
RUN SECRET_KEY=collectstatic-build-only \
    VAULT_KEYS=k1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    VAULT_ACTIVE_KEY=k1 \
    FINGERPRINT_KEY=collectstatic-build-only \
    python manage.py collectstatic --noinput

USER switchyard

EXPOSE 8000

# gunicorn.conf.py: gthread, WEB_CONCURRENCY processes (default: the CPUs gunicorn sees; set
# it to the container's CPU limit) x GUNICORN_THREADS threads, bound to 0.0.0.0:$PORT (8000).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "settings.wsgi:application"]
