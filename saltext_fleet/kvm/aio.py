"""kvmd from the engine's asyncio loop (aiohttp): the console's MJPEG stream and ``/api/ws``.

The synchronous :class:`~saltext_fleet.kvm.client.KvmClient` serves the poller and the Salt
modules; the console lives on the web server's loop (Tornado and aiortc share it), so it opens
its connections with aiohttp under the same rules. :class:`KvmAio` is the one connection both
console paths use: the MJPEG stream and the websocket bridge
(:mod:`saltext_fleet.webui.console`) and the WebRTC peer (:mod:`saltext_fleet.kvm.webrtc`):

* TLS (:func:`ssl_for`): verified by default (the system's CAs or the device's ``verify`` CA
  bundle), or pinned: ``aiohttp.Fingerprint`` compares the SHA-256 of the device's certificate
  right after the handshake, in the connector, before the request (and so any credential) is
  written; a mismatch raises :class:`~saltext_fleet.kvm.errors.KvmFingerprintError`.
* credentials (:meth:`KvmAio.auth_headers`): ``X-KVMD-User``/``X-KVMD-Passwd`` (``auth:
  headers``) or the ``auth_token`` cookie of ``POST /api/auth/login`` (``auth: session``), the
  TOTP code appended to the password when the device has 2FA on;
* timeouts: ``connect_timeout`` for TCP and TLS, ``timeout`` for each read (a stream that
  stops sending frames for that long ends);
* the stream is split into frames by :class:`~saltext_fleet.kvm.console.MjpegSplitter`; a
  redirect is not followed (it would carry the credentials elsewhere);
* ``/api/ws`` either handed to the caller (:meth:`KvmAio.events`, the bridge reads the device's
  state from it) or kept for input only (:meth:`KvmAio.send`: opened on the first event, its
  messages read and dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pyotp

from saltext_fleet.kvm import envelope
from saltext_fleet.kvm.client import AUTH_COOKIE
from saltext_fleet.kvm.console import MjpegSplitter, stream_boundary
from saltext_fleet.kvm.errors import (
    KvmConnectionError,
    KvmError,
    KvmFingerprintError,
    KvmTimeoutError,
    KvmTlsError,
    http_error,
)
from saltext_fleet.kvm.options import KvmOptions, format_fingerprint
from saltext_fleet.kvm.tls import make_context

log = logging.getLogger(__name__)

#: Stream reads: at most this many bytes at a time.
READ_CHUNK = 256 * 1024


def ssl_for(options: KvmOptions) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
    """aiohttp's ``ssl=`` for the device: a pin, a verifying context, or ``False``
    (``verify: false`` without a pin: logged as a warning on each connection)."""
    if options.fingerprint:
        return aiohttp.Fingerprint(bytes.fromhex(options.fingerprint))
    if options.verify is False:
        log.warning(
            "kvm %s: TLS certificate not verified (verify: false, no fingerprint)", options.host
        )
        return False
    return make_context(options)


class KvmAio:
    """The console's connections to one device (one aiohttp session, made on the running loop
    at first use). ``async with``, or :meth:`close` when done."""

    def __init__(self, options: KvmOptions) -> None:
        self.options = options
        self.host = options.host
        self.base = f"https://{options.netloc}"
        self._totp = pyotp.TOTP(options.totp_secret) if options.totp_secret else None
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None  # :meth:`send`'s
        self._ws_reader: asyncio.Task | None = None
        #: every /api/ws this object opened (:meth:`events`): :meth:`close` closes them with a
        #: close frame, so kvmd ends its side now rather than when a TLS shutdown completes
        self._opened: list[aiohttp.ClientWebSocketResponse] = []
        self._ws_lock = asyncio.Lock()
        self.closed = False

    async def __aenter__(self) -> KvmAio:
        self.session()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (made at first use; :class:`KvmConnectionError` once closed)."""
        if self.closed:
            raise KvmConnectionError(self.host, "console closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=ssl_for(self.options), limit=4)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.options.connect_timeout,
                    sock_read=self.options.timeout,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # the token goes in a header of our own
            )
        return self._session

    async def close(self) -> None:
        """Close every websocket this object opened (:meth:`send`'s and :meth:`events`') with a
        close frame, then the session (idempotent)."""
        self.closed = True
        async with self._ws_lock:
            # the reader first: a close() that races a pending receive() waits for that
            # receive to see the device's answer to the close (up to aiohttp's close timeout)
            if self._ws_reader is not None:
                self._ws_reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._ws_reader
            for ws in self._opened:
                if not ws.closed:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(), self.options.timeout)
            self._opened.clear()
            if self._session is not None:
                await self._session.close()

    def _password(self) -> str:
        if self._totp is None:
            return self.options.password
        return self.options.password + self._totp.now()

    def _error(self, request: str, exc: BaseException) -> KvmError:
        """A transport failure as the kvm error that names the device and what failed."""
        if isinstance(exc, aiohttp.ServerFingerprintMismatch):
            return KvmFingerprintError(
                self.host, format_fingerprint(exc.expected.hex()), format_fingerprint(exc.got.hex())
            )
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return KvmTlsError(
                self.host,
                f"{request}: certificate verification failed ({exc.certificate_error}); a "
                "PiKVM's certificate is self-signed: pin it with 'fingerprint' or give 'verify' "
                "its CA bundle",
            )
        if isinstance(exc, aiohttp.ClientSSLError):
            return KvmTlsError(self.host, f"{request}: TLS handshake failed: {exc}")
        if isinstance(exc, aiohttp.WSServerHandshakeError):
            # kvmd checks credentials before the upgrade: 401/403 are its answer
            return http_error(self.host, request, exc.status)
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return KvmTimeoutError(self.host, f"{request}: no answer within the timeout")
        return KvmConnectionError(self.host, f"{request}: {exc}")

    async def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a request (logs in first in ``auth: session``)."""
        if self.options.auth == "headers":
            return {"X-KVMD-User": self.options.user, "X-KVMD-Passwd": self._password()}
        if self._token is None:
            await self.login()
        return {"Cookie": f"{AUTH_COOKIE}={self._token}"} if self._token else {}

    async def login(self) -> None:
        """``POST /api/auth/login``: a kvmd session for this console."""
        request = "POST /api/auth/login"
        form = {"user": self.options.user, "passwd": self._password(), "expire": "0"}
        try:
            async with self.session().post(self.base + "/api/auth/login", data=form) as resp:
                body = await resp.read()
                envelope.decode(self.host, request, resp.status, body)
                morsel = resp.cookies.get(AUTH_COOKIE)
        except KvmError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(request, exc) from exc
        # kvmd with auth disabled answers without a cookie: requests then need none
        self._token = morsel.value if morsel is not None and morsel.value else ""

    async def frames(self) -> AsyncIterator[bytes]:
        """JPEG frames of ``/streamer/stream`` until the device ends it (or the caller stops
        iterating); errors name the device. May be called again after an error."""
        request = "GET /streamer/stream"
        headers = await self.auth_headers()
        try:
            async with self.session().get(
                self.base + "/streamer/stream", headers=headers, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    body = await resp.content.read(65536)
                    envelope.raise_for_status(self.host, request, resp.status, body)
                    raise KvmConnectionError(self.host, f"{request}: HTTP {resp.status}")
                splitter = MjpegSplitter(
                    self.host, stream_boundary(self.host, resp.headers.get("Content-Type"))
                )
                while True:
                    data = await resp.content.readany()
                    if not data:
                        return
                    for frame in splitter.feed(data):
                        yield frame
        except KvmError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(request, exc) from exc

    async def events(self) -> aiohttp.ClientWebSocketResponse:
        """``/api/ws`` opened (its first message, ``loop``, not yet read): the caller reads it."""
        request = "GET /api/ws"
        headers = await self.auth_headers()
        try:
            ws = await self.session().ws_connect(
                self.base + "/api/ws",
                headers=headers,
                heartbeat=max(5.0, self.options.timeout),
                max_msg_size=4 * 1024 * 1024,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(request, exc) from exc
        self._opened = [w for w in self._opened if not w.closed]
        self._opened.append(ws)
        return ws

    async def send(self, text: str) -> None:
        """Send one checked kvmd event (JSON text, e.g. :meth:`HidEvent.kvmd_text
        <saltext_fleet.kvm.console.HidEvent.kvmd_text>`) on an ``/api/ws`` of this object's own,
        opened on the first event; what kvmd says on it is read and dropped (reading also
        answers its pings). Raises :class:`KvmError`."""
        async with self._ws_lock:
            if self.closed:
                raise KvmConnectionError(self.host, "console closed")
            if self._ws is None or self._ws.closed:
                self._ws = await self.events()
                self._ws_reader = asyncio.get_running_loop().create_task(self._drain(self._ws))
            try:
                await self._ws.send_str(text)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                raise KvmConnectionError(self.host, f"GET /api/ws: {exc}") from exc

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _msg in ws:
            pass

    @property
    def ws_open(self) -> bool:
        """Whether :meth:`send`'s websocket is open."""
        return self._ws is not None and not self._ws.closed
