"""API keys are kept in the process (no SQL per request), and a revocation still stops a key,
and a merchant's new settings apply, at the next request in every process: the keys'
generation read in the rate limit's round trip (payments.services.merchants, "Authenticating a
request")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from payments.api.authentication import APIKeyAuthentication
from payments.api.throttling import MerchantRateThrottle
from payments.models import APIKey
from payments.services import merchants
from payments.services.merchants import hash_key
from tests.counting import count_work
from tests.workers.test_logging import _worker_env

ROOT = Path(__file__).resolve().parents[2]


def _key_row(raw: str) -> APIKey:
    return APIKey.objects.get(key_hash=hash_key(raw))


@pytest.mark.django_db
def test_a_known_key_costs_no_sql(api):
    assert api.get("/v1/payments").status_code == 200  # the process learns the key
    with count_work() as work:
        assert api.get("/v1/payments").status_code == 200
    assert not [sql for _, _, sql in work.statements if "payments_apikey" in sql], work.report()
    assert len(work.commands) == 1  # the rate limit's round trip, which reads the generation


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_by_another_process_is_refused_at_its_next_request(api, merchant_keys):
    _, test_key, _ = merchant_keys
    assert api.get("/v1/payments").status_code == 200  # cached here, for a minute
    key = _key_row(test_key)
    # another process: the operator's command, on the same database and Redis
    done = subprocess.run([sys.executable, "manage.py", "revoke_api_key", key.pk],
                          cwd=ROOT, env=_worker_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert merchants._cache.get(key.key_hash) is not None  # this process still holds it...
    resp = api.get("/v1/payments")
    assert resp.status_code == 401, resp.content  # ...and refuses it all the same
    assert resp.json()["error"]["message"] == "Invalid or revoked API key."
    assert merchants._cache.get(key.key_hash) is None


@pytest.mark.django_db(transaction=True)
def test_a_merchant_changed_by_another_process_applies_at_the_next_request(api, merchant):
    assert api.get("/v1/payments").status_code == 200
    code = ("import django; django.setup(); from payments.models import Merchant; "
            f"m = Merchant.objects.get(pk={merchant.pk!r}); m.rate_limit_per_minute = 1; "
            "m.save(update_fields=['rate_limit_per_minute'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_worker_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert api.get("/v1/payments").status_code == 429  # this minute's second request


@pytest.mark.django_db(transaction=True)
def test_a_revocation_in_this_process_is_refused_at_once(api, merchant_keys):
    _, test_key, _ = merchant_keys
    assert api.get("/v1/payments").status_code == 200
    merchants.api_key_revoke(key=_key_row(test_key), actor="test")
    assert api.get("/v1/payments").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_other_keys_stay_served_after_a_revocation(api, other_api, merchant_keys):
    """A new generation makes every process check its keys again, once: keys still active
    go on working."""
    _, test_key, _ = merchant_keys
    assert other_api.get("/v1/payments").status_code == 200
    merchants.api_key_revoke(key=_key_row(test_key), actor="test")
    with count_work() as work:
        assert other_api.get("/v1/payments").status_code == 200
    assert len([sql for _, _, sql in work.statements if "payments_apikey" in sql]) == 1
    with count_work() as work:
        assert other_api.get("/v1/payments").status_code == 200
    assert not [sql for _, _, sql in work.statements if "payments_apikey" in sql]


@pytest.mark.django_db(transaction=True)
def test_a_lost_generation_is_backstopped_by_the_time_to_live(api, merchant_keys, settings,
                                                             monkeypatch):
    """If the new generation never reaches the shared cache (down at that moment), another
    process's cached key works until API_KEY_CACHE_SECONDS, and not after."""
    _, test_key, _ = merchant_keys
    assert api.get("/v1/payments").status_code == 200
    # another process revoked it and could not publish: the row alone changed
    APIKey.objects.filter(key_hash=hash_key(test_key)).update(revoked_at="2026-01-01T00:00Z")
    assert api.get("/v1/payments").status_code == 200  # the documented window
    now = merchants.time.monotonic()
    monkeypatch.setattr(merchants.time, "monotonic",
                        lambda: now + settings.API_KEY_CACHE_SECONDS + 1)
    assert api.get("/v1/payments").status_code == 401


def _views(resolver: URLResolver, prefix: str = ""):
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            view = getattr(pattern.callback, "cls", None)
            if view is not None:
                yield prefix + str(pattern.pattern), view


def test_every_view_that_takes_an_api_key_reads_the_keys_generation():
    """The generation is read by the rate limit: a view authenticated by API key without it
    would serve a revoked key for up to API_KEY_CACHE_SECONDS."""
    keyed = [(route, view) for route, view in _views(get_resolver())
             if APIKeyAuthentication in view.authentication_classes]
    assert len(keyed) > 10
    missing = [route for route, view in keyed if MerchantRateThrottle not in view.throttle_classes]
    assert missing == []
