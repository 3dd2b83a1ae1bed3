"""A small synchronous websocket client (RFC 6455) over an already checked TLS socket.

The kvmd client opens its socket with :func:`saltext_fleet.kvm.tls.open_tls` (certificate or
pin checked before anything is written) and hands it here for the upgrade, so the websocket
follows the same TLS rule as every HTTP request without a third-party library. It speaks what
kvmd needs: text and binary messages, fragmented messages, ping/pong and the close handshake;
no extensions (kvmd's aiohttp server negotiates none unless asked).

Reads keep their bytes in an internal buffer, so a read that times out in the middle of a frame
loses nothing: the next read carries on where it stopped.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import Mapping

from saltext_fleet.kvm import envelope
from saltext_fleet.kvm.errors import KvmProtocolError, KvmWsClosedError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024  # kvmd's state events are a few KiB; refuse anything absurd


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode("ascii")


class WebSocket:
    """A client websocket on a connected socket. Not thread-safe: one reader, one writer."""

    def __init__(self, sock: socket.socket, host: str, buffered: bytes = b"") -> None:
        self.sock = sock
        self.host = host
        self._buf = bytearray(buffered)
        self._fragments: list[bytes] = []
        self._fragment_op: int | None = None
        self._deadline: float | None = None
        # Reads wait as long as their caller allows; writes (frames, pongs) get this.
        self.io_timeout = sock.gettimeout()
        self.closed = False

    # ----- opening -----------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        sock: socket.socket,
        host: str,
        netloc: str,
        path: str,
        headers: Mapping[str, str],
    ) -> WebSocket:
        """Send the upgrade request for ``path`` and check the answer.

        ``host`` names the device in errors, ``netloc`` goes into the ``Host`` header. A
        non-101 answer raises the :class:`~saltext_fleet.kvm.errors.KvmHttpError` kvmd's body
        describes (401/403 before the upgrade); a broken handshake raises
        :class:`~saltext_fleet.kvm.errors.KvmProtocolError`.
        """
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise KvmProtocolError(host, "connection closed during the websocket handshake")
            buf += chunk
            if len(buf) > 65536:
                raise KvmProtocolError(host, "websocket handshake answer too long")
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise KvmProtocolError(host, f"websocket: not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        got: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            got[name.strip().lower()] = value.strip()
        if status != 101:
            body = cls._read_body(sock, got, rest)
            envelope.raise_for_status(host, f"GET {path.split('?')[0]}", status, body)
            raise KvmProtocolError(host, f"websocket upgrade answered HTTP {status}, not 101")
        if got.get("upgrade", "").lower() != "websocket":
            raise KvmProtocolError(host, "websocket answer 101 without 'Upgrade: websocket'")
        if got.get("sec-websocket-accept") != accept_key(key):
            raise KvmProtocolError(host, "wrong Sec-WebSocket-Accept in the handshake answer")
        return cls(sock, host, rest)

    @staticmethod
    def _read_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
        length = headers.get("content-length", "")
        if not length.isdigit():
            return rest
        body = bytearray(rest)
        wanted = min(int(length), 65536)
        while len(body) < wanted:
            chunk = sock.recv(wanted - len(body))
            if not chunk:
                break
            body += chunk
        return bytes(body)

    # ----- sending -----------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack(">H", length)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", length)
        mask = os.urandom(4)
        header += mask
        # Client frames are masked (RFC 6455 5.3); XOR through an int keeps this fast.
        key = int.from_bytes((mask * (length // 4 + 1))[:length], "big") if length else 0
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
        self.sock.settimeout(self.io_timeout)
        self.sock.sendall(bytes(header) + masked)

    def send_text(self, text: str) -> None:
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self._send_frame(OP_BINARY, data)

    def ping(self, data: bytes = b"") -> None:
        self._send_frame(OP_PING, data)

    # ----- receiving ---------------------------------------------------------------------

    def _fill(self, size: int) -> None:
        while len(self._buf) < size:
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("websocket: deadline passed")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(self.io_timeout)
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                raise KvmWsClosedError(self.host, None, "connection ended")
            self._buf += chunk

    def _read_frame(self) -> tuple[bool, int, bytes]:
        self._fill(2)
        b0, b1 = self._buf[0], self._buf[1]
        length = b1 & 0x7F
        offset = 2
        if length == 126:
            self._fill(4)
            length = struct.unpack(">H", self._buf[2:4])[0]
            offset = 4
        elif length == 127:
            self._fill(10)
            length = struct.unpack(">Q", self._buf[2:10])[0]
            offset = 10
        if length > MAX_MESSAGE:
            raise KvmProtocolError(self.host, f"websocket frame of {length} bytes refused")
        masked = bool(b1 & 0x80)
        if masked:
            offset += 4
        self._fill(offset + length)
        payload = bytes(self._buf[offset : offset + length])
        if masked:  # servers must not mask, but unmasking is cheap and harmless
            mask = self._buf[offset - 4 : offset]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        del self._buf[: offset + length]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next data message as ``(OP_TEXT or OP_BINARY, payload)``.

        Answers pings, skips pongs, raises :class:`~saltext_fleet.kvm.errors.KvmWsClosedError`
        on a close frame (after answering it) or a dropped connection, and ``TimeoutError``
        when ``timeout`` seconds pass without a data message (the caller names it): control
        frames (a server's heartbeat pings) do not extend the wait. Without ``timeout`` the
        socket's own timeout applies to each read.
        """
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._recv_message()
        finally:
            self._deadline = None

    def _recv_message(self) -> tuple[int, bytes]:
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                reason = payload[2:].decode("utf-8", "replace")
                if not self.closed:
                    try:
                        self._send_frame(OP_CLOSE, payload[:2])
                    except OSError:
                        pass
                self.closed = True
                raise KvmWsClosedError(self.host, code, reason)
            if opcode in (OP_TEXT, OP_BINARY):
                if fin:
                    return opcode, payload
                self._fragment_op, self._fragments = opcode, [payload]
                continue
            if opcode == OP_CONT and self._fragment_op is not None:
                self._fragments.append(payload)
                if sum(map(len, self._fragments)) > MAX_MESSAGE:
                    raise KvmProtocolError(self.host, "fragmented websocket message too long")
                if fin:
                    op, data = self._fragment_op, b"".join(self._fragments)
                    self._fragment_op, self._fragments = None, []
                    return op, data
                continue
            raise KvmProtocolError(self.host, f"unexpected websocket opcode {opcode:#x}")

    def close(self, code: int = 1000) -> None:
        """Send a close frame (once) and close the socket."""
        if not self.closed:
            self.closed = True
            try:
                self._send_frame(OP_CLOSE, struct.pack(">H", code))
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
