import pytest

from ops.logging import scrub


@pytest.mark.django_db
def test_liveness_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "cache": "ok"}


@pytest.mark.django_db
def test_readiness_reports_a_broken_cache(client, monkeypatch):
    from django.core.cache import cache

    def broken(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr(cache, "set", broken)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["cache"] == "unavailable"


def test_scrub_masks_card_numbers_only():
    assert "4242424242424242" not in scrub("card 4242424242424242 declined")
    assert "4242 4242 4242 4242" not in scrub("card 4242 4242 4242 4242")
    # fails Luhn: not a card number, and masking it would make the message lie
    assert scrub("limit 137438953472") == "limit 137438953472"
    assert scrub("order 12345678901 shipped") == "order 12345678901 shipped"  # 11 digits
