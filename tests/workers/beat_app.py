"""The project's Celery app with every beat entry due every second and sent to one queue
(BEAT_TEST_QUEUE), for tests/workers/test_beat.py: real beat and worker processes, the real
schedule's tasks, nothing else's messages."""

import os

from workers.celery import app

QUEUE = os.environ["BEAT_TEST_QUEUE"]
for entry in app.conf.beat_schedule.values():
    entry["schedule"] = 1.0
    entry["options"] = {**entry.get("options", {}), "queue": QUEUE, "expires": 30.0}

__all__ = ["app"]
