"""/v1/webhook_endpoints: CRUD, the signing secret shown once (and kept encrypted, also under
an Idempotency-Key), rolling it, enabled_events, the SSRF guard at registration, isolation per
merchant and mode, and the delivery-attempt log."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from payments.models import (
    DeliveryStatus,
    IdempotencyKey,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookOutbox,
)
from payments.services.webhook_endpoints import PREVIOUS_SECRET_HOURS
from tests.conftest import assert_invalid
from tests.factories import merchant_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("public_dns")]

E = "/v1/webhook_endpoints"
URL = "https://hooks.example.com/switchyard"
ENDPOINT_FIELDS = {"id", "object", "url", "description", "enabled_events", "metadata", "status",
                   "disabled_reason", "failing_since", "created", "livemode"}


def create(api, body=None, **kwargs):
    return api.post(E, body if body is not None else {
        "url": URL, "enabled_events": ["payment.succeeded"]}, **kwargs)


def delete(api, path):
    return api.client.delete(path, HTTP_AUTHORIZATION=f"Bearer {api.key}")


# --- CRUD and the secret ----------------------------------------------------------------------
def test_create_retrieve_list_update_delete(api, merchant):
    resp = create(api, {"url": URL, "enabled_events": ["payment.succeeded", "refund.failed"],
                        "description": "Orders", "metadata": {"team": "payments"}})
    assert resp.status_code == 200, resp.json()
    created = resp.json()
    assert set(created) == ENDPOINT_FIELDS | {"secret"}
    assert created["id"].startswith("we_")
    assert created["object"] == "webhook_endpoint"
    assert (created["url"], created["description"]) == (URL, "Orders")
    assert created["enabled_events"] == ["payment.succeeded", "refund.failed"]
    assert created["metadata"] == {"team": "payments"}
    assert (created["status"], created["disabled_reason"], created["failing_since"]) == (
        "enabled", None, None)
    assert created["livemode"] is False and isinstance(created["created"], int)
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 43

    shown = {k: v for k, v in created.items() if k != "secret"}
    got = api.get(f"{E}/{created['id']}")
    assert got.json() == shown
    listed = api.get(E)
    assert listed.json() == {"object": "list", "data": [shown], "has_more": False}
    for resp in (got, listed):  # never shown again
        assert secret not in resp.content.decode() and "secret" not in resp.json()

    # stored encrypted, never in clear
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    assert endpoint.stored_secrets() == {"current": secret, "previous": ""}
    assert secret.encode() not in bytes(endpoint.secrets_encrypted)
    assert endpoint.signing_secrets(timezone.now()) == [secret]

    resp = api.post(f"{E}/{created['id']}", {
        "url": "https://other.example.com/hooks", "enabled_events": ["*"],
        "description": "", "metadata": {}})
    assert resp.status_code == 200, resp.json()
    updated = resp.json()
    assert "secret" not in updated
    assert (updated["url"], updated["enabled_events"], updated["description"],
            updated["metadata"]) == ("https://other.example.com/hooks", ["*"], "", {})
    assert api.post(f"{E}/{created['id']}", {"description": "Only this"}).json()[
        "enabled_events"] == ["*"]  # fields not sent stay

    resp = delete(api, f"{E}/{created['id']}")
    assert resp.status_code == 200
    assert resp.json() == {"id": created["id"], "object": "webhook_endpoint", "deleted": True}
    assert api.get(f"{E}/{created['id']}").status_code == 404
    assert delete(api, f"{E}/{created['id']}").status_code == 404
    assert not WebhookEndpoint.objects.exists()


def test_defaults_and_duplicate_event_types_dropped(api):
    resp = create(api, {"url": URL, "enabled_events": ["refund.failed", "payment.failed",
                                                       "refund.failed"]})
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["enabled_events"] == ["refund.failed", "payment.failed"]
    assert (body["description"], body["metadata"]) == ("", {})


def test_disable_and_enable_again(api):
    endpoint = create(api).json()
    disabled = api.post(f"{E}/{endpoint['id']}", {"disabled": True}).json()
    # disabled by the merchant: no reason of Switchyard's
    assert (disabled["status"], disabled["disabled_reason"]) == ("disabled", None)

    # as the sender leaves an endpoint it disabled after 3 days of failures
    since = timezone.now() - dt.timedelta(days=3)
    WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(
        disabled=True, failing_since=since,
        disabled_reason="Every delivery failed for 3 days (last: HTTP 500).")
    shown = api.get(f"{E}/{endpoint['id']}").json()
    assert shown["status"] == "disabled"
    assert shown["disabled_reason"] == "Every delivery failed for 3 days (last: HTTP 500)."
    assert shown["failing_since"] == int(since.timestamp())

    enabled = api.post(f"{E}/{endpoint['id']}", {"disabled": False}).json()
    assert (enabled["status"], enabled["disabled_reason"], enabled["failing_since"]) == (
        "enabled", None, None)
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert (row.disabled, row.disabled_reason, row.failing_since) == (False, "", None)


def test_an_update_keeps_what_the_sender_changed_meanwhile(api):
    """The update saves only the fields it changes: the sender's `failing_since`, written
    after the merchant's request loaded the endpoint, stays."""
    endpoint = create(api).json()
    since = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(failing_since=since)
    updated = api.post(f"{E}/{endpoint['id']}", {"description": "renamed"}).json()
    assert updated["failing_since"] == int(since.timestamp())


# --- rolling the secret -----------------------------------------------------------------------
def test_roll_secret_keeps_the_previous_one_signing_for_24_hours(api):
    created = create(api).json()
    first = created["secret"]
    before = timezone.now()
    resp = api.post(f"{E}/{created['id']}/roll_secret")
    after = timezone.now()
    assert resp.status_code == 200, resp.json()
    rolled = resp.json()
    assert set(rolled) == ENDPOINT_FIELDS | {"secret"}
    second = rolled["secret"]
    assert second.startswith("whsec_") and second != first
    assert "secret" not in api.get(f"{E}/{created['id']}").json()

    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    expires = endpoint.previous_secret_expires_at
    hours = dt.timedelta(hours=PREVIOUS_SECRET_HOURS)
    assert before + hours <= expires <= after + hours
    assert endpoint.signing_secrets(after) == [second, first]
    assert endpoint.signing_secrets(expires - dt.timedelta(seconds=1)) == [second, first]
    assert endpoint.signing_secrets(expires) == [second]
    assert endpoint.signing_secrets(after + dt.timedelta(days=2)) == [second]

    # rolling again within the 24 hours retires the first secret at once
    third = api.post(f"{E}/{created['id']}/roll_secret", {}).json()["secret"]
    endpoint.refresh_from_db()
    assert endpoint.signing_secrets(timezone.now()) == [third, second]


def test_roll_secret_takes_no_fields(api):
    created = create(api).json()
    assert_invalid(api.post(f"{E}/{created['id']}/roll_secret", {"expires_in": 10}),
                   param="expires_in", code="parameter_unknown")


def test_idempotent_create_and_roll_replay_the_same_secret_stored_encrypted(api):
    first = create(api, idempotency_key="we-1")
    replay = create(api, idempotency_key="we-1")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert WebhookEndpoint.objects.count() == 1
    endpoint_id = first.json()["id"]

    rolled = api.post(f"{E}/{endpoint_id}/roll_secret", idempotency_key="roll-1")
    again = api.post(f"{E}/{endpoint_id}/roll_secret", idempotency_key="roll-1")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == rolled.json()
    stored = WebhookEndpoint.objects.get(pk=endpoint_id).stored_secrets()
    assert stored == {"current": rolled.json()["secret"], "previous": first.json()["secret"]}

    # what the keys keep for 24 hours (and backups) holds neither secret in clear
    kept = json.dumps([row.response_body for row in IdempotencyKey.objects.all()])
    assert first.json()["secret"] not in kept and rolled.json()["secret"] not in kept
    assert "whsec_" not in kept


def test_a_create_that_died_is_recovered_with_its_secret(api, settings):
    """A retry of a create whose process died after writing the endpoint answers from it,
    secret included (the merchant never saw it), and creates nothing more."""
    first = create(api, idempotency_key="we-died")
    row = IdempotencyKey.objects.get(key="we-died")
    assert row.object_id == first.json()["id"]
    # as a request that died leaves its key: in flight, claimed long ago
    IdempotencyKey.objects.filter(pk=row.pk).update(
        completed_at=None, response_status=None, response_body=None,
        created_at=timezone.now() - dt.timedelta(
            seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS + 1))
    retry = create(api, idempotency_key="we-died")
    assert retry.status_code == 200
    assert retry["Idempotent-Recovered"] == "true"
    assert retry.json() == first.json()
    assert WebhookEndpoint.objects.count() == 1
    assert "whsec_" not in json.dumps(IdempotencyKey.objects.get(pk=row.pk).response_body)
    assert create(api, idempotency_key="we-died").json() == first.json()


# --- enabled_events ---------------------------------------------------------------------------
@pytest.mark.parametrize("events", [
    [], ["payment.created"], ["payment.*"], ["*", "payment.succeeded"], "payment.succeeded",
    ["payment.succeeded", 1], None, ["PAYMENT.SUCCEEDED"],
])
def test_enabled_events_must_be_event_types_or_star(api, events):
    assert_invalid(create(api, {"url": URL, "enabled_events": events}),
                   param="enabled_events")
    assert not WebhookEndpoint.objects.exists()


def test_enabled_events_is_required_and_checked_on_update(api):
    assert_invalid(create(api, {"url": URL}), param="enabled_events", code="parameter_missing")
    endpoint = create(api).json()
    assert_invalid(api.post(f"{E}/{endpoint['id']}", {"enabled_events": []}),
                   param="enabled_events")
    assert api.get(f"{E}/{endpoint['id']}").json()["enabled_events"] == ["payment.succeeded"]


def test_unknown_fields_and_bad_types_are_refused(api):
    assert_invalid(create(api, {"url": URL, "enabled_events": ["*"], "secret": "whsec_x"}),
                   param="secret", code="parameter_unknown")
    assert_invalid(create(api, {"url": 5, "enabled_events": ["*"]}), param="url")
    assert_invalid(create(api, {"url": URL, "enabled_events": ["*"],
                                "metadata": {"k": 1}}), param="metadata")
    endpoint = create(api).json()
    assert_invalid(api.post(f"{E}/{endpoint['id']}", {"disabled": "yes"}), param="disabled")
    assert_invalid(api.post(f"{E}/{endpoint['id']}", {"status": "disabled"}),
                   param="status", code="parameter_unknown")


# --- the SSRF guard at registration -----------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hooks",
    "http://127.1:8000/hooks",
    "http://10.1.2.3/hooks",
    "http://192.168.0.10/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hooks",
    "http://[::ffff:10.0.0.1]/hooks",
    "http://0.0.0.0/hooks",
    "http://localhost:8000/hooks",
    "http://internal.example.com/hooks",  # resolves to a private address (below)
])
def test_urls_reaching_non_public_addresses_are_refused(api, public_dns, url):
    public_dns["internal.example.com"] = ["10.0.0.7"]
    error = assert_invalid(create(api, {"url": url, "enabled_events": ["*"]}), param="url",
                           code="url_invalid")
    assert "non-public address" in error["message"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://hooks.example.com/x", "http or https"),
    ("https://user:pw@hooks.example.com/x", "credentials"),
    ("hooks.example.com/x", "http or https"),
    ("https:///x", "no host"),
    ("https://nowhere.invalid/x", "does not resolve"),
])
def test_urls_that_are_not_webhook_urls_are_refused(api, url, says):
    error = assert_invalid(create(api, {"url": url, "enabled_events": ["*"]}), param="url",
                           code="url_invalid")
    assert says in error["message"]


def test_live_mode_requires_https(live_api):
    error = assert_invalid(create(live_api, {"url": "http://hooks.example.com/x",
                                             "enabled_events": ["*"]}),
                           param="url", code="url_invalid")
    assert "https" in error["message"]
    resp = create(live_api, {"url": "https://hooks.example.com/x", "enabled_events": ["*"]})
    assert resp.status_code == 200 and resp.json()["livemode"] is True


def test_test_mode_takes_http(api):
    resp = create(api, {"url": "http://hooks.example.com/x", "enabled_events": ["*"]})
    assert resp.status_code == 200, resp.json()


def test_allowed_hosts_let_local_development_register_loopback(api, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    resp = create(api, {"url": "http://127.0.0.1:9000/hooks", "enabled_events": ["*"]})
    assert resp.status_code == 200, resp.json()
    # only the hosts listed, as written
    assert_invalid(create(api, {"url": "http://localhost:9000/hooks", "enabled_events": ["*"]}),
                   param="url", code="url_invalid")


def test_a_new_url_is_checked_too(api):
    endpoint = create(api).json()
    assert_invalid(api.post(f"{E}/{endpoint['id']}", {"url": "http://169.254.169.254/"}),
                   param="url", code="url_invalid")
    assert api.get(f"{E}/{endpoint['id']}").json()["url"] == URL


# --- isolation --------------------------------------------------------------------------------
def test_another_merchants_or_modes_endpoints_are_404(api, live_api, other_api):
    endpoint = create(api).json()
    for client in (other_api, live_api):
        path = f"{E}/{endpoint['id']}"
        for resp in (client.get(path), client.post(path, {"description": "x"}),
                     delete(client, path), client.post(f"{path}/roll_secret"),
                     client.get(f"{path}/delivery_attempts")):
            assert resp.status_code == 404, resp.content
            assert resp.json()["error"]["code"] == "resource_missing"
        assert client.get(E).json()["data"] == []
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert row.description == "" and row.stored_secrets()["current"] == endpoint["secret"]


def test_list_pagination_newest_first(api):
    ids = [create(api).json()["id"] for _ in range(5)]
    page = api.get(E, {"limit": 2}).json()
    assert [e["id"] for e in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = api.get(E, {"limit": 10, "starting_after": page["data"][-1]["id"]}).json()
    assert [e["id"] for e in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    assert_invalid(api.get(E, {"limit": 0}), param="limit")
    assert_invalid(api.get(E, {"status": "enabled"}), param="status", code="parameter_unknown")


# --- deleting stops deliveries ----------------------------------------------------------------
def test_delete_drops_the_endpoints_pending_deliveries(api, merchant):
    endpoint = create(api).json()
    keep = create(api).json()
    event = merchant_event(merchant)
    for endpoint_id in (endpoint["id"], keep["id"]):
        WebhookDelivery.objects.create(event=event, endpoint_id=endpoint_id,
                                       next_attempt_at=timezone.now())
    assert delete(api, f"{E}/{endpoint['id']}").status_code == 200
    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [keep["id"]]
    assert WebhookOutbox.objects.filter(pk=event.pk).exists()  # the event stays


# --- the delivery-attempt log -----------------------------------------------------------------
def _tries(endpoint_id: str, event: WebhookOutbox, codes: list[int | None]) -> None:
    delivery, _ = WebhookDelivery.objects.get_or_create(
        event=event, endpoint_id=endpoint_id,
        defaults={"next_attempt_at": timezone.now(), "status": DeliveryStatus.PENDING})
    for code in codes:
        WebhookDeliveryAttempt.objects.create(
            delivery=delivery, endpoint_id=endpoint_id, started_at=timezone.now(),
            status_code=code, latency_ms=120,
            error="" if code else "Timed out after 10 s.",
            response_excerpt="oops" if code and code >= 500 else "")


def test_delivery_attempts_say_why_deliveries_fail(api, merchant, other_api):
    endpoint = create(api).json()
    other = create(api).json()
    first, second = merchant_event(merchant), merchant_event(merchant, type_="payment.failed")
    _tries(endpoint["id"], first, [500, None])
    _tries(endpoint["id"], second, [200])
    _tries(other["id"], first, [200])
    path = f"{E}/{endpoint['id']}/delivery_attempts"

    page = api.get(path).json()
    assert page["object"] == "list" and page["has_more"] is False
    items = page["data"]
    assert [(a["event"], a["event_type"], a["status_code"], a["succeeded"]) for a in items] == [
        (second.event_id, "payment.failed", 200, True),
        (first.event_id, "payment.succeeded", None, False),
        (first.event_id, "payment.succeeded", 500, False)]
    timeout, server_error = items[1], items[2]
    assert (timeout["error"], timeout["response_excerpt"]) == ("Timed out after 10 s.", None)
    assert (server_error["error"], server_error["response_excerpt"]) == (None, "oops")
    assert server_error["latency_ms"] == 120 and isinstance(server_error["created"], int)
    assert server_error["delivery_status"] == "pending"
    assert server_error["object"] == "webhook_delivery_attempt"
    # ids: prefixed, not the sequential row ids, and cursors
    assert all(a["id"].startswith("wda_") and len(a["id"]) == 30 for a in items)
    assert len({a["id"] for a in items}) == 3
    one = api.get(path, {"limit": 1}).json()
    assert one["has_more"] is True and one["data"] == items[:1]
    rest = api.get(path, {"starting_after": items[0]["id"]}).json()
    assert rest["data"] == items[1:]

    only = api.get(path, {"event": first.event_id}).json()["data"]
    assert [a["id"] for a in only] == [a["id"] for a in items[1:]]
    for cursor in ("wda_" + "a" * 26, "wda_x", str(WebhookDeliveryAttempt.objects.first().pk)):
        assert_invalid(api.get(path, {"starting_after": cursor}), param="starting_after",
                       code="resource_missing")
    # another endpoint's tries are no cursor here
    others = api.get(f"{E}/{other['id']}/delivery_attempts").json()["data"]
    assert_invalid(api.get(path, {"starting_after": others[0]["id"]}), param="starting_after",
                   code="resource_missing")
    assert other_api.get(path).status_code == 404


def test_signing_secret_changes_are_audited_by_api_key_without_the_secret(api, merchant):
    from payments.models import APIKey, AuditLog

    created = create(api, {"url": URL, "enabled_events": ["*"]})
    assert created.status_code == 200, created.content
    endpoint_id = created.json()["id"]
    api.post(f"{E}/{endpoint_id}", {"disabled": True})
    rolled = api.post(f"{E}/{endpoint_id}/roll_secret", {})
    assert rolled.status_code == 200, rolled.content
    assert delete(api, f"{E}/{endpoint_id}").status_code == 200

    rows = list(AuditLog.objects.filter(object_id=endpoint_id).order_by("id"))
    assert [r.action for r in rows] == [
        "webhook_endpoint.create", "webhook_endpoint.update", "webhook_endpoint.roll_secret",
        "webhook_endpoint.delete"]
    key = APIKey.objects.get(merchant=merchant, livemode=False, revoked_at__isnull=True)
    assert {r.actor for r in rows} == {f"api_key:{key.pk}"}
    assert (rows[1].before["disabled"], rows[1].after["disabled"]) == (False, True)
    text = str([(r.before, r.after) for r in rows])
    for secret in (created.json()["secret"], rolled.json()["secret"]):
        assert secret not in text
