"""``POST /kvm/<name>/console/webrtc``: the browser's SDP offer in, the engine's answer out.

A native Tornado handler on the engine's loop (aiortc runs there, not in Flask's threads):

- same origin only (the ``Origin`` header must name this host) and a JSON body, so a page
  elsewhere cannot ride on the session cookie;
- the Flask session cookie authenticates, as for ``/ws/live``; watching needs the permission
  ``kvm.watch``, typing ``kvm.console`` (without it the peer is read-only: its DataChannel
  input is refused);
- at most :data:`MAX_PER_USER` peers per user and :data:`MAX_TOTAL` in all (429 beyond);
- every peer is closed when its user's session ends (logout, a new password or role, a
  disabled user, an expired cookie: checked every :data:`CHECK_SECONDS`) and when the server
  stops; its start and end are audited (``kvm.console.start`` / ``kvm.console.end`` with
  ``via: webrtc``).

The answer is ``{"sdp", "type": "answer", "input": true|false}``; errors are JSON
``{"error": ...}`` with 400 (bad offer), 401, 403, 404 (no such device), 429 or 502.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import tornado.web

from saltext_fleet.core import webauth
from saltext_fleet.kvm.errors import KvmArgumentError
from saltext_fleet.kvm.webrtc import ConsolePeer, parse_offer
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import ui_queries
from saltext_fleet.webui.auth import parse_session_id, session_owner

log = logging.getLogger(__name__)

MAX_PER_USER = 2
MAX_TOTAL = 16
CHECK_SECONDS = 2.0
ANSWER_TIMEOUT = 10.0
ROUTE = r"/kvm/([^/]+)/console/webrtc"


class PeerLimitError(Exception):
    """No room for another peer (the message says whose limit)."""


class CookieSession:
    """Whose session a request carries: the user row, the session id and when it expires."""

    __slots__ = ("user", "sid", "expires")

    def __init__(self, user: dict[str, Any], sid: str, expires: float):
        self.user, self.sid, self.expires = user, sid, expires


def cookie_session(flask_app, engine, ended, cookie: str | None) -> CookieSession | None:
    """The live session of a Flask session cookie; None when absent, forged, expired, logged
    out (``ended``) or its user's sessions were ended since."""
    if not cookie:
        return None
    lifetime = flask_app.permanent_session_lifetime.total_seconds()
    serializer = flask_app.session_interface.get_signing_serializer(flask_app)
    try:
        data, signed_at = serializer.loads(cookie, max_age=int(lifetime), return_timestamp=True)
    except Exception:  # noqa: BLE001 - bad signature, expired, garbage
        return None
    sid = data.get("sid")
    if not isinstance(sid, str) or not sid or sid in ended:
        return None
    user = session_owner(engine, *(parse_session_id(data.get("_user_id")) or (None, None)))
    if user is None:
        return None
    return CookieSession(user, sid, signed_at.timestamp() + lifetime)


class PeerRegistry:
    """The open WebRTC peers, their sessions and the limits; lives on the server's loop."""

    def __init__(
        self,
        engine,
        ended,
        max_per_user: int = MAX_PER_USER,
        max_total: int = MAX_TOTAL,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.engine = engine
        self.ended = ended
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.check_seconds = check_seconds
        self.peers: dict[ConsolePeer, CookieSession] = {}
        self._reserved: dict[int, int] = {}  # answers being made, per user id
        self._guard: asyncio.Task | None = None

    def _count(self, uid: int) -> int:
        own = sum(1 for s in self.peers.values() if s.user["id"] == uid)
        return own + self._reserved.get(uid, 0)

    def reserve(self, uid: int) -> None:
        """Hold a place for a peer of user ``uid``; :class:`PeerLimitError` when full."""
        if len(self.peers) + sum(self._reserved.values()) >= self.max_total:
            raise PeerLimitError(f"the console has {self.max_total} WebRTC sessions open")
        if self._count(uid) >= self.max_per_user:
            raise PeerLimitError(f"you have {self.max_per_user} WebRTC console sessions open")
        self._reserved[uid] = self._reserved.get(uid, 0) + 1

    def release(self, uid: int) -> None:
        left = self._reserved.get(uid, 0) - 1
        if left > 0:
            self._reserved[uid] = left
        else:
            self._reserved.pop(uid, None)

    def add(self, peer: ConsolePeer, found: CookieSession) -> None:
        self.peers[peer] = found
        peer.on_close.append(lambda p: self.peers.pop(p, None))
        if self._guard is None or self._guard.done():
            self._guard = asyncio.get_running_loop().create_task(self._run_guard())

    def ending(self, versions: dict[int, int], now: float | None = None) -> list[ConsolePeer]:
        """The peers whose session ended, given ``{user id: session version}`` of the users
        that exist and are enabled."""
        now = time.time() if now is None else now
        return [
            peer
            for peer, found in self.peers.items()
            if versions.get(found.user["id"]) != found.user["session_version"]
            or found.sid in self.ended
            or found.expires <= now
        ]

    async def check_sessions(self) -> int:
        """Close the peers whose session ended; how many."""
        if not self.peers:
            return 0
        uids = sorted({found.user["id"] for found in self.peers.values()})

        def versions():
            with self.engine.connect() as conn:
                return ui_queries.session_versions(conn, uids)

        ending = self.ending(await asyncio.get_running_loop().run_in_executor(None, versions))
        if ending:
            log.info("fleet ui: closing %d WebRTC console(s) whose session ended", len(ending))
        for peer in ending:
            await peer.close()
        return len(ending)

    async def _run_guard(self) -> None:
        while self.peers:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check_sessions()
            except Exception:
                log.warning(
                    "fleet ui: checking the WebRTC consoles' sessions failed", exc_info=True
                )

    async def close_all(self) -> None:
        for peer in list(self.peers):
            await peer.close()
        if self._guard is not None:
            self._guard.cancel()


class WebRtcOfferHandler(tornado.web.RequestHandler):
    """Answers one browser's offer for a device's console (see the module docstring)."""

    def initialize(self, ctx, flask_app, registry: PeerRegistry, ice_servers=None) -> None:
        self.ctx = ctx
        self.flask_app = flask_app
        self.registry = registry
        self.ice_servers = ice_servers or []

    def check_xsrf_cookie(self) -> None:
        pass  # the Origin check and the JSON body stand in for it

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": message}))

    def _audit(self, actor: str, action: str, target: str, details: dict) -> None:
        def record():
            try:
                store_audit.record(self.ctx.engine, actor, action, target, details)
            except Exception:
                log.exception("fleet ui: audit of %s %s failed", action, target)

        asyncio.get_running_loop().run_in_executor(None, record)

    async def post(self, name: str) -> None:
        origin = self.request.headers.get("Origin")
        if not origin or urlsplit(origin).netloc != self.request.host:
            return self._fail(403, "cross-origin request refused")
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._fail(415, "send the offer as application/json")
        loop = asyncio.get_running_loop()
        cookie = self.get_cookie(self.flask_app.config["SESSION_COOKIE_NAME"])
        found = await loop.run_in_executor(
            None, cookie_session, self.flask_app, self.ctx.engine, self.ctx.ended_sessions, cookie
        )
        if found is None:
            return self._fail(401, "log in first")
        role = found.user["role"]
        if not webauth.allowed(role, "kvm.watch"):
            return self._fail(403, f"your role ({role}) may not kvm.watch")
        can_type = webauth.allowed(role, "kvm.console")
        try:
            device = store_kvm.check_name(name)
            offer = parse_offer(self.request.body, device)
        except (store_kvm.KvmStoreError, KvmArgumentError) as exc:
            return self._fail(400, str(exc))

        def options():
            with self.ctx.engine.connect() as conn:
                return store_kvm.device_options(conn, self.ctx.vault, [device])[device]

        try:
            device_options = await loop.run_in_executor(None, options)
        except store_kvm.KvmStoreError as exc:
            return self._fail(404, str(exc))
        uid = found.user["id"]
        try:
            self.registry.reserve(uid)
        except PeerLimitError as exc:
            self.set_header("Retry-After", "10")
            return self._fail(429, str(exc))
        peer = ConsolePeer(
            device, device_options, readonly=not can_type, ice_servers=self.ice_servers
        )
        try:
            answer = await asyncio.wait_for(peer.answer(offer), ANSWER_TIMEOUT)
        except KvmArgumentError as exc:
            return self._fail(400, str(exc))
        except asyncio.TimeoutError:
            await peer.close()
            return self._fail(502, f"kvm {device}: no WebRTC answer within {ANSWER_TIMEOUT:g} s")
        except Exception as exc:  # aiortc failing inside: nothing of the peer may linger
            log.exception("kvm %s: WebRTC answer failed", device)
            await peer.close()
            return self._fail(502, f"kvm {device}: WebRTC answer failed: {exc}")
        finally:
            self.registry.release(uid)
        if peer.closed:
            return self._fail(502, f"kvm {device}: the WebRTC peer closed before answering")
        actor = f"ui:{found.user['username']}"
        started = time.monotonic()
        self.registry.add(peer, found)
        self._audit(actor, "kvm.console.start", device, {"via": "webrtc", "input": can_type})

        def ended(p: ConsolePeer) -> None:
            details = {"via": "webrtc", "seconds": round(time.monotonic() - started, 1)}
            details.update(
                hid_forwarded=p.stats.hid_forwarded,
                hid_refused=p.stats.hid_refused,
                frames=p.stats.frames_out,
            )
            self._audit(actor, "kvm.console.end", device, details)

        peer.on_close.append(ended)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"sdp": answer.sdp, "type": answer.type, "input": can_type}))


def routes(ctx, flask_app, registry: PeerRegistry) -> list[tuple]:
    """The Tornado routes of the WebRTC console (the server adds them before its fallback)."""
    return [(ROUTE, WebRtcOfferHandler, {"ctx": ctx, "flask_app": flask_app, "registry": registry})]
