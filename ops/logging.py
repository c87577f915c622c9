"""Logging safety net: no card number ever reaches a log line, whatever a caller formats.

What counts as a card number is `payments.cards.redact_card_numbers`' rule (12 to 19 digits
passing the Luhn check, grouped or not), the same as in API error messages; other numbers
(amounts, timestamps, bounds) stay readable.
"""

import logging

from payments.cards import redact_card_numbers as scrub


class CardNumberScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(text)
        return True
