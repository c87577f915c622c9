"""The wrapper every periodic job runs in: `@job("switchyard.<area>.<job>")`.

A job is a thin task over one service. The wrapper adds what every job needs:

- a log line per run, saying what the service did (its counts) and how long it took;
- `switchyard_job_runs_total{job,outcome}` and `switchyard_job_duration_seconds{job}`
  (workers/metrics.py);
- retries of a run that raised, bounded (`max_retries`), after an exponential back-off with
  equal jitter: retry *n* (from 1) waits between half and all of
  `retry_backoff · 2^(n−1)` seconds, at most `retry_backoff_max`.

What it does not add, because the services guarantee it: a run that fails leaves no
half-done work (each service commits each unit of work in its own transaction, so a retry
or the next scheduled run takes up where it stopped), and two runs at once do not do the
same work twice (rows claimed with SKIP LOCKED, or a Postgres advisory lock).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task
from celery.exceptions import Retry

from workers.celery import app
from workers.metrics import job_duration, job_runs

logger = logging.getLogger("workers.jobs")


def backoff_seconds(retries: int, *, base: float, maximum: float) -> float:
    """The wait before retry number `retries + 1`: between half and all of
    base · 2^retries, capped at `maximum` (equal jitter: never zero, never in lockstep)."""
    ceiling = min(maximum, base * (2 ** retries))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def counts_of(result: Any) -> dict[str, Any]:
    """What a service returned, as the counts to log: a number, a mapping of counts, a
    dataclass of counts, or nothing."""
    if result is None:
        return {}
    if isinstance(result, bool | int | float | str):
        return {"count": result}
    if isinstance(result, Mapping):
        return dict(result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return {"result": repr(result)}


def _describe(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in counts.items()) or "nothing returned"


def run_job(task: Task, name: str, func: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any], *, backoff: float, backoff_max: float) -> Any:
    """Run one job: measure, log, count, retry."""
    started = time.monotonic()
    try:
        result = func(*args, **kwargs)
    except Retry:  # the job asked for a retry itself
        job_duration.labels(name).observe(time.monotonic() - started)
        job_runs.labels(name, "retried").inc()
        raise
    except Exception as exc:
        elapsed = time.monotonic() - started
        job_duration.labels(name).observe(elapsed)
        retries = task.request.retries or 0
        max_retries = task.max_retries
        if max_retries is not None and retries >= max_retries:
            job_runs.labels(name, "failed").inc()
            logger.exception(
                "job %s failed after %.3f s (try %d of %d, no retry left): %s",
                name, elapsed, retries + 1, max_retries + 1, type(exc).__name__,
                extra={"job": name, "outcome": "failed", "duration_seconds": elapsed,
                       "retries": retries})
            raise
        countdown = backoff_seconds(retries, base=backoff, maximum=backoff_max)
        job_runs.labels(name, "retried").inc()
        logger.warning(
            "job %s failed after %.3f s (try %d of %d), retry in %.1f s: %s",
            name, elapsed, retries + 1, (max_retries or 0) + 1, countdown,
            type(exc).__name__, exc_info=True,
            extra={"job": name, "outcome": "retried", "duration_seconds": elapsed,
                   "retries": retries, "retry_in_seconds": countdown})
        if task.request.is_eager:
            # Run eagerly (tests; the embedded default has no beat): Celery's apply() runs
            # the retry at once when the task hands back its Retry (raising it would
            # propagate out of apply() under task_eager_propagates).
            return task.retry(exc=exc, countdown=countdown, throw=False)
        raise task.retry(exc=exc, countdown=countdown) from exc
    elapsed = time.monotonic() - started
    job_duration.labels(name).observe(elapsed)
    job_runs.labels(name, "ok").inc()
    counts = counts_of(result)
    logger.info("job %s ok in %.3f s: %s", name, elapsed, _describe(counts),
                extra={"job": name, "outcome": "ok", "duration_seconds": elapsed,
                       "counts": counts})
    return result


def job(name: str, *, max_retries: int = 3, retry_backoff: float = 10.0,
        retry_backoff_max: float = 600.0, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register `func` as the Celery task `name`, run through `run_job`.

    `options` are Celery task options (ignore_result, acks_late, time limits, …). The
    task's arguments are the function's (ids and plain values: JSON)."""

    def decorate(func: Callable[..., Any]) -> Any:
        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            return run_job(self, name, func, args, kwargs, backoff=retry_backoff,
                           backoff_max=retry_backoff_max)

        run.__name__ = func.__name__
        run.__qualname__ = func.__qualname__
        run.__module__ = func.__module__
        run.__doc__ = func.__doc__
        run.job_name = name  # type: ignore[attr-defined]  # (tests: made by job())
        return app.task(name=name, bind=True, max_retries=max_retries, **options)(run)

    return decorate
