# Switchyard developer tasks (GNU make).
#
#   make run       local server on 127.0.0.1:$${PORT:-8000} through gunicorn (gunicorn.conf.py;
#                  SQLite, no services needed); make dev: Django's autoreloading server
#   make bench     HTTP benchmark of the service against its floors (bench/README.md)
#   make test      ruff + mypy + import contracts + pytest against local Postgres and Redis
#                  (started if needed)
#   make worker    Celery worker (needs REDIS_URL), make beat for the scheduler
#   make audit     known vulnerabilities in the installed dependencies (pip-audit)
#
# Extra pytest arguments: make test PYTEST_ARGS="-k refunds -x"

PYTHON ?= python3
VENV = .venv
BIN = $(VENV)/bin
PY = $(BIN)/python
STAMP = $(VENV)/.installed

PYTEST_ARGS ?=
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432
REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379
SERVICE_WAIT ?= 30

CELERY_APP = workers.celery:app
CELERY_QUEUES = payments,webhooks,default

.DEFAULT_GOAL := help
.PHONY: help venv run dev env services test lint worker beat bench clean audit

help:
	@echo "Targets: venv run dev test lint services worker beat bench clean"
	@echo "  make run                 PORT=8000 by default; SQLite unless DATABASE_URL is set; gunicorn"
	@echo "  make dev                 the same on Django's autoreloading development server"
	@echo "  make bench               HTTP benchmark (BENCH_SECONDS, BENCH_ROUNDS), figures in bench/README.md"
	@echo "  make test PYTEST_ARGS=... ruff, mypy, import contracts, pytest (settings.test; Postgres + Redis)"
	@echo "  make audit               pip-audit of .venv: fails on a vulnerability and on an audit it could not do"

# --- Virtualenv --------------------------------------------------------------------------
venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

# WEBHOOK_ALLOWED_HOSTS: merchant webhooks sent by `make run` (which sends them itself in the
# embedded default) and `make worker` may reach 127.0.0.1 and localhost (a receiver on this
# machine, as in the README's walkthrough), unless it is set in the environment or .env.
# Production sets nothing of the kind: the image does not run make.
LOCAL_WEBHOOKS = if [ -z "$${WEBHOOK_ALLOWED_HOSTS+set}" ] && ! grep -qs '^WEBHOOK_ALLOWED_HOSTS=' .env; then \
	  export WEBHOOK_ALLOWED_HOSTS=127.0.0.1,localhost; \
	  echo "WEBHOOK_ALLOWED_HOSTS=$$WEBHOOK_ALLOWED_HOSTS (merchant webhooks may reach this machine)"; \
	fi;

# --- Local server ------------------------------------------------------------------------
env: venv
	$(PY) scripts/init_env.py

# DATABASE_URL / REDIS_URL are not set here: the embedded default (SQLite, local-memory
# cache, eager Celery) is used unless they are already set in your environment.
run: venv env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@$(LOCAL_WEBHOOKS) exec $(BIN)/gunicorn -c gunicorn.conf.py --bind 127.0.0.1:$${PORT:-8000} \
	  settings.wsgi:application

# The same, served by Django's development server, reloading on code changes.
dev: venv env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	@$(LOCAL_WEBHOOKS) exec $(PY) manage.py runserver 127.0.0.1:$${PORT:-8000}

# --- Services for tests: local Postgres and Redis --------------------------------------
services:
	@if ! pg_isready -q -h $(PG_HOST) -p $(PG_PORT) >/dev/null 2>&1; then \
	  echo "Starting Postgres..."; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -n 1) main start \
	    || echo "warning: could not start Postgres; waiting in case it is coming up"; \
	fi
	@if ! redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ping >/dev/null 2>&1; then \
	  echo "Starting Redis..."; \
	  redis-server --daemonize yes --bind $(REDIS_HOST) --port $(REDIS_PORT) --save "" --appendonly no \
	    || echo "warning: could not start Redis; waiting in case it is coming up"; \
	fi
	@i=0; until pg_isready -q -h $(PG_HOST) -p $(PG_PORT) >/dev/null 2>&1; do \
	  i=$$((i+1)); if [ $$i -ge $(SERVICE_WAIT) ]; then \
	    echo "Postgres not ready on $(PG_HOST):$(PG_PORT) after $(SERVICE_WAIT)s" >&2; exit 1; fi; \
	  sleep 1; \
	done
	@i=0; until [ "$$(redis-cli -h $(REDIS_HOST) -p $(REDIS_PORT) ping 2>/dev/null)" = "PONG" ]; do \
	  i=$$((i+1)); if [ $$i -ge $(SERVICE_WAIT) ]; then \
	    echo "Redis not ready on $(REDIS_HOST):$(REDIS_PORT) after $(SERVICE_WAIT)s" >&2; exit 1; fi; \
	  sleep 1; \
	done
	@echo "Postgres and Redis are up."

# --- Checks ------------------------------------------------------------------------------
# The import contracts (pyproject.toml, [tool.importlinter]): dependency direction, the
# sandboxes imported by nothing outside their app and the tests.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

# settings.test is forced so a DJANGO_SETTINGS_MODULE exported in the shell cannot point the
# suite at another database; PYTEST_ARGS="--ds=..." still overrides it.
test: venv services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
	DJANGO_SETTINGS_MODULE=settings.test $(BIN)/pytest $(PYTEST_ARGS)

# --- Dependency audit ----------------------------------------------------------------------
# scripts/audit.py runs pip-audit over .venv (the pinned requirements and what they pull in):
# exit 0 every package audited and none vulnerable, 1 vulnerabilities, 2 the audit could not be
# done for every package (never taken for clean). CI's use: .ci/run, docs/operations/security.md.
audit: venv
	$(PY) scripts/audit.py

# --- Celery ------------------------------------------------------------------------------
worker: venv env
	@$(LOCAL_WEBHOOKS) exec $(BIN)/celery -A $(CELERY_APP) worker -Q $(CELERY_QUEUES) --loglevel=INFO

beat: venv env
	$(BIN)/celery -A $(CELERY_APP) beat --loglevel=INFO

# --- Benchmark ---------------------------------------------------------------------------
# bench/http_bench.py: one bounded run (BENCH_SECONDS per measurement, BENCH_ROUNDS rounds),
# its own databases and redis-server; writes its figures into bench/README.md. wrk is
# installed with apt-get when missing.
bench: venv services
	@command -v wrk >/dev/null 2>&1 || { echo "Installing wrk..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq wrk || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }; }
	$(PY) bench/http_bench.py

# --- Housekeeping ------------------------------------------------------------------------
# Keeps .env: its VAULT_KEYS are the only way to decrypt vaulted data elsewhere.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis staticfiles
	rm -f switchyard.sqlite3 switchyard.sqlite3-journal switchyard.sqlite3-wal switchyard.sqlite3-shm
	rm -f celerybeat-schedule celerybeat-schedule.* celerybeat.pid
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
