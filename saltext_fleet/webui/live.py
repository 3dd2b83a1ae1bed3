"""Live updates for the overview: from the master's event bus to the browsers' websockets.

A thread listens to the master's event bus. An event that concerns nodes (a minion starting,
a return, a presence change, an inventory change, a drift result, a key decision) makes the
hub look at the store for nodes that changed since its last look, at most a few times a
second, and send each open socket one message per changed node::

    {"type": "node", "id": "web1", "status": "online", "drift": 12.5, "last_seen": "..."}
    {"type": "counts", "statuses": {"online": 9120, "offline": 880, "unknown": 0}}

What a browser shows therefore always comes from the store, whichever event woke the hub,
and a look every ``idle_seconds`` (``fleet:ui:live_poll_seconds``) catches what no event
announced; with ``0`` only events wake it.
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

from sqlalchemy import func, or_, select

from saltext_fleet.store.models import DriftCurrent, Node

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


def interesting(tag: str) -> bool:
    return any(fnmatch.fnmatchcase(tag, pattern) for pattern in INTERESTING)


def changed_nodes(conn, since: dt.datetime, limit: int = MAX_CHANGES) -> list[dict[str, Any]]:
    """Nodes whose status, last contact or drift moved at or after ``since``."""
    stmt = (
        select(Node.minion_id, Node.status, Node.last_seen, DriftCurrent.score)
        .select_from(Node)
        .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .where(
            or_(
                Node.last_seen >= since,
                Node.status_at >= since,
                DriftCurrent.computed_at >= since,
            )
        )
        .order_by(Node.minion_id)
        .limit(limit + 1)
    )
    return [
        {
            "type": "node",
            "id": r.minion_id,
            "status": r.status or "unknown",
            "drift": r.score,
            "last_seen": r.last_seen.isoformat() if r.last_seen else None,
        }
        for r in conn.execute(stmt)
    ]


def status_counts(conn) -> dict[str, int]:
    counts = {"online": 0, "offline": 0, "unknown": 0}
    for status, count in conn.execute(select(Node.status, func.count()).group_by(Node.status)):
        key = status or "unknown"
        counts[key] = counts.get(key, 0) + count
    return counts


class Hub:
    """Open sockets and what to tell them. ``send`` callbacks run on the server's loop
    (``schedule`` hands work to it from other threads)."""

    def __init__(
        self, engine, schedule: Callable[[Callable], None], idle_seconds: float | None = 10.0
    ):
        self.engine = engine
        self.schedule = schedule
        #: seconds between looks when nothing pokes the hub; ``0`` or ``None``: never
        self.idle_seconds = idle_seconds or None
        self._sockets: set = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._since = dt.datetime.now(dt.timezone.utc)
        self.looks = 0

    # sockets (called on the loop)
    def add(self, socket) -> None:
        with self._lock:
            self._sockets.add(socket)

    def remove(self, socket) -> None:
        with self._lock:
            self._sockets.discard(socket)

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
                except Exception:  # noqa: BLE001 - the store may be away for a while
                    log.warning("fleet ui: live update failed", exc_info=True)
            time.sleep(min_interval)

    def look(self) -> int:
        # a little overlap: a row written during the last look is not missed
        now = dt.datetime.now(dt.timezone.utc)
        since = self._since - dt.timedelta(seconds=2)
        with self.engine.connect() as conn:
            changes = changed_nodes(conn, since)
            counts = status_counts(conn)
        self._since = now
        self.looks += 1
        messages = changes[:MAX_CHANGES]
        if len(changes) > MAX_CHANGES:
            messages = [{"type": "reload"}]
        messages.append({"type": "counts", "statuses": counts})
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
        import salt.utils.event

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
