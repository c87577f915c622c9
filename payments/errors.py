"""Domain errors raised by services; `payments.api.errors` turns each into the JSON error shape
and HTTP status of API.md."""

from __future__ import annotations


class PaymentsError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.param = param


class InvalidRequest(PaymentsError):
    """Missing, unknown or invalid input (`param` names the field)."""


class ResourceMissing(PaymentsError):
    status = 404
    code = "resource_missing"


class StateConflict(PaymentsError):
    """The object's current status does not allow this change."""

    status = 409
    code = "payment_state_invalid"


class CardDeclined(PaymentsError):
    """The provider declined the card; the failed payment goes along in the body."""

    status = 402
    type = "card_error"

    def __init__(self, message: str, *, code: str, decline_code: str | None, payment):
        super().__init__(message, code=code)
        self.decline_code = decline_code
        self.payment = payment


class ProviderFailed(PaymentsError):
    """The provider could not process the request and provably charged nothing."""

    status = 503
    type = "api_error"
    code = "provider_unavailable"

    def __init__(self, message: str, *, code: str | None = None, payment=None, refund=None):
        super().__init__(message, code=code)
        self.payment = payment
        self.refund = refund
