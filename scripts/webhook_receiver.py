#!/usr/bin/env python3
"""A tiny local receiver for Switchyard's merchant webhooks, for trying them out.

Prints every delivery (event type and id, the Switchyard-Signature header, the body) and
whether its signature verifies with the endpoint's secret, then answers 200 (or 401 when the
signature does not verify, so Switchyard retries it). Stdlib only.

Usage: python3 scripts/webhook_receiver.py [--port 4242] [--secret whsec_…]
       (the secret can also come from WEBHOOK_SECRET)

Verifying a delivery, as a merchant's server should:
  header = "t=<unix time>,v1=<hex>[,v1=<hex>…]" (two v1 during a secret roll);
  expected = HMAC-SHA256(secret, "<t>." + raw body), hex; accept if it equals any v1, and
  if t is recent (here: within 5 minutes), to refuse replays.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 300


def verify(body: bytes, header: str, secret: str, *, now: float | None = None,
           tolerance: float = TOLERANCE_SECONDS) -> bool:
    """True if `header` signs `body` with `secret` and its timestamp is within `tolerance`."""
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def make_handler(secret: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            header = self.headers.get("Switchyard-Signature", "")
            try:
                event = json.loads(body)
                title = f"{event.get('type')} {event.get('id')}"
            except ValueError:
                title = "(not JSON)"
            ok = bool(secret) and verify(body, header, secret)
            verdict = ("signature OK" if ok else
                       "signature NOT checked (no --secret)" if not secret else
                       "signature INVALID")
            print(f"--- {title}: {verdict}\nSwitchyard-Signature: {header}\n"
                  f"{body.decode(errors='replace')}", flush=True)
            status = 200 if ok or not secret else 401
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok\n" if status == 200 else b"bad signature\n")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # the delivery itself is printed above

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4242)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET", ""),
                        help="the endpoint's whsec_… secret (default: $WEBHOOK_SECRET)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.secret))
    print(f"Listening on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
