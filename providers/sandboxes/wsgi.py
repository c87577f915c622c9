"""A very small WSGI toolkit for the sandbox providers: requests, responses, routing,
provider-style idempotency and the fault exceptions that become dropped connections.

The same app runs in-process (httpx.WSGITransport, see providers/sandboxes/transport.py) and over real HTTP
(`manage.py run_sandbox`, see providers/sandboxes/server.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from providers.sandboxes.ledger import DropConnection, Hang
from providers.sandboxes.models import SandboxIdempotencyRecord


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes

    def json(self):
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return None

    def form(self) -> dict:
        """Form-encoded body with Stripe-style brackets: a[b][c]=v, a[0]=v → nested dicts."""
        result: dict = {}
        for key, value in parse_qsl(self.body.decode(), keep_blank_values=True):
            parts = re.findall(r"[^\[\]]+", key)
            node = result
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            if parts:
                node[parts[-1]] = value
        return result


@dataclass
class Response:
    status: int
    body: object = None  # dict/list → JSON, str/bytes → as is
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False  # record, then drop the connection instead of answering

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/plain")
        if self.body is None:
            return b"", "application/json"
        return json.dumps(self.body).encode(), "application/json"


Route = tuple[str, str, Callable[..., Response]]  # (method, path regex, handler)


def make_app(routes: list[Route], *, not_found: Callable[[Request], Response],
             before: Callable[[Request], Response | None] | None = None):
    """A WSGI app dispatching on method and path regex (named groups become kwargs)."""
    compiled = [(m, re.compile(p + r"\Z"), h) for m, p, h in routes]

    def app(environ, start_response):
        request = _request(environ)
        response = before(request) if before else None
        if response is None:
            response = _dispatch(compiled, request, not_found)
        if response.drop_connection:
            raise DropConnection()
        body, content_type = response.encoded()
        headers = {"Content-Type": content_type, **response.headers}
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        start_response(status, list(headers.items()))
        return [body]

    return app


def _dispatch(compiled, request: Request, not_found) -> Response:
    for method, pattern, handler in compiled:
        match = pattern.match(request.path)
        if match and method == request.method:
            return handler(request, **match.groupdict())
    return not_found(request)


def _request(environ) -> Request:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
               if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return Request(method=environ["REQUEST_METHOD"], path=environ.get("PATH_INFO", "/"),
                   headers=headers, query=dict(parse_qsl(environ.get("QUERY_STRING", ""))),
                   body=body)


def fingerprint(request: Request) -> str:
    """Keyed (HMAC under a key derived from SECRET_KEY): request bodies carry card numbers and
    CVCs, and a plain hash of a card number is reversed by trying every number of a BIN."""
    key = hashlib.sha256(b"sandbox-idempotency\n" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, request.method.encode() + b" " + request.path.encode() + b"\n"
                    + request.body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class IdempotencyPolicy:
    """How one provider treats idempotency keys (docs/providers.md, "Idempotency")."""

    store: Callable[[Response], bool]  # which responses are saved and replayed
    in_flight: Callable[[], Response]  # answer while the first request is still running
    mismatch: Callable[[], Response] | None  # answer for the same key with another body
    replay_headers: dict[str, str] = field(default_factory=dict)


_DROP = "x-sandbox-drop-connection"  # internal marker on a stored response, never sent


def idempotent(provider: str, key: str | None, request: Request, policy: IdempotencyPolicy,
               handler: Callable[[], Response]) -> Response:
    """Run `handler` at most once per key, as the real provider does."""
    if not key:
        return handler()
    fp = fingerprint(request)
    try:
        with transaction.atomic():
            record = SandboxIdempotencyRecord.objects.create(provider=provider, key=key,
                                                             fingerprint=fp)
    except IntegrityError:
        record = SandboxIdempotencyRecord.objects.filter(provider=provider, key=key).first()
        if record is None:  # released meanwhile
            return idempotent(provider, key, request, policy, handler)
        if not record.completed:
            return policy.in_flight()
        if record.fingerprint != fp and policy.mismatch is not None:
            return policy.mismatch()
        headers = {**record.headers, **policy.replay_headers}
        # The network path of a request whose connection dropped (card …0408) stays broken
        # for SANDBOX_DROP_WINDOW_SECONDS: immediate resends drop too (the payment is left
        # unresolved, as docs/api.md says), a later status lookup or replay gets the answer.
        dropped = headers.pop(_DROP, None) is not None
        age = (timezone.now() - record.created_at).total_seconds()
        drop = dropped and age < settings.SANDBOX_DROP_WINDOW_SECONDS
        return Response(record.status_code, record.body.encode(), headers,
                        drop_connection=drop)
    try:
        response = handler()
    except (Hang, Exception):
        record.delete()  # nothing was processed (or we crashed): the key may be used again
        raise
    if policy.store(response):
        body, content_type = response.encoded()
        stored_headers = {"Content-Type": content_type, **response.headers}
        if response.drop_connection:
            stored_headers[_DROP] = "1"
        SandboxIdempotencyRecord.objects.filter(pk=record.pk).update(
            status_code=response.status, body=body.decode(), completed=True,
            headers=stored_headers)
    else:
        record.delete()
    return response
