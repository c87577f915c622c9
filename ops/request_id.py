"""A request id on every response (`X-Request-Id`), in every log line of the request and of
the Celery tasks it queues, for the access log (gunicorn.conf.py) and for a merchant quoting a
failed call to support.

An id sent by the load balancer or the client is kept when it is a plain token (letters,
digits, `._-`, at most 64 characters), so one id follows the request from the edge; anything
else is replaced by a fresh `req_…` id (a header is never echoed into a log line unchecked).

The id lives in a context variable for the duration of the request (`current()`); the log
filter (ops/logging.py) puts it on every record. A task sent while it is set carries it in a
message header (`before_task_publish`); the worker restores it around the task
(`task_prerun` / `task_postrun`), so the task's log lines carry the id of the request that
queued it. Connected in every process that sets Django up (ops.apps.OpsConfig.ready).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-Id"
# the Celery message header the id travels in
TASK_HEADER = "switchyard_request_id"
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")

_current: ContextVar[str | None] = ContextVar("switchyard_request_id", default=None)


def request_id_for(incoming: str | None) -> str:
    if incoming and _TOKEN.fullmatch(incoming):
        return incoming
    return "req_" + uuid.uuid4().hex[:24]


def current() -> str | None:
    """The id of the request (or of the request that queued the task) being handled."""
    return _current.get()


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


# --- Celery: the id travels with the tasks a request sends -------------------------------
# The token of each running task's id, by task id, so that postrun restores what was there
# before: an eager task (run inside the request) leaves the request's id in place.
_task_tokens: dict[str, Token[str | None]] = {}


def _before_task_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    request_id = _current.get()
    if request_id and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


def _task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if task is None or task_id is None:
        return
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return  # runs inside the caller, whose id is already set
    incoming = getattr(request, TASK_HEADER, None)
    if incoming is None:
        incoming = (getattr(request, "headers", None) or {}).get(TASK_HEADER)
    # a task sent by beat or outside a request has none: nothing of a previous task stays
    value = incoming if isinstance(incoming, str) and _TOKEN.fullmatch(incoming) else None
    _task_tokens[task_id] = _current.set(value)


def _task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    token = _task_tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        try:
            _current.reset(token)
        except ValueError:  # set in another context (a thread pool): clear it instead
            _current.set(None)


def connect_celery_signals() -> None:
    """Idempotent (Celery's signals keep one receiver per dispatch_uid)."""
    from celery import signals

    signals.before_task_publish.connect(_before_task_publish, weak=False,
                                        dispatch_uid="switchyard.request_id.publish")
    signals.task_prerun.connect(_task_prerun, weak=False,
                                dispatch_uid="switchyard.request_id.prerun")
    signals.task_postrun.connect(_task_postrun, weak=False,
                                 dispatch_uid="switchyard.request_id.postrun")
