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
"""

import logging

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
