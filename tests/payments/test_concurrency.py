"""Races, with real threads against real Postgres.

Every thread has its own API client and therefore its own database connection (Django keeps
one per thread), and closes it when done. The tests run without a wrapping transaction
(`transaction=True`): each request commits, as in production, so row locks and unique
constraints are what decide the races. A barrier releases the requests together.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import pytest
from django.db import connection

from payments import state_machine as sm
from payments.models import Payment, PaymentAttempt, Refund
from providers.sandboxes.models import SandboxCharge, SandboxOperation
from tests.conftest import Api, make_card
from tests.threads import TIMEOUT, in_threads

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


@dataclass
class Result:
    status: int
    body: dict
    headers: dict


def race(n: int, request) -> list[Result]:
    """Run `request(api_client, i)` in `n` threads released together; return the responses.

    `request` gets a fresh `APIClient` per thread (so a fresh DB connection) and must return
    the client's response.
    """
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    results: list[Result | None] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            client = request.make_client()
            barrier.wait()
            resp = request(client, i)
            results[i] = Result(resp.status_code, resp.json(), dict(resp.headers))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a request hung (deadlock?)"
    if errors:  # the root cause, not the BrokenBarrierError it caused in the others
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                   errors[0])
    assert all(r is not None for r in results)
    return results


class Requests:
    """A request to race, bound to one API key."""

    def __init__(self, key: str, fn):
        self.key = key
        self.fn = fn

    def make_client(self) -> Api:
        return Api(self.key)

    def __call__(self, client: Api, i: int):
        return self.fn(client, i)


def statuses(results: list[Result]) -> Counter:
    return Counter(r.status for r in results)


def codes(results: list[Result], status: int) -> set[str]:
    return {r.body["error"]["code"] for r in results if r.status == status}


def assert_event_log_consistent(payment: Payment) -> None:
    state = sm.replay_events(payment)
    assert state["status"] == payment.status
    for name in ("amount_capturable", "amount_captured", "amount_refunded"):
        assert state[name] == getattr(payment, name), name


def the_charge(payment: Payment) -> SandboxCharge:
    """The sandbox provider's one authorization for this payment."""
    references = list(payment.attempts.values_list("id", flat=True))
    charges = SandboxCharge.objects.filter(reference__in=references)
    assert charges.count() == 1
    return charges.get()


@pytest.fixture
def test_key(merchant_keys) -> str:
    return merchant_keys[1]


def _payment(api: Api, amount: int, capture_method: str) -> Payment:
    resp = api.post("/v1/payments", {"amount": amount, "currency": "USD",
                                     "payment_method": make_card(api), "confirm": True,
                                     "capture_method": capture_method})
    assert resp.status_code == 200, resp.json()
    expected = "succeeded" if capture_method == "automatic" else "requires_capture"
    assert resp.json()["status"] == expected
    return Payment.objects.get(pk=resp.json()["id"])


# --- a. one Idempotency-Key, fifty identical requests --------------------------------------
def test_concurrent_identical_creates_with_one_key_charge_once(api, merchant, test_key):
    body = {"amount": 4200, "currency": "USD", "payment_method": make_card(api),
            "confirm": True, "capture_method": "automatic", "reference": "order-race"}
    key = "race-create-1"

    results = race(50, Requests(test_key, lambda c, i: c.post("/v1/payments", body,
                                                               idempotency_key=key)))

    counts = statuses(results)
    assert set(counts) <= {200, 409}, counts  # never a 5xx, never a 400
    assert counts[200] >= 1
    assert codes(results, 409) <= {"idempotency_key_in_use"}
    payment_ids = {r.body["id"] for r in results if r.status == 200}
    assert len(payment_ids) == 1
    (payment_id,) = payment_ids
    for r in results:
        if r.status == 200:
            assert r.body["status"] == "succeeded"
            assert r.body["amount_captured"] == 4200
    # exactly one of the 200s ran the request; any other 200 is a replay
    assert sum(1 for r in results
               if r.status == 200 and "Idempotent-Replayed" not in r.headers) == 1

    assert Payment.objects.filter(merchant=merchant).count() == 1
    payment = Payment.objects.get(pk=payment_id)
    assert payment.status == "succeeded"
    assert payment.amount_captured == 4200
    assert PaymentAttempt.objects.filter(payment=payment).count() == 1
    charge = the_charge(payment)
    assert charge.status == "captured"
    assert charge.amount_captured == 4200
    assert SandboxCharge.objects.filter(amount=4200).count() == 1
    assert_event_log_consistent(payment)

    retry = api.post("/v1/payments", body, idempotency_key=key)
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == payment_id
    assert Payment.objects.filter(merchant=merchant).count() == 1


def test_concurrent_creates_with_one_key_and_different_bodies(api, merchant, test_key):
    """Whoever wins the key, every other body is told the key is taken: one payment."""
    pm = make_card(api)
    key = "race-create-2"

    def create(client, i):
        return client.post("/v1/payments", {"amount": 100 + i, "currency": "USD",
                                            "payment_method": pm, "confirm": True},
                           idempotency_key=key)

    results = race(20, Requests(test_key, create))
    counts = statuses(results)
    assert set(counts) <= {200, 400, 409}, counts
    assert counts[200] == 1
    assert codes(results, 400) <= {"idempotency_key_reused"}
    assert codes(results, 409) <= {"idempotency_key_in_use"}
    assert Payment.objects.filter(merchant=merchant).count() == 1
    payment = Payment.objects.get(merchant=merchant)
    (winner,) = [r for r in results if r.status == 200]
    assert winner.body["id"] == payment.id
    the_charge(payment)


def test_concurrent_confirms_of_one_payment_authorize_once(api, merchant, test_key):
    created = api.post("/v1/payments", {"amount": 900, "currency": "USD",
                                        "payment_method": make_card(api)})
    assert created.status_code == 200
    pay_id = created.json()["id"]

    results = race(10, Requests(test_key, lambda c, i: c.post(
        f"/v1/payments/{pay_id}/confirm", {})))

    counts = statuses(results)
    assert counts == Counter({200: 1, 409: 9}), counts
    assert codes(results, 409) == {"payment_state_invalid"}
    payment = Payment.objects.get(pk=pay_id)
    assert payment.status == "succeeded"
    assert payment.attempts.count() == 1
    assert the_charge(payment).amount_captured == 900
    assert_event_log_consistent(payment)


@pytest.mark.parametrize(("number", "status", "charge_status"), [
    ("4000000000000002", 402, "declined"),   # a decline is stored and replayed
    ("4000000000000408", 202, "captured"),   # so is an unknown outcome
], ids=["decline", "unknown_outcome"])
def test_concurrent_identical_creates_with_one_key_other_outcomes(api, merchant, test_key,
                                                                  number, status,
                                                                  charge_status):
    body = {"amount": 777, "currency": "USD", "payment_method": make_card(api, number),
            "confirm": True}
    results = race(30, Requests(test_key, lambda c, i: c.post("/v1/payments", body,
                                                               idempotency_key="race-out")))
    counts = statuses(results)
    assert set(counts) <= {status, 409}, counts
    assert codes(results, 409) <= {"idempotency_key_in_use"}
    assert Payment.objects.filter(merchant=merchant).count() == 1
    payment = Payment.objects.get(merchant=merchant)
    assert payment.attempts.count() == 1
    assert the_charge(payment).status == charge_status
    retry = api.post("/v1/payments", body, idempotency_key="race-out")
    assert retry.status_code == status
    assert retry.headers["Idempotent-Replayed"] == "true"


def test_concurrent_reuse_of_an_expired_key_creates_one_payment(api, merchant, test_key):
    import datetime as dt

    from django.conf import settings
    from django.utils import timezone

    from payments.models import IdempotencyKey

    body = {"amount": 1500, "currency": "USD", "payment_method": make_card(api),
            "confirm": True}
    first = api.post("/v1/payments", body, idempotency_key="race-expired")
    assert first.status_code == 200
    IdempotencyKey.objects.filter(merchant=merchant, key="race-expired").update(
        created_at=timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1))

    results = race(20, Requests(test_key, lambda c, i: c.post(
        "/v1/payments", body, idempotency_key="race-expired")))

    counts = statuses(results)
    assert set(counts) <= {200, 409}, counts
    new_ids = {r.body["id"] for r in results if r.status == 200}
    assert len(new_ids) == 1
    assert first.json()["id"] not in new_ids
    assert Payment.objects.filter(merchant=merchant).count() == 2
    assert IdempotencyKey.objects.filter(merchant=merchant, key="race-expired").count() == 1


# --- b. captures -------------------------------------------------------------------------
@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
def test_concurrent_captures_capture_once(api, merchant, test_key, partial):
    payment = _payment(api, 1000, "manual")

    def capture(client, i):
        body = {"amount_to_capture": 500 + i} if partial else {}
        return client.post(f"/v1/payments/{payment.id}/capture", body)

    results = race(10, Requests(test_key, capture))

    counts = statuses(results)
    assert counts == Counter({200: 1, 409: 9}), counts
    assert codes(results, 409) == {"payment_state_invalid"}
    (winner,) = [r for r in results if r.status == 200]
    expected = winner.body["amount_captured"]
    if partial:
        assert 500 <= expected < 510
    else:
        assert expected == 1000

    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert payment.amount_captured == expected
    assert payment.amount_capturable == 0
    charge = the_charge(payment)
    assert charge.status == "captured"
    assert charge.amount_captured == expected
    captures = SandboxOperation.objects.filter(charge=charge, kind="capture")
    assert captures.count() == 1
    assert captures.get().amount == expected
    assert_event_log_consistent(payment)


def test_concurrent_captures_with_one_key_capture_once(api, merchant, test_key):
    payment = _payment(api, 1000, "manual")
    results = race(10, Requests(test_key, lambda c, i: c.post(
        f"/v1/payments/{payment.id}/capture", {}, idempotency_key="race-capture")))
    counts = statuses(results)
    assert set(counts) <= {200, 409}, counts
    assert codes(results, 409) <= {"idempotency_key_in_use"}
    assert len({r.body["id"] for r in results if r.status == 200}) == 1
    charge = the_charge(payment)
    assert SandboxOperation.objects.filter(charge=charge, kind="capture").count() == 1
    payment.refresh_from_db()
    assert payment.amount_captured == 1000


# --- c. refunds --------------------------------------------------------------------------
def test_concurrent_partial_refunds_never_exceed_the_capture(api, merchant, test_key):
    payment = _payment(api, 1000, "automatic")

    results = race(10, Requests(test_key, lambda c, i: c.post(
        "/v1/refunds", {"payment": payment.id, "amount": 300})))

    counts = statuses(results)
    # refunds are serialized on the payment row, and each of the first three fits
    assert counts == Counter({200: 3, 400: 7}), counts
    assert codes(results, 400) == {"amount_too_large"}
    succeeded = [r.body for r in results if r.status == 200]
    assert all(r["status"] == "succeeded" and r["amount"] == 300 for r in succeeded)
    total = sum(r["amount"] for r in succeeded)
    assert total <= 1000

    payment.refresh_from_db()
    assert payment.amount_refunded == total == 900
    refunds = Refund.objects.filter(payment=payment)
    assert refunds.count() == 3
    assert set(refunds.values_list("status", flat=True)) == {"succeeded"}
    charge = the_charge(payment)
    assert charge.amount_refunded == total
    assert SandboxOperation.objects.filter(charge=charge, kind="refund").count() == 3
    assert_event_log_consistent(payment)

    rest = api.post("/v1/refunds", {"payment": payment.id})
    assert rest.status_code == 200, rest.json()
    assert rest.json()["amount"] == 100
    payment.refresh_from_db()
    assert payment.amount_refunded == 1000
    charge.refresh_from_db()
    assert charge.amount_refunded == 1000


def test_concurrent_partial_refunds_that_all_fit_all_succeed(api, merchant, test_key):
    """Serializing refunds must not reject one that fits."""
    payment = _payment(api, 1000, "automatic")
    results = race(10, Requests(test_key, lambda c, i: c.post(
        "/v1/refunds", {"payment": payment.id, "amount": 100})))
    assert statuses(results) == Counter({200: 10})
    payment.refresh_from_db()
    assert payment.amount_refunded == 1000
    assert the_charge(payment).amount_refunded == 1000
    assert_event_log_consistent(payment)


def test_concurrent_full_refunds_refund_once(api, merchant, test_key):
    payment = _payment(api, 1000, "automatic")

    results = race(2, Requests(test_key, lambda c, i: c.post(
        "/v1/refunds", {"payment": payment.id})))

    counts = statuses(results)
    assert counts == Counter({200: 1, 400: 1}), counts
    assert codes(results, 400) <= {"charge_already_refunded", "amount_too_large"}
    (winner,) = [r for r in results if r.status == 200]
    assert winner.body["amount"] == 1000
    payment.refresh_from_db()
    assert payment.amount_refunded == 1000
    assert Refund.objects.filter(payment=payment).count() == 1
    assert the_charge(payment).amount_refunded == 1000
    assert_event_log_consistent(payment)


def test_concurrent_refunds_with_one_key_refund_once(api, merchant, test_key):
    payment = _payment(api, 1000, "automatic")
    results = race(10, Requests(test_key, lambda c, i: c.post(
        "/v1/refunds", {"payment": payment.id, "amount": 300}, idempotency_key="race-re")))
    counts = statuses(results)
    assert set(counts) <= {200, 409}, counts
    assert len({r.body["id"] for r in results if r.status == 200}) == 1
    payment.refresh_from_db()
    assert payment.amount_refunded == 300
    assert Refund.objects.filter(payment=payment).count() == 1
    assert the_charge(payment).amount_refunded == 300


# --- d. capture against cancel -----------------------------------------------------------
@pytest.mark.parametrize("round_", range(5))
def test_capture_and_cancel_race_has_one_winner(api, merchant, test_key, round_):
    payment = _payment(api, 1000, "manual")
    paths = [f"/v1/payments/{payment.id}/capture", f"/v1/payments/{payment.id}/cancel"]
    # alternate who is started first, so both orders get exercised over the rounds
    if round_ % 2:
        paths.reverse()

    results = race(2, Requests(test_key, lambda c, i: c.post(paths[i], {})))

    counts = statuses(results)
    assert counts == Counter({200: 1, 409: 1}), counts
    assert codes(results, 409) == {"payment_state_invalid"}
    payment.refresh_from_db()
    charge = the_charge(payment)
    operations = list(SandboxOperation.objects.filter(charge=charge).values_list("kind",
                                                                                 flat=True))
    if payment.status == "succeeded":
        assert payment.amount_captured == 1000
        assert payment.amount_capturable == 0
        assert charge.status == "captured"
        assert charge.amount_captured == 1000
        assert operations == ["capture"]
    else:
        assert payment.status == "canceled"
        assert payment.amount_captured == 0
        assert payment.amount_capturable == 0
        assert charge.status == "canceled"
        assert charge.amount_captured == 0
        assert operations == ["cancel"]
    (winner,) = [r for r in results if r.status == 200]
    assert winner.body["status"] == payment.status
    assert_event_log_consistent(payment)


# --- the sandbox provider's own idempotency under races ----------------------------------
def _sandbox_adapter(provider: str):
    from providers.base import AccountConfig
    from providers.models import SANDBOX_URL
    from providers.registry import get_adapter
    from providers.sandboxes.catalog import SANDBOX_CREDENTIALS

    return get_adapter(AccountConfig(name=f"{provider}-race", provider=provider,
                                     livemode=False, base_url=SANDBOX_URL,
                                     credentials=SANDBOX_CREDENTIALS[provider]))


def _results_or_unknown(outcomes: list, result_type) -> list:
    """Every racer gets the provider's answer, or, while the first request with that key is
    still in flight, an outcome-unknown error (the provider's 409/704): never a second
    charge, never an unexpected error."""
    from providers.base import OutcomeUnknown

    unexpected = [o for o in outcomes if not isinstance(o, (result_type, OutcomeUnknown))]
    assert not unexpected, unexpected
    results = [o for o in outcomes if isinstance(o, result_type)]
    assert results, "at least the first request gets an answer"
    return results


@pytest.mark.parametrize("provider", ["stripe", "adyen", "checkout"])
def test_sandbox_authorize_with_one_reference_charges_once(db, provider):
    from providers.base import AuthorizeRequest, AuthorizeResult, Card

    request = AuthorizeRequest(reference=f"att_race_auth_{provider}", amount=700,
                               currency="USD", card=Card("4242424242424242", 12, 2034, "visa"),
                               capture=False)
    outcomes = in_threads(20, lambda i: _sandbox_adapter(provider).authorize(request))
    results = _results_or_unknown(outcomes, AuthorizeResult)
    assert len({o.provider_reference for o in results}) == 1
    assert SandboxCharge.objects.filter(reference=request.reference).count() == 1
    # a retry after the race replays the one charge
    again = _sandbox_adapter(provider).authorize(request)
    assert again.provider_reference == results[0].provider_reference


@pytest.mark.parametrize("provider", ["stripe", "adyen", "checkout"])
@pytest.mark.parametrize("kind", ["capture", "cancel", "refund"])
def test_sandbox_modification_retried_concurrently_is_applied_once(db, kind, provider):
    """A provider idempotency key sent several times at once (a retry racing the original)
    moves the money once."""
    from providers.base import AuthorizeRequest, Card, ModificationRequest, ModificationResult

    auth = _sandbox_adapter(provider).authorize(AuthorizeRequest(
        reference=f"att_race_{kind}_{provider}", amount=1000, currency="USD",
        card=Card("4242424242424242", 12, 2034, "visa"), capture=kind == "refund"))
    request = ModificationRequest(reference=f"mod_race_{kind}_{provider}",
                                  provider_reference=auth.provider_reference, amount=400,
                                  currency="USD")

    outcomes = in_threads(10, lambda i: getattr(_sandbox_adapter(provider), kind)(request))

    results = _results_or_unknown(outcomes, ModificationResult)
    assert len({o.provider_reference for o in results}) == 1
    charge = SandboxCharge.objects.get(provider_reference=auth.provider_reference)
    assert SandboxOperation.objects.filter(charge=charge).count() == 1
    if kind == "capture":
        assert (charge.status, charge.amount_captured) == ("captured", 400)
    elif kind == "cancel":
        assert charge.status == "canceled"
    else:
        assert charge.amount_refunded == 400


def test_merchant_rate_limit_holds_under_concurrency(api, merchant, test_key, monkeypatch):
    """40 simultaneous requests against a limit of 15 per minute: exactly 15 get through.

    The counter is one atomic INCR in Redis, so no two requests can read the same count.
    The clock is pinned mid-window so the race cannot straddle two windows.
    """
    import types

    from payments.api import throttling

    monkeypatch.setattr(throttling, "time", types.SimpleNamespace(time=lambda: 1_800_000_030.0))
    merchant.rate_limit_per_minute = 15
    merchant.save()
    results = race(40, Requests(test_key, lambda client, i: client.get("/v1/payments")))
    counts = statuses(results)
    assert counts == Counter({200: 15, 429: 25}), counts
    assert codes(results, 429) == {"rate_limit"}
    assert all(int(r.headers["Retry-After"]) >= 1 for r in results if r.status == 429)
