"""Serve a sandbox over real HTTP (`manage.py run_sandbox`), with real dropped connections.

`DropConnection` closes the socket without a response (the client sees the server disconnect);
`Hang` holds the connection silent for SANDBOX_HANG_SECONDS (the client's read timeout fires
first), then closes it.
"""

from __future__ import annotations

import socket
import sys
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from django.conf import settings
from django.db import close_old_connections, connections

from providers.sandboxes.ledger import DropConnection, Hang


class _Handler(ServerHandler):
    def handle_error(self):
        exc = sys.exc_info()[1]
        if isinstance(exc, Hang):
            connections.close_all()  # this thread's: a silent request holds no database session
            time.sleep(getattr(settings, "SANDBOX_HANG_SECONDS", 15))
        if isinstance(exc, (DropConnection, Hang)):
            self.request_handler.close_connection = True
            try:
                self.request_handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        super().handle_error()


class _RequestHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle(self):  # wsgiref's handle(), with our ServerHandler
        self.close_connection = True
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536 or not self.parse_request():
            return
        handler = _Handler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(),
                           multithread=True)
        handler.request_handler = self
        close_old_connections()
        try:
            handler.run(self.server.get_app())
        finally:
            close_old_connections()

    def log_message(self, format, *args):  # quiet: tests start many of these
        pass


class ThreadingSandboxServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 refuses (drops the SYN of) a burst of concurrent
    # connections, which a real provider does not: the client would see connect timeouts.
    request_queue_size = 128


def make_server(app, host: str = "127.0.0.1", port: int = 0) -> ThreadingSandboxServer:
    server = ThreadingSandboxServer((host, port), _RequestHandler)
    server.set_app(app)
    return server
