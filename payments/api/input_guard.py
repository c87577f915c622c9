"""Input that cannot be stored is refused at the edge, once, instead of becoming a 500.

Postgres text and JSON columns cannot hold a NUL character (U+0000), and a lone surrogate
(U+D800–U+DFFF, what a JSON "\\ud800" escape parses to) has no UTF-8 encoding, so psycopg2
cannot send it. Either one reaching a query or a row is a crash. Two places see all client
input, so the check lives there rather than in every field and filter:

- `InputGuardMiddleware`, first in MIDDLEWARE: the URL path (ids), query parameters and
  cookies, before authentication or any view runs.
- `GuardedJSONParser`, the API's only parser: every key and string of a JSON body, at any
  depth, plus a cap on nesting (a body nested thousands deep would otherwise blow the stack
  in the decoder, or later in whatever walks it).

Errors use the API's shape and DRF's codes for the same refusal on a string field
(`null_characters_not_allowed`, `surrogate_characters_not_allowed`), with `param` naming the
field.
"""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.parsers import JSONParser

from payments.errors import InvalidRequest

# Deepest a request body may nest. The API's deepest body (a routing rule's weighted accounts
# or metadata conditions) is three levels; this leaves room without letting a body reach the
# interpreter's recursion limit anywhere downstream.
MAX_JSON_DEPTH = 32

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_error(text: str, param: str | None, where: str) -> InvalidRequest | None:
    """The 400 for `text` if it holds a NUL or a lone surrogate, else None. `where` names
    the text in the message (the param, or what it is when there is none)."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return InvalidRequest(f"{where} must not contain NUL characters (U+0000).",
                              code="null_characters_not_allowed", param=param)
    return InvalidRequest(f"{where} must be valid Unicode: it contains an unpaired surrogate "
                          f"(U+{ord(char):04X}).", code="surrogate_characters_not_allowed",
                          param=param)


def check_json(data: object) -> None:
    """Raise InvalidRequest for the first unstorable key or string in `data` (param: the
    dotted path of the string, or of the object whose key it is), or for nesting deeper than
    MAX_JSON_DEPTH. Iterative, so any depth is safe to walk."""
    stack: list[tuple[object, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        param = ".".join(path) or None
        if isinstance(value, str):
            error = unstorable_error(value, param, param or "The body")
            if error is not None:
                raise error
        elif isinstance(value, dict | list):
            if len(path) >= MAX_JSON_DEPTH:
                raise InvalidRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} "
                                     "levels.", code="invalid_json")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            children = []
            for key, child in items:
                if isinstance(key, str):
                    error = unstorable_error(
                        key, param, f"A field name in {param}" if param else "A field name")
                    if error is not None:
                        raise error
                children.append((child, (*path, str(key))))
            stack.extend(reversed(children))  # the first bad field in body order is reported


class GuardedJSONParser(JSONParser):
    """DRF's JSON parser, plus `check_json` on what it parsed."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise InvalidRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} "
                                 "levels.", code="invalid_json") from None
        check_json(data)
        return data


class InputGuardMiddleware:
    """Refuses a request whose path, query parameters or cookies hold unstorable text.

    A path with such a character names no object: 404, as any unknown id is. A query
    parameter or cookie: 400 naming it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from payments.api.errors import error_body

        if _UNSTORABLE.search(request.path):
            return JsonResponse(error_body(
                "invalid_request_error", "resource_missing",
                f"Unrecognized request URL ({request.method} {request.path!a})."), status=404)
        error = self._query_or_cookie_error(request)
        if error is not None:
            return JsonResponse(error_body(error.type, error.code, error.message, error.param),
                                status=error.status)
        return self.get_response(request)

    @staticmethod
    def _query_or_cookie_error(request: HttpRequest) -> InvalidRequest | None:
        for name, values in request.GET.lists():
            error = unstorable_error(name, None, "A query parameter name")
            for value in values:
                error = error or unstorable_error(value, name, name)
            if error is not None:
                return error
        for name, value in request.COOKIES.items():
            error = unstorable_error(name + value, None, "A cookie")
            if error is not None:
                return error
        return None
