"""/v1/events: the events the state machine writes, listed newest first with the contract's
pagination and filters, retrieved as the very body webhooks carry, and redelivered by hand
under the same id."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from payments.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookOutbox
from tests.conftest import assert_invalid, pay
from tests.factories import merchant_event

pytestmark = pytest.mark.django_db

EV = "/v1/events"


def ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["object"] == "list"
    return [event["id"] for event in body["data"]]


# --- the state machine's events, as sent --------------------------------------------------------
def test_a_payments_events_are_listed_and_retrieved_as_stored(api, merchant):
    payment = pay(api).json()
    assert payment["status"] == "succeeded"
    stored = list(WebhookOutbox.objects.filter(merchant=merchant).order_by("-id"))
    assert [e.type for e in stored] == ["payment.succeeded", "payment.processing"]

    page = api.get(EV).json()
    assert page["has_more"] is False
    assert page["data"] == [e.payload for e in stored]  # newest first, the stored bodies

    for event in stored:
        resp = api.get(f"{EV}/{event.event_id}")
        assert resp.status_code == 200
        assert resp.json() == event.payload
        # byte for byte the JSON of the stored payload (what a webhook body carries)
        assert resp.content == json.dumps(event.payload, ensure_ascii=False,
                                          separators=(",", ":")).encode()
        body = resp.json()
        assert (body["id"], body["object"], body["type"], body["livemode"]) == (
            event.event_id, "event", event.type, False)
        assert body["created"] == int(event.created_at.timestamp())
        assert body["data"]["object"]["id"] == payment["id"]
        assert body["data"]["object"]["object"] == "payment"
    succeeded = api.get(f"{EV}/{stored[0].event_id}").json()["data"]["object"]
    assert succeeded == api.get(f"/v1/payments/{payment['id']}").json()


def test_refund_events(api):
    payment = pay(api).json()
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 100}).json()
    events = api.get(EV, {"type": "refund.*"}).json()["data"]
    assert [e["type"] for e in events] == [f"refund.{refund['status']}"]
    assert events[0]["data"]["object"]["id"] == refund["id"]
    assert events[0]["data"]["object"]["object"] == "refund"
    assert ids(api.get(EV, {"object_id": refund["id"]})) == [events[0]["id"]]


# --- filters and pagination ---------------------------------------------------------------------
@pytest.fixture
def events(merchant):
    """Seven events over three seconds, of two payments and a refund."""
    base = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    spec = [("payment.processing", "pay_a", 0), ("payment.succeeded", "pay_a", 0.4),
            ("payment.processing", "pay_b", 1), ("payment.failed", "pay_b", 1.9),
            ("refund.pending", "re_a", 2), ("refund.succeeded", "re_a", 2.5),
            ("payment.needs_attention", "pay_b", 2.999)]
    return [merchant_event(merchant, type_=type_, object_id=object_id,
                           created_at=base + dt.timedelta(seconds=offset))
            for type_, object_id, offset in spec]


def test_filters(api, events):
    newest_first = [e.event_id for e in reversed(events)]
    start = int(events[0].created_at.timestamp())

    assert ids(api.get(EV)) == newest_first
    assert ids(api.get(EV, {"type": "payment.processing"})) == [
        events[2].event_id, events[0].event_id]
    assert ids(api.get(EV, {"type": "payment.*"})) == [
        e.event_id for e in reversed(events) if e.type.startswith("payment.")]
    assert ids(api.get(EV, {"type": "refund.*"})) == [events[5].event_id, events[4].event_id]
    assert ids(api.get(EV, {"object_id": "pay_b"})) == [
        events[6].event_id, events[3].event_id, events[2].event_id]
    # created[gte] / created[lte] in whole seconds, both included
    assert ids(api.get(EV, {"created[gte]": start + 1})) == newest_first[:5]
    assert ids(api.get(EV, {"created[lte]": start + 1})) == newest_first[3:]
    assert ids(api.get(EV, {"created[gte]": start + 1, "created[lte]": start + 1})) == [
        events[3].event_id, events[2].event_id]
    assert ids(api.get(EV, {"created[gte]": start + 3})) == []
    # together
    assert ids(api.get(EV, {"type": "payment.*", "object_id": "pay_b",
                            "created[lte]": start + 1})) == [events[3].event_id,
                                                             events[2].event_id]
    assert ids(api.get(EV, {"object_id": "pay_nope"})) == []


def test_pagination(api, events):
    newest_first = [e.event_id for e in reversed(events)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"starting_after": cursor} if cursor else {})}
        page = api.get(EV, params).json()
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert seen == newest_first
    # a cursor within a filter
    payments = ids(api.get(EV, {"type": "payment.*", "limit": 2}))
    rest = ids(api.get(EV, {"type": "payment.*", "starting_after": payments[-1]}))
    assert payments + rest == [e.event_id for e in reversed(events)
                               if e.type.startswith("payment.")]


@pytest.mark.parametrize(("params", "param"), [
    ({"type": "payment.created"}, "type"),
    ({"type": "payment"}, "type"),
    ({"type": "*"}, "type"),
    ({"type": "charge.*"}, "type"),
    ({"created[gte]": "yesterday"}, "created[gte]"),
    ({"created[lte]": "-1"}, "created[lte]"),
    ({"limit": "101"}, "limit"),
    ({"starting_after": "evt_nope"}, "starting_after"),
    ({"created": "1"}, "created"),
    ({"object": "pay_a"}, "object"),
])
def test_bad_parameters_are_400_naming_them(api, events, params, param):
    assert_invalid(api.get(EV, params), param=param)


# --- isolation ----------------------------------------------------------------------------------
def test_another_merchants_or_modes_events_are_invisible(api, live_api, other_api, merchant):
    test_event = merchant_event(merchant)
    live_event = merchant_event(merchant, livemode=True)
    for client, hidden in ((other_api, test_event), (live_api, test_event), (api, live_event)):
        assert hidden.event_id not in ids(client.get(EV))
        for resp in (client.get(f"{EV}/{hidden.event_id}"),
                     client.post(f"{EV}/{hidden.event_id}/redeliver")):
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "resource_missing"
        assert_invalid(client.get(EV, {"starting_after": hidden.event_id}),
                       param="starting_after", code="resource_missing")
    assert ids(live_api.get(EV)) == [live_event.event_id]
    assert api.get(f"{EV}/pay_x").status_code == 404


# --- redelivery ---------------------------------------------------------------------------------
def _endpoint(api, events, **extra) -> str:
    resp = api.post("/v1/webhook_endpoints", {"url": "https://hooks.example.com/x",
                                              "enabled_events": events, **extra})
    assert resp.status_code == 200, resp.json()
    return resp.json()["id"]


@pytest.mark.usefixtures("public_dns")
def test_redeliver_sends_the_same_event_again_to_the_endpoints_that_want_it(
        api, live_api, other_api, merchant):
    wants_it = _endpoint(api, ["payment.succeeded"])
    wants_all = _endpoint(api, ["*"])
    _endpoint(api, ["refund.succeeded", "payment.failed"])
    disabled = _endpoint(api, ["*"])
    api.post(f"/v1/webhook_endpoints/{disabled}", {"disabled": True})
    _endpoint(other_api, ["*"])
    _endpoint(live_api, ["*"])
    event = merchant_event(merchant)

    resp = api.post(f"{EV}/{event.event_id}/redeliver")
    assert resp.status_code == 200, resp.json()
    assert resp.json() == {"id": event.event_id, "object": "event_redelivery", "deliveries": 2}
    deliveries = WebhookDelivery.objects.filter(event=event)
    assert {d.endpoint_id for d in deliveries} == {wants_it, wants_all}
    assert all(d.status == DeliveryStatus.PENDING for d in deliveries)

    # delivered (or given up on): a redelivery by hand starts a new round, same event id
    now = timezone.now()
    deliveries.update(status=DeliveryStatus.FAILED, attempts=12, completed_at=now,
                      first_attempt_at=now - dt.timedelta(days=3), next_attempt_at=None)
    again = api.post(f"{EV}/{event.event_id}/redeliver", {})
    assert again.json()["deliveries"] == 2
    for delivery in WebhookDelivery.objects.filter(event=event):
        assert delivery.event.event_id == event.event_id
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.next_attempt_at is not None and delivery.next_attempt_at >= now
        assert (delivery.first_attempt_at, delivery.completed_at) == (None, None)
    assert WebhookDelivery.objects.filter(event=event).count() == 2
    # what the webhooks will carry is what /v1/events/{id} returns
    assert api.get(f"{EV}/{event.event_id}").json() == WebhookOutbox.objects.get(
        pk=event.pk).payload


@pytest.mark.usefixtures("public_dns")
def test_redeliver_with_an_idempotency_key_redelivers_once(api, merchant):
    endpoint = _endpoint(api, ["*"])
    event = merchant_event(merchant)
    first = api.post(f"{EV}/{event.event_id}/redeliver", idempotency_key="redeliver-1")
    WebhookDelivery.objects.filter(event=event).update(status=DeliveryStatus.SUCCEEDED)
    replay = api.post(f"{EV}/{event.event_id}/redeliver", idempotency_key="redeliver-1")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json() == {"id": event.event_id,
                                             "object": "event_redelivery", "deliveries": 1}
    # the replay sent nothing again
    assert WebhookDelivery.objects.get(event=event, endpoint_id=endpoint).status == "succeeded"


def test_redeliver_with_no_endpoint_and_bad_bodies(api, merchant):
    event = merchant_event(merchant)
    assert api.post(f"{EV}/{event.event_id}/redeliver").json()["deliveries"] == 0
    assert_invalid(api.post(f"{EV}/{event.event_id}/redeliver", {"endpoint": "we_x"}),
                   param="endpoint", code="parameter_unknown")
    assert api.post(f"{EV}/evt_nope/redeliver").status_code == 404
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.usefixtures("public_dns")
def test_a_redelivery_that_died_is_answered_from_its_deliveries(api, merchant, settings):
    """A retry of a redelivery whose process died after making the deliveries due answers
    from them (`Idempotent-Recovered`) and does not start another round."""
    from payments.models import IdempotencyKey

    _endpoint(api, ["*"])
    event = merchant_event(merchant)
    first = api.post(f"{EV}/{event.event_id}/redeliver", idempotency_key="redeliver-died")
    row = IdempotencyKey.objects.get(key="redeliver-died")
    assert row.object_id == str(event.pk)
    IdempotencyKey.objects.filter(pk=row.pk).update(
        completed_at=None, response_status=None, response_body=None,
        created_at=timezone.now() - dt.timedelta(
            seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS + 1))
    WebhookDelivery.objects.filter(event=event).update(status=DeliveryStatus.SUCCEEDED)
    retry = api.post(f"{EV}/{event.event_id}/redeliver", idempotency_key="redeliver-died")
    assert retry.status_code == 200 and retry["Idempotent-Recovered"] == "true"
    assert retry.json() == first.json()
    assert WebhookDelivery.objects.get(event=event).status == DeliveryStatus.SUCCEEDED
