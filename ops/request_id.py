"""A request id on every response (`X-Request-Id`), for the access log (gunicorn.conf.py) and
for a merchant quoting a failed call to support.

An id sent by the load balancer or the client is kept when it is a plain token (letters,
digits, `._-`, at most 64 characters), so one id follows the request from the edge; anything
else is replaced by a fresh `req_…` id (a header is never echoed into a log line unchecked).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-Id"
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_for(incoming: str | None) -> str:
    if incoming and _TOKEN.fullmatch(incoming):
        return incoming
    return "req_" + uuid.uuid4().hex[:24]


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[HEADER] = request_id
        return response
