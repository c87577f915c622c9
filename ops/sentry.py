"""Error tracking with Sentry, started only when SENTRY_DSN is set (settings/base.py).

Nothing that identifies a cardholder or opens a door leaves in an event:
- `send_default_pii=False` (no user, IP address, cookies or request bodies attached by the
  SDK) and no local variables in stack frames (`include_local_variables=False`: a payment
  function's locals hold the card it is charging);
- every event and every breadcrumb then passes `scrub_event` / `scrub_breadcrumb`, which walk
  the whole payload: a value under a sensitive name (password, secret, token, key, api key,
  authorization, cookie, session, CVC, credentials, signature, …) is replaced by
  "[Filtered]"; in every other string, card numbers (the same rule as the logs,
  `payments.cards.redact_card_numbers`), our API keys (`sk_test_…`, `sk_live_…`), webhook
  signing secrets (`whsec_…`), bearer tokens and CVC, password, secret or token assignments
  (`cvc=123`, `password=…`) are masked, and so is an integer that is a card number.

Django (requests, views), Celery (task failures, with the task's name) and Redis
integrations are on; tracing only if SENTRY_TRACES_SAMPLE_RATE > 0.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from payments.cards import redact_card_numbers

if TYPE_CHECKING:
    from sentry_sdk._types import Event

FILTERED = "[Filtered]"

# field names whose values are never sent, whatever they hold
SENSITIVE_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|(^|[_-])keys?$|^key[_-]|"
    r"authorization|^auth$|cookie|session|csrf|cvc|cvv|cvn|security[_-]?code|credential|"
    r"signature|hmac|private|dsn|card[_-]?number|^pan$", re.IGNORECASE)

_SECRET_VALUES = [
    (re.compile(r"\b[sr]k_(?:test|live)_[A-Za-z0-9_\-]+"), FILTERED),  # our API keys
    (re.compile(r"\bwhsec_[A-Za-z0-9_\-]+"), FILTERED),  # webhook signing secrets
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE), r"\1 " + FILTERED),
    # cvc=123, "cvc": "1234", cvv2 : 123, in a message or a repr
    (re.compile(r"""(\b(?:cvc|cvv|cvc2|cvv2|cvn|security_code)['"]?\s*[:=]\s*['"]?)\d{3,4}""",
                re.IGNORECASE), r"\1" + FILTERED),
    # password=…, "secret": "…", token: … in a message or a repr
    (re.compile(r"""(\b(?:password|passwd|secret|token|api_key|apikey)['"]?\s*[:=]\s*['"]?)"""
                r"""[^\s'",}]+""", re.IGNORECASE), r"\1" + FILTERED),
]


def scrub_text(text: str) -> str:
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return redact_card_numbers(text)


def scrub(value: Any, *, depth: int = 0) -> Any:
    """A copy of `value` (any JSON-like structure) with secrets and card data masked."""
    if depth > 20:  # nothing legitimate nests this deep; drop rather than recurse on
        return FILTERED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 10**11:
        text = str(value)  # a card number held as a number
        return value if redact_card_numbers(text) == text else "[redacted]"
    if isinstance(value, dict):
        return {key: (FILTERED if isinstance(key, str) and SENSITIVE_NAME.search(key)
                      and item not in (None, "", [], {})
                      else scrub(item, depth=depth + 1))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        # headers may come as [name, value] pairs
        if len(value) == 2 and isinstance(value[0], str) and SENSITIVE_NAME.search(value[0]):
            return [value[0], FILTERED]
        return [scrub(item, depth=depth + 1) for item in value]
    return value


def scrub_event(event: Event, hint: dict[str, Any] | None = None) -> Event:
    """Sentry's before_send (and before_send_transaction)."""
    scrubbed: Event = scrub(event)
    return scrubbed


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Sentry's before_breadcrumb."""
    scrubbed: dict[str, Any] = scrub(crumb)
    return scrubbed


def init_sentry(*, dsn: str, environment: str, release: str | None,
                traces_sample_rate: float) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.redis import RedisIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=traces_sample_rate,
        integrations=[DjangoIntegration(), CeleryIntegration(), RedisIntegration()],
    )
