"""The sandbox toolkit shared by every provider sandbox (providers/sandboxes/)."""

import pytest

from providers.base import AccountConfig, AuthorizeRequest, Card, OutcomeUnknown
from providers.models import SANDBOX_URL
from providers.registry import get_adapter
from providers.sandboxes.catalog import SANDBOX_CREDENTIALS
from providers.sandboxes.models import SandboxCharge
from providers.sandboxes.wsgi import Request

pytestmark = pytest.mark.django_db


def adapter(provider: str):
    return get_adapter(AccountConfig(name=provider, provider=provider, livemode=False,
                                     base_url=SANDBOX_URL,
                                     credentials=SANDBOX_CREDENTIALS[provider]))


def request_0408(provider: str) -> AuthorizeRequest:
    return AuthorizeRequest(reference=f"att_drop_{provider}", amount=500, currency="USD",
                            card=Card("4000000000000408", 12, 2034, "visa"), capture=True)


@pytest.mark.parametrize("provider", ["stripe", "adyen"])
def test_resends_inside_the_drop_window_drop_too_and_charge_once(provider, settings):
    settings.SANDBOX_DROP_WINDOW_SECONDS = 60
    request = request_0408(provider)
    for _ in range(3):  # the first delivery and two immediate resends with the same key
        with pytest.raises(OutcomeUnknown):
            adapter(provider).authorize(request)
    assert SandboxCharge.objects.filter(reference=request.reference).count() == 1


@pytest.mark.parametrize("provider", ["stripe", "adyen"])
def test_after_the_drop_window_a_resend_gets_the_stored_answer(provider, settings):
    settings.SANDBOX_DROP_WINDOW_SECONDS = 0
    request = request_0408(provider)
    with pytest.raises(OutcomeUnknown):
        adapter(provider).authorize(request)
    result = adapter(provider).authorize(request)
    [charge] = SandboxCharge.objects.filter(reference=request.reference)
    assert result.provider_reference == charge.provider_reference


def test_stripe_style_form_parsing_nests_brackets():
    body = (b"card[number]=4242&card[exp_month]=12&metadata[order]=A1"
            b"&payment_method_types[0]=card&confirm=true")
    form = Request("POST", "/", {}, {}, body).form()
    assert form == {"card": {"number": "4242", "exp_month": "12"},
                    "metadata": {"order": "A1"},
                    "payment_method_types": {"0": "card"}, "confirm": "true"}


def test_a_failed_delivery_pass_in_process_is_tried_again_on_its_own(monkeypatch, settings):
    """The embedded default has no beat: a delivery pass that fails as a whole (SQLite busy)
    schedules itself again, 1, 2, 4, … s later, a bounded number of times."""
    from providers.sandboxes import webhooks

    settings.SANDBOX_WEBHOOK_DELAY_SECONDS = 1.0
    scheduled = []
    monkeypatch.setattr(webhooks, "_schedule_delivery",
                        lambda delay=None, retry=0: scheduled.append((delay, retry)))

    def locked(**kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(webhooks, "deliver_due", locked)
    webhooks._deliver_in_thread()
    webhooks._deliver_in_thread(retry=2)
    webhooks._deliver_in_thread(retry=webhooks.THREAD_RETRIES)  # gives up: beat's job then
    assert scheduled == [(1.0, 1), (4.0, 3)]
