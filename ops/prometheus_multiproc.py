"""prometheus_client's multiprocess mode: the file housekeeping around it.

Every process (gunicorn worker, Celery pool process) writes its counters and histograms into
files of its own in PROMETHEUS_MULTIPROC_DIR (`counter_<pid>.db`, …); a scrape adds every file
up (ops/metrics.py). Files left by an earlier run would be added to this run's counts, and a
new process given an old pid would count on from that process's values, so the directory is
cleared when a server starts. "Cleared" is: the files of processes that are no longer running.
With one server per directory (a container) that is every file; a gunicorn and a Celery worker
sharing one directory on one host (one pid namespace) do not wipe each other's live files.

Standard library only until used: gunicorn.conf.py imports it in the master, which does not
set Django up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def directory() -> str | None:
    return os.environ.get(ENV) or None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


def clear_dead(path: str | None = None) -> list[str]:
    """Remove the metric files of processes that are no longer running; returns their names.
    Creates the directory if it is missing. Nothing to do outside multiprocess mode."""
    path = path or directory()
    if not path:
        return []
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    removed = []
    for file in folder.glob("*.db"):
        match = _PID.search(file.name)
        if match and not _running(int(match.group(1))):
            file.unlink(missing_ok=True)
            removed.append(file.name)
    return removed


def mark_dead(pid: int) -> None:
    """A worker process exited (gunicorn's child_exit): drop its live-gauge files (its counters
    stay, so totals never go down while the server runs)."""
    path = directory()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
