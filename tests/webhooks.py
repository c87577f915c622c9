"""A real local HTTP server that receives merchant webhooks in tests, and helpers to make
endpoints and events.

`Receiver` listens on 127.0.0.1 (or another loopback address) in a thread; each request is
recorded (path, headers, raw body, the address it reached) and answered by the next planned
`Reply` for its path (200 when none is planned). A reply can hold its answer until released
(`hold`), to keep a request in flight as long as a test wants.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field

from payments.models import WebhookEndpoint, WebhookOutbox
from providers.ids import new_id

SECRET = "whsec_test_0123456789abcdef"  # a throwaway test secret, not a real one
HOLD_LIMIT = 60  # seconds a held reply waits for its release at most (a failing test ends)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once this is set


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    address: str  # the server address the connection reached

    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        self._plans: dict[str, deque[Reply]] = defaultdict(deque)
        self._holds: list[threading.Event] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                        self.server.server_address[0]))
                    plan = receiver._plans[self.path]
                    reply = plan.popleft() if plan else Reply()
                    receiver.arrived.notify_all()
                if reply.hold is not None:
                    reply.hold.wait(HOLD_LIMIT)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client went away (timed out, or was killed)

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hooks", host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def plan(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` with these replies, in order."""
        with self.arrived:
            self._plans[path].extend(replies)
            self._holds.extend(r.hold for r in replies if r.hold is not None)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Wait until `count` requests have arrived (fails the test after `timeout`)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests arrived, not {count}")
            return list(self.requests)

    def close(self) -> None:
        for hold in self._holds:
            hold.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def make_endpoint(merchant, url: str, *, livemode: bool = False, events=("*",),
                  secret: str = SECRET, previous: str = "") -> WebhookEndpoint:
    endpoint = WebhookEndpoint(merchant=merchant, livemode=livemode, url=url,
                               enabled_events=list(events))
    endpoint.set_secrets(secret, previous)
    endpoint.save()
    return endpoint


def make_event(merchant, event_type: str = "payment.succeeded", *,
               livemode: bool = False) -> WebhookOutbox:
    """An event as the state machine writes it (the payload is its exact webhook body)."""
    event_id = new_id("evt")
    return WebhookOutbox.objects.create(
        event_id=event_id, merchant=merchant, livemode=livemode, type=event_type,
        object_id="pay_test", payload={
            "id": event_id, "object": "event", "type": event_type, "livemode": livemode,
            "data": {"object": {"id": "pay_test", "object": "payment", "amount": 1050}}})
