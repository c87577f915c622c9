"""Production settings: settings/base.py without the provider sandboxes, logging JSON.

The Docker image runs these (DJANGO_SETTINGS_MODULE=settings.production). Everything else is
read from the environment as in base.py; SANDBOXES_ENABLED=true still turns the sandboxes on
(a demo stack, `SANDBOXES_ENABLED=true docker compose up`), never by default; LOG_FORMAT=text
still gives readable log lines.
"""

import os

os.environ.setdefault("SANDBOXES_ENABLED", "false")
os.environ.setdefault("LOG_FORMAT", "json")  # one JSON object per line, for the aggregator

from settings.base import *  # noqa: E402,F403
