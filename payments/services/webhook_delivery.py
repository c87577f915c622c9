"""Sending merchant webhooks: sign, POST, log every try, retry with back-off, give up.

`deliver_due` sends what is due, one delivery at a time:

1. **Claim** (one short transaction): the oldest due delivery (pending, `next_attempt_at` past,
   endpoint not disabled) is locked with `SELECT … FOR UPDATE SKIP LOCKED`, its
   `next_attempt_at` moved a lease ahead (`WEBHOOK_CLAIM_LEASE_SECONDS`), and the transaction
   commits *before* anything is sent. Any number of senders can run at once and none sends
   what another holds; no transaction or row lock is held across the HTTP call; a sender
   killed mid-send leaves the delivery pending, due again when the lease runs out: at least
   once, never lost.
2. **Send**: the URL is checked again (`webhook_urls.destination`: DNS may answer differently
   than at registration) and the POST goes to the address that was checked.
3. **Record** (one short transaction): a `WebhookDeliveryAttempt` for the try, then the
   delivery's outcome, written only if the delivery is still the one this sender claimed
   (its `next_attempt_at` still the lease this sender wrote): a send that outlived its lease
   and was claimed again by another sender, or redelivered by hand meanwhile, leaves the
   delivery to them and only adds its try to the log.

A 2xx ends the delivery. Anything else (3xx included: redirects are not followed; a timeout;
a connection error; a URL now refused) is retried after `_backoff` until
`WEBHOOK_RETRY_PERIOD_SECONDS` after the round's first try, then the delivery is failed. An
endpoint whose deliveries have all failed for `WEBHOOK_DISABLE_AFTER_SECONDS` is disabled, with
the reason in `disabled_reason`, and its pending deliveries fail.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.db.models.functions import Coalesce
from django.utils import timezone

from payments.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)
from payments.services.webhook_urls import Destination, UnsafeURL, destination

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Switchyard-Signature"
USER_AGENT = "Switchyard-Webhooks/1"
EXCERPT_CHARS = 500  # of the response body, kept with each try
_READ_AT_MOST = 4096  # bytes of the response body read; the rest is never downloaded


def sign(body: bytes, secrets: Sequence[str], t: int) -> str:
    """`t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, one `v1=` per secret (two during a
    secret roll: a receiver that knows either one verifies the delivery)."""
    signed = str(t).encode() + b"." + body
    signatures = [hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
                  for secret in secrets]
    return ",".join([f"t={t}", *(f"v1={s}" for s in signatures)])


def _backoff(tries: int) -> float:
    """Seconds before the next try after `tries` failed ones: equal jitter on an exponential
    step (half of it fixed, half random), so endpoints that failed together do not come
    back together."""
    step = min(settings.WEBHOOK_RETRY_MAX_SECONDS,
               settings.WEBHOOK_RETRY_BASE_SECONDS * 2.0 ** min(tries - 1, 32))
    return float(step / 2 + random.uniform(0, step / 2))


@dataclass(frozen=True)
class _Claim:
    delivery_id: int
    lease_until: dt.datetime  # what this sender wrote into next_attempt_at: its claim token


@dataclass(frozen=True)
class _Try:
    started_at: dt.datetime
    status_code: int | None
    latency_ms: int
    error: str
    excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else self.error


def deliver_due(*, limit: int = 100) -> int:
    """Send up to `limit` due deliveries, one claim at a time; returns how many were sent
    (tried). Stops claiming after WEBHOOK_DELIVERY_PASS_SECONDS: the next pass goes on."""
    deadline = time.monotonic() + settings.WEBHOOK_DELIVERY_PASS_SECONDS
    sent = 0
    while sent < limit and time.monotonic() < deadline:
        claim = _claim_one()
        if claim is None:
            break
        _send_claimed(claim)
        sent += 1
    return sent


def _claim_one() -> _Claim | None:
    # Claimed one at a time, so each send has the whole lease from just before it starts
    # (a batch claimed at once would let the last of a slow batch outlive its lease).
    now = timezone.now()
    lease_until = now + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_LEASE_SECONDS)
    with transaction.atomic():
        delivery = (WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now,
                            endpoint__disabled=False)
                    .order_by("next_attempt_at", "id").only("id").first())
        if delivery is None:
            return None
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=lease_until, first_attempt_at=Coalesce("first_attempt_at", now))
    return _Claim(delivery.pk, lease_until)


def _send_claimed(claim: _Claim) -> None:
    delivery = (WebhookDelivery.objects.select_related("event", "endpoint")
                .get(pk=claim.delivery_id))
    endpoint, event = delivery.endpoint, delivery.event
    # the exact bytes that are signed are the bytes that are sent
    body = json.dumps(event.payload).encode()
    started_at = timezone.now()
    header = sign(body, endpoint.signing_secrets(started_at), int(started_at.timestamp()))
    result = _post(endpoint, body, header, started_at)
    _record(claim, delivery, result)


def _post(endpoint: WebhookEndpoint, body: bytes, signature: str,
          started_at: dt.datetime) -> _Try:
    clock = time.monotonic()

    def done(status_code: int | None = None, error: str = "", excerpt: str = "") -> _Try:
        latency = int((time.monotonic() - clock) * 1000)
        return _Try(started_at, status_code, latency, error[:500], excerpt[:EXCERPT_CHARS])

    try:
        target = destination(endpoint.url, livemode=endpoint.livemode)
    except UnsafeURL as exc:  # refused before any connection is made
        return done(error=f"Refused: {exc}")
    url, host_header = _pinned(endpoint.url, target)
    # identity: the excerpt is read raw, never a compressed body inflated in memory
    headers = {"Host": host_header, "Content-Type": "application/json",
               "User-Agent": USER_AGENT, "Accept-Encoding": "identity",
               SIGNATURE_HEADER: signature}
    try:
        # A client per send: httpx pools connections by the URL's host, here an IP address;
        # a pooled TLS connection made for one endpoint's host name must never carry another
        # endpoint's delivery to the same address. trust_env=False: an HTTP(S)_PROXY from the
        # environment would resolve the host itself, past the checked address.
        with httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False,
                          verify=_tls_context(), trust_env=False) as client:
            # sni_hostname: the TLS handshake names the URL's host (SNI) and the certificate
            # is verified against it (httpcore passes it to wrap_socket as server_hostname,
            # with check_hostname on), while the TCP connection goes to the checked address
            request = client.build_request("POST", url, content=body, headers=headers,
                                           extensions={"sni_hostname": target.host})
            response = client.send(request, stream=True)
            try:
                excerpt = _read_excerpt(response, clock)
                status = response.status_code
            finally:
                response.close()
    except httpx.TimeoutException as exc:
        return done(error=f"Timed out after {settings.WEBHOOK_TIMEOUT_SECONDS:g} s "
                          f"({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return done(error=f"{type(exc).__name__}: {exc}"[:500])
    error = ""
    if 300 <= status < 400:
        error = "Redirects are not followed: answer 2xx at the registered URL."
    elif not 200 <= status < 300:
        error = f"HTTP {status}"
    return done(status, error, excerpt)


def _pinned(url: str, target: Destination) -> tuple[str, str]:
    """The URL with its host replaced by the checked address, and the Host header (the
    URL's host, with the port when it is not the scheme's default)."""
    parts = urlsplit(url)
    address = target.address.split("%", 1)[0]  # (a zone only on a link-local address)
    if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address):
        address = f"[{address}]"
    default_port = 443 if target.scheme == "https" else 80
    port = "" if target.port == default_port else f":{target.port}"
    host = f"[{target.host}]" if ":" in target.host else target.host
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{target.scheme}://{address}:{target.port}{path}{query}", f"{host}{port}"


def _read_excerpt(response: httpx.Response, clock: float) -> str:
    """The start of the body, for the merchant's log; reading stops at _READ_AT_MOST bytes or
    when the whole send has taken the timeout (a body dripping a byte at a time)."""
    data = b""
    try:
        for chunk in response.iter_raw():
            data += chunk
            if (len(data) >= _READ_AT_MOST
                    or time.monotonic() - clock > settings.WEBHOOK_TIMEOUT_SECONDS):
                break
    except httpx.HTTPError:  # the status came back: it decides, whatever the body does
        pass
    return data[:_READ_AT_MOST].decode("utf-8", errors="replace")[:EXCERPT_CHARS]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates checked against certifi's CAs, as httpx does by default (tests replace
    this to trust their own local CA)."""
    return ssl.create_default_context(cafile=certifi.where())


def _record(claim: _Claim, delivery: WebhookDelivery, result: _Try) -> None:
    """Log the try and apply its outcome, if this sender still holds the delivery."""
    now = timezone.now()
    try:
        with transaction.atomic():
            WebhookDeliveryAttempt.objects.create(
                delivery_id=delivery.pk, endpoint_id=delivery.endpoint_id,
                started_at=result.started_at, status_code=result.status_code,
                latency_ms=result.latency_ms, error=result.error,
                response_excerpt=result.excerpt)
            held = WebhookDelivery.objects.filter(
                pk=delivery.pk, status=DeliveryStatus.PENDING,
                next_attempt_at=claim.lease_until)
            fields: dict[str, object] = {
                "attempts": delivery.attempts + 1, "last_status_code": result.status_code,
                "last_error": result.error}
            if result.ok:
                fields.update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None,
                              completed_at=now)
            elif (delivery.first_attempt_at or result.started_at) + dt.timedelta(
                    seconds=settings.WEBHOOK_RETRY_PERIOD_SECONDS) <= now:
                fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None,
                              completed_at=now)
            else:
                # never past the period's end: the last try comes when the period is over
                round_start = delivery.first_attempt_at or result.started_at
                period_end = round_start + dt.timedelta(
                    seconds=settings.WEBHOOK_RETRY_PERIOD_SECONDS)
                # tries of this round (a redelivery by hand starts a new one), this one too
                failed = WebhookDeliveryAttempt.objects.filter(
                    delivery_id=delivery.pk, started_at__gte=round_start).count()
                retry_at = now + dt.timedelta(seconds=_backoff(max(failed, 1)))
                fields.update(next_attempt_at=min(retry_at, period_end))
            if not held.update(**fields):
                logger.info("webhook delivery %s: its lease ran out or it was redelivered "
                            "during the send; the try is logged, its outcome left to the "
                            "newer claim", delivery.pk)
            if result.ok:
                _endpoint_succeeded(delivery.endpoint_id, result)
            else:
                _endpoint_failed(delivery.endpoint_id, result, now)
    except IntegrityError:  # the endpoint (and its deliveries) deleted during the send
        logger.info("webhook delivery %s is gone; its try is not logged", delivery.pk)
        return
    if result.ok:
        logger.info("webhook %s delivered to %s (%s ms)", delivery.event.event_id,
                    delivery.endpoint_id, result.latency_ms)
    else:
        logger.info("webhook %s to %s failed: %s", delivery.event.event_id,
                    delivery.endpoint_id, result.describe())


def _successful_tries_since(endpoint_id: str, since: dt.datetime) -> bool:
    return WebhookDeliveryAttempt.objects.filter(
        endpoint_id=endpoint_id, started_at__gte=since,
        status_code__gte=200, status_code__lt=300).exists()


def _endpoint_succeeded(endpoint_id: str, result: _Try) -> None:
    # a failure that started after this try marks the endpoint failing still
    WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__lte=result.started_at) \
        .update(failing_since=None)


def _endpoint_failed(endpoint_id: str, result: _Try, now: dt.datetime) -> None:
    """Mark the endpoint failing since this try (unless it was already, or a try that started
    later succeeded); disable it once it has failed for WEBHOOK_DISABLE_AFTER_SECONDS."""
    endpoint = (WebhookEndpoint.objects.select_for_update()
                .filter(pk=endpoint_id, disabled=False).first())
    if endpoint is None or _successful_tries_since(endpoint_id, result.started_at):
        return
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint_id).update(failing_since=result.started_at)
        return
    failing_for = dt.timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    if endpoint.failing_since + failing_for > now or _successful_tries_since(
            endpoint_id, endpoint.failing_since):
        return
    days = settings.WEBHOOK_DISABLE_AFTER_SECONDS / 86400
    span = f"{days:g} days" if days >= 1 else f"{settings.WEBHOOK_DISABLE_AFTER_SECONDS} s"
    reason = (f"Every delivery failed for {span}; last: {result.describe()} at "
              f"{result.started_at:%Y-%m-%dT%H:%M:%SZ}. Fix the endpoint, enable it again "
              f"and redeliver the events it missed.")[:500]
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(disabled=True, disabled_reason=reason)
    stopped = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None, completed_at=now,
        last_error="The endpoint was disabled.")
    logger.warning("webhook endpoint %s disabled after failing since %s; %s pending "
                   "deliveries stopped", endpoint_id, endpoint.failing_since, stopped)


def seconds_until_due() -> float | None:
    """Seconds until the next delivery or unrelayed event is due (0 if one is due now), None
    when nothing is waiting: for the embedded default's in-process timer, which has no beat
    to come back for retries."""
    from payments.models import WebhookOutbox

    if WebhookOutbox.objects.filter(relayed_at__isnull=True).exists():
        return 0.0
    next_at: dt.datetime | None = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, endpoint__disabled=False,
    ).aggregate(at=Min("next_attempt_at"))["at"]
    if next_at is None:
        return None
    return max(0.0, (next_at - timezone.now()).total_seconds())
