"""The work one request does, pinned: SQL statements, transactions and Redis round trips of
our own (the in-process sandbox's are counted apart and not pinned: they stand for the
provider's side of the wire). See tests/counting.py for what each one counts.

The counts are deterministic (the same code path does the same work every time), so they are
pinned exactly: a change that adds a query or a Redis round trip fails here, and one that
removes some fails too, so that its pin is lowered with it. Timings are never asserted.

Issue #11's targets for a create+confirm: at most 12 statements, 3 transactions and 3 Redis
round trips of our own (bench/explain.md says what bounds them).

Each scenario runs once before it is measured: the first request of a process compiles and
caches what every later one reuses (routing rules, Redis scripts, breakers, HTTP clients).
"""

from __future__ import annotations

import uuid

import pytest

from payments.services.merchants import merchant_create
from tests.conftest import Api
from tests.counting import Tally, count_work
from tests.factories import payment_method

pytestmark = pytest.mark.django_db(transaction=True)

# (statements, transactions, Redis round trips) of our own
CREATE_CONFIRM = Tally(statements=16, transactions=5, redis=3)
# as production sends it (Celery not eager): the relay nudge after the commits is a publish
# to the broker (Redis), one per request (payments.services.nudge coalesces the second)
CREATE_CONFIRM_NUDGED = Tally(statements=16, transactions=5, redis=4)
CREATE_CONFIRM_NO_KEY = Tally(statements=13, transactions=3, redis=3)
CAPTURE = Tally(statements=23, transactions=5, redis=2)
REFUND = Tally(statements=19, transactions=6, redis=2)


@pytest.fixture
def shop():
    merchant, key, _ = merchant_create(actor="test", name=f"Shop {uuid.uuid4().hex[:8]}",
                                       sandbox_accounts=True)
    return merchant, Api(key), payment_method(merchant)


def _pay(api: Api, pm, *, keyed: bool = True, **extra):
    body = {"amount": 1050, "currency": "USD", "payment_method": pm.id, "confirm": True,
            **extra}
    resp = api.post("/v1/payments", body, idempotency_key=uuid.uuid4().hex if keyed else None)
    assert resp.status_code == 200, resp.json()
    assert resp.json()["status"] in ("succeeded", "requires_capture")
    return resp.json()


def _assert_pinned(work, pinned: Tally) -> None:
    assert work.ours == pinned, work.report()


@pytest.mark.parametrize("keyed", [True, False], ids=["idempotency_key", "no_key"])
def test_create_and_confirm(shop, keyed):
    _, api, pm = shop
    _pay(api, pm, keyed=keyed)  # warm-up
    with count_work() as work:
        _pay(api, pm, keyed=keyed)
    assert work.sandbox.statements > 0  # the sandbox's work is told apart, not lost
    _assert_pinned(work, CREATE_CONFIRM if keyed else CREATE_CONFIRM_NO_KEY)


@pytest.fixture
def broker(settings):
    """The project's Celery app publishing to the suite's Redis, not eagerly, as in
    production; the queue it fills is emptied after."""
    import redis

    from payments.services import nudge
    from workers.celery import app

    def use(url: str) -> None:
        app.conf.broker_url = url
        app._pool = None
        app.amqp._producer_pool = None

    settings.CELERY_TASK_ALWAYS_EAGER = False
    # a pass due well after the request: whether the second commit is covered does not
    # depend on how fast this machine is
    settings.WEBHOOK_DELIVERY_DELAY_SECONDS = 60
    before = app.conf.broker_url
    use(settings.REDIS_URL)
    yield nudge
    redis.Redis.from_url(settings.REDIS_URL).delete("webhooks")
    nudge._sent_nudges.forget()
    use(before)


def test_create_and_confirm_with_the_relay_nudge(shop, broker):
    _, api, pm = shop
    _pay(api, pm)  # warm-up
    broker._sent_nudges.forget()  # the warm-up's pass has run
    with count_work() as work:
        _pay(api, pm)
    assert [c for _, c in work.commands if c.startswith("LPUSH")], work.report()
    _assert_pinned(work, CREATE_CONFIRM_NUDGED)


def test_capture(shop):
    _, api, pm = shop
    for _warm_up_then_measured in range(2):
        payment = _pay(api, pm, capture_method="manual")
        with count_work() as work:
            resp = api.post(f"/v1/payments/{payment['id']}/capture", {},
                            idempotency_key=uuid.uuid4().hex)
        assert resp.status_code == 200, resp.json()
        assert resp.json()["status"] == "succeeded"
    _assert_pinned(work, CAPTURE)


def test_refund(shop):
    _, api, pm = shop
    for _warm_up_then_measured in range(2):
        payment = _pay(api, pm)
        with count_work() as work:
            resp = api.post("/v1/refunds", {"payment": payment["id"], "amount": 500},
                            idempotency_key=uuid.uuid4().hex)
        assert resp.status_code == 200, resp.json()
        assert resp.json()["status"] == "succeeded"
    _assert_pinned(work, REFUND)
