"""An in-process simulated provider with its own ledger (`SandboxCharge`).

It honours idempotency: the same reference always gets the same answer and never a second
charge. Faults are simulated by raising the adapter taxonomy directly; the wire-format
sandboxes of each real provider build on this ledger.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from providers.base import (
    AuthorizeRequest,
    AuthorizeResult,
    HardDecline,
    LookupResult,
    ModificationRequest,
    ModificationResult,
    OutcomeUnknown,
    ProviderBadRequest,
    ProviderUnavailable,
    SoftDecline,
)
from providers.ids import new_id
from providers.models import SandboxCharge, SandboxOperation
from providers.sandbox.cards import behaviour_for


class SandboxAdapter:
    """Implements the `providers.base.Adapter` contract against the sandbox ledger."""

    def __init__(self, provider: str):
        self.provider = provider

    # --- authorization ----------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        existing = self._charge(request.reference)
        if existing is not None:
            return self._replay(existing)

        behaviour = behaviour_for(request.card.number)
        if behaviour.result == "unavailable":
            raise ProviderUnavailable("The provider answered 503 before processing.")
        if behaviour.result == "timeout_before_commit":
            raise OutcomeUnknown("The request timed out before the provider answered.")

        if behaviour.result in ("hard_decline", "soft_decline"):
            status, decline_code = "declined", behaviour.decline_code
        else:
            status, decline_code = ("captured" if request.capture else "authorized"), ""
        charge, created = self._record(request, status, decline_code)
        if not created:  # a concurrent call with the same reference won: answer as it did
            return self._replay(charge)
        if behaviour.result == "commit_then_timeout":
            raise OutcomeUnknown("The connection dropped after the request was sent.")
        return self._replay(charge)

    def _record(self, request: AuthorizeRequest, status: str, decline_code: str):
        try:
            with transaction.atomic():
                charge = SandboxCharge.objects.create(
                    provider=self.provider,
                    reference=request.reference,
                    provider_reference=new_id("sbx"),
                    amount=request.amount,
                    currency=request.currency,
                    status=status,
                    decline_code=decline_code,
                    amount_captured=request.amount if status == "captured" else 0,
                )
            return charge, True
        except IntegrityError:
            return self._charge(request.reference), False

    def _replay(self, charge: SandboxCharge) -> AuthorizeResult:
        if charge.status == "declined":
            behaviour_code = charge.decline_code
            if behaviour_code == "processing_error":
                raise SoftDecline("The provider could not process the card.", code=behaviour_code,
                                  decline_code=behaviour_code)
            code = "expired_card" if behaviour_code == "expired_card" else "card_declined"
            raise HardDecline("The card was declined.", code=code, decline_code=behaviour_code)
        return AuthorizeResult(
            provider_reference=charge.provider_reference,
            captured=charge.status == "captured",
        )

    def _charge(self, reference: str) -> SandboxCharge | None:
        return SandboxCharge.objects.filter(provider=self.provider, reference=reference).first()

    # --- modifications ----------------------------------------------------------------
    def capture(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("capture", request)

    def cancel(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("cancel", request)

    def refund(self, request: ModificationRequest) -> ModificationResult:
        return self._modify("refund", request)

    def _modify(self, kind: str, request: ModificationRequest) -> ModificationResult:
        with transaction.atomic():
            # Lock the charge before looking for an earlier operation with this reference: a
            # retry racing the original then waits for it and replays its answer, instead of
            # both missing each other and the second one failing or applying twice.
            charge = (
                SandboxCharge.objects.select_for_update()
                .filter(provider=self.provider, provider_reference=request.provider_reference)
                .first()
            )
            done = SandboxOperation.objects.filter(
                provider=self.provider, reference=request.reference
            ).first()
            if done is not None:  # idempotent replay
                return ModificationResult(provider_reference=done.charge.provider_reference)
            if charge is None:
                raise ProviderBadRequest("No such charge at the provider.")
            self._apply(kind, charge, request.amount)
            charge.save()
            SandboxOperation.objects.create(
                provider=self.provider,
                reference=request.reference,
                charge=charge,
                kind=kind,
                amount=request.amount,
            )
        return ModificationResult(provider_reference=charge.provider_reference)

    @staticmethod
    def _apply(kind: str, charge: SandboxCharge, amount: int) -> None:
        if kind == "capture":
            if charge.status != "authorized" or amount > charge.amount:
                raise ProviderBadRequest("The charge cannot be captured.")
            charge.status, charge.amount_captured = "captured", amount
        elif kind == "cancel":
            if charge.status != "authorized":
                raise ProviderBadRequest("Only an uncaptured authorization can be voided.")
            charge.status = "canceled"
        else:
            if charge.status != "captured":
                raise ProviderBadRequest("Only a captured charge can be refunded.")
            if charge.amount_refunded + amount > charge.amount_captured:
                raise ProviderBadRequest("The refund exceeds the captured amount.")
            charge.amount_refunded += amount

    # --- status lookup ----------------------------------------------------------------
    def lookup(self, reference: str) -> LookupResult:
        charge = self._charge(reference)
        if charge is None:
            return LookupResult(found=False)
        return LookupResult(
            found=True,
            provider_reference=charge.provider_reference,
            status=charge.status,
            amount=charge.amount,
        )
