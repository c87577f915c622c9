"""Interim in-process sandbox adapter: calls the shared sandbox ledger directly (no wire
format). The Stripe, Adyen and Checkout.com adapters with their wire-format sandboxes replace
it in the registry.
"""

from __future__ import annotations

import json
import time

from django.db import IntegrityError, transaction

from providers import outcomes
from providers.base import (
    AuthorizeRequest,
    AuthorizeResult,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
)
from providers.models import SandboxCharge, SandboxIdempotencyRecord
from providers.sandbox import ledger


class SandboxAdapter:
    def __init__(self, provider: str):
        self.provider = provider

    def _once(self, key: str, fn) -> dict:
        """Run `fn` once per key; concurrent and later callers get its stored result."""
        try:
            with transaction.atomic():
                record = SandboxIdempotencyRecord.objects.create(
                    provider=self.provider, key=key, fingerprint="")
        except IntegrityError:
            for _ in range(200):
                record = SandboxIdempotencyRecord.objects.filter(
                    provider=self.provider, key=key).first()
                if record is None:
                    return self._once(key, fn)
                if record.completed:
                    return json.loads(record.body)
                time.sleep(0.025)
            raise OutcomeUnknown("The sandbox is still processing this request.") from None
        try:
            result = fn()
        except Exception:
            record.delete()
            raise
        SandboxIdempotencyRecord.objects.filter(pk=record.pk).update(
            body=json.dumps(result), completed=True, status_code=200)
        return result

    def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        def run() -> dict:
            try:
                auth = ledger.authorize(
                    self.provider, reference=request.reference, amount=request.amount,
                    currency=request.currency, number=request.card.number,
                    capture=request.capture, brand=request.card.brand)
            except ledger.ServiceUnavailable:
                raise ProviderUnavailable("The provider answered 503 before processing.") from None
            except ledger.Hang:
                raise OutcomeUnknown("The request timed out before the provider answered.") \
                    from None
            return {"charge": auth.charge.provider_reference, "drop": auth.drop_connection}

        result = self._once(request.reference, run)
        charge = SandboxCharge.objects.get(provider_reference=result["charge"])
        if result.pop("drop", False):
            # answer a replay normally: only the first delivery lost its connection
            record = SandboxIdempotencyRecord.objects.get(provider=self.provider,
                                                          key=request.reference)
            record.body = json.dumps(result)
            record.save(update_fields=["body"])
            raise OutcomeUnknown("The connection dropped after the request was sent.")
        if charge.status == "declined":
            outcomes.raise_for(outcomes.classify_decline("stripe", charge.decline_code),
                               "The card was declined.", raw_code=charge.decline_code)
        return AuthorizeResult(provider_reference=charge.provider_reference,
                               captured=charge.status == "captured")

    def capture(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("capture", request)

    def cancel(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("cancel", request)

    def refund(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("refund", request)

    def _modify(self, kind: str, request: ModificationRequest) -> ModificationResult:
        def run() -> dict:
            try:
                op = ledger.modify(self.provider, kind, request.provider_reference,
                                   amount=request.amount, reference=request.reference)
            except (ledger.InvalidState, ledger.UnknownCharge) as exc:
                raise ProviderBadRequest(str(exc)) from None
            return {"operation": op.provider_reference}

        result = self._once(request.reference, run)
        return ModificationResult(provider_reference=result["operation"])

    def lookup(self, request: AuthorizeRequest) -> LookupResult:
        found = ledger.find_by_reference(self.provider, request.reference)
        if not found:
            return LookupResult(found=False)
        charge = found[0]
        return LookupResult(found=True, provider_reference=charge.provider_reference,
                            status=charge.status, amount=charge.amount,
                            decline_code=charge.decline_code)

    def probe(self) -> None:
        ledger.before_request(self.provider)
