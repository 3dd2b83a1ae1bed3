"""The KVM console through the engine: Tornado handlers on the web server's loop.

- ``GET /kvm/<name>/console/stream``: the device's MJPEG video (uStreamer's
  ``/streamer/stream``), re-sent frame by frame under the engine's own boundary
  (:mod:`saltext_fleet.kvm.console`); ends when the browser goes away, the device stops, or the
  user's session ends;
- ``/kvm/<name>/console/ws``: a websocket bridge browser <-> engine <-> kvmd ``/api/ws``. The
  browser sends kvmd's JSON HID events; each is checked (names, ranges, size, rate) and sent
  on, or answered with an error that says what was wrong. The engine tells the browser
  ``{"type": "ready", "input": true|false}`` once the device is connected, the device's power,
  HID and video state as ``{"type": "state", ...}``, and errors as ``{"type": "error" |
  "refused", "error": "..."}``.

Both are authenticated by the UI's session cookie (as ``/ws/live``), refuse other origins
(the websocket), need the ``kvm.watch`` permission (viewer and up), and are watched by the
live hub (:class:`saltext_fleet.webui.live.Hub`): a logout closes them at once, a new role,
password or a disabled user within its check interval (2 s). Typing needs ``kvm.console``
(operator, admin): a viewer's input events are refused and never reach the device. Each
user has at most :data:`MAX_PER_USER` streams, as many websockets and as many WebRTC peers
open, and the engine :data:`MAX_TOTAL` of each in all; every console session (each stream,
websocket, peer) is audited when it starts and when it ends (``kvm.console.start`` /
``kvm.console.end``: who, the device, ``via`` (``mjpeg``, ``ws`` or ``webrtc``), the role,
whether input was allowed, start, end, and what was forwarded or refused).

The WebRTC peer's offer handler (:mod:`saltext_fleet.webui.kvm_webrtc`) uses the same
:func:`authorize`, :class:`Consoles` (limits), :class:`AuditedSession` and live hub; the page
falls back to this MJPEG stream without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import tornado.iostream
import tornado.web
import tornado.websocket

from saltext_fleet.core import webauth
from saltext_fleet.core.errors import FleetError
from saltext_fleet.kvm import console as kvm_console
from saltext_fleet.kvm.aio import KvmAio
from saltext_fleet.kvm.errors import KvmError
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.webui.auth import cookie_user
from saltext_fleet.webui.base import WebContext
from saltext_fleet.webui.live import SESSION_ENDED, SocketSession

log = logging.getLogger(__name__)

#: Console sessions of each kind (MJPEG streams, websockets, WebRTC peers) one user may have
#: open at once, and the engine in all (a WebRTC peer decodes and encodes video on the engine).
MAX_PER_USER = 4
MAX_TOTAL = 16
#: The kinds of console session, as the limit's refusal names them.
KINDS = {"stream": "console streams", "ws": "console websockets", "webrtc": "WebRTC consoles"}
WATCH = "kvm.watch"
TYPE = "kvm.console"
#: The close code when the device failed or went away (1011: the server's error).
DEVICE_GONE = 1011
#: A browser that takes no video frame for this long loses its stream.
STALL_SECONDS = 30.0


def _retrieved(future: asyncio.Future) -> None:
    """Mark a flush's failure (the browser went away) as seen: the stream loop notices it."""
    if not future.cancelled():
        future.exception()


class Refused(FleetError):
    """Why a console request is refused: HTTP ``status`` and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Consoles:
    """The console sessions open in this engine: counts per user and kind (``stream``, ``ws``,
    ``webrtc``) against the limits, and the open WebRTC peers (closed when the server stops;
    streams and websockets are connections the server closes itself)."""

    def __init__(
        self,
        ctx: WebContext,
        flask_app,
        max_per_user: int = MAX_PER_USER,
        max_total: int = MAX_TOTAL,
    ):
        self.ctx = ctx
        self.flask_app = flask_app
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.peers: set = set()
        #: the websockets' endings still running (keys released, kvmd closed, audit row)
        self.ending: set[asyncio.Future] = set()
        self._open: Counter = Counter()
        self._lock = threading.Lock()

    def acquire(self, uid: int, kind: str) -> None:
        """Take a place for a session of user ``uid``; :class:`Refused` (429) when full."""
        with self._lock:
            if self._open[uid, kind] >= self.max_per_user:
                raise Refused(429, f"at most {self.max_per_user} {KINDS[kind]} per user")
            if sum(n for (_u, k), n in self._open.items() if k == kind) >= self.max_total:
                raise Refused(
                    429, f"the engine has {self.max_total} {KINDS[kind]} open: try again later"
                )
            self._open[uid, kind] += 1

    def release(self, uid: int, kind: str) -> None:
        with self._lock:
            self._open[uid, kind] -= 1
            if self._open[uid, kind] <= 0:
                del self._open[uid, kind]

    def open_count(self, uid: int | None = None) -> int:
        with self._lock:
            return sum(n for (u, _c), n in self._open.items() if uid is None or u == uid)

    async def close_peers(self, reason: str = "the engine stopped") -> None:
        """Close the open WebRTC peers (the server stops)."""
        for peer in list(self.peers):
            await peer.close(reason)

    def track_ending(self, future: asyncio.Future) -> None:
        self.ending.add(future)
        future.add_done_callback(self.ending.discard)

    async def wait_ended(self, timeout: float = 5.0) -> None:
        """Let the websockets the server just closed finish ending (the server stops): their
        held keys go up, kvmd's websocket is closed with a close frame, the audit row ends."""
        if self.ending:
            await asyncio.wait(list(self.ending), timeout=timeout)


async def authorize(handler, consoles: Consoles, name: str) -> tuple[dict, Any]:
    """``(user, KvmOptions)`` for a console request of ``handler`` on device ``name``, or
    :class:`Refused` (401 without a session, 403 without ``kvm.watch``, 400 for a name no
    device may have, 404 for no such device). The store is read on the executor, never on the
    loop. Sets ``handler.user`` (with ``handler.flask_app``, what the live hub reads to watch
    the session)."""
    ctx = consoles.ctx
    cookie = handler.get_cookie(consoles.flask_app.config["SESSION_COOKIE_NAME"])
    loop = asyncio.get_running_loop()
    user = await loop.run_in_executor(None, cookie_user, consoles.flask_app, ctx.engine, cookie)
    if user is None:
        raise Refused(401, "log in first")
    handler.user = user
    found = SocketSession.of(handler)
    if found is None or found.sid in ctx.ended_sessions:
        raise Refused(401, "session ended: log in again")  # a cookie kept after its logout
    if not webauth.allowed(user["role"], WATCH):
        raise Refused(403, f"your role ({user['role']}) may not {WATCH}")
    try:
        name = store_kvm.check_name(name)
    except store_kvm.KvmStoreError as exc:
        raise Refused(400, str(exc)) from None

    def lookup():
        with ctx.engine.connect() as conn:
            return store_kvm.device_options(conn, ctx.vault, [name])[name]

    try:
        options = await loop.run_in_executor(None, lookup)
    except store_kvm.KvmStoreError:
        raise Refused(404, f"no KVM device named {name[:80]!r}") from None
    return user, options


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class AuditedSession:
    """One console session's audit rows: ``kvm.console.start`` now, ``kvm.console.end`` at
    :meth:`end` (once), both written on the executor."""

    def __init__(self, ctx: WebContext, user: dict, device: str, via: str, input_allowed: bool):
        self.ctx = ctx
        self.actor = f"ui:{user['username']}"
        self.device = device
        self.details = {
            "session": secrets.token_hex(8),
            "via": via,
            "role": user["role"],
            "input": input_allowed,
        }
        self.started = _now()
        self.ended: dt.datetime | None = None

    async def _write(self, action: str, details: dict) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                None, store_audit.record, self.ctx.engine, self.actor, action, self.device, details
            )
        except Exception:  # the store may be away; the session is not refused for it
            log.warning("fleet ui: could not audit %s of %s", action, self.device, exc_info=True)

    async def start(self) -> None:
        await self._write(
            "kvm.console.start", {**self.details, "started": self.started.isoformat()}
        )

    async def end(self, reason: str, **counts: Any) -> None:
        if self.ended is not None:
            return
        self.ended = _now()
        await self._write(
            "kvm.console.end",
            {
                **self.details,
                "started": self.started.isoformat(),
                "ended": self.ended.isoformat(),
                "seconds": round((self.ended - self.started).total_seconds(), 3),
                "reason": reason,
                **counts,
            },
        )


class ConsoleStream(tornado.web.RequestHandler):
    """``GET /kvm/<name>/console/stream``: the device's video as MJPEG."""

    def initialize(self, consoles: Consoles):
        self.consoles = consoles
        self.ctx = consoles.ctx
        self.flask_app = consoles.flask_app  # for the live hub's session check
        self.user: dict | None = None
        self._pump: asyncio.Future | None = None
        self._reason = "browser went away"
        self._started = False
        self._frames = 0
        self._dropped = 0
        self._closed = False

    async def get(self, name: str):
        try:
            self.user, options = await authorize(self, self.consoles, name)
            self.consoles.acquire(self.user["id"], "stream")
        except Refused as exc:
            self.set_status(exc.status)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(exc.message)
            return
        uid = self.user["id"]
        audit = AuditedSession(self.ctx, self.user, name, "mjpeg", False)
        frames = 0
        try:
            await audit.start()
            if self.ctx.live is not None:
                self.ctx.live.add(self, broadcast=False)
            # the hub may have found the session ended already (closing this at once)
            self._pump = None if self._closed else asyncio.ensure_future(self._stream(options))
            try:
                frames = await self._pump if self._pump is not None else 0
            except asyncio.CancelledError:
                frames = self._frames
            except KvmError as exc:
                frames = self._frames
                self._reason = f"device: {exc.what}"
                log.info("fleet ui: console stream of %s ended: %s", name, exc)
                if not self._started:
                    self.set_status(502)
                    self.set_header("Content-Type", "text/plain; charset=utf-8")
                    self.write(str(exc))
        finally:
            if self.ctx.live is not None:
                self.ctx.live.remove(self)
            self.consoles.release(uid, "stream")
            await audit.end(self._reason, frames=frames, dropped=self._dropped)
        if not self._finished:
            try:
                self.finish()
            except tornado.iostream.StreamClosedError:
                pass

    async def _stream(self, options) -> int:
        """Frames from the device to the browser. The device is read at its own pace; a frame
        that arrives while the browser has not taken the previous one is dropped (live video:
        the newest frame matters, and nothing piles up in buffers), and a browser that takes
        nothing for :data:`STALL_SECONDS` ends the stream."""
        flushing: asyncio.Future | None = None
        since = 0.0
        loop = asyncio.get_running_loop()
        async with KvmAio(options) as kvm:
            async for frame in kvm.frames():
                if not self._started:
                    self.set_header("Content-Type", kvm_console.CONTENT_TYPE)
                    self.set_header("Cache-Control", "no-store")
                    self.set_header("X-Content-Type-Options", "nosniff")
                    self.write(kvm_console.stream_start())
                    self._started = True
                if flushing is not None and not flushing.done():
                    self._dropped += 1
                    if loop.time() - since > STALL_SECONDS:
                        self._reason = f"browser took no frame for {STALL_SECONDS:g} s"
                        return self._frames
                    continue
                if flushing is not None and flushing.exception() is not None:
                    return self._frames  # the browser went away
                self.write(kvm_console.mjpeg_part(frame))
                flushing, since = self.flush(), loop.time()
                flushing.add_done_callback(_retrieved)
                self._frames += 1
        self._reason = "device ended the stream"
        return self._frames

    def on_connection_close(self):
        if self._pump is not None:
            self._pump.cancel()

    def close(self, code: int = SESSION_ENDED, reason: str = "") -> None:
        """The live hub ends this stream (the user's session ended)."""
        self._closed = True
        self._reason = reason or "session ended"
        if self._pump is not None:
            self._pump.cancel()
        if self.request.connection is not None:
            try:
                self.request.connection.close()
            except Exception:  # noqa: BLE001 - closed already
                pass


class ConsoleSocket(tornado.websocket.WebSocketHandler):
    """``/kvm/<name>/console/ws``: HID events to the device, its state to the browser."""

    def initialize(self, consoles: Consoles):
        self.consoles = consoles
        self.ctx = consoles.ctx
        self.flask_app = consoles.flask_app
        self.user: dict | None = None
        self.device = ""
        self.options = None
        self.input: kvm_console.ConsoleInput | None = None
        self.audit: AuditedSession | None = None
        self._kvmd: aiohttp.ClientWebSocketResponse | None = None
        self._bridge: asyncio.Future | None = None
        self._acquired = False
        self._reason = "browser closed the console"

    def check_origin(self, origin: str) -> bool:
        # same host only: a page elsewhere must not ride on the session cookie
        return urlsplit(origin).netloc == self.request.host

    async def get(self, name: str, *args, **kwargs):
        try:
            self.user, self.options = await authorize(self, self.consoles, name)
            self.consoles.acquire(self.user["id"], "ws")
        except Refused as exc:
            self.set_status(exc.status)
            self.finish(exc.message)
            return
        self._acquired = True
        self.device = name
        try:
            await super().get(name, *args, **kwargs)
        finally:
            if self.ws_connection is None:  # the upgrade did not happen
                self._release()

    def _release(self) -> None:
        if self._acquired:
            self._acquired = False
            self.consoles.release(self.user["id"], "ws")

    async def open(self, name: str):
        allowed = webauth.allowed(self.user["role"], TYPE)
        self.input = kvm_console.ConsoleInput(name, allowed, self.user["role"])
        self.audit = AuditedSession(self.ctx, self.user, name, "ws", allowed)
        if self.ctx.live is not None:
            self.ctx.live.add(self, broadcast=False)
        await self.audit.start()
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        self._bridge = asyncio.ensure_future(self._run_bridge())

    def _send(self, message: dict) -> None:
        try:
            self.write_message(json.dumps(message))
        except tornado.websocket.WebSocketClosedError:
            pass

    async def _run_bridge(self) -> None:
        try:
            async with KvmAio(self.options) as kvm:
                self._kvmd = await kvm.events()
                self._send(
                    {"type": "ready", "input": self.input.input_allowed, "device": self.device}
                )
                async for msg in self._kvmd:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue  # binary pongs and the like
                    try:
                        doc = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(doc, dict):
                        state = kvm_console.summarize_state(doc.get("event_type"), doc.get("event"))
                        if state is not None:
                            self._send(state)
            self._end(DEVICE_GONE, "the device closed the console")
        except asyncio.CancelledError:
            raise
        except KvmError as exc:
            self._send({"type": "error", "error": str(exc)})
            self._end(DEVICE_GONE, f"device: {exc.what}"[:120])
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            self._send(
                {"type": "error", "error": f"kvm {self.options.host}: connection lost: {exc}"}
            )
            self._end(DEVICE_GONE, "device connection lost")
        finally:
            self._kvmd = None

    def _end(self, code: int, reason: str) -> None:
        self._reason = reason
        self.close(code, reason[:120])

    async def on_message(self, message):
        verdict = self.input.handle(message)
        if verdict.kvmd is not None:
            kvmd = self._kvmd
            if kvmd is None or kvmd.closed:
                self.input.not_delivered()
                self._send({"type": "error", "error": "the device is not connected yet"})
                return
            try:
                await kvmd.send_str(verdict.kvmd)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                self.input.not_delivered()
                self._send(
                    {
                        "type": "error",
                        "error": f"not delivered to the device: kvm {self.options.host}: {exc}",
                    }
                )
        if verdict.reply is not None:
            self._send(verdict.reply)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if code == SESSION_ENDED:
            self._reason = reason or "session ended"
        super().close(code, reason)

    def on_close(self):
        if self.ctx.live is not None:
            self.ctx.live.remove(self)
        self._release()
        self.consoles.track_ending(asyncio.ensure_future(self._finish()))

    async def _finish(self) -> None:
        kvmd = self._kvmd
        if kvmd is not None and not kvmd.closed and self.input is not None:
            # keys and buttons still held go up: the host must not see a key stuck down
            for text in self.input.release_all():
                try:
                    await kvmd.send_str(text)
                except Exception:  # noqa: BLE001 - the device went too
                    break
        if self._bridge is not None:
            self._bridge.cancel()  # its KvmAio closes kvmd's websocket on the way out
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bridge
        if self.audit is not None and self.input is not None:
            await self.audit.end(
                self._reason,
                forwarded=self.input.forwarded,
                refused=self.input.refused,
                malformed=self.input.malformed,
                throttled=self.input.throttled,
            )


def routes(consoles: Consoles) -> list:
    """The console's Tornado routes (before the Flask fallback)."""
    name = r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,254})"
    return [
        (rf"/kvm/{name}/console/stream", ConsoleStream, {"consoles": consoles}),
        (rf"/kvm/{name}/console/ws", ConsoleSocket, {"consoles": consoles}),
    ]
