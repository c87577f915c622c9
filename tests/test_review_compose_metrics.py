"""Review: the compose stack's metrics add up across processes and reach Prometheus.

web runs WEB_CONCURRENCY (2) gunicorn processes and the worker a prefork pool: without
PROMETHEUS_MULTIPROC_DIR in their environment each process counts alone, a scrape answers
from whichever gunicorn worker took it (counters that jump between processes' values), and
the jobs' metrics, counted in the worker's pool processes only, are served nowhere, so
alerts.yml's job-failure alert can never fire. docs/operations/monitoring.md says both are
needed with several processes."""

from __future__ import annotations

from tests.test_deploy_files import SERVICES, env_example


def _environment(name: str) -> dict[str, str]:
    return {key: str(value) for key, value in (SERVICES[name].get("environment") or {}).items()}


def test_web_and_worker_count_in_multiprocess_mode():
    for name in ("web", "worker"):
        directory = _environment(name).get("PROMETHEUS_MULTIPROC_DIR", "")
        # in the container, where the unprivileged user may write
        assert directory.startswith("/tmp/"), name


def test_the_worker_serves_its_pool_metrics():
    port = _environment("worker").get("WORKER_METRICS_PORT", "")
    assert port.isdigit() and int(port) > 0


def test_env_example_names_the_metrics_token():
    assert "METRICS_TOKEN" in env_example()
