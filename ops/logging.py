"""Logging safety net: no card number ever reaches a log line, whatever a caller formats.

What counts as a card number is `payments.cards.redact_card_numbers`' rule (12 to 19 digits
passing the Luhn check, grouped or not), the same as in API error messages; other numbers
(amounts, timestamps, bounds) stay readable.

Two layers, because a filter only covers the handlers it is attached to:
- `install_record_scrubber` (run by `ops.apps.OpsConfig.ready`, so in every process that sets
  Django up: web, Celery worker and beat, management commands) scrubs each record as it is
  made, whichever logger makes it and whichever handler writes it, including handlers that
  Celery, gunicorn or a library add on their own.
- `CardNumberScrubFilter`, on the console handler of settings.LOGGING, for records made
  before the factory was installed or outside it (`logging.makeLogRecord`).

The console handler also carries `RequestContextFilter` (the request id, and the Celery
task's id and name, on every record) and, with LOG_FORMAT=json, `JsonFormatter`: one JSON
object per line. The JSON is made from the record after the scrubber has run, and its message
and traceback are scrubbed once more as they are written.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from ops import request_id
from payments.cards import redact_card_numbers as scrub


def scrub_record(record: logging.LogRecord) -> None:
    """Replace card numbers in the record's message, traceback and stack, in place. A record
    without any keeps its message template and arguments."""
    try:
        message = record.getMessage()
    except Exception:  # a broken call (wrong arguments): logging would print them raw
        record.msg, record.args = scrub(_unformattable(record)), None
    else:
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    elif record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        cleaned = scrub(text)
        if cleaned != text:  # else leave it to the handler's own formatter
            record.exc_text = cleaned
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


def _unformattable(record: logging.LogRecord) -> str:
    try:
        return f"{record.msg!s} [log call with arguments that do not fit: {record.args!r}]"
    except Exception:
        return "[a log message that could not be formatted]"


class CardNumberScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def install_record_scrubber() -> None:
    """Make every LogRecord of this process go through `scrub_record` as it is created.
    Idempotent: a second call keeps the one wrapper."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "scrubs_card_numbers", False):
        return

    def scrubbed_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        scrub_record(record)
        return record

    scrubbed_record.scrubs_card_numbers = True  # type: ignore[attr-defined]  # our marker
    logging.setLogRecordFactory(scrubbed_record)


class RequestContextFilter(logging.Filter):
    """Put `request_id` (the request being served, or the one that queued this task), and
    `task_id` / `task_name` (the Celery task running, if any) on every record; "-" or empty
    when there is none, so that a format string can name them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            # django.request logs a 4xx/5xx after the middleware returned: the id is then
            # read from the request the record carries
            record.request_id = (request_id.current()
                                 or getattr(getattr(record, "request", None), "request_id", None)
                                 or "-")
        task = _current_task()
        if task is not None:
            record.task_id = getattr(task.request, "id", None) or ""
            record.task_name = task.name or ""
        return True


def _current_task() -> Any:
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - Celery is a dependency
        return None
    task = current_task._get_current_object() if current_task else None  # type: ignore[attr-defined]  # a Proxy
    return task if task is not None and getattr(task, "request", None) is not None else None


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id, and
    task_id / task_name inside a Celery task, exc_info / stack_info when there are any, and any
    `extra=` fields the caller gave."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level",
                                            "name": "logger"})
        kwargs.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S")
        # record attributes that are not worth a field on every line
        kwargs.setdefault("reserved_attrs", [*_RESERVED, "color_message"])
        super().__init__(*args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        import datetime as dt

        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["request_id"] = getattr(record, "request_id", None) or request_id.current()
        for name in ("task_id", "task_name"):
            value = getattr(record, name, None)
            if value:
                log_data[name] = value

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # The record was scrubbed when it was made; what the formatter made of it (the
        # traceback text) and any `extra=` value a caller passed are scrubbed here, value by
        # value (never the JSON text, whose own numbers are not card numbers).
        return {key: _scrubbed(value) for key, value in log_data.items()}


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item) for item in value]
    return value


_RESERVED = [
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname",
    "levelno", "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process",
    "processName", "relativeCreated", "stack_info", "thread", "threadName", "taskName",
    # set by RequestContextFilter and written by add_fields; Django's `request` object and
    # Celery's `data` (the task's context) would only repeat what the message says
    "request_id", "task_id", "task_name", "request", "data",
]
