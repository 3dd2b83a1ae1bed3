"""``POST /kvm/<name>/console/webrtc``: the browser's SDP offer in, the engine's answer out.

A native Tornado handler on the engine's loop (aiortc runs there, not in Flask's threads),
under the same rules as the console's stream and websocket (:mod:`saltext_fleet.webui.console`):

- same origin only (the ``Origin`` header must name this host) and a JSON body, so a page
  elsewhere cannot ride on the session cookie;
- the Flask session cookie authenticates and ``kvm.watch`` is needed to watch
  (:func:`~saltext_fleet.webui.console.authorize`); without ``kvm.console`` the peer is
  read-only (its DataChannel input is refused, as the websocket's is);
- the console's limits (:class:`~saltext_fleet.webui.console.Consoles`: at most
  :data:`~saltext_fleet.webui.console.MAX_PER_USER` WebRTC peers per user and
  :data:`~saltext_fleet.webui.console.MAX_TOTAL` in all; 429 beyond);
- every peer is watched by the live hub through a :class:`PeerWatch` (closed at once on
  logout, within the hub's check interval when the user's role, password or state changes
  or the cookie expires) and closed when the server stops; its start and end are audited
  (:class:`~saltext_fleet.webui.console.AuditedSession`, ``via: webrtc``).

The answer is ``{"sdp", "type": "answer", "input": true|false}``; errors are JSON
``{"error": ...}`` with 400 (bad offer), 401, 403, 404 (no such device), 415, 429 or 502.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlsplit

import tornado.web

from saltext_fleet.core import webauth
from saltext_fleet.kvm.console import ConsoleInput
from saltext_fleet.kvm.errors import KvmArgumentError
from saltext_fleet.kvm.webrtc import ConsolePeer, parse_offer
from saltext_fleet.webui.console import TYPE, AuditedSession, Consoles, Refused, authorize
from saltext_fleet.webui.live import SESSION_ENDED

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 10.0
ROUTE = r"/kvm/([^/]+)/console/webrtc"


class PeerWatch:
    """A peer as the live hub watches a socket: the user and session cookie of the request that
    made it, and ``close(code, reason)`` (the session ended) closing the peer."""

    def __init__(self, handler, peer: ConsolePeer) -> None:
        self.user = handler.user
        self.flask_app = handler.flask_app
        name = handler.flask_app.config["SESSION_COOKIE_NAME"]
        self._cookies = {name: handler.get_cookie(name)}
        self.peer = peer

    def get_cookie(self, name: str) -> str | None:
        return self._cookies.get(name)

    def close(self, code: int = SESSION_ENDED, reason: str = "") -> None:
        asyncio.ensure_future(self.peer.close(reason or "session ended"))


class WebRtcOfferHandler(tornado.web.RequestHandler):
    """Answers one browser's offer for a device's console (see the module docstring)."""

    def initialize(self, consoles: Consoles, ice_servers=None) -> None:
        self.consoles = consoles
        self.ctx = consoles.ctx
        self.flask_app = consoles.flask_app  # for authorize and the live hub's session check
        self.ice_servers = ice_servers or []
        self.user: dict | None = None

    def check_xsrf_cookie(self) -> None:
        pass  # the Origin check and the JSON body stand in for it

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": message}))

    async def post(self, name: str) -> None:
        origin = self.request.headers.get("Origin")
        if not origin or urlsplit(origin).netloc != self.request.host:
            return self._fail(403, "cross-origin request refused")
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._fail(415, "send the offer as application/json")
        try:
            self.user, options = await authorize(self, self.consoles, name)
            offer = parse_offer(self.request.body, name)
            self.consoles.acquire(self.user["id"], "webrtc")
        except Refused as exc:
            if exc.status == 429:
                self.set_header("Retry-After", "10")
            return self._fail(exc.status, exc.message)
        except KvmArgumentError as exc:
            return self._fail(400, str(exc))
        uid, role = self.user["id"], self.user["role"]
        allowed = webauth.allowed(role, TYPE)
        try:
            peer = ConsolePeer(
                name, options, ConsoleInput(name, allowed, role), ice_servers=self.ice_servers
            )
        except Exception:
            self.consoles.release(uid, "webrtc")
            raise
        peer.on_close.append(lambda _peer: self.consoles.release(uid, "webrtc"))
        try:
            answer = await asyncio.wait_for(peer.answer(offer), ANSWER_TIMEOUT)
        except KvmArgumentError as exc:
            await peer.close("bad offer")  # gives its slot back
            return self._fail(400, str(exc))
        except asyncio.TimeoutError:
            await peer.close("no answer in time")
            return self._fail(502, f"kvm {name}: no WebRTC answer within {ANSWER_TIMEOUT:g} s")
        except Exception as exc:  # aiortc failing inside: nothing of the peer may linger
            log.exception("kvm %s: WebRTC answer failed", name)
            await peer.close("answer failed")
            return self._fail(502, f"kvm {name}: WebRTC answer failed: {exc}")
        if peer.closed:
            return self._fail(502, f"kvm {name}: the WebRTC peer closed before answering")
        self._watch(name, peer, allowed)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"sdp": answer.sdp, "type": answer.type, "input": allowed}))

    def _watch(self, name: str, peer: ConsolePeer, allowed: bool) -> None:
        """Audit the peer's start and end, close it with its session and with the server."""
        audit = AuditedSession(self.ctx, self.user, name, "webrtc", allowed)
        watch = PeerWatch(self, peer)
        self.consoles.peers.add(peer)

        started = asyncio.ensure_future(audit.start())

        async def end(p: ConsolePeer) -> None:
            await started  # the end row after the start row, however soon the peer closed
            hid = p.hid
            await audit.end(
                p.reason,
                forwarded=hid.forwarded,
                refused=hid.refused,
                malformed=hid.malformed,
                throttled=hid.throttled,
                frames=p.track.frames_out,
                stream_errors=p.stream_errors,
            )

        def ended(p: ConsolePeer) -> None:
            self.consoles.peers.discard(p)
            if self.ctx.live is not None:
                self.ctx.live.remove(watch)
            asyncio.ensure_future(end(p))

        peer.on_close.append(ended)
        if self.ctx.live is not None:
            # closes the peer at once when the session ended meanwhile
            self.ctx.live.add(watch, broadcast=False)


def routes(consoles: Consoles) -> list[tuple]:
    """The Tornado routes of the WebRTC console (the server adds them before its fallback)."""
    return [(ROUTE, WebRtcOfferHandler, {"consoles": consoles})]
