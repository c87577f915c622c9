"""The periodic jobs' Prometheus metrics (workers/jobs.py records them).

Defined with prometheus_client's default registry; how they are exposed (the /metrics
endpoint, multiprocess mode across Celery's pool processes) is ops' business. No
per-merchant labels: `job` is the task name (a handful of values), `outcome` one of
JOB_OUTCOMES.
"""

from prometheus_client import Counter, Histogram

# ok: the run finished; retried: it raised and a retry was scheduled; failed: it raised
# and no retry is left (or the error is not one to retry)
JOB_OUTCOMES = ("ok", "retried", "failed")

job_runs = Counter(
    "switchyard_job_runs_total",
    "Runs of a periodic job, by task name and outcome (ok, retried, failed).",
    ["job", "outcome"],
)

job_duration = Histogram(
    "switchyard_job_duration_seconds",
    "How long a run of a periodic job took (failed and retried runs included).",
    ["job"],
    # from the 5-second relay pass to the daily report build
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
