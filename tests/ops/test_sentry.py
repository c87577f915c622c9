"""Sentry (issue #12): off without SENTRY_DSN; with it, what reaches the server is scrubbed.

The DSN points at a fake Sentry (an HTTP server on a thread of this test); a fresh process
with SENTRY_DSN set raises an error inside a real request carrying a card number, an API key,
a webhook secret, a CVC and an Authorization header, and logs one as a breadcrumb. The
envelopes that arrive are decoded and searched.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ops.sentry import FILTERED, scrub

ROOT = Path(__file__).resolve().parents[2]
CARD = "4242424242424242"
AMEX = "378282246310005"
SK = "sk_test_" + "Zx9" * 12
WHSEC = "whsec_" + "Qa7" * 14

SCRIPT = r'''
import logging, sys
import django
django.setup()
import sentry_sdk
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.test import override_settings
from django.urls import path

assert sentry_sdk.get_client().is_active(), "Sentry did not start"
CARD, AMEX, SK, WHSEC = sys.argv[1:5]

@csrf_exempt  # a POST from a script, as the API's are
def boom(request):
    logging.getLogger("payments.test").warning("charging %s with key %s", CARD, SK)
    card = {"number": CARD, "cvc": "123", "exp_month": 12}
    raise ValueError(f"provider said card {AMEX} declined; cvc=737 key={SK} secret={WHSEC}")

urlpatterns = [path("boom", boom)]
# through the WSGI application, as gunicorn calls it (Sentry reads the request there)
import io
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults
from django.core.wsgi import get_wsgi_application

body = urlencode({"card[number]": CARD, "card[cvc]": "123"}).encode()
environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/boom", "QUERY_STRING": "card=" + CARD,
           "HTTP_HOST": "localhost", "HTTP_AUTHORIZATION": "Bearer " + SK,
           "HTTP_X_WEBHOOK_SECRET": WHSEC, "HTTP_COOKIE": "sessionid=abc123",
           "CONTENT_TYPE": "application/x-www-form-urlencoded",
           "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
setup_testing_defaults(environ)
statuses = []
with override_settings(ROOT_URLCONF=__name__):
    b"".join(get_wsgi_application()(environ, lambda status, headers: statuses.append(status)))
assert statuses[0].startswith("500"), statuses
sentry_sdk.capture_message(f"operator note: card {CARD} password=hunter2")
with sentry_sdk.new_scope() as scope:
    scope.set_extra("credentials", {"api_key": SK, "password": "hunter2"})
    scope.set_extra("payload", {"card": {"number": CARD, "cvc": "4321"}})
    sentry_sdk.capture_exception(RuntimeError(f"task failed for {CARD}"))
sentry_sdk.flush(timeout=10)
print("sent")
'''


class _FakeSentry(BaseHTTPRequestHandler):
    received: list[tuple[str, dict, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # only if the SDK chose it

            body = brotli.decompress(body)
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_sentry():
    _FakeSentry.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSentry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _FakeSentry.received
    server.shutdown()
    server.server_close()


def _envelope_items(body: bytes) -> list[tuple[dict, dict]]:
    """An envelope: a header line, then (item header line, payload) pairs."""
    lines = body.split(b"\n")
    items, i = [], 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        header = json.loads(lines[i])
        length = header.get("length")
        if length is not None:
            rest = b"\n".join(lines[i + 1:])
            payload, after = rest[:length], rest[length:]
            lines = [b""] * (i + 1) + after.lstrip(b"\n").split(b"\n")
            i += 1
        else:
            payload = lines[i + 1]
            i += 2
        items.append((header, json.loads(payload) if payload.strip() else {}))
    return items


def test_events_that_reach_sentry_are_scrubbed(fake_sentry):
    server, received = fake_sentry
    env = dict(os.environ)
    env.update(DJANGO_SETTINGS_MODULE="settings.test",
               SENTRY_DSN=f"http://publickey@127.0.0.1:{server.server_port}/42",
               SENTRY_ENVIRONMENT="test")
    result = subprocess.run([sys.executable, "-c", SCRIPT, CARD, AMEX, SK, WHSEC], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "sent" in result.stdout, result.stderr[-3000:]

    assert received, "nothing reached the fake Sentry"
    assert all(path == "/api/42/envelope/" for path, _, _ in received)
    raw = b"\n".join(body for _, _, body in received).decode("utf-8", "replace")
    for secret in (CARD, AMEX, SK, WHSEC, "hunter2", "abc123", '"4321"', "cvc=737",
                   '"123"'):
        assert secret not in raw, (secret, raw[max(0, raw.find(secret) - 300):][:600])
    events = [payload for _, _, body in received for header, payload in _envelope_items(body)
              if header.get("type") == "event"]
    assert len(events) == 3, [e.get("message") or e.get("exception") for e in events]

    by_kind = {}
    for event in events:
        if event.get("message") or (event.get("logentry") or {}).get("message"):
            by_kind["message"] = event
        elif event["exception"]["values"][-1]["type"] == "ValueError":
            by_kind["request"] = event
        else:
            by_kind["task"] = event

    request_event = by_kind["request"]
    error = request_event["exception"]["values"][-1]["value"]
    assert error == ("provider said card [redacted] declined; cvc=[Filtered] key=[Filtered] "
                     f"secret={FILTERED}")
    request = request_event["request"]
    assert request["url"] == "http://localhost/boom" and request["method"] == "POST"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == headers["x-webhook-secret"] == FILTERED
    assert headers["cookie"] == FILTERED
    assert request["query_string"] == "card=[redacted]"
    assert request.get("data") in (None, "", {})  # the body is never sent
    # no local variables (the view's `card` dict) in the frames
    for frame in request_event["exception"]["values"][-1]["stacktrace"]["frames"]:
        assert "vars" not in frame
    crumbs = [c.get("message", "") for c in request_event["breadcrumbs"]["values"]]
    assert f"charging [redacted] with key {FILTERED}" in crumbs, crumbs

    task_event = by_kind["task"]
    assert task_event["extra"]["credentials"] == FILTERED
    assert task_event["extra"]["payload"]["card"]["cvc"] == FILTERED
    assert task_event["extra"]["payload"]["card"]["number"] == "[redacted]"


def test_sentry_stays_off_without_a_dsn():
    import sentry_sdk

    assert not sentry_sdk.get_client().is_active()


def test_scrub_rules():
    event = {
        "request": {"headers": [["Authorization", "Bearer x"], ["X-Id", "req_1"]],
                    "env": {"SERVER_NAME": "web-1"}},
        "extra": {"vault_keys": "k1=abc", "hmac_key": "00ff", "pan": 4242424242424242,
                  "amount": 137438953472, "text": "password: 's3cr3t' token=abc",
                  "note": f"Bearer {SK}", "cvv": "", "decline_code": "incorrect_cvc",
                  "idempotency_key": "order-1", "webhook_secret": WHSEC},
    }
    out = scrub(event)
    assert out["request"]["headers"] == [["Authorization", FILTERED], ["X-Id", "req_1"]]
    assert out["request"]["env"] == {"SERVER_NAME": "web-1"}
    extra = out["extra"]
    assert extra["vault_keys"] == extra["hmac_key"] == extra["webhook_secret"] == FILTERED
    assert extra["note"] == f"Bearer {FILTERED}"
    assert extra["cvv"] == ""  # nothing to hide
    assert extra["decline_code"] == "incorrect_cvc"
    assert extra["idempotency_key"] == FILTERED  # a *key field: filtered, to be safe
    assert extra["pan"] == FILTERED  # by its name
    assert scrub({"n": 4242424242424242}) == {"n": "[redacted]"}  # by its value
    assert extra["amount"] == 137438953472  # not a card number: left as it is
    assert extra["text"] == f"password: '{FILTERED}' token={FILTERED}"
