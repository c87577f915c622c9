"""Where an account's HTTP goes when its base URL is not a network address.

A base URL is normally the provider's API (`https://…`), reached over the network. A base URL
whose scheme is registered here (`sandbox://local`) is served in-process instead: the entry
for the scheme gives the httpx transport and the base URL the client uses. The sandboxes app
(providers/sandboxes) registers `sandbox` in its `AppConfig.ready()` when it is installed
(SANDBOXES_ENABLED); production code never imports it, and without it a `sandbox://` account
is refused before anything is sent.

The entry also sets up accounts of its scheme: the placeholder credentials a new account gets
and the provider-side wiring (a sandbox's webhook endpoint), which a real account gets from
its operator in the provider's dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from providers.base import AccountConfig
    from providers.models import ProviderAccount


@dataclass(frozen=True)
class LocalTransport:
    """What a scheme served in-process provides."""

    # (base URL for httpx, transport) for one account
    client: Callable[[AccountConfig], tuple[str, httpx.BaseTransport]]
    # provider type → credentials a new account of this scheme gets when none are given
    placeholder_credentials: Callable[[str], dict[str, str]]
    # sets up what the provider side needs for a saved account (e.g. where its webhooks go)
    connect_account: Callable[[ProviderAccount], object]


_REGISTRY: dict[str, LocalTransport] = {}
# Schemes that mean "in-process" even where nothing registered them (the sandboxes app not
# installed): such an account is refused, never sent to the network.
KNOWN_LOCAL_SCHEMES = frozenset({"sandbox"})


def register(scheme: str, transport: LocalTransport) -> None:
    """Serve base URLs `<scheme>://…` with `transport` (idempotent: the last one wins)."""
    _REGISTRY[scheme] = transport


def scheme_of(base_url: str) -> str:
    scheme, sep, _ = base_url.partition("://")
    return scheme if sep else ""


def local_transport(base_url: str) -> LocalTransport | None:
    """The in-process transport serving `base_url`, or None for a network address."""
    return _REGISTRY.get(scheme_of(base_url))


def is_local(base_url: str) -> bool:
    """Whether `base_url` names something served in-process (registered or not)."""
    scheme = scheme_of(base_url)
    return scheme in KNOWN_LOCAL_SCHEMES or scheme in _REGISTRY
