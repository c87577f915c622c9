"""`POST /provider_webhooks/{account id}`: where a provider account's webhooks arrive.

Not part of the merchant API: providers call it, and authenticate each delivery by the
account's webhook signature key (and Basic credentials when configured), never by a merchant
key. The delivery is parsed and checked by `providers.webhooks`, its events stored by
`provider_events_receive`, and acknowledged at once (Adyen wants an answer within 10 s);
they are applied afterwards by the sync job.

Authentication comes first, and says nothing to a stranger:
- what needs no credential is checked before any database read (`webhooks.precheck`: the
  body is JSON; a `Stripe-Signature` header's shape and timestamp tolerance);
- an unknown account and a delivery that is not authentic (bad or missing signature, wrong
  Basic credentials, no key configured, or anything refused before its signature verified)
  get the same answer, byte for byte: 401 `webhook_signature_invalid`. The reason is logged.
Errors use the API's JSON error shape: 400 too large or not JSON (the same whichever account
is named), 400 for an authentic delivery we cannot take (wrong mode, another merchant
account, not an event), 401 as above, 405 not a POST.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from payments.api.errors import error_body
from payments.services.provider_events import provider_events_receive
from providers import webhooks
from providers.base import InvalidWebhook
from providers.models import ProviderAccount

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_000_000


def _error(status: int, message: str, code: str) -> JsonResponse:
    kind = "authentication_error" if status == 401 else "invalid_request_error"
    return JsonResponse(error_body(kind, code, message), status=status)


# The one answer to an unknown account and to a delivery that is not authentic.
REFUSED_MESSAGE = "The delivery could not be authenticated for this endpoint."


def _refused() -> JsonResponse:
    return _error(401, REFUSED_MESSAGE, "webhook_signature_invalid")


@csrf_exempt
def receive(request: HttpRequest, account_id: str) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "Provider webhooks are POSTed.", "method_not_allowed")
        response["Allow"] = "POST"
        return response
    if len(request.body) > MAX_BODY_BYTES:
        return _error(400, "The delivery is too large.", "parameter_invalid")
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        webhooks.precheck(body=request.body, headers=headers)
    except InvalidWebhook as exc:
        logger.warning("refused a webhook delivery for %.64r before reading the account: %s",
                       account_id, exc.message)
        return _refused() if exc.status == 401 else _error(400, exc.message,
                                                           "parameter_invalid")
    account = ProviderAccount.objects.filter(pk=account_id).first()
    if account is None:
        logger.warning("refused a webhook delivery for %.64r: no such provider account",
                       account_id)
        return _refused()
    try:
        events = webhooks.parse(provider=account.provider, livemode=account.livemode,
                                credentials=account.get_credentials(), body=request.body,
                                headers=headers)
    except InvalidWebhook as exc:
        logger.warning("refused a %s webhook delivery for %s: %s", account.provider,
                       account.pk, exc.message)
        if not exc.authenticated or exc.status != 400:
            return _refused()
        return _error(400, exc.message, "parameter_invalid")
    new = provider_events_receive(account=account, events=events)
    logger.info("received %d %s webhook event(s) for %s (%d new)", len(events),
                account.provider, account.pk, new)
    return HttpResponse(webhooks.acknowledgement(account.provider), content_type="text/plain")
