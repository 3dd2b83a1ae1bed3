"""Presence for the fleet, from every master's view (hot-hot masters on one store).

Each master's ``presence_events`` (``salt/presence/change``) and connected ids see only the
minions connected to that master: with a minion connected to masters A and B, A losing its
connection (A restarting, a network split between A and the minion) says nothing about B's.
So each master *reports* its view: per node, connected to it or not (``presence_views``), and
when it last reported at all (``presence_masters``). A node is offline for the fleet only when
no master whose view is live sees it connected; a master that stopped reporting for
:data:`STALE_SECONDS` (it is down, or cut off from the store) no longer keeps a node online.

The status itself moves once for the fleet: :func:`change_status` is one conditional
``UPDATE`` (``WHERE status`` differs), which the database serialises (on PostgreSQL the second
master waits for the first's row lock and then finds the status already changed), so of two
masters seeing a node arrive, one records the arrival.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from saltext_fleet.store.drift.common import dialect_insert, in_chunks
from saltext_fleet.store.models import (
    MINION_ID_LEN,
    Node,
    PresenceMaster,
    PresenceView,
    utcnow,
)

#: Seconds after its last report a master's view stops counting (three of the snippet's
#: 5-minute presence checks, at each of which every master reports).
STALE_SECONDS = 900.0


def _master(master: str | None) -> str:
    return str(master or "")[:MINION_ID_LEN]


def report(
    conn: Connection,
    master: str | None,
    connected: Iterable[str] = (),
    disconnected: Iterable[str] = (),
    now: dt.datetime | None = None,
    complete: bool = False,
) -> int:
    """Record what ``master`` sees: ``connected`` nodes are connected to it, ``disconnected``
    ones are not; the master's report time moves to ``now`` either way. Only views that
    changed are written. With ``complete`` the lists are the master's whole view (its
    scheduled check): every other node it had as connected is set disconnected. Returns how
    many views changed."""
    now = now or utcnow()
    me = _master(master)
    wanted = {m: False for m in disconnected}
    wanted.update({m: True for m in connected})
    table = PresenceView.__table__
    known: dict[str, bool] = {}
    if complete:
        known = dict(
            conn.execute(
                select(table.c.minion_id, table.c.connected).where(table.c.master == me)
            ).all()
        )
        for minion_id, was in known.items():
            if was and minion_id not in wanted:
                wanted[minion_id] = False
    else:
        for chunk in in_chunks(sorted(wanted), 5000):
            known.update(
                conn.execute(
                    select(table.c.minion_id, table.c.connected).where(
                        table.c.master == me, table.c.minion_id.in_(chunk)
                    )
                ).all()
            )
    rows = [
        {"minion_id": m, "master": me, "connected": c, "seen_at": now}
        for m, c in sorted(wanted.items())
        if known.get(m) is not c
    ]
    if rows:
        stmt = dialect_insert(conn)(table)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["minion_id", "master"],
                set_={"connected": stmt.excluded.connected, "seen_at": stmt.excluded.seen_at},
            ),
            rows,
        )
    stmt = dialect_insert(conn)(PresenceMaster.__table__).values(master=me, reported_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["master"], set_={"reported_at": stmt.excluded.reported_at}
        )
    )
    return len(rows)


def seen_elsewhere(
    conn: Connection,
    minion_ids: Iterable[str],
    master: str | None,
    now: dt.datetime | None = None,
    stale_after: float = STALE_SECONDS,
) -> dict[str, list[str]]:
    """Of ``minion_ids``, those another master whose view is live (reported within
    ``stale_after`` seconds) sees connected: ``{node: [masters]}``."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=float(stale_after))
    views, masters = PresenceView.__table__, PresenceMaster.__table__
    out: dict[str, list[str]] = {}
    for chunk in in_chunks(sorted(set(minion_ids)), 5000):
        rows = conn.execute(
            select(views.c.minion_id, views.c.master)
            .join(masters, masters.c.master == views.c.master)
            .where(
                views.c.minion_id.in_(chunk),
                views.c.connected.is_(True),
                views.c.master != _master(master),
                masters.c.reported_at >= cutoff,
            )
            .order_by(views.c.minion_id, views.c.master)
        ).all()
        for minion_id, other in rows:
            out.setdefault(minion_id, []).append(other)
    return out


def views(conn: Connection, minion_id: str) -> list[dict]:
    """Every master's view of one node: ``[{"master", "connected", "seen_at",
    "reported_at"}]`` (``reported_at``: the master's last report, None if it never did)."""
    v, m = PresenceView.__table__, PresenceMaster.__table__
    rows = conn.execute(
        select(v.c.master, v.c.connected, v.c.seen_at, m.c.reported_at)
        .outerjoin(m, m.c.master == v.c.master)
        .where(v.c.minion_id == minion_id)
        .order_by(v.c.master)
    ).all()
    return [
        {"master": r.master, "connected": r.connected, "seen_at": r.seen_at, "reported_at": r[3]}
        for r in rows
    ]


def change_status(
    conn: Connection,
    minion_ids: Iterable[str],
    status: str,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Set ``status`` on the nodes whose status is another one (or that have no row yet);
    returns those this call changed. One conditional insert-or-update: of two masters making
    the same change at once, one changes each node (the other's ``WHERE`` no longer holds)."""
    now = now or utcnow()
    table = Node.__table__
    values = {
        "status": status,
        "status_at": now,
        "status_since": now,
        "status_reason": (reason or "")[:255] or None,
    }
    changed: list[str] = []
    for chunk in in_chunks(sorted(set(minion_ids)), 1000):
        stmt = dialect_insert(conn)(table).values(
            [
                {"minion_id": m, "first_seen": now, "last_seen": now, "facts": {}, **values}
                for m in chunk
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["minion_id"],
            set_={k: stmt.excluded[k] for k in values},
            where=or_(table.c.status.is_(None), table.c.status != status),
        ).returning(table.c.minion_id)
        changed += [m for (m,) in conn.execute(stmt)]
    return sorted(changed)
