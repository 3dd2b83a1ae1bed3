"""Live updates for the overview: from the master's event bus to the browsers' websockets.

A thread listens to the master's event bus. An event that concerns nodes (a minion starting,
a return, a presence change, an inventory change, a drift result, a key decision) makes the
hub look at the store for nodes that changed since its last look, at most a few times a
second, and send each open socket one message per changed node::

    {"type": "node", "id": "web1", "status": "online", "drift": 12.5, "last_seen": "...",
     "criticality": "high", "comment": "..."}
    {"type": "counts", "statuses": {"online": 9120, "offline": 880, "unknown": 0},
     "alerts": {"latest": 4711}}

(``alerts.latest``: the newest alert's id; the alerts page offers a reload when it is newer
than the page.)

What a browser shows therefore always comes from the store, whichever event woke the hub,
and a look every ``idle_seconds`` (``fleet:ui:live_poll_seconds``) catches what no event
announced: what another master heard, and what operators changed through another master's
UI (a node's criticality or comment: ``nodes.meta_at``); with ``0`` only this master's
events wake it.

A socket lives only as long as the session that opened it: a logout closes the session's
sockets at once (:meth:`Hub.end_session`), and every ``check_seconds`` (and at once when the
users page changes someone) the hub checks each socket's user against the store, closing
those whose user is gone or disabled or whose session version moved (a new role, password
or second factor, made here or by ``saltext-fleet users``), with code 4401.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from saltext_fleet.core import webauth
from saltext_fleet.store import alert_views, ui_queries

log = logging.getLogger(__name__)

#: Event tags that may change what the overview shows.
INTERESTING = (
    "salt/minion/*/start",
    "salt/presence/*",
    "salt/job/*/ret/*",
    "fleet/inventory/*",
    "fleet/drift/*",
    "fleet/alert/*",
    "fleet/key/*",
    "fleet/node/*",
)
MAX_CHANGES = 500  # per look; more means "reload the page"
#: How often the sessions of open sockets are checked against the store.
CHECK_SECONDS = 2.0
#: The close code of a socket whose session ended (4000-4999 are the application's).
SESSION_ENDED = 4401


def interesting(tag: str) -> bool:
    return any(fnmatch.fnmatchcase(tag, pattern) for pattern in INTERESTING)


class SocketSession:
    """Whose session opened a socket: user id, session version, session id, and when the
    session's cookie expires (``time.time()``)."""

    __slots__ = ("uid", "version", "sid", "expires")

    def __init__(self, uid: int, version: int, sid: str, expires: float):
        self.uid, self.version, self.sid, self.expires = uid, version, sid, expires

    @classmethod
    def of(cls, socket) -> SocketSession | None:
        """The session of a socket the server's handler let in: its ``user`` (the session's
        owner) and its Flask session cookie (for the session id). None when not readable."""
        user = getattr(socket, "user", None)
        flask_app = getattr(socket, "flask_app", None)
        if not user or flask_app is None:
            return None
        try:
            cookie = socket.get_cookie(flask_app.config["SESSION_COOKIE_NAME"])
            lifetime = flask_app.permanent_session_lifetime.total_seconds()
            serializer = flask_app.session_interface.get_signing_serializer(flask_app)
            data, signed_at = serializer.loads(cookie, max_age=int(lifetime), return_timestamp=True)
        except Exception:  # noqa: BLE001 - gone, forged or expired since the handshake
            return None
        sid = data.get("sid")
        if not isinstance(sid, str) or not sid:
            return None
        return cls(user["id"], user["session_version"], sid, signed_at.timestamp() + lifetime)


class Hub:
    """Open sockets and what to tell them. ``send`` callbacks run on the server's loop
    (``schedule`` hands work to it from other threads)."""

    def __init__(
        self,
        engine,
        schedule: Callable[[Callable], None],
        idle_seconds: float | None = 10.0,
        check_seconds: float = CHECK_SECONDS,
        ended: webauth.Expiring | None = None,
    ):
        self.engine = engine
        self.schedule = schedule
        #: seconds between looks when nothing pokes the hub; ``0`` or ``None``: never
        self.idle_seconds = idle_seconds or None
        self.check_seconds = check_seconds
        self._sockets: set = set()
        self._sessions: dict[Any, SocketSession] = {}
        #: the sessions logged out (the app's own record, shared: one place for both)
        self._ended = ended if ended is not None else webauth.Expiring(24 * 3600)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._recheck = threading.Event()
        self._guard: threading.Thread | None = None
        self._since = dt.datetime.now(dt.timezone.utc)
        self.looks = 0

    # sockets (called on the loop)
    def add(self, socket, broadcast: bool = True) -> None:
        """Watch ``socket``'s session (closing it when the session ends) and, with
        ``broadcast``, send it the overview's updates. Anything with the handler's ``user``,
        ``flask_app``, ``get_cookie`` and ``close(code, reason)`` can be watched: the KVM
        console's websocket and its video stream are, without the updates."""
        found = SocketSession.of(socket)
        if found is None or found.sid in self._ended:
            self._close([socket])
            return
        with self._lock:
            if broadcast:
                self._sockets.add(socket)
            self._sessions[socket] = found
            if self._guard is None:
                self._guard = threading.Thread(
                    target=self.run_guard, name="fleet-ui-sessions", daemon=True
                )
                self._guard.start()

    def remove(self, socket) -> None:
        with self._lock:
            self._sockets.discard(socket)
            self._sessions.pop(socket, None)

    def _close(self, sockets) -> None:
        for socket in sockets:
            self.remove(socket)
            try:
                socket.close(SESSION_ENDED, "session ended: log in again")
            except Exception:  # noqa: BLE001 - closed already
                pass

    # sessions
    def end_session(self, sid: str) -> None:
        """A session was logged out: close its sockets now (any thread)."""
        self._ended.put(sid)  # the app's record already has it when it is shared
        with self._lock:
            ending = [s for s, found in self._sessions.items() if found.sid == sid]
        if ending:
            self.schedule(lambda: self._close(ending))

    def recheck(self) -> None:
        """Users changed (role, disabled, deleted): check the open sockets' sessions now."""
        self._recheck.set()

    def check_sessions(self) -> int:
        """Close the sockets whose session ended; how many."""
        with self._lock:
            sessions = dict(self._sessions)
        if not sessions:
            return 0
        uids = sorted({found.uid for found in sessions.values()})
        with self.engine.connect() as conn:
            current = ui_queries.session_versions(conn, uids)
        now = time.time()
        ending = [
            socket
            for socket, found in sessions.items()
            if current.get(found.uid) != found.version
            or found.sid in self._ended
            or found.expires <= now
        ]
        if ending:
            log.info("fleet ui: closing %d live socket(s) whose session ended", len(ending))
            self.schedule(lambda: self._close(ending))
        return len(ending)

    def run_guard(self) -> None:
        """The thread that checks the sessions of open sockets (started with the first)."""
        while not self._stop.is_set():
            self._recheck.wait(self.check_seconds)
            self._recheck.clear()
            if self._stop.is_set():
                return
            try:
                self.check_sessions()
            except Exception:  # the store may be away for a while
                log.warning("fleet ui: checking the live sockets' sessions failed", exc_info=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sockets)

    # producers
    def poke(self) -> None:
        """Something happened: look at the store soon."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._recheck.set()

    def run_looker(self, min_interval: float = 0.25) -> None:
        """The thread that looks at the store when poked (or every ``idle_seconds``, if set)."""
        while not self._stop.is_set():
            self._wake.wait(self.idle_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            if len(self):
                try:
                    self.look()
                except Exception:  # the store may be away for a while
                    log.warning("fleet ui: live update failed", exc_info=True)
            time.sleep(min_interval)

    def look(self) -> int:
        # a little overlap: a row written during the last look is not missed
        now = dt.datetime.now(dt.timezone.utc)
        since = self._since - dt.timedelta(seconds=2)
        with self.engine.connect() as conn:
            changes = ui_queries.changed_nodes(conn, since, MAX_CHANGES)
            counts = ui_queries.status_counts(conn)
            latest_alert = alert_views.latest_alert_id(conn)
        self._since = now
        self.looks += 1
        messages = changes[:MAX_CHANGES]
        if len(changes) > MAX_CHANGES:
            messages = [{"type": "reload"}]
        messages.append({"type": "counts", "statuses": counts, "alerts": {"latest": latest_alert}})
        payload = [json.dumps(m) for m in messages]
        self.schedule(lambda: self._send(payload))
        return len(changes)

    def _send(self, payload: list[str]) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for socket in sockets:
            for text in payload:
                try:
                    socket.write_message(text)
                except Exception:  # noqa: BLE001 - a closed socket
                    self.remove(socket)
                    break

    def run_listener(self, opts: dict) -> None:
        """The thread that listens to the master's event bus and pokes the looker."""
        import salt.utils.event  # heavy: only the engine's listener thread needs Salt

        backoff = 1.0
        while not self._stop.is_set():
            try:
                with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
                    backoff = 1.0
                    while not self._stop.is_set():
                        event = bus.get_event(wait=1, full=True)
                        if event and interesting(event.get("tag", "")):
                            self.poke()
            except Exception:  # noqa: BLE001 - the bus comes back with the master
                log.warning("fleet ui: event bus lost; listening again in %.0f s", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
