"""Merchant webhook delivery (payments/services/webhook_delivery.py) against a real local HTTP
server: signing, success, retries with back-off, redirects, timeouts, giving up, disabling an
endpoint, the SSRF guard at send time, DNS rebinding, and two senders at once."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib.util
import json
import logging
import socket
import ssl
import threading
from pathlib import Path

import pytest
from django.utils import timezone

from payments.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt
from payments.services import webhook_delivery
from payments.services.webhook_delivery import deliver_due, sign
from payments.services.webhook_relay import relay_due
from tests.threads import in_threads
from tests.webhooks import SECRET, Receiver, Reply, make_endpoint, make_event

ROOT = Path(__file__).resolve().parents[2]


def _load_receiver_script():
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", ROOT / "scripts" / "webhook_receiver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver_script = _load_receiver_script()  # the README's receiver: its verify() is a merchant's


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    server = Receiver()
    yield server
    server.close()


def _due_now(delivery: WebhookDelivery) -> None:
    """Time passes until the retry is due (no sleeping): its next_attempt_at moves back."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1))


def _one_delivery(merchant, url: str, *, livemode: bool = False,
                  **endpoint_fields) -> WebhookDelivery:
    endpoint = make_endpoint(merchant, url, livemode=livemode, **endpoint_fields)
    make_event(merchant, livemode=livemode)
    assert relay_due() == 1
    return WebhookDelivery.objects.get(endpoint=endpoint)


# --- signing ----------------------------------------------------------------------------------
def test_the_signature_header_is_t_and_one_v1_per_secret():
    body = b'{"id": "evt_1", "type": "payment.succeeded"}'
    expected = hmac.new(b"whsec_a", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(body, ["whsec_a"], 1700000000) == f"t=1700000000,v1={expected}"
    rolled = sign(body, ["whsec_new", "whsec_a"], 1700000000)
    t, v1_new, v1_old = rolled.split(",")
    assert t == "t=1700000000" and v1_old == f"v1={expected}"
    assert v1_new.startswith("v1=") and v1_new != v1_old
    # a merchant's verifier (the README's receiver) accepts it with either secret
    for secret in ("whsec_new", "whsec_a"):
        assert receiver_script.verify(body, rolled, secret, now=1700000000)
    assert not receiver_script.verify(body, rolled, "whsec_other", now=1700000000)
    assert not receiver_script.verify(body + b" ", rolled, "whsec_a", now=1700000000)
    assert not receiver_script.verify(body, rolled, "whsec_a", now=1700000000 + 3600)


def test_the_backoff_doubles_from_the_base_with_equal_jitter_up_to_the_cap(settings,
                                                                          monkeypatch):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.WEBHOOK_RETRY_MAX_SECONDS = 6 * 3600
    monkeypatch.setattr(webhook_delivery.random, "uniform", lambda low, high: low)
    assert [webhook_delivery._backoff(n) for n in (1, 2, 3)] == [5, 10, 20]
    monkeypatch.setattr(webhook_delivery.random, "uniform", lambda low, high: high)
    assert [webhook_delivery._backoff(n) for n in (1, 2, 3)] == [10, 20, 40]
    assert webhook_delivery._backoff(40) == 6 * 3600  # capped


# --- relay -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_endpoint_hears_only_events_made_after_it_was_registered(merchant, receiver):
    older = make_event(merchant)  # not relayed yet when the endpoint is registered
    endpoint = make_endpoint(merchant, receiver.url())
    newer = make_event(merchant)
    assert relay_due() == 1
    assert WebhookDelivery.objects.get(endpoint=endpoint).event == newer
    older.refresh_from_db()
    assert older.relayed_at is not None


# --- sending ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_2xx_delivers_the_signed_event_and_logs_the_try(merchant, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    delivery = _one_delivery(merchant, receiver.url())
    receiver.plan("/hooks", Reply(204, b""))
    assert deliver_due() == 1

    [request] = receiver.requests
    event = delivery.event
    assert request.body == json.dumps(event.payload).encode()  # the exact signed bytes
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Switchyard-Webhooks/1"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    header = request.headers["switchyard-signature"]
    assert header.count("v1=") == 1
    assert receiver_script.verify(request.body, header, SECRET)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED, 1, 204)
    assert delivery.completed_at is not None and delivery.next_attempt_at is None
    [attempt] = WebhookDeliveryAttempt.objects.filter(delivery=delivery)
    assert (attempt.status_code, attempt.error, attempt.endpoint_id) == (
        204, "", delivery.endpoint_id)
    assert attempt.started_at <= delivery.completed_at and attempt.latency_ms >= 0
    assert deliver_due() == 0  # nothing left
    assert SECRET not in caplog.text


@pytest.mark.django_db
def test_during_a_secret_roll_both_secrets_sign(merchant, receiver):
    endpoint = make_endpoint(merchant, receiver.url(), secret="whsec_test_new",
                             previous="whsec_test_old")
    endpoint.previous_secret_expires_at = timezone.now() + dt.timedelta(hours=24)
    endpoint.save()
    make_event(merchant)
    relay_due()
    deliver_due()
    [request] = receiver.requests
    header = request.headers["switchyard-signature"]
    assert header.count("v1=") == 2
    for secret in ("whsec_test_new", "whsec_test_old"):
        assert receiver_script.verify(request.body, header, secret)


@pytest.mark.django_db
def test_a_500_is_retried_with_backoff_then_succeeds(merchant, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    delivery = _one_delivery(merchant, receiver.url())
    receiver.plan("/hooks", Reply(500, b"upstream exploded " + b"x" * 2000))
    before = timezone.now()
    assert deliver_due() == 1
    after = timezone.now()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.PENDING, 1, 500)
    assert delivery.last_error == "HTTP 500"
    # the first retry: between half and all of the 10 s base after the failure
    assert before + dt.timedelta(seconds=5) <= delivery.next_attempt_at <= \
        after + dt.timedelta(seconds=10)
    [attempt] = delivery.tries.all()
    assert attempt.status_code == 500
    assert attempt.response_excerpt.startswith("upstream exploded")
    assert len(attempt.response_excerpt) == 500
    delivery.endpoint.refresh_from_db()
    assert delivery.endpoint.failing_since == attempt.started_at
    assert deliver_due() == 0  # not due yet

    _due_now(delivery)
    assert deliver_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 2)
    assert [r.json()["id"] for r in receiver.requests] == [delivery.event.event_id] * 2
    delivery.endpoint.refresh_from_db()
    assert delivery.endpoint.failing_since is None
    assert [a.status_code for a in delivery.tries.order_by("id")] == [500, 200]


@pytest.mark.django_db
def test_the_second_retry_waits_about_twice_as_long(merchant, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    delivery = _one_delivery(merchant, receiver.url())
    receiver.plan("/hooks", Reply(503), Reply(503))
    deliver_due()
    _due_now(delivery)
    before = timezone.now()
    deliver_due()
    after = timezone.now()
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.status == DeliveryStatus.PENDING
    assert before + dt.timedelta(seconds=10) <= delivery.next_attempt_at <= \
        after + dt.timedelta(seconds=20)


@pytest.mark.django_db
def test_a_redirect_is_not_followed_and_counts_as_a_failure(merchant, receiver):
    delivery = _one_delivery(merchant, receiver.url())
    receiver.plan("/hooks", Reply(302, b"", {"Location": receiver.url("/elsewhere")}))
    deliver_due()
    assert [r.path for r in receiver.requests] == ["/hooks"]  # /elsewhere never asked
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code) == (DeliveryStatus.PENDING, 302)
    assert "Redirects are not followed" in delivery.last_error
    assert delivery.tries.get().status_code == 302


@pytest.mark.django_db
def test_an_endpoint_slower_than_the_timeout_fails_the_try(merchant, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    delivery = _one_delivery(merchant, receiver.url())
    release = threading.Event()
    receiver.plan("/hooks", Reply(200, hold=release))
    try:
        deliver_due()
    finally:
        release.set()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_status_code is None
    attempt = delivery.tries.get()
    assert attempt.status_code is None and attempt.error.startswith("Timed out after 0.3 s")


@pytest.mark.django_db
def test_a_connection_refused_is_retried(merchant, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delivery = _one_delivery(merchant, f"http://127.0.0.1:{port}/hooks")
    deliver_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_error.startswith("ConnectError")


# --- giving up --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_delivery_failing_for_the_whole_retry_period_fails(merchant, receiver):
    delivery = _one_delivery(merchant, receiver.url())
    receiver.plan("/hooks", Reply(500))
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        first_attempt_at=timezone.now() - dt.timedelta(days=3, seconds=1),
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    deliver_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.completed_at is not None
    assert delivery.next_attempt_at is None


@pytest.mark.django_db
def test_the_last_retry_comes_at_the_end_of_the_period(merchant, receiver):
    delivery = _one_delivery(merchant, receiver.url())
    receiver.plan("/hooks", Reply(500))
    round_start = timezone.now() - dt.timedelta(days=3) + dt.timedelta(seconds=2)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(first_attempt_at=round_start)
    deliver_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at == round_start + dt.timedelta(days=3)


@pytest.mark.django_db
def test_an_endpoint_failing_for_three_days_is_disabled_with_the_reason(merchant, receiver):
    delivery = _one_delivery(merchant, receiver.url())
    endpoint = delivery.endpoint
    make_event(merchant, "payment.failed")
    relay_due()
    other = WebhookDelivery.objects.exclude(pk=delivery.pk).get()
    WebhookDelivery.objects.filter(pk=other.pk).update(
        next_attempt_at=timezone.now() + dt.timedelta(minutes=5))  # due later
    type(endpoint).objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - dt.timedelta(days=3, seconds=1))
    receiver.plan("/hooks", Reply(500))
    deliver_due()

    endpoint.refresh_from_db()
    assert endpoint.disabled
    assert endpoint.disabled_reason.startswith("Every delivery failed for 3 days; last: HTTP 500 at ")
    for row in WebhookDelivery.objects.filter(endpoint=endpoint):
        assert row.status == DeliveryStatus.FAILED
    assert WebhookDelivery.objects.get(pk=other.pk).last_error == "The endpoint was disabled."
    make_event(merchant)
    assert relay_due() == 0  # a disabled endpoint hears nothing new


@pytest.mark.django_db
def test_an_endpoint_failing_for_less_than_three_days_stays_enabled(merchant, receiver):
    delivery = _one_delivery(merchant, receiver.url())
    type(delivery.endpoint).objects.filter(pk=delivery.endpoint_id).update(
        failing_since=timezone.now() - dt.timedelta(days=2))
    receiver.plan("/hooks", Reply(500))
    deliver_due()
    delivery.endpoint.refresh_from_db()
    assert not delivery.endpoint.disabled and delivery.endpoint.disabled_reason == ""


# --- SSRF at send time ------------------------------------------------------------------------
def _fake_dns(monkeypatch, name: str, *answers: str) -> list[str]:
    """getaddrinfo answers `name` with answers[0], then answers[1], … (the last repeated);
    other names as usual. Returns the list of names asked, to count resolutions."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == name:
            address = answers[min(len(asked), len(answers) - 1)]
            asked.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.django_db
def test_a_url_that_now_resolves_to_a_private_address_is_refused_at_send_time(
        merchant, receiver, settings, monkeypatch):
    # registered when it resolved publicly; now its DNS points at our loopback
    delivery = _one_delivery(merchant, receiver.url(host="hooks.example.test"))
    settings.WEBHOOK_ALLOWED_HOSTS = []
    _fake_dns(monkeypatch, "hooks.example.test", "127.0.0.1")
    deliver_due()
    assert receiver.requests == []  # no connection made
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    attempt = delivery.tries.get()
    assert attempt.status_code is None
    assert attempt.error.startswith("Refused: ") and "127.0.0.1" in attempt.error


@pytest.mark.django_db
def test_dns_rebinding_cannot_switch_the_address_after_the_check(merchant, settings,
                                                                 monkeypatch):
    checked = Receiver("127.0.0.1")
    rebound = Receiver("127.0.0.2", port=checked.port)  # what a second lookup would answer
    try:
        settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.test"]
        delivery = _one_delivery(merchant, checked.url(host="hooks.example.test"))
        asked = _fake_dns(monkeypatch, "hooks.example.test", "127.0.0.1", "127.0.0.2")
        deliver_due()
        assert len(asked) == 1  # resolved once, by the check; the connection used its answer
        [request] = checked.requests
        assert rebound.requests == []
        assert request.headers["host"] == f"hooks.example.test:{checked.port}"
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.SUCCEEDED
    finally:
        checked.close()
        rebound.close()


@pytest.mark.django_db
def test_a_live_mode_endpoint_must_be_https_at_send_time(merchant, receiver):
    delivery = _one_delivery(merchant, receiver.url(), livemode=True)
    deliver_due()
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.last_error == "Refused: Live-mode webhook URLs must use https."


# --- races ------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
def test_two_senders_at_once_send_each_delivery_once(merchant, receiver):
    make_endpoint(merchant, receiver.url())
    events = [make_event(merchant) for _ in range(8)]
    relay_due()
    sent = in_threads(2, lambda i: deliver_due())
    assert sum(sent) == 8, sent
    received = sorted(r.json()["id"] for r in receiver.requests)
    assert received == sorted(e.event_id for e in events)
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 8
    assert WebhookDeliveryAttempt.objects.count() == 8


@pytest.mark.django_db
def test_a_send_that_outlived_its_lease_leaves_the_outcome_to_the_newer_claim(merchant,
                                                                             receiver):
    delivery = _one_delivery(merchant, receiver.url())
    claim = webhook_delivery._claim_one()
    assert claim is not None and claim.delivery_id == delivery.pk
    # meanwhile the lease ran out and another sender claimed it (a lease of its own)
    other_lease = claim.lease_until + dt.timedelta(seconds=30)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=other_lease)
    receiver.plan("/hooks", Reply(500))
    webhook_delivery._send_claimed(claim)
    delivery.refresh_from_db()
    # the late try is in the log, but did not reschedule the other sender's claim
    assert delivery.tries.get().status_code == 500
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (
        DeliveryStatus.PENDING, 0, other_lease)


@pytest.mark.django_db
def test_a_claimed_delivery_is_not_due_until_its_lease_runs_out(merchant, receiver, settings):
    settings.WEBHOOK_CLAIM_LEASE_SECONDS = 60
    delivery = _one_delivery(merchant, receiver.url())
    claim = webhook_delivery._claim_one()  # a sender that dies before it records anything
    assert claim is not None
    assert deliver_due() == 0  # held by the (dead) sender's lease
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == delivery.first_attempt_at + dt.timedelta(seconds=60)
    _due_now(delivery)  # the lease runs out
    assert deliver_due() == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED


# --- TLS to the checked address ---------------------------------------------------------------
def _self_signed(tmp_path, name: str) -> tuple[Path, Path, bytes]:
    """A throwaway self-signed certificate for `name` (cert file, key file, PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, pem


@pytest.fixture
def tls_receiver(tmp_path, settings, monkeypatch):
    """An HTTPS receiver on 127.0.0.1 whose certificate is for hooks.example.test (trusted by
    the sender in this test only), which records the SNI name each handshake sent."""
    cert_file, key_file, pem = _self_signed(tmp_path, "hooks.example.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    sni_names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: sni_names.append(name)
    trusted = ssl.create_default_context(cadata=pem.decode())
    monkeypatch.setattr(webhook_delivery, "_tls_context", lambda: trusted)
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.test", "other.example.test"]
    _fake_dns(monkeypatch, "hooks.example.test", "127.0.0.1")
    server = Receiver(tls=server_context)
    server.sni_names = sni_names
    yield server
    server.close()


@pytest.mark.django_db
def test_https_goes_to_the_checked_address_with_the_urls_host_for_sni_and_certificate(
        merchant, tls_receiver):
    delivery = _one_delivery(
        merchant, tls_receiver.url(host="hooks.example.test", scheme="https"), livemode=True)
    deliver_due()
    [request] = tls_receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{tls_receiver.port}"
    assert tls_receiver.sni_names == ["hooks.example.test"]  # not the IP address
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED


@pytest.mark.django_db
def test_https_verifies_the_certificate_against_the_urls_host(merchant, tls_receiver,
                                                              monkeypatch):
    # the same server (its certificate names hooks.example.test) reached as other.example.test
    _fake_dns(monkeypatch, "other.example.test", "127.0.0.1")
    delivery = _one_delivery(
        merchant, tls_receiver.url(host="other.example.test", scheme="https"), livemode=True)
    deliver_due()
    assert tls_receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.last_error
    assert "other.example.test" in delivery.last_error
