"""A merchant's webhook endpoints: where its events are POSTed, and the secrets that sign them.

The signing secret (`whsec_…`) is generated here, returned once by create and by roll, and
stored only encrypted (`WebhookEndpoint.set_secrets`). Rolling keeps the previous secret
signing beside the new one for `PREVIOUS_SECRET_HOURS`, so a merchant can deploy the new
secret without dropping a delivery.

Writes lock the endpoint row: the webhook sender updates the same row (`failing_since`,
`disabled` after days of failures), and a merchant's update must neither undo that nor be
undone by it, so each side saves only the fields it changes, under the row lock.

URLs go through the SSRF guard (`webhook_urls.check_url`) on create and on every change of
`url`; the sender checks them again at each delivery.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from payments.audit import audit_record
from payments.errors import InvalidRequest
from payments.events import MERCHANT_EVENT_TYPES
from payments.models import WebhookEndpoint
from payments.services import idempotency
from payments.services.webhook_relay import ALL_EVENTS
from payments.services.webhook_urls import UnsafeURL, check_url

SECRET_PREFIX = "whsec_"
# How long the previous secret keeps signing after a roll.
PREVIOUS_SECRET_HOURS = 24
MAX_ENABLED_EVENTS = 100


def new_signing_secret() -> str:
    """`whsec_` and 32 random bytes, URL-safe base64 (43 characters)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def checked_url(url: str, *, livemode: bool) -> str:
    """`url` if webhooks may go there (raises InvalidRequest on `url` otherwise)."""
    try:
        check_url(url, livemode=livemode)
    except UnsafeURL as exc:
        raise InvalidRequest(str(exc), code="url_invalid", param="url") from None
    return url


def checked_enabled_events(events: Iterable[str]) -> list[str]:
    """A non-empty list of merchant event types, or `["*"]`; duplicates dropped, order kept."""
    values = list(events)
    if not values:
        raise InvalidRequest("enabled_events must name at least one event type, or \"*\".",
                             code="parameter_invalid", param="enabled_events")
    if len(values) > MAX_ENABLED_EVENTS:
        raise InvalidRequest(f"enabled_events has at most {MAX_ENABLED_EVENTS} entries.",
                             code="parameter_invalid", param="enabled_events")
    unique = list(dict.fromkeys(values))
    for value in unique:
        if value != ALL_EVENTS and value not in MERCHANT_EVENT_TYPES:
            raise InvalidRequest(
                f"enabled_events: {value[:60]!r} is not an event type; use \"*\" or some of "
                f"{', '.join(MERCHANT_EVENT_TYPES)}.",
                code="parameter_invalid", param="enabled_events")
    if ALL_EVENTS in unique and len(unique) > 1:
        # "*" with others is ambiguous (did the merchant mean only those?): say so
        raise InvalidRequest("enabled_events: \"*\" stands alone; it already means every "
                             "event type.", code="parameter_invalid", param="enabled_events")
    return unique


def _audit(actor: str, action: str, endpoint: WebhookEndpoint, *,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> None:
    # A signing secret is a credential: who created, changed, rolled or deleted one is
    # recorded (never the secret itself).
    audit_record(actor=actor, action=f"webhook_endpoint.{action}",
                 object_type="webhook_endpoint", object_id=endpoint.pk, before=before,
                 after=after)


def _audited_fields(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"url": endpoint.url, "enabled_events": endpoint.enabled_events,
            "disabled": endpoint.disabled, "livemode": endpoint.livemode}


def webhook_endpoint_create(*, merchant_id: str, livemode: bool, url: str,
                            enabled_events: Iterable[str], description: str = "",
                            metadata: dict[str, str] | None = None, actor: str = "api",
                            ) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned this once; stored encrypted)."""
    events = checked_enabled_events(enabled_events)
    checked_url(url, livemode=livemode)
    secret = new_signing_secret()
    endpoint = WebhookEndpoint(merchant_id=merchant_id, livemode=livemode, url=url,
                               description=description, enabled_events=events,
                               metadata=dict(metadata or {}))
    endpoint.set_secrets(secret)
    with transaction.atomic():
        endpoint.save(force_insert=True)
        idempotency.record_object(endpoint)
        _audit(actor, "create", endpoint, after=_audited_fields(endpoint))
    return endpoint, secret


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, url: str | None = None,
                            enabled_events: Iterable[str] | None = None,
                            description: str | None = None,
                            metadata: dict[str, str] | None = None,
                            disabled: bool | None = None, actor: str = "api",
                            ) -> WebhookEndpoint:
    """Change the fields given (None: unchanged). Re-enabling clears why Switchyard had
    disabled it and since when it was failing: deliveries start afresh."""
    changes: dict[str, Any] = {}
    if url is not None:
        changes["url"] = checked_url(url, livemode=endpoint.livemode)
    if enabled_events is not None:
        changes["enabled_events"] = checked_enabled_events(enabled_events)
    if description is not None:
        changes["description"] = description
    if metadata is not None:
        changes["metadata"] = dict(metadata)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        before = _audited_fields(locked)
        if disabled is True and not locked.disabled:
            # disabled by the merchant: no reason of Switchyard's to show
            changes.update(disabled=True, disabled_reason="")
        elif disabled is False and locked.disabled:
            changes.update(disabled=False, disabled_reason="", failing_since=None)
        for name, value in changes.items():
            setattr(locked, name, value)
        if changes:
            locked.save(update_fields=[*changes, "updated_at"])
            if _audited_fields(locked) != before:
                _audit(actor, "update", locked, before=before, after=_audited_fields(locked))
        idempotency.record_object(locked)
    return locked


def webhook_endpoint_roll_secret(*, endpoint: WebhookEndpoint, now: dt.datetime | None = None,
                                 actor: str = "api") -> tuple[WebhookEndpoint, str]:
    """A new signing secret; the current one becomes the previous one and keeps signing
    beside it for PREVIOUS_SECRET_HOURS. Returns the new secret (shown this once). A secret
    rolled out earlier that is still within its hours stops signing now: there is one
    previous secret at a time."""
    now = now or timezone.now()
    secret = new_signing_secret()
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.set_secrets(secret, previous=locked.stored_secrets()["current"])
        locked.previous_secret_expires_at = now + dt.timedelta(hours=PREVIOUS_SECRET_HOURS)
        locked.save(update_fields=["secrets_encrypted", "secrets_key_version",
                                   "previous_secret_expires_at", "updated_at"])
        idempotency.record_object(locked)
        _audit(actor, "roll_secret", locked, after={
            "previous_secret_expires_at": locked.previous_secret_expires_at.isoformat()})
    return locked, secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: str = "api") -> None:
    """Delete the endpoint with its deliveries and their log. Its pending deliveries stop:
    they go with it, rather than staying behind as failed, because a delivery is only
    meaningful to its endpoint, and the events themselves stay (in /v1/events, and
    redeliverable to the merchant's other endpoints)."""
    with transaction.atomic():
        # the lock waits for a sender that holds the row (disabling it, say) to finish
        locked = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
        if locked is not None:
            _audit(actor, "delete", locked, before=_audited_fields(locked))
            locked.delete()
