#!/usr/bin/env python3
"""The web container's health check: GET /readyz (database, cache and broker answer) on this
container over plain HTTP; exit 0 on 200, 1 otherwise.

Stdlib only, no curl in the image. The request carries a Host header that the production
settings accept (the first ALLOWED_HOSTS entry; "localhost" for "*"), or Django would answer
400 to "127.0.0.1:8000". /readyz is exempt from the HTTPS redirect (settings/production.py).

Usage: python scripts/healthcheck.py [PATH]     (PATH: /readyz; PORT: 8000 by default)
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def host_header(allowed_hosts: str) -> str:
    """A name that ALLOWED_HOSTS accepts: its first entry, ".example.com" as example.com."""
    first = next((h.strip() for h in allowed_hosts.split(",") if h.strip()), "")
    if first in ("", "*"):
        return "localhost"
    return first.lstrip(".")


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/readyz"
    port = os.environ.get("PORT", "").strip() or "8000"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        headers={"Host": host_header(os.environ.get("ALLOWED_HOSTS", ""))})
    try:
        with urllib.request.urlopen(request, timeout=float(
                os.environ.get("HEALTHCHECK_TIMEOUT", "4"))) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:  # refused, timed out: not serving
        print(f"unhealthy: {path}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {path} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
