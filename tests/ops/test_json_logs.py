"""JSON logs with the request id (issue #12): one object per line, the request's id on every
record of the request, the card-number scrubber still applied; the id travels into Celery
tasks (tests/workers/test_logging.py shows it with a real worker)."""

from __future__ import annotations

import io
import json
import logging
import types

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from ops import request_id
from ops.logging import CardNumberScrubFilter, JsonFormatter, RequestContextFilter

CARD = "4242424242424242"


@pytest.fixture
def json_logger():
    """A logger writing through the console handler as settings.LOGGING builds it with
    LOG_FORMAT=json: the scrubber and request-context filters, the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CardNumberScrubFilter())
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield logger, lines
    logger.removeHandler(handler)
    logger.propagate = True


def test_one_json_object_per_line_with_the_fields(json_logger):
    logger, lines = json_logger
    logger.info("payment %s captured", "pay_123")
    logger.warning("second\nline")
    first, second = lines()
    assert set(first) == {"time", "level", "logger", "message", "request_id"}
    assert first["level"] == "INFO" and first["logger"] == "tests.json"
    assert first["message"] == "payment pay_123 captured"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert first["request_id"] == "-"  # outside a request
    assert second["message"] == "second\nline"


def test_card_numbers_are_scrubbed_from_message_traceback_and_extra(json_logger):
    logger, lines = json_logger
    logger.info("charging card %s", CARD)
    try:
        raise ValueError(f"provider rejected {CARD}")
    except ValueError:
        logger.exception("call failed")
    logger.info("with extra", extra={"card": CARD, "nested": {"number": f"x {CARD}"}})
    output = "\n".join(json.dumps(line) for line in lines())
    assert CARD not in output
    charging, failed, extra = lines()
    assert charging["message"] == "charging card [redacted]"
    assert "ValueError: provider rejected [redacted]" in failed["exc_info"]
    assert extra["card"] == "[redacted]" and extra["nested"] == {"number": "x [redacted]"}


def test_every_record_of_a_request_carries_its_id(json_logger):
    logger, lines = json_logger

    def view(request):
        logger.info("inside the request")
        return HttpResponse("ok")

    middleware = request_id.RequestIdMiddleware(view)
    response = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="edge-id-1"))
    generated = middleware(RequestFactory().get("/"))
    logger.info("after the requests")
    kept, fresh, after = lines()
    assert response["X-Request-Id"] == kept["request_id"] == "edge-id-1"
    assert fresh["request_id"] == generated["X-Request-Id"]
    assert fresh["request_id"].startswith("req_")
    assert after["request_id"] == "-"  # reset when the request ends
    assert request_id.current() is None


@pytest.mark.django_db
def test_the_real_logging_config_writes_json_with_the_request_id(client, settings, capsys):
    """settings.LOGGING with LOG_FORMAT=json, as production runs it: a warning logged by a
    view (the readiness check, its cache broken) is one JSON line with the request's id."""
    from django.core.cache import cache
    from django.utils.log import configure_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = json.loads(json.dumps(settings.LOGGING))
    config["handlers"]["console"]["formatter"] = "json"
    config["handlers"]["console"]["stream"] = "ext://sys.stdout"
    try:
        configure_logging(settings.LOGGING_CONFIG, config)
        original = cache.set
        cache.set = lambda *a, **k: (_ for _ in ()).throw(ConnectionError(f"down {CARD}"))
        try:
            resp = client.get("/readyz", HTTP_X_REQUEST_ID="probe-42")
        finally:
            cache.set = original
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert resp.status_code == 503
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    warning = next(line for line in lines if line["logger"] == "ops.views")
    assert warning["request_id"] == "probe-42"
    # django.request's line about the 503, logged once the middleware has returned
    logged_after = next(line for line in lines if line["logger"] == "django.request")
    assert logged_after["request_id"] == "probe-42"
    assert logged_after["status_code"] == 503
    assert warning["level"] == "WARNING"
    assert warning["message"] == ("readiness: cache unavailable: ConnectionError: down "
                                  "[redacted]")
    assert CARD not in out


def test_the_id_goes_into_task_headers_and_comes_back_around_the_task():
    """The Celery signal receivers: publish copies the current id into the headers; prerun
    sets the header's id for the task, postrun restores what was there; a task without a
    header runs with no id, not the previous task's."""
    headers: dict = {}
    request_id._before_task_publish(headers=headers)
    assert headers == {}  # no request, no header
    token = request_id._current.set("req_abc")
    try:
        request_id._before_task_publish(headers=headers)
    finally:
        request_id._current.reset(token)
    assert headers == {request_id.TASK_HEADER: "req_abc"}

    def task(**req):
        return types.SimpleNamespace(request=types.SimpleNamespace(is_eager=False, **req))

    request_id._task_prerun(task_id="t1", task=task(**headers))
    assert request_id.current() == "req_abc"
    request_id._task_postrun(task_id="t1")
    assert request_id.current() is None
    stale = request_id._current.set("req_stale")
    try:
        request_id._task_prerun(task_id="t2", task=task())
        assert request_id.current() is None
        request_id._task_postrun(task_id="t2")
        assert request_id.current() == "req_stale"
        # an unsafe header is not trusted
        request_id._task_prerun(task_id="t3", task=task(**{request_id.TASK_HEADER: "a b\n"}))
        assert request_id.current() is None
        request_id._task_postrun(task_id="t3")
        # an eager task runs inside the request: its id stays
        request_id._task_prerun(task_id="t4", task=types.SimpleNamespace(
            request=types.SimpleNamespace(is_eager=True)))
        assert request_id.current() == "req_stale"
        request_id._task_postrun(task_id="t4")
        assert request_id.current() == "req_stale"
    finally:
        request_id._current.reset(stale)
