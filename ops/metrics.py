"""/metrics for Prometheus: everything this service counts, behind a token or an allowlist.

What a scrape returns:
- every prometheus_client metric defined anywhere in the process (django-prometheus' request,
  response and database metrics; payments/metrics.py; providers/metrics.py; workers' job
  metrics): from this process's registry, or, with PROMETHEUS_MULTIPROC_DIR set, added up
  over the files of every process writing there (gunicorn workers, Celery's pool processes);
- gauges computed at scrape time (`BusinessCollector`): unresolved payments and the oldest's
  age, the outbox and webhook-delivery backlogs, each provider account's breaker state. Each
  is one cheap query (served by a partial index, payments migration 0013) or one Redis MGET,
  so they describe the whole service whichever process is scraped.

Access (`allowed`): `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time) or a
peer address in METRICS_ALLOWED_IPS; 401 without valid credentials when a token is set, 403
from an address not allowed, 403 for everyone when neither is configured (metrics name
provider accounts and volumes: they are not public). The allowlist admits direct requests
only: a request carrying a proxy's forwarding headers (X-Forwarded-For, X-Forwarded-Proto,
Forwarded, X-Real-IP) was relayed for someone else, whose address REMOTE_ADDR is not (behind
the TLS proxy every request from the internet comes from the proxy's address), so it needs
the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ops import prometheus_multiproc

logger = logging.getLogger(__name__)

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


# --- access ------------------------------------------------------------------------------
# Headers a proxy adds to a request it relays: such a request's REMOTE_ADDR is the proxy's,
# not its sender's (as WSGI environ keys)
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                      "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def is_relayed(environ: Any) -> bool:
    """Did a proxy relay this request (a WSGI environ or request.META)?"""
    return any(environ.get(name) for name in FORWARDING_HEADERS)


def allowed(*, authorization: str | None, remote_addr: str | None,
            relayed: bool = False) -> int:
    """200 if the caller may read the metrics, else the status to refuse it with. `relayed`:
    the request came through a proxy, so `remote_addr` is the proxy's and the allowlist does
    not apply."""
    token = settings.METRICS_TOKEN
    networks = _networks(tuple(settings.METRICS_ALLOWED_IPS))
    if not token and not networks:
        return 403
    if token and authorization:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()):
            return 200
    if networks and remote_addr and not relayed:
        try:
            address = ipaddress.ip_address(remote_addr)
        except ValueError:
            address = None
        if address is not None and any(address in net for net in networks):
            return 200
    return 401 if token else 403


_networks_cache: dict[tuple[str, ...], list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}


def _networks(entries: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = _networks_cache.get(entries)
    if found is None:
        found = [ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip()]
        _networks_cache[entries] = found
    return found


def _refusal(status: int) -> HttpResponse:
    response = HttpResponse("Unauthorized.\n" if status == 401 else "Forbidden.\n",
                            status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


# --- what a scrape returns ------------------------------------------------------------------
class _ThisProcess:
    """The default registry (every metric this process defined) as one collector."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _AllProcesses:
    """Every process's files in PROMETHEUS_MULTIPROC_DIR, added up (counters and histograms
    summed; gauges as each declares). prometheus_client's MultiProcessCollector, reading the
    directory at each scrape."""

    def __init__(self, path: str):
        self.path = path

    def collect(self) -> Iterable[Metric]:
        import glob
        import os

        from prometheus_client.multiprocess import MultiProcessCollector

        files = glob.glob(os.path.join(self.path, "*.db"))
        return MultiProcessCollector.merge(files, accumulate=True)


def process_collector() -> _ThisProcess | _AllProcesses:
    path = prometheus_multiproc.directory()
    return _AllProcesses(path) if path else _ThisProcess()


class BusinessCollector:
    """Gauges of the service's state, read at scrape time. A source that cannot be read (the
    database down) leaves its gauges out of that scrape rather than failing it."""

    def collect(self) -> Iterator[Metric]:
        yield from self._guarded("payments", self._payments)
        yield from self._guarded("webhooks", self._webhooks)
        yield from self._guarded("breakers", self._breakers)

    def _guarded(self, what: str, read: Any) -> Iterator[Metric]:
        try:
            metrics = list(read())
        except Exception:  # noqa: BLE001 - a scrape must still return what it can
            logger.exception("metrics: could not read the %s gauges", what)
            return
        yield from metrics

    def _payments(self) -> Iterator[Metric]:
        from payments.models import Payment, PaymentStatus

        found = Payment.objects.filter(status=PaymentStatus.UNRESOLVED).aggregate(
            count=Count("pk"), oldest=Min("updated_at"))
        yield GaugeMetricFamily(
            "switchyard_unresolved_payments",
            "Payments whose outcome is unknown (status unresolved), now.", value=found["count"])
        yield GaugeMetricFamily(
            "switchyard_unresolved_payment_oldest_age_seconds",
            "Seconds since the oldest unresolved payment last changed (0 when there is none).",
            value=_age(found["oldest"]))

    def _webhooks(self) -> Iterator[Metric]:
        from payments.models import DeliveryStatus, WebhookDelivery, WebhookOutbox

        backlog = WebhookOutbox.objects.filter(relayed_at__isnull=True).count()
        yield GaugeMetricFamily(
            "switchyard_outbox_backlog",
            "Merchant events written but not yet relayed into webhook deliveries.",
            value=backlog)
        pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).aggregate(
            count=Count("pk"), oldest=Min("created_at"))
        yield GaugeMetricFamily(
            "switchyard_webhook_deliveries_pending",
            "Merchant webhook deliveries not yet acknowledged (first tries and retries).",
            value=pending["count"])
        yield GaugeMetricFamily(
            "switchyard_webhook_delivery_oldest_pending_age_seconds",
            "Seconds since the oldest pending webhook delivery was created (0 when none).",
            value=_age(pending["oldest"]))

    def _breakers(self) -> Iterator[Metric]:
        from providers.models import ProviderAccount
        from providers.resilience import breaker

        accounts = list(ProviderAccount.objects.filter(enabled=True).only(
            "id", "provider", "breaker_fail_max", "breaker_reset_timeout",
            "connect_timeout", "read_timeout"))
        gauge = GaugeMetricFamily(
            "switchyard_breaker_state",
            "Circuit breaker of each enabled provider account: 0 closed, 1 half-open, 2 open.",
            labels=["provider", "account"])
        by_id = {a.id: a for a in accounts}
        for account_id, state in sorted(breaker.states(accounts).items()):
            gauge.add_metric([by_id[account_id].provider, account_id],
                             BREAKER_STATES.get(state, 2))
        yield gauge


def _age(moment: Any) -> float:
    return max(0.0, (timezone.now() - moment).total_seconds()) if moment else 0.0


def registry(*, business: bool = True) -> CollectorRegistry:
    """The registry one scrape renders: the process metrics and (web) the business gauges."""
    out = CollectorRegistry(auto_describe=False)
    out.register(process_collector())
    if business:
        out.register(BusinessCollector())
    return out


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics (ops/urls.py)."""
    status = allowed(authorization=request.headers.get("Authorization"),
                     remote_addr=request.META.get("REMOTE_ADDR"), relayed=is_relayed(request.META))
    if status != 200:
        return _refusal(status)
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


# --- a Celery worker's own endpoint (WORKER_METRICS_PORT) -----------------------------------
def worker_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """WSGI: the worker's pool metrics (no business gauges: the web serves those), behind
    the same access rule as /metrics."""
    if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found.\n"]
    status = allowed(authorization=environ.get("HTTP_AUTHORIZATION"),
                     remote_addr=environ.get("REMOTE_ADDR"), relayed=is_relayed(environ))
    if status != 200:
        headers = [("Content-Type", "text/plain")]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
        start_response("401 Unauthorized" if status == 401 else "403 Forbidden", headers)
        return [b"Unauthorized.\n" if status == 401 else b"Forbidden.\n"]
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [generate_latest(registry(business=False))]


_worker_server_lock = threading.Lock()
_worker_server: Any = None


def serve_worker_metrics(*, port: int, address: str) -> int:
    """Serve `worker_app` from a daemon thread of this process (the worker's main process);
    returns the port (0 chooses a free one). Once per process."""
    global _worker_server
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # a scrape every few seconds is not worth a log line

    with _worker_server_lock:
        if _worker_server is None:
            _worker_server = make_server(address, port, worker_app,
                                         handler_class=_QuietHandler)
            threading.Thread(target=_worker_server.serve_forever, name="worker-metrics",
                             daemon=True).start()
            logger.info("serving worker metrics on %s:%d/metrics", address,
                        _worker_server.server_port)
        return int(_worker_server.server_port)



def _on_worker_ready(**kwargs: Any) -> None:
    """The Celery worker's main process, its pool started: clear what dead processes left in
    PROMETHEUS_MULTIPROC_DIR (an earlier run), and serve the pool's metrics if asked to."""
    prometheus_multiproc.clear_dead()
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    if not prometheus_multiproc.directory():
        logger.error("WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: the "
                     "pool processes' metrics cannot be added up; not serving them")
        return
    serve_worker_metrics(port=port, address=settings.WORKER_METRICS_ADDRESS)


def _on_worker_process_shutdown(**kwargs: Any) -> None:
    import os

    prometheus_multiproc.mark_dead(os.getpid())


def connect_worker_signals() -> None:
    from celery import signals

    signals.worker_ready.connect(_on_worker_ready, weak=False,
                                 dispatch_uid="switchyard.metrics.worker_ready")
    signals.worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False,
                                            dispatch_uid="switchyard.metrics.process_shutdown")
