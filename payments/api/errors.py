"""One JSON error shape for everything under /v1 (docs/api.md, "Errors"); never a stack trace."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from payments.cards import redact_card_numbers
from payments.errors import CardDeclined, PaymentsError, ProviderFailed

logger = logging.getLogger(__name__)

# DRF's validation codes → ours
_CODES = {
    "required": "parameter_missing",
    "null": "parameter_invalid",
    "blank": "parameter_invalid",
    "invalid": "parameter_invalid",
    "invalid_choice": "parameter_invalid",
    "max_length": "parameter_invalid",
    "min_length": "parameter_invalid",
    "max_value": "parameter_invalid",
    "min_value": "parameter_invalid",
    "max_string_length": "parameter_invalid",
    "not_a_dict": "parameter_invalid",
}


def error_body(type_: str, code: str, message: str, param: str | None = None,
               **extra) -> dict:
    # Messages echo ids, paths and field names the merchant sent; a card number pasted into
    # any of them must not come back (nor be stored with an idempotent response).
    message = redact_card_numbers(message)
    if param is not None:
        param = redact_card_numbers(param)
    return {"error": {"type": type_, "code": code, "message": message, "param": param, **extra}}


def _first_validation_error(detail, path: tuple[str, ...] = ()) -> tuple[str | None, str, str]:
    """The first leaf of DRF's nested error detail: (dotted param, message, code)."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        sub = path if key in ("non_field_errors",) else (*path, str(key))
        return _first_validation_error(value, sub)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], path)
    message = str(detail)
    code = getattr(detail, "code", "invalid") or "invalid"
    return (".".join(path) or None), message, code


def _payment_json(payment):
    from payments.api.serializers import PaymentOutput

    return PaymentOutput(payment).data


def exception_handler(exc, context) -> Response:
    """DRF's EXCEPTION_HANDLER: every error becomes the docs/api.md shape."""
    headers = {}
    if isinstance(exc, CardDeclined):
        body = error_body(exc.type, exc.code, exc.message, None, decline_code=exc.decline_code)
        body["payment"] = _payment_json(exc.payment)
        return Response(body, status=exc.status)
    if isinstance(exc, ProviderFailed):
        body = error_body(exc.type, exc.code, exc.message, None)
        if exc.payment is not None:
            body["payment"] = _payment_json(exc.payment)
        if exc.refund is not None:
            from payments.api.serializers import RefundOutput

            body["refund"] = RefundOutput(exc.refund).data
        return Response(body, status=exc.status)
    if isinstance(exc, PaymentsError):
        return Response(error_body(exc.type, exc.code, exc.message, exc.param),
                        status=exc.status)
    if isinstance(exc, drf.ValidationError):
        param, message, code = _first_validation_error(exc.detail)
        if param and not message.startswith(param):
            message = f"{param}: {message}"
        return Response(error_body("invalid_request_error", _CODES.get(code, code), message,
                                   param), status=400)
    if isinstance(exc, SuspiciousOperation):  # Django's refusals of the request itself
        body, status = _suspicious_request(exc)
        return Response(body, status=status)
    if isinstance(exc, drf.ParseError):
        return Response(error_body("invalid_request_error", "invalid_json",
                                   "The request body is not valid JSON."), status=400)
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        message = str(exc.detail)
        return Response(error_body("authentication_error", "invalid_api_key", message),
                        status=401, headers={"WWW-Authenticate": 'Bearer realm="api"'})
    if isinstance(exc, drf.PermissionDenied):
        return Response(error_body("authentication_error", "permission_denied",
                                   str(exc.detail)), status=403)
    if isinstance(exc, drf.NotFound):
        return Response(error_body("invalid_request_error", "resource_missing",
                                   str(exc.detail)), status=404)
    if isinstance(exc, drf.MethodNotAllowed):
        return Response(error_body("invalid_request_error", "method_not_allowed",
                                   str(exc.detail)), status=405)
    if isinstance(exc, drf.UnsupportedMediaType):
        return Response(error_body("invalid_request_error", "unsupported_media_type",
                                   "Send the body as JSON with Content-Type: "
                                   "application/json."), status=415)
    if isinstance(exc, drf.NotAcceptable):
        return Response(error_body("invalid_request_error", "not_acceptable",
                                   "Responses are JSON only."), status=406)
    if isinstance(exc, drf.Throttled):
        wait = exc.wait  # type: ignore[attr-defined]  # set by Throttled.__init__; not in the stubs
        if wait is not None:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return Response(error_body("rate_limit_error", "rate_limit",
                                   "Too many requests; retry after the Retry-After delay."),
                        status=429, headers=headers)
    if isinstance(exc, drf.APIException):
        return Response(error_body("api_error", exc.default_code, str(exc.detail)),
                        status=exc.status_code)
    logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return Response(error_body("api_error", "internal_error",
                               "Something went wrong on our side; it has been logged."),
                    status=500)


def changed_nothing(exc: BaseException) -> bool:
    """Did the request that raised `exc` change nothing at all? Then its Idempotency-Key is
    released rather than bound to the error (docs/api.md, "Idempotency"). Domain errors say so
    themselves (`PaymentsError.changed_nothing`); DRF's own (parsing, validation,
    authentication, permissions, throttling) are raised before any service runs."""
    if isinstance(exc, PaymentsError):
        return exc.changed_nothing
    return isinstance(exc, drf.APIException) and 400 <= exc.status_code < 500


def _suspicious_request(exc: SuspiciousOperation) -> tuple[dict, int]:
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_body("invalid_request_error", "request_too_large",
                          f"The request body is larger than the {limit} bytes accepted."), 413
    return error_body("invalid_request_error", "bad_request",
                      "The request could not be understood."), 400


# Django-level handlers (paths no view matched, crashes outside DRF): same shape.
def not_found_view(request, exception=None):
    return JsonResponse(error_body("invalid_request_error", "resource_missing",
                                   f"Unrecognized request URL ({request.method} "
                                   f"{request.path})."), status=404)


def server_error_view(request):
    return JsonResponse(error_body("api_error", "internal_error",
                                   "Something went wrong on our side; it has been logged."),
                        status=500)


def bad_request_view(request, exception=None):
    """Django's handler400: a SuspiciousOperation outside DRF (a provider webhook too large,
    too many query parameters, …)."""
    if isinstance(exception, SuspiciousOperation):
        body, status = _suspicious_request(exception)
        return JsonResponse(body, status=status)
    return JsonResponse(error_body("invalid_request_error", "bad_request",
                                   "The request could not be understood."), status=400)
