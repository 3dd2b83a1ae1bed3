"""The engine's HTTP server, guarded against slow, half-open and confused clients.

Tornado's ``HTTPServer`` waits an hour for a request's headers by default and keeps as many
connections as clients open. :class:`GuardedHTTPServer` (used by :mod:`.server`) adds:

- **a header deadline** (``fleet:ui:header_timeout``, 10 s): a connection that has not sent a
  whole request line and headers within it, counted from the moment it was accepted (or from
  the end of the previous request on a kept-alive connection), is closed. A TLS handshake is
  part of it;
- **a body deadline without progress** (``fleet:ui:body_timeout``, 30 s): a request body may
  pause at most that long between two pieces, however long it takes as a whole;
- **a cap on open connections per client address**
  (``fleet:ui:max_connections_per_address``, 64): one over it is closed at once;
- **a clear answer to the wrong protocol**: a TLS handshake on the plain-HTTP port, or a plain
  HTTP request on the HTTPS port, gets a plain-text ``400`` saying what this port speaks and
  is closed at once (the first byte tells them apart: a TLS record starts with ``0x16``, an
  HTTP request with the capital letter of its method), with a warning in the master's log
  (at most one a minute per client address and kind).

It hooks ``TCPServer._handle_connection`` (the accepted socket, before Tornado wraps it in TLS
or a stream), which Tornado 6 has; ``tests/functional/test_webui_slow_clients.py`` would
notice if that changed.
"""

from __future__ import annotations

import copy
import errno
import logging
import socket
import time
from collections.abc import Awaitable
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.iostream

log = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16  # the content type of a TLS handshake record: a ClientHello starts with it
UPPERCASE = range(ord("A"), ord("Z") + 1)  # an HTTP request starts with its method
LINGER = 2.0  # after a refusal, how long the client may take to read it and close
LOG_EVERY = 60.0  # one warning per address and kind per minute at most
SWEEP_MS = 2000  # how often closed connections are forgotten


class _Slot:
    """One accepted connection of a client address: its socket until Tornado wraps it in a
    stream, the stream afterwards."""

    __slots__ = ("sock", "stream")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.stream: tornado.iostream.IOStream | None = None

    def closed(self) -> bool:
        if self.stream is not None:
            return self.stream.closed()
        # TLS wrapping detaches the socket (fileno -1) before the stream takes over
        return self.sock.fileno() == -1


class _Throttle:
    """Say a thing about an address at most once every ``LOG_EVERY`` seconds."""

    def __init__(self):
        self.last: dict[tuple[str, str], float] = {}

    def __call__(self, kind: str, host: str) -> bool:
        now = time.monotonic()
        if len(self.last) > 10000:
            self.last = {k: t for k, t in self.last.items() if now - t < LOG_EVERY}
        if now - self.last.get((kind, host), -LOG_EVERY) < LOG_EVERY:
            return False
        self.last[(kind, host)] = now
        return True


def _answer(status: str, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _host(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """``HTTPServer(app, header_timeout=10, body_timeout=30, max_connections_per_address=64,
    ssl_options=...)``; the other keywords are ``HTTPServer``'s."""

    def initialize(
        self,
        request_callback,
        *,
        header_timeout: float = 10,
        body_timeout: float = 30,
        max_connections_per_address: int = 64,
        ssl_options=None,
        **kwargs,
    ) -> None:
        super().initialize(
            request_callback,
            ssl_options=ssl_options,
            idle_connection_timeout=header_timeout,
            body_timeout=None,  # Tornado's is for the whole body: ours counts pauses
            **kwargs,
        )
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)
        self.max_per_address = int(max_connections_per_address)
        self.tls = ssl_options is not None
        self._open: dict[str, list[_Slot]] = {}
        self._handing: _Slot | None = None
        self._sweeper: tornado.ioloop.PeriodicCallback | None = None
        self._say = _Throttle()

    # -- accepting ---------------------------------------------------------------------------

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        host = _host(address)
        slots = [slot for slot in self._open.get(host, ()) if not slot.closed()]
        if len(slots) >= self.max_per_address:
            connection.close()
            if self._say("cap", host):
                log.warning(
                    "fleet ui: %s has %d connections open, the most one address may have "
                    "(fleet:ui:max_connections_per_address); closing its new ones",
                    host,
                    len(slots),
                )
            self._open[host] = slots
            return
        connection.setblocking(False)
        slot = _Slot(connection)
        slots.append(slot)
        self._open[host] = slots
        if self._sweeper is None:
            self._sweeper = tornado.ioloop.PeriodicCallback(self._sweep, SWEEP_MS)
            self._sweeper.start()
        self._sniff(slot, address)

    def _sweep(self) -> None:
        for host in list(self._open):
            slots = [slot for slot in self._open[host] if not slot.closed()]
            if slots:
                self._open[host] = slots
            else:
                del self._open[host]

    def _sniff(self, slot: _Slot, address: Any) -> None:
        """Wait (within the header deadline) for the first byte, peek at it, and hand the
        connection to Tornado, or refuse it when it speaks the other protocol."""
        sock = slot.sock
        io_loop = tornado.ioloop.IOLoop.current()
        deadline = io_loop.time() + self.header_timeout
        fd = sock.fileno()

        def on_timeout():
            _unwatch_and_close(io_loop, sock, fd)

        def on_readable(_fd, _events):
            try:
                head = sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return  # a spurious wake-up: keep waiting
            except OSError:
                head = b""
            io_loop.remove_handler(fd)
            io_loop.remove_timeout(timer)
            if not head:
                sock.close()
                return
            if self.tls and head[0] in UPPERCASE:
                self._refuse(
                    slot,
                    address,
                    "plain HTTP on the HTTPS port",
                    "This port speaks HTTPS, not plain HTTP: use https://{where}/\n",
                )
            elif not self.tls and head[0] == TLS_HANDSHAKE:
                self._refuse(
                    slot,
                    address,
                    "a TLS handshake on the plain-HTTP port",
                    "This port speaks plain HTTP, not HTTPS/TLS: use http://{where}/ (the "
                    "fleet UI serves HTTPS only when fleet:ui:tls_cert and tls_key are set).\n",
                )
            else:
                try:
                    self._serve(slot, address, deadline - io_loop.time())
                except Exception:  # one connection, not the server
                    log.exception("fleet ui: could not serve a connection from %s", address)
                    if slot.stream is not None:
                        slot.stream.close()
                    elif sock.fileno() != -1:
                        sock.close()

        timer = io_loop.call_at(deadline, on_timeout)
        io_loop.add_handler(fd, on_readable, io_loop.READ)

    def _serve(self, slot: _Slot, address: Any, remaining: float) -> None:
        # the first request's headers are due by the deadline counted from the accept
        params = self.conn_params
        self.conn_params = copy.copy(params)
        self.conn_params.header_timeout = max(remaining, 0.001)
        self._handing = slot
        try:
            super()._handle_connection(slot.sock, address)
        finally:
            self.conn_params = params
            self._handing = None

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        if self._handing is not None:
            self._handing.stream = stream
        super().handle_stream(stream, address)

    def _refuse(self, slot: _Slot, address: Any, what: str, text: str) -> None:
        """Answer in clear text, let the client read it, and close."""
        sock = slot.sock
        host = _host(address)
        try:
            name = sock.getsockname()
            where = f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}"
        except OSError:
            where = "this-host"
        if self._say(what, host):
            log.warning("fleet ui: %s from %s; answered 400 and closed", what, host)
        try:
            sock.recv(65536)  # what it sent: closing on unread data would reset the connection
        except OSError:
            pass
        try:
            sock.send(_answer("400 Bad Request", text.format(where=where)))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._linger(sock)

    def _linger(self, sock: socket.socket) -> None:
        """Drain what else the client sends until it closes (at most ``LINGER`` seconds)."""
        io_loop = tornado.ioloop.IOLoop.current()
        fd = sock.fileno()

        def finish():
            io_loop.remove_timeout(timer)
            _unwatch_and_close(io_loop, sock, fd)

        def on_readable(_fd, _events):
            try:
                if sock.recv(65536):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                    log.debug("fleet ui: closing a refused connection: %s", exc)
            finish()

        timer = io_loop.call_later(LINGER, finish)
        io_loop.add_handler(fd, on_readable, io_loop.READ)

    # -- requests ----------------------------------------------------------------------------

    def start_request(self, server_conn, request_conn):
        delegate = super().start_request(server_conn, request_conn)
        return _BodyWatch(delegate, request_conn, self.body_timeout, self._say)

    async def close_all_connections(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
        await super().close_all_connections()
        # connections not yet handed to Tornado, refused ones and websockets
        for slots in self._open.values():
            for slot in slots:
                if slot.closed():
                    continue
                if slot.stream is not None:
                    slot.stream.close()
                else:
                    tornado.ioloop.IOLoop.current().remove_handler(slot.sock.fileno())
                    slot.sock.close()
        self._open.clear()


class _BodyWatch(tornado.httputil.HTTPMessageDelegate):
    """Closes the connection when a request body makes no progress for ``timeout`` seconds."""

    def __init__(self, delegate, request_conn, timeout: float, say: _Throttle):
        self.delegate = delegate
        self.request_conn = request_conn
        self.timeout = timeout
        self.say = say
        self.last = 0.0
        self.timer = None

    def headers_received(self, start_line, headers) -> Awaitable[None] | None:
        if headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in headers:
            self.last = time.monotonic()
            self._arm(self.timeout)
        return self.delegate.headers_received(start_line, headers)

    def _arm(self, delay: float) -> None:
        io_loop = tornado.ioloop.IOLoop.current()
        self.timer = io_loop.call_later(delay, self._check)

    def _check(self) -> None:
        self.timer = None
        idle = time.monotonic() - self.last
        if idle < self.timeout:
            self._arm(self.timeout - idle)
            return
        stream = getattr(self.request_conn, "stream", None)
        if stream is None or stream.closed():
            return
        context = getattr(self.request_conn, "context", None)
        host = str(getattr(context, "remote_ip", "?"))
        if self.say("body", host):
            log.warning(
                "fleet ui: %s sent no part of a request body for %g s "
                "(fleet:ui:body_timeout); closing",
                host,
                self.timeout,
            )
        stream.close()

    def _disarm(self) -> None:
        if self.timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self.timer)
            self.timer = None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        self.last = time.monotonic()
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self._disarm()
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self._disarm()
        self.delegate.on_connection_close()


def _unwatch_and_close(io_loop, sock: socket.socket, fd: int) -> None:
    """Stop watching ``fd`` and close ``sock``, unless it is closed already (a server stop):
    then its fd may be another socket's now, and is left alone."""
    if sock.fileno() == -1:
        return
    io_loop.remove_handler(fd)
    sock.close()
