"""Slow, half-open and confused clients of the engine's web server (``fleet:ui:header_timeout``,
``body_timeout``, ``max_connections_per_address``; :mod:`saltext_fleet.webui.guard`).

The real server runs in this process on a loopback port (no Salt daemon); the clients are
real sockets. Slow clients come from 127.0.0.1, the user who logs in meanwhile from 127.0.0.2.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from saltext_fleet import config
from tests.support.uiserver import form_login, serving

USER, PASSWORD = "slow-admin", "slow clients test password"
SLOW = "127.0.0.1"


class Client:
    """A raw client socket: when it was opened, what it got, and when the server closed it."""

    def __init__(self, port: int, source: str = SLOW, kind: str = ""):
        self.kind = kind
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(source, 0)
        )
        self.sock.setblocking(False)
        self.opened = self.last_sent = time.monotonic()
        self.received = b""
        self.closed_at: float | None = None

    def send(self, data: bytes) -> None:
        if self.closed_at is None:
            try:
                self.sock.send(data)
                self.last_sent = time.monotonic()
            except OSError:
                self.poll()

    def poll(self) -> bool:
        """Read what came; True once the server has closed the connection."""
        while self.closed_at is None:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:  # reset
                data = b""
            if not data:
                self.closed_at = time.monotonic()
                self.sock.close()
            self.received += data
        return True


def poll_until(what, clients, done, timeout):
    deadline = time.monotonic() + timeout
    while True:
        for client in clients:
            client.poll()
        if done():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def poll_until_value(what, attempt, timeout):
    deadline = time.monotonic() + timeout
    while not (value := attempt()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
    return value


def test_the_defaults_are_10_s_for_headers_30_s_for_bodies_and_64_connections():
    ui = config.load({}).ui
    assert (ui.header_timeout, ui.body_timeout, ui.max_connections_per_address) == (10, 30, 64)


def test_slow_clients_do_not_delay_a_login_and_are_closed_at_their_deadline(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="saltext_fleet.webui.guard")
    header_timeout, body_timeout = 2.0, 2.0
    ui = {
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "max_connections_per_address": 1000,  # the cap has its own test
    }
    with serving(tmp_path, ui=ui, users=[(USER, "admin", PASSWORD)]) as srv:
        port = srv["port"]
        # warm up the app (first render, bcrypt, sessions) so the timing below is the server's
        assert form_login(port, USER, PASSWORD)["page_status"] == 200

        silent = [Client(port, kind="silent") for _ in range(100)]  # never a request line
        trickle = [Client(port, kind="trickle") for _ in range(100)]  # headers byte by byte
        stalled = [Client(port, kind="stalled") for _ in range(70)]  # body stops midway
        moving = [Client(port, kind="moving") for _ in range(30)]  # slow body, never paused
        slow = silent + trickle + stalled + moving
        assert len(slow) == 300
        endless = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 500
        for client in stalled:
            client.send(
                b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100\r\n\r\nusername=slow"
            )
        body = b"a=0123456789"  # one byte every 0.25 s: 3 s in all, more than body_timeout
        for client in moving:
            client.send(
                b"POST /no-such-page HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
        moving_began = opened = time.monotonic()

        # the login, from another address, while all 300 are open
        result = {}
        login = threading.Thread(
            target=lambda: result.update(form_login(port, USER, PASSWORD), done=time.monotonic()),
            daemon=True,
        )
        login.start()
        sent = body_sent = 0
        deadline = opened + max(header_timeout, body_timeout) + 6
        while time.monotonic() < deadline:
            for client in trickle:
                client.send(endless[sent : sent + 1])
            sent += 1
            due = min(len(body), int((time.monotonic() - moving_began) / 0.25) + 1)
            if body_sent < due:
                for client in moving:
                    client.send(body[body_sent:due])
                body_sent = due
            for client in slow:
                client.poll()
            if all(c.closed_at is not None for c in slow) and not login.is_alive():
                break
            time.sleep(0.05)
        login.join(10)

    # the login answered at once, while every slow connection was still open
    assert result, "the login did not finish"
    assert result["page_status"] == 200 and 'id="fleet"' in result["page"]
    assert all(took < 1.0 for took in result["took"].values()), result["took"]
    early = [c.kind for c in slow if c.closed_at is not None and c.closed_at < result["done"]]
    assert not early, f"slow connections closed before the login was done: {early[:5]}"

    # each slow one was closed at its deadline, not before, not much after
    for client in silent + trickle:
        assert client.closed_at is not None, f"a {client.kind} connection is still open"
        held = client.closed_at - client.opened
        assert header_timeout - 0.2 <= held <= header_timeout + 1.5, (client.kind, held)
        assert client.received == b""
    for client in stalled:
        assert client.closed_at is not None, "a stalled body is still open"
        paused = client.closed_at - client.last_sent
        assert body_timeout - 0.2 <= paused <= body_timeout + 1.5, paused
    # a body that keeps coming is read to its end, however long it takes in all
    for client in moving:
        assert client.received.startswith(b"HTTP/1.1 4"), client.received[:100]
        assert client.last_sent - moving_began > body_timeout + 0.5
    assert "sent no part of a request body" in caplog.text


def test_an_address_gets_64_connections_and_the_header_deadline_is_10_s(tmp_path, caplog):
    """The defaults, for real: from one address the 65th connection is closed at once, the
    64 others when their 10 s for a request line run out, while another address logs in."""
    caplog.set_level(logging.WARNING, logger="saltext_fleet.webui.guard")
    with serving(tmp_path, users=[(USER, "admin", PASSWORD)]) as srv:
        port = srv["port"]
        held = [Client(port) for _ in range(64)]
        over = [Client(port) for _ in range(16)]
        poll_until(
            "the connections over the cap to be closed",
            over,
            lambda: all(c.closed_at is not None for c in over),
            timeout=3,
        )
        assert all(c.closed_at - c.opened < 1.0 for c in over)
        assert not any(c.poll() for c in held), "a connection under the cap was closed"
        assert "has 64 connections open" in caplog.text and SLOW in caplog.text
        result = form_login(port, USER, PASSWORD)
        assert result["page_status"] == 200 and all(t < 1.0 for t in result["took"].values())
        # freeing one makes room for one more, which is served
        held.pop().sock.close()

        def served():
            client = Client(port)
            client.send(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            poll_until(
                "an answer or a close",
                [client],
                lambda: client.closed_at is not None or b"\r\n\r\n" in client.received,
                timeout=5,
            )
            return client if client.received.startswith(b"HTTP/1.1 200 OK") else None

        held.append(poll_until_value("room for a new connection", served, timeout=5))
        poll_until(
            "the held connections to time out",
            held,
            lambda: all(c.closed_at is not None for c in held),
            timeout=15,
        )
        for client in held[:-1]:
            assert 9.8 <= client.closed_at - client.opened <= 11.5, client.closed_at - client.opened


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    tls = ssl.create_default_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="127.0.0.1"
    )
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_a_tls_hello_on_the_plain_port_is_answered_at_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="saltext_fleet.webui.guard")
    with serving(tmp_path) as srv:
        port = srv["port"]
        hello = client_hello()
        assert hello[:1] == b"\x16"
        client = Client(port)
        client.send(hello)
        poll_until("an answer", [client], lambda: client.closed_at is not None, timeout=3)
        assert client.closed_at - client.opened < 1.0
        assert client.received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert (
            b"This port speaks plain HTTP, not HTTPS/TLS: use http://127.0.0.1:%d/" % (port)
            in client.received
        )
        assert f"a TLS handshake on the plain-HTTP port from {SLOW}" in caplog.text
        # a TLS client fails at once (instead of waiting for a ServerHello)
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
            except (ssl.SSLError, OSError):
                pass
            else:
                raise AssertionError("a TLS handshake succeeded on the plain port")
        assert time.monotonic() - began < 1.0
        # and the port still serves plain HTTP
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 200 OK")
