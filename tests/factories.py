"""factory-boy factories. Objects with secrets or invariants go through the services."""

import factory

from payments.models import Merchant
from payments.services.merchants import api_key_create
from payments.services.payment_methods import payment_method_create
from providers.models import SANDBOX_URL, ProviderAccount


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant

    name = factory.Sequence(lambda n: f"Merchant {n}")


class ProviderAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderAccount

    merchant = factory.SubFactory(MerchantFactory)
    name = factory.Sequence(lambda n: f"account-{n}")
    provider = "stripe"
    livemode = False
    base_url = SANDBOX_URL


def payment_method(merchant, *, number="4242424242424242", livemode=False, **extra):
    return payment_method_create(merchant=merchant, livemode=livemode, number=number,
                                 exp_month=12, exp_year=2034, cvc=extra.pop("cvc", None),
                                 **extra)


def new_key(merchant, *, livemode=False) -> str:
    return api_key_create(actor="test", merchant=merchant, livemode=livemode)[1]


def merchant_event(merchant, *, type_: str = "payment.succeeded", livemode: bool = False,
                   object_id: str = "pay_x", created_at=None):
    """A merchant event (`WebhookOutbox` row) shaped as the state machine writes one, about a
    payment or refund that need not exist (for list, filter and relay tests)."""
    from django.utils import timezone

    from payments.models import WebhookOutbox
    from providers.ids import new_id

    event_id = new_id("evt")
    created = created_at or timezone.now()
    obj = "refund" if object_id.startswith("re_") else "payment"
    event = WebhookOutbox.objects.create(
        event_id=event_id, merchant=merchant, livemode=livemode, type=type_,
        object_id=object_id, created_at=created,
        payload={"id": event_id, "object": "event", "type": type_,
                 "created": int(created.timestamp()), "livemode": livemode,
                 "data": {"object": {"id": object_id, "object": obj}}})
    return event
