"""Card numbers are scrubbed from every log record as it is made (issue #8, #12).

A handler-level filter only covers the handlers that carry it; Celery, gunicorn or a library
may add handlers of their own (a worker once printed a card number through Celery's). So the
scrubber also sits in the log-record factory, which every logger of every process that sets
Django up goes through, whatever handler ends up writing the record.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

CARD = "4242424242424242"
AMEX = "378282246310005"


@pytest.fixture
def bare_logger():
    """A logger with a plain handler of its own, no filter, not propagating: what a library,
    Celery's task logger or gunicorn's error log looks like."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.bare")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_handler_without_the_filter_gets_no_card_number(bare_logger):
    logger, stream = bare_logger
    logger.info("charging card %s", CARD)
    logger.warning("card %(number)s declined", {"number": AMEX})  # gunicorn's dict style
    logger.error(f"provider said: card {CARD} declined")  # formatted by the caller
    output = stream.getvalue()
    assert CARD not in output and AMEX not in output
    assert "INFO charging card [redacted]" in output
    assert "WARNING card [redacted] declined" in output
    assert "ERROR provider said: card [redacted] declined" in output


def test_tracebacks_and_stacks_are_scrubbed_too(bare_logger):
    logger, stream = bare_logger
    try:
        raise ValueError(f"provider rejected {CARD}")
    except ValueError:
        logger.exception("call failed")
    logger.info("where %s was logged", "here", stack_info=True)
    output = stream.getvalue()
    assert CARD not in output
    assert "ValueError: provider rejected [redacted]" in output
    assert "Traceback" in output and "Stack (most recent call last)" in output


def test_a_broken_log_call_neither_raises_nor_leaks(bare_logger, capsys):
    logger, stream = bare_logger
    logger.info("card %s and %s", CARD)  # one argument short
    output = stream.getvalue() + capsys.readouterr().err
    assert CARD not in output
    assert "[redacted]" in output


def test_other_numbers_and_messages_are_untouched(bare_logger):
    logger, stream = bare_logger
    logger.info("amount=%d created[gte] max %d", 1050, 2**37)
    record_args = []
    handler = logging.Handler()
    handler.emit = record_args.append
    logger.addHandler(handler)
    try:
        logger.info("payment %s", "pay_123")
    finally:
        logger.removeHandler(handler)
    assert "INFO amount=1050 created[gte] max 137438953472" in stream.getvalue()
    # a record without a card number keeps its message template and arguments
    assert record_args[0].msg == "payment %s" and record_args[0].args == ("pay_123",)


def test_installing_twice_wraps_once():
    from ops.logging import install_record_scrubber

    factory = logging.getLogRecordFactory()
    install_record_scrubber()
    assert logging.getLogRecordFactory() is factory


def test_every_process_that_sets_django_up_has_it():
    """A fresh interpreter (as gunicorn, a worker or manage.py start): django.setup()
    installs the scrubbing factory; a bare handler then writes no card number."""
    code = (
        "import django, logging, sys\n"
        "django.setup()\n"
        "handler = logging.StreamHandler(sys.stdout)\n"
        "logger = logging.getLogger('gunicorn.error')\n"
        "logger.addHandler(handler); logger.propagate = False; logger.setLevel('INFO')\n"
        f"logger.info('GET /v1/payments/%s', '{CARD}')\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "GET /v1/payments/[redacted]", result
