"""Sandbox webhooks: the sandboxes tell Switchyard what happened, later, as real providers do.

A sandbox queues a `SandboxNotification` for every endpoint configured for the merchant
account (`register`), signed with that endpoint's key, in the same request that changes its
ledger. `deliver_due` POSTs what is due and retries failures with back-off, as the providers
do for days. Who calls it:
- tests, explicitly: the webhook arrives exactly when the test says;
- the embedded default and any process using the in-process sandboxes: a timer thread
  SANDBOX_WEBHOOK_DELAY_SECONDS after the request (None turns it off);
- the Celery beat task `switchyard.providers.deliver_sandbox_webhooks`, as a safety net.

An endpoint URL that is a bare path ("/provider_webhooks/acct_…") is Switchyard's own app,
reached in-process through httpx.WSGITransport; any other URL is sent over HTTP.

A sandbox whose provider signs each delivery attempt when it sends it (Stripe: the
signature covers the time of sending, which the receiver holds to 5 minutes) defines
`delivery_headers(body, key)` in its module; those headers are computed at every attempt,
so a retry hours later is signed afresh, as Stripe's are.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import httpx
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from django.utils import timezone

from providers.sandboxes.models import SandboxNotification, SandboxWebhookEndpoint

logger = logging.getLogger(__name__)
# seconds before retry N (then the last one, repeated), as Adyen does: three quick retries,
# then a queue from 2 minutes up to 8 hours apart, for at most 30 days (docs/providers.md 2.8)
RETRY_SCHEDULE = [10, 10, 10, 120, 600, 3600, 4 * 3600, 8 * 3600]
GIVE_UP_AFTER = dt.timedelta(days=30)
TIMEOUT_SECONDS = 10.0  # Adyen wants an answer within 10 s


def new_hmac_key() -> str:
    """A random 32-byte HMAC key, hex-encoded (the form Adyen's Customer Area shows)."""
    return secrets.token_hex(32)


def register(provider: str, merchant_account: str, url: str, hmac_key: str) -> None:
    """Configure (or re-key) where `provider`'s sandbox sends `merchant_account`'s webhooks."""
    SandboxWebhookEndpoint.objects.update_or_create(
        provider=provider, merchant_account=merchant_account, url=url,
        defaults={"hmac_key": hmac_key})


def queue(provider: str, merchant_account: str, event_code: str,
          body_for: Callable[[SandboxWebhookEndpoint], tuple[str, dict]]) -> int:
    """Queue one delivery per endpoint of the merchant account; `body_for(endpoint)` builds
    the exact body and headers, signed with that endpoint's key. Returns how many."""
    endpoints = list(SandboxWebhookEndpoint.objects.filter(
        provider=provider, merchant_account=merchant_account)) if merchant_account else []
    now = timezone.now()
    notifications = []
    for endpoint in endpoints:
        body, headers = body_for(endpoint)
        notifications.append(SandboxNotification(
            endpoint=endpoint, body=body, headers=headers, event_code=event_code,
            next_attempt_at=now))
    SandboxNotification.objects.bulk_create(notifications)
    if endpoints:
        transaction.on_commit(_schedule_delivery)
    return len(endpoints)


def deliver_due(*, limit: int = 100, now: dt.datetime | None = None) -> int:
    """Send every due notification once; returns how many were acknowledged (2xx)."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(SandboxNotification.objects.select_for_update(skip_locked=True)
                   .filter(delivered_at__isnull=True, next_attempt_at__lte=now,
                           created_at__gt=now - GIVE_UP_AFTER)
                   .select_related("endpoint").order_by("id")[:limit])
        # claimed: another deliverer will not send them while these are in flight
        SandboxNotification.objects.filter(pk__in=[n.pk for n in due]).update(
            next_attempt_at=now + dt.timedelta(seconds=TIMEOUT_SECONDS * 3))
    delivered = 0
    for notification in due:
        headers = {**notification.headers, **_signed_now(notification)}
        status = _post(notification.endpoint.url, notification.body, headers)
        notification.attempts += 1
        notification.last_status = status
        if status.startswith("2"):
            notification.delivered_at = timezone.now()
            delivered += 1
        else:
            wait = RETRY_SCHEDULE[min(notification.attempts, len(RETRY_SCHEDULE)) - 1]
            notification.next_attempt_at = timezone.now() + dt.timedelta(seconds=wait)
            logger.info("sandbox webhook %s to %s failed (%s); retry in %ss",
                        notification.event_code, notification.endpoint.url, status, wait)
        notification.save()
    return delivered


def _signed_now(notification: SandboxNotification) -> dict[str, str]:
    """The headers its sandbox signs at each attempt (see the module doc), if any."""
    endpoint = notification.endpoint
    sign = getattr(import_module(f"providers.sandboxes.{endpoint.provider}"),
                   "delivery_headers", None)
    return sign(notification.body, endpoint.hmac_key) if sign else {}


def _post(url: str, body: str, headers: dict | None = None) -> str:
    """POST one delivery (the exact body bytes); the HTTP status as text, or the transport
    error's name."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        if url.startswith("/"):
            transport = httpx.WSGITransport(app=_own_app())
            with httpx.Client(transport=transport, base_url=_in_process_base()) as client:
                response = client.post(url, content=body.encode(), headers=headers)
        else:
            with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
                response = client.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return str(response.status_code)


@functools.cache
def _own_app():
    """Switchyard's own WSGI app, built once (it loads every middleware)."""
    return get_wsgi_application()


def _in_process_base() -> str:
    """A host our own app accepts (ALLOWED_HOSTS), for deliveries that never leave the
    process."""
    for host in settings.ALLOWED_HOSTS:
        if host and host != "*":
            return "http://" + host.lstrip(".")
    return "http://localhost"


# A delivery pass that fails as a whole (SQLite busy with another writer in the embedded
# default, a database restarting) is tried again on its own this many times, 1, 2, 4, … s
# apart: the embedded default has no beat to pick up what it left due.
THREAD_RETRIES = 5


def _schedule_delivery(delay: float | None = None, retry: int = 0) -> None:
    if settings.SANDBOX_WEBHOOK_DELAY_SECONDS is None:
        return
    if delay is None:
        delay = settings.SANDBOX_WEBHOOK_DELAY_SECONDS
    timer = threading.Timer(delay, _deliver_in_thread, kwargs={"retry": retry})
    timer.daemon = True
    timer.start()


def _deliver_in_thread(retry: int = 0) -> None:
    from django.db import connection

    try:
        deliver_due()
    except Exception:
        logger.exception("sandbox webhook delivery failed")
        if retry < THREAD_RETRIES:  # else the beat task (or the next queued webhook) retries
            _schedule_delivery(delay=2.0 ** retry, retry=retry + 1)
    finally:
        connection.close()


def connect_account(account, *, base_url: str = "") -> str:
    """Set up webhooks between a sandbox account and Switchyard, as an operator does in a real
    provider's dashboard: a signature key in the account's credentials, and the sandbox's
    endpoint for its merchant account pointing at `<base_url>/provider_webhooks/<account id>`
    (no base_url: Switchyard in-process, for `sandbox://` accounts). Returns the endpoint URL,
    or "" for an account it does not apply to."""
    from providers.sandboxes.catalog import SANDBOX_CREDENTIALS

    if account.provider not in SETUP or not (account.is_sandbox or base_url):
        return ""
    setup = SETUP[account.provider]
    credentials = account.get_credentials()
    if credentials.get(setup.channel) in (
            None, "", SANDBOX_CREDENTIALS[account.provider].get(setup.channel)):
        # its own merchant account / channel / key in the sandbox: its webhooks go to it alone
        credentials[setup.channel] = setup.own_channel(account.id)
    credentials.setdefault(setup.key, setup.new_key())
    if account.provider == "checkout":
        # the sandbox's accounts share one secret key: its Reconciliation API lists every
        # channel's payments, each named by its channel; the account reads its own
        credentials["report_channel_name"] = credentials[setup.channel]
    account.set_credentials(credentials)
    account.save()
    url = f"{base_url.rstrip('/')}/provider_webhooks/{account.id}"
    register(account.provider, setup.merchant_account(credentials[setup.channel]), url,
             credentials[setup.key])
    return url


def new_stripe_secret() -> str:
    """A random endpoint signing secret in Stripe's form (`whsec_…`)."""
    return "whsec_" + secrets.token_urlsafe(32)


def _stripe_account(secret_key: str) -> str:
    from providers.sandboxes.stripe import account_for_key

    return account_for_key(secret_key)


@dataclass(frozen=True)
class Setup:
    """How a provider's sandbox accounts are wired for webhooks."""

    channel: str  # the credential naming where webhooks are configured
    key: str  # the credential holding the signature key
    own_channel: Callable[[str], str]  # the sandbox's own value of `channel` for an account id
    new_key: Callable[[], str] = new_hmac_key
    # the sandbox's name for the merchant account that `channel` identifies
    merchant_account: Callable[[str], str] = lambda channel: channel


SETUP = {
    "adyen": Setup("merchant_account", "hmac_key", lambda acct: f"SwitchyardSandbox-{acct}"),
    "checkout": Setup("processing_channel_id", "webhook_secret",
                      lambda acct: f"pc_{acct.removeprefix('acct_').lower()}"),
    # Stripe knows the account by its API key: each sandbox account gets a key of its own,
    # and the sandbox names the account after it (providers.sandboxes.stripe.account_for_key)
    "stripe": Setup("secret_key", "webhook_secret",
                    lambda acct: f"sk_test_sandbox_{acct.removeprefix('acct_').lower()}",
                    new_key=new_stripe_secret, merchant_account=_stripe_account),
}
