"""gunicorn configuration: the one way Switchyard is served (Dockerfile, docker-compose.yml,
`make run`, `make bench`). Every value can be overridden from the environment (names below);
a command-line flag overrides both.

Why these values (figures: bench/README.md; connection budget: docs/operations/scaling.md):

- worker_class "gthread": a payment confirmation spends most of its time waiting on the
  provider (300-800 ms per call for a real one). A sync worker holds its whole process for
  that wait, so 3 sync workers serve 3 payments at a time whatever the CPU. Threads release
  the GIL while they wait on sockets, so one process per core keeps the cores busy while
  many payments wait. Measured against sync and gevent in bench/README.md.
- workers = WEB_CONCURRENCY (default: one per CPU core): CPU-bound Python gets one core per
  process; more processes only add memory and database connections.
- threads = GUNICORN_THREADS (default 16): concurrent requests per process. Each busy thread
  holds one Postgres connection (opened at its first query, held to the end of the request,
  provider wait included), so workers x threads x instances is the database connection
  budget: it must stay under Postgres' max_connections (or PgBouncer's pool) with room for
  Celery, beat and operators. 16 covers ~150 ms of provider wait at the rate two cores can
  do; a slower provider needs more threads, not more processes.
- timeout: the master restarts a worker whose main loop stops answering for this long (a
  wedged process). With gthread a slow request does not trip it: requests bound themselves
  (provider connect/read timeouts, bounded retries, PAYMENT_MAX_ATTEMPTS).
- keepalive 75 s: longer than the idle timeout of the load balancer in front (60 s on the
  common ones), so the balancer, never gunicorn, closes an idle connection: no 502 from a
  request sent on a connection gunicorn had just closed. gthread parks idle keep-alive
  connections in its poller; they hold no thread.
- Forwarded headers: X-Forwarded-Proto (https) is believed only from FORWARDED_ALLOW_IPS
  (default: this host only). The client address: REMOTE_ADDR is the TCP peer, i.e. the
  balancer; with PROXY protocol (GUNICORN_PROXY_PROTOCOL=v1|v2|auto, from
  PROXY_ALLOW_FROM) gunicorn sets it to the real client, which the admin lockout and the
  audit log record. The access log also records X-Forwarded-For as sent.
- Access log: one line per request on stdout with the request id (X-Request-Id, set by the
  service on every response), status, size and duration in microseconds.
- preload_app stays False: every worker imports the app itself, so the threads the embedded
  default starts (merchant-webhook timer, status-sync nudges, sandbox webhooks) are started in
  the worker that serves the request, never in a master that forks them away.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def embedded_default(environ: dict[str, str] | os._Environ[str], env_file: str) -> bool:
    """True when the service runs on its embedded SQLite default: no DATABASE_URL in the
    environment or in .env (where settings/base.py reads it)."""
    if environ.get("DATABASE_URL"):
        return False
    try:
        with open(env_file) as f:
            return not any(line.startswith("DATABASE_URL=") and line.strip() != "DATABASE_URL="
                           for line in f)
    except OSError:
        return True


EMBEDDED = embedded_default(
    os.environ, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env"))

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{_int('PORT', 8000)}")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
# The embedded default (`make run`: SQLite, local-memory cache, eager Celery) runs ONE
# process with threads, never several processes:
# - its shared state lives in process memory: the local-memory cache holds the merchant rate
#   limits, the provider breakers and limits, the routing success rates, and the in-process
#   timers (merchant-webhook delivery and its retries, status-sync nudges, sandbox webhooks)
#   are one per process; several processes would each keep their own and disagree;
# - SQLite has a single writer for the whole file: more processes add no write throughput,
#   only more connections waiting on the lock (IMMEDIATE transactions wait up to 20 s,
#   settings/base.py, and past that fail with "database is locked"). 8 threads serve a demo
#   and a browser at once while writes queue on the one lock; connections beyond them wait
#   in the listen backlog instead of being dropped.
workers = _int("WEB_CONCURRENCY", 1 if EMBEDDED else multiprocessing.cpu_count())
# (only gthread uses threads: gunicorn turns "sync" with threads > 1 into gthread)
threads = _int("GUNICORN_THREADS", (8 if EMBEDDED else 16) if worker_class == "gthread" else 1)
# gevent (measured in bench/README.md, not the default): greenlets per process
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 64)
timeout = _int("GUNICORN_TIMEOUT", 120)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 75)
backlog = _int("GUNICORN_BACKLOG", 2048)
preload_app = False
# gunicorn's control socket (one path per user by default) would be shared by every instance
# on a host (the benchmark runs two); nothing here uses it.
control_socket_disable = True

# Recycling workers is off by default (the embedded default's in-process webhook timer would
# die with the worker); set GUNICORN_MAX_REQUESTS to bound a leak in production.
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", max_requests // 10)

forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
proxy_protocol = os.environ.get("GUNICORN_PROXY_PROTOCOL", "off")
proxy_allow_ips = os.environ.get("PROXY_ALLOW_FROM", "127.0.0.1,::1")

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
access_log_format = (
    'rid=%({x-request-id}o)s %(h)s "%(r)s" %(s)s %(b)s %(D)sus '
    'xff="%({x-forwarded-for}i)s" ua="%(a)s"'
)


def post_fork(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    if worker_class == "gevent":
        # psycopg2 blocks the whole process on a query unless told to yield to the hub
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
        # Django keeps a connection per thread, and under gevent every request is a new
        # greenlet: a persistent connection (CONN_MAX_AGE > 0) would be left open by each
        # finished greenlet until Postgres ran out of connections (seen in the benchmark).
        # The settings are read after this hook (preload_app is False).
        os.environ["CONN_MAX_AGE"] = "0"


# Metrics (ops/metrics.py, docs/operations/monitoring.md): with PROMETHEUS_MULTIPROC_DIR in
# the environment, every worker writes its metrics there and a scrape of any one of them adds
# them all up. The directory is cleared of the files of dead processes (an earlier run's) when
# the server starts, and a worker that exits has its live gauges dropped.
def on_starting(server):  # noqa: ARG001 - gunicorn's hook signature
    from ops.prometheus_multiproc import clear_dead

    clear_dead()


def child_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    from ops.prometheus_multiproc import mark_dead

    mark_dead(worker.pid)
