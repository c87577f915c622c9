"""Domain errors raised by services; `payments.api.errors` turns each into the JSON error shape
and HTTP status of docs/api.md."""

from __future__ import annotations


class PaymentsError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    # True when the request changed nothing at all: the error was raised before any write, or
    # inside the one transaction that would have made them, which it rolls back. Such an
    # answer is not bound to an Idempotency-Key, so the same key works again once the
    # condition clears. False (the default) when work may have been done before the error.
    changed_nothing = False

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 changed_nothing: bool | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.param = param
        if changed_nothing is not None:
            self.changed_nothing = changed_nothing


class InvalidRequest(PaymentsError):
    """Missing, unknown or invalid input (`param` names the field); checked before anything
    is written, or in the transaction that would write it."""

    changed_nothing = True


class ResourceMissing(PaymentsError):
    status = 404
    code = "resource_missing"
    changed_nothing = True


class StateConflict(PaymentsError):
    """The object's current status does not allow this change. The services' checks of the
    status before a change say `changed_nothing=True`; one raised by the state machine in the
    middle of a flow may follow work already done."""

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
    """The provider could not process the request and provably charged nothing. With the
    failed payment or refund it reports work done; raised before any provider was asked (no
    account available), it says `changed_nothing=True`."""

    status = 503
    type = "api_error"
    code = "provider_unavailable"

    def __init__(self, message: str, *, code: str | None = None, payment=None, refund=None,
                 changed_nothing: bool | None = None):
        super().__init__(message, code=code, changed_nothing=changed_nothing)
        self.payment = payment
        self.refund = refund
