"""docs/operations/alerts.yml is a well-formed Prometheus rules file whose switchyard_* and
django_* metric names are all ones the service exposes (the two job metrics are defined by
the job-run wrapper: checked against their agreed names)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from ops.metrics import BusinessCollector

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "operations" / "alerts.yml"
NAME = re.compile(r"\b((?:switchyard|django)_[a-z0-9_]+)\b")
DURATION = re.compile(r"^\d+[smhd]$")
# defined in workers/metrics.py by the job-run wrapper (issue #12)
JOB_METRICS = {"switchyard_job_runs_total": "counter",
               "switchyard_job_duration_seconds": "histogram"}
SUFFIXES = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum",
                                                             "_created"],
            "gauge": [""], "summary": ["", "_count", "_sum", "_created"], "info": ["_info"]}


def exposed_names() -> set[str]:
    names: set[str] = set()
    families = list(REGISTRY.collect()) + list(BusinessCollector().collect())
    families += [type("F", (), {"name": n.removesuffix("_total"), "type": t})()
                 for n, t in JOB_METRICS.items()]
    for family in families:
        for suffix in SUFFIXES.get(family.type, [""]):
            names.add(family.name + suffix)
    return names


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_file_is_a_rules_file():
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    seen = set()
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] not in seen
            seen.add(rule["alert"])
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"]
            assert "for" not in rule or DURATION.match(rule["for"]), rule
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    # what the issue asks the rules to cover
    text = RULES.read_text()
    for needed in ("switchyard_unresolved_payments", "switchyard_unresolved_payment_oldest",
                   "switchyard_outbox_backlog", "switchyard_webhook_deliveries_pending",
                   "switchyard_breaker_state", 'switchyard_job_runs_total{outcome="failed"}',
                   'django_http_responses_total_by_status_total{status=~"5.."}'):
        assert needed in text, needed


@pytest.mark.django_db
def test_every_metric_an_alert_uses_is_exposed(client):
    client.get("/healthz")  # django-prometheus registers its request metrics on first use
    exposed = exposed_names()
    used = {name for rule in rules() for name in NAME.findall(rule["expr"])}
    assert used, "no metric names found"
    assert used - exposed == set(), sorted(used - exposed)
    # the check can fail: a misspelt name is not exposed
    assert "switchyard_unresolved_payment" not in exposed


def test_promtool_accepts_the_rules():
    """Prometheus' own check of the rules and their PromQL, where promtool is installed
    (Debian's `prometheus` package)."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout
