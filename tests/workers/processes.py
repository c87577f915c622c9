"""Real Celery processes for the worker tests: the project's app, the Redis broker at the test
REDIS_URL, the database pytest-django made for this run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def worker_env() -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="settings.test",
        # the database pytest-django made for this run, so the worker sees the test's rows
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        CELERY_TASK_ALWAYS_EAGER="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(queue: str, log: Path, *, env: dict[str, str] | None = None,
                 pool: str = "prefork", concurrency: int = 1,
                 hostname: str | None = None) -> subprocess.Popen:
    """A worker consuming `queue` alone (no other test's messages), its output in `log`, in a
    process group of its own (`stop`, or `os.killpg` to kill it mid-task)."""
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery:app", "worker",
            "--loglevel=INFO", f"--pool={pool}", "-Q", queue, "--without-heartbeat",
            "--without-gossip", "--without-mingle", "--hostname", hostname or f"{queue}@%h"]
    if pool == "prefork":
        argv.append(f"--concurrency={concurrency}")
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env if env is not None else worker_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate: Callable[[], object], seconds: float, what: str,
             proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the worker exited ({proc.returncode}) before {what}:\n"
                        f"{log.read_text(errors='replace')}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (a warm shutdown), SIGKILL if it is not gone in 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
