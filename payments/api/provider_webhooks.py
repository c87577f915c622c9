"""`POST /provider_webhooks/{account id}`: where a provider account's webhooks arrive.

Not part of the merchant API: providers call it, and authenticate each delivery by the
account's webhook signature key (and Basic credentials when configured), never by a merchant
key. The delivery is parsed and checked by `providers.webhooks`, its events stored by
`provider_events_receive`, and acknowledged at once (Adyen wants an answer within 10 s);
they are applied afterwards by the sync job. Errors use the API's JSON error shape:
400 unreadable, 401 not authentic, 404 no such account (or a provider whose webhooks are not
received), 405 not a POST.
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


@csrf_exempt
def receive(request: HttpRequest, account_id: str) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "Provider webhooks are POSTed.", "method_not_allowed")
        response["Allow"] = "POST"
        return response
    account = ProviderAccount.objects.filter(pk=account_id).first()
    if account is None:
        return _error(404, f"No provider account {account_id!r}.", "resource_missing")
    if len(request.body) > MAX_BODY_BYTES:
        return _error(400, "The delivery is too large.", "parameter_invalid")
    try:
        events = webhooks.parse(provider=account.provider, livemode=account.livemode,
                                credentials=account.get_credentials(), body=request.body,
                                headers={k.lower(): v for k, v in request.headers.items()})
    except InvalidWebhook as exc:
        logger.warning("refused a %s webhook delivery for %s: %s", account.provider,
                       account.pk, exc.message)
        code = {401: "webhook_signature_invalid", 404: "resource_missing"}.get(
            exc.status, "parameter_invalid")
        return _error(exc.status, exc.message, code)
    new = provider_events_receive(account=account, events=events)
    logger.info("received %d %s webhook event(s) for %s (%d new)", len(events),
                account.provider, account.pk, new)
    return HttpResponse(webhooks.acknowledgement(account.provider), content_type="text/plain")
