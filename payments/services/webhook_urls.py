"""Where merchant webhooks may go: the SSRF guard.

A webhook URL is the merchant's input, and Switchyard's workers POST to it from inside our
network. A URL whose host resolves to a loopback, private, link-local (cloud metadata lives at
169.254.169.254), multicast, reserved or otherwise non-global address is refused when the
endpoint is registered, and again every time a delivery is sent (DNS may answer differently
later): `destination` resolves the host once, checks every address, and the sender connects
to the address it returned, so a rebinding DNS server cannot swap in another between the check
and the connection.

`WEBHOOK_ALLOWED_HOSTS` (host names or IP literals, compared with the URL's host exactly as
written) lets local development reach the listed hosts, and only those, whatever they resolve
to. Live-mode endpoints must use HTTPS.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2048


class UnsafeURL(ValueError):
    """The URL may not receive webhooks; the message says why (merchant-facing)."""


@dataclass(frozen=True)
class Destination:
    """Where to connect: the checked `address`, with the URL's own host for the Host header
    and TLS (SNI and certificate checks)."""

    scheme: str
    host: str
    port: int
    address: str


def _parse(url: str, *, livemode: bool) -> tuple[str, str, int]:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"Give an absolute http(s) URL of at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("This URL cannot be parsed.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("Webhook URLs use http or https.")
    if livemode and scheme != "https":
        raise UnsafeURL("Live-mode webhook URLs must use https.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("Webhook URLs may not carry credentials; verify the signature instead.")
    host = parts.hostname or ""
    if not host:
        raise UnsafeURL("The URL has no host.")
    if any(ch.isspace() for ch in url):
        raise UnsafeURL("The URL contains white space.")
    return scheme, host, port or (443 if scheme == "https" else 80)


def allowed_hosts() -> set[str]:
    return {h.strip().lower() for h in settings.WEBHOOK_ALLOWED_HOSTS if h.strip()}


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_private or ip.is_unspecified)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise UnsafeURL(f"The host {host!r} does not resolve.") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def destination(url: str, *, livemode: bool) -> Destination:
    """Check `url` and pick the address to connect to; raises UnsafeURL."""
    scheme, host, port = _parse(url, livemode=livemode)
    addresses = _resolve(host, port)
    if not addresses:
        raise UnsafeURL(f"The host {host!r} does not resolve.")
    if host.lower() not in allowed_hosts():
        refused = [a for a in addresses if not _is_public(a)]
        if refused:
            # every address must be public: a host with one private address among public
            # ones is a rebinding set-up as much as one with only private addresses
            raise UnsafeURL(f"The host {host!r} resolves to a non-public address "
                            f"({refused[0]}); webhooks go to the public internet only.")
    return Destination(scheme=scheme, host=host, port=port, address=addresses[0])


def check_url(url: str, *, livemode: bool) -> None:
    """Registration-time check (raises UnsafeURL)."""
    destination(url, livemode=livemode)
