"""A real HTTP receiver on loopback for alert deliveries, owned by the test.

``Receiver`` is an ``http.server`` in a thread on ``127.0.0.1`` (a free port, or the port
given, so a test can stop it and start it again on the same address). Every request is recorded
(path, headers, body, arrival time); what it answers is :attr:`Receiver.behaviour`, which a test
may change at any time:

- ``("answer", status, body)``: answer ``status`` with ``body`` (bytes or a JSON-able value);
- ``("hang", None, None)``: read the request and answer nothing until :meth:`Receiver.stop`
  (or :attr:`Receiver.release` is set);
- ``("close", None, None)``: read the request and close the connection without an answer;
- ``("call", None, fn)``: answer what ``fn(request)`` returns, ``(status, body)`` (a fake
  service that checks what it got).

With ``secret``, each webhook request is verified with
:func:`saltext_fleet.core.alertmsg.verify_webhook` on arrival and the verdict recorded
(``Request.verified``: the alert record, or the error's text).
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import ssl
import sys
import threading
import time
from typing import Any

from saltext_fleet.core import alertmsg


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the whole request was read
    verified: dict | str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(
        self,
        *,
        secret: str | None = None,
        port: int = 0,
        tolerance_s: float = 300,
        tls: tuple | None = None,
    ):
        """``tls``: ``(cert_file, key_file)`` to serve HTTPS instead of HTTP."""
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.requests: list[Request] = []
        self.behaviour: tuple[str, int | None, Any] = ("answer", 200, b"ok")
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request = Request("POST", self.path, dict(self.headers.items()), body, time.time())
                if receiver.secret is not None:
                    try:
                        request.verified = alertmsg.verify_webhook(
                            receiver.secret,
                            self.headers,
                            body,
                            tolerance_s=receiver.tolerance_s,
                        )
                    except alertmsg.WebhookVerifyError as exc:
                        request.verified = str(exc)
                with receiver._lock:
                    receiver.requests.append(request)
                    kind, status, answer = receiver.behaviour
                if kind == "hang":
                    receiver.release.wait(60)
                    self.close_connection = True
                    return
                if kind == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind == "call":
                    status, answer = answer(request)
                if not isinstance(answer, bytes):
                    answer = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("Content-Type", "text/plain")
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)

        self.extra_headers: dict[str, str] = {}

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                """Kept, not printed: a refused TLS handshake is what some tests expect."""
                receiver.errors.append(sys.exc_info()[1])

        self.errors: list[BaseException] = []
        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def answer(self, status: int, body: Any = b"", **headers: str) -> None:
        self.behaviour = ("answer", status, body)
        self.extra_headers = {k.replace("_", "-"): v for k, v in headers.items()}

    def respond_with(self, fn) -> None:
        self.behaviour = ("call", None, fn)
        self.extra_headers = {}

    def hang(self) -> None:
        self.behaviour = ("hang", None, None)

    def close(self) -> None:
        self.behaviour = ("close", None, None)
