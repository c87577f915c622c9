"""payments.services.webhook_urls, the SSRF guard: webhooks go to the public internet only,
whatever a host name resolves to, and only over https in live mode."""

from __future__ import annotations

import socket

import pytest

from payments.services.webhook_urls import (
    MAX_URL_LENGTH,
    Destination,
    UnsafeURL,
    check_url,
    destination,
)
from tests.conftest import PUBLIC_ADDRESS

# Non-public addresses of every kind the guard must refuse.
NON_PUBLIC = [
    "127.0.0.1", "127.255.0.9",  # loopback
    "10.0.0.1", "172.16.5.4", "192.168.1.1",  # private
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # shared address space (carrier NAT), not global
    "0.0.0.0",  # unspecified  # noqa: S104 (an address under test, not a bind)
    "224.0.0.1", "239.255.255.250",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "192.0.2.10", "198.51.100.7",  # documentation ranges
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped IPv6
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
]


@pytest.fixture
def dns(public_dns) -> dict[str, list[str]]:
    """Host name → the addresses getaddrinfo answers (names under example.com: public)."""
    return public_dns


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_a_name_resolving_to_a_non_public_address_is_refused(dns, address):
    dns["evil.test"] = [address]
    with pytest.raises(UnsafeURL, match="non-public address"):
        check_url("https://evil.test/hook", livemode=True)


@pytest.mark.parametrize("address", [a for a in NON_PUBLIC if "%" not in a])
def test_a_non_public_address_written_in_the_url_is_refused(address):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURL, match="non-public address"):
        check_url(f"http://{host}:8080/hook", livemode=False)


def test_an_ipv4_mapped_ipv6_private_address_is_refused(dns):
    """::ffff:10.0.0.1 reaches 10.0.0.1: the guard judges a mapped address as the IPv4
    address it wraps (the hex spelling included), whatever the Python version's ipaddress
    says of the IPv6 form."""
    dns["mapped.test"] = ["::ffff:a00:1"]
    with pytest.raises(UnsafeURL, match="non-public address"):
        check_url("https://mapped.test/", livemode=True)
    dns["mapped-public.test"] = [f"::ffff:{PUBLIC_ADDRESS}"]
    check_url("https://mapped-public.test/", livemode=True)


def test_one_non_public_address_among_public_ones_is_enough_to_refuse(dns):
    dns["rebind.test"] = [PUBLIC_ADDRESS, "10.1.1.1"]
    with pytest.raises(UnsafeURL, match=r"10\.1\.1\.1"):
        check_url("https://rebind.test/", livemode=True)


def test_a_link_local_ipv6_answer_with_a_scope_is_refused(dns):
    dns["scoped.test"] = ["fe80::1%eth0"]
    with pytest.raises(UnsafeURL, match="non-public address"):
        check_url("https://scoped.test/", livemode=True)


def test_localhost_resolves_to_loopback_and_is_refused():
    # the machine's own resolver: localhost is loopback everywhere
    with pytest.raises(UnsafeURL, match="non-public address"):
        check_url("http://localhost/hook", livemode=False)


def test_a_public_host_is_accepted_and_the_checked_address_is_the_one_to_connect_to(dns):
    dns["hooks.shop.test"] = [PUBLIC_ADDRESS, "2606:4700::6810:84e5"]
    assert destination("https://hooks.shop.test/x?y=1", livemode=True) == Destination(
        scheme="https", host="hooks.shop.test", port=443, address=PUBLIC_ADDRESS)
    assert destination("http://hooks.shop.test:8080/x", livemode=False).port == 8080
    assert destination(f"http://{PUBLIC_ADDRESS}/x", livemode=False).address == PUBLIC_ADDRESS


def test_the_host_is_resolved_once_per_check(monkeypatch):
    calls = []

    def getaddrinfo(host, port, *args, **kwargs):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    destination("https://once.test/", livemode=True)
    assert calls == ["once.test"]


@pytest.mark.parametrize(("url", "livemode", "says"), [
    ("http://hooks.example.com/x", True, "must use https"),
    ("ftp://hooks.example.com/x", False, "http or https"),
    ("javascript:alert(1)", False, "http or https"),
    ("//hooks.example.com/x", False, "http or https"),
    ("https://user:secret@hooks.example.com/x", False, "credentials"),
    ("https://:secret@hooks.example.com/x", False, "credentials"),
    ("https:///x", False, "no host"),
    ("https://hooks.example.com/a b", False, "white space"),
    ("https://hooks.example.com:99999/x", False, "cannot be parsed"),
    ("https://[::1/x", False, "cannot be parsed"),
    ("", False, "absolute http(s) URL"),
    ("https://hooks.example.com/" + "a" * MAX_URL_LENGTH, False, "absolute http(s) URL"),
])
def test_urls_that_cannot_take_webhooks(dns, url, livemode, says):
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, livemode=livemode)
    assert says in str(refused.value)


def test_a_host_that_does_not_resolve_is_refused(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(UnsafeURL, match="does not resolve"):
        check_url("https://nowhere.test/", livemode=True)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])
    with pytest.raises(UnsafeURL, match="does not resolve"):
        check_url("https://nowhere.test/", livemode=True)


def test_allowed_hosts_reach_non_public_addresses_as_written_only(settings, dns):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", " Dev.Local ", ""]
    dns["dev.local"] = ["10.0.0.5"]
    dns["other.local"] = ["10.0.0.5"]
    assert destination("http://127.0.0.1:9000/x", livemode=False).address == "127.0.0.1"
    assert destination("http://DEV.local/x", livemode=False).address == "10.0.0.5"
    with pytest.raises(UnsafeURL):  # the same address under another name
        check_url("http://other.local/x", livemode=False)
    with pytest.raises(UnsafeURL):  # the same machine, written otherwise
        check_url("http://127.0.0.2:9000/x", livemode=False)
    with pytest.raises(UnsafeURL, match="https"):  # https is still required in live mode
        check_url("http://127.0.0.1:9000/x", livemode=True)
