"""Review: /metrics' allowlist and a request relayed by the TLS proxy.

Behind the proxy docs/operations/deployment.md describes (on the host, in front of the
published port; FORWARDED_ALLOW_IPS is its address as the container sees it), every request
from the internet reaches gunicorn from the proxy's address: REMOTE_ADDR is the proxy. An
allowlist naming that address (the scraper on the same host arrives from it too) must not
admit the internet through the proxy. A relayed request carries the proxy's forwarding
headers (X-Forwarded-Proto is required for HTTPS to be recognised at all), a direct scrape
does not: the allowlist admits direct requests only; the token works either way."""

from __future__ import annotations

import pytest

from ops import metrics

PROXY = "172.18.0.1"
TOKEN = "review-token-" + "x" * 20


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                                    "HTTP_FORWARDED", "HTTP_X_REAL_IP"])
def test_a_request_relayed_by_an_allowlisted_proxy_is_not_admitted_by_the_allowlist(
        client, settings, header):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", [PROXY]
    assert client.get("/metrics", REMOTE_ADDR=PROXY).status_code == 200  # a direct scrape
    relayed = client.get("/metrics", REMOTE_ADDR=PROXY, **{header: "203.0.113.9"})
    assert relayed.status_code == 403
    assert b"switchyard_" not in relayed.content
    # with a token configured, the relayed request is asked for it, and passes with it
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", REMOTE_ADDR=PROXY,
                      **{header: "203.0.113.9"}).status_code == 401
    assert client.get("/metrics", REMOTE_ADDR=PROXY, HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
                      **{header: "203.0.113.9"}).status_code == 200


def test_the_worker_endpoint_applies_the_same_rule(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", [PROXY]
    statuses = []

    def call(**environ):
        metrics.worker_app({"PATH_INFO": "/metrics", "REMOTE_ADDR": PROXY, **environ},
                           lambda status, headers: statuses.append(status))
        return statuses[-1]

    assert call() == "200 OK"
    assert call(HTTP_X_FORWARDED_FOR="203.0.113.9") == "403 Forbidden"
