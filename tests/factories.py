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
