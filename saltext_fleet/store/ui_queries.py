"""The small reads and writes the web UI's pages and API run besides :mod:`.ui`: Salt's jobs
and their returns (paged, a large return read only as its length and first characters), a
node's inventory snapshot and metadata, node groups; and what the live overview's hub looks
at (nodes that moved, counts per status, the session versions of users with open sockets).

Every function takes an open ``Connection``; the caller chooses the transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Row, Text, cast, func, or_, select, update

from saltext_fleet.store.models import (
    DriftCurrent,
    InventorySnapshot,
    Job,
    Node,
    NodeGroup,
    Return,
    UiUser,
    utcnow,
)

_JOB_COLUMNS = (Job.jid, Job.fun, Job.tgt, Job.user, Job.started_at)
_RETURN_COLUMNS = (Return.minion_id, Return.success, Return.stored_at, Return.authenticated)


# -- nodes and groups --------------------------------------------------------------------------


def inventory_snapshot(conn: Connection, digest: str) -> Row | None:
    """The snapshot ``digest`` names: a row of ``packages`` and ``package_count``, or None."""
    return conn.execute(
        select(InventorySnapshot.packages, InventorySnapshot.package_count).where(
            InventorySnapshot.digest == digest
        )
    ).first()


def set_node_meta(conn: Connection, minion_id: str, values: dict[str, Any]) -> bool:
    """Store a node's criticality, audited flag or comment (and when: ``meta_at``, which the
    live hubs of every master look for); False when there is no such node."""
    done = conn.execute(
        update(Node).where(Node.minion_id == minion_id).values(**values, meta_at=utcnow())
    ).rowcount
    return bool(done)


def group_members(conn: Connection, group: str) -> list[tuple[str, Any]]:
    """``(minion_id, facts)`` of every node of a node group."""
    rows = conn.execute(select(Node.minion_id, Node.facts).where(Node.node_group == group))
    return [(minion_id, facts) for minion_id, facts in rows]


def group_listing(conn: Connection) -> list[dict[str, Any]]:
    """Every node group a node names or the store defines, by name: ``{name, nodes,
    defined}``."""
    counts = dict(
        conn.execute(
            select(Node.node_group, func.count())
            .where(Node.node_group.is_not(None))
            .group_by(Node.node_group)
        ).all()
    )
    defined = {name for (name,) in conn.execute(select(NodeGroup.name))}
    return [
        {"name": name, "nodes": counts.get(name, 0), "defined": name in defined}
        for name in sorted(set(counts) | defined)
    ]


# -- jobs and returns --------------------------------------------------------------------------


def jobs_page(conn: Connection, limit: int, offset: int = 0) -> list[Row]:
    """Salt's jobs, newest first: rows of ``jid, fun, tgt, user, started_at``."""
    return conn.execute(
        select(*_JOB_COLUMNS)
        .order_by(Job.started_at.desc(), Job.jid.desc())
        .limit(limit)
        .offset(offset)
    ).all()


def return_count(conn: Connection, jid: str) -> int:
    """How many returns the store holds for a job."""
    return conn.execute(select(func.count()).select_from(Return).where(Return.jid == jid)).scalar()


def minion_returns(conn: Connection, jid: str, minion_id: str, limit: int) -> list[Row]:
    """One minion's returns of a job, whole (``ret``), oldest first (self-reported rows can
    be many: at most ``limit``)."""
    return conn.execute(
        select(*_RETURN_COLUMNS, Return.ret.label("ret"))
        .where(Return.jid == jid, Return.minion_id == minion_id)
        .order_by(Return.id)
        .limit(limit)
    ).all()


def return_previews(conn: Connection, jid: str, chars: int, limit: int, offset: int) -> list[Row]:
    """One page of a job's returns by minion, each as its length in characters (``chars``)
    and its first ``chars`` characters of stored JSON (``head``): a return may be megabytes."""
    as_text = cast(Return.ret, Text)
    return conn.execute(
        select(
            *_RETURN_COLUMNS,
            func.length(as_text).label("chars"),
            func.substr(as_text, 1, chars).label("head"),
        )
        .where(Return.jid == jid)
        .order_by(Return.minion_id, Return.id)
        .limit(limit)
        .offset(offset)
    ).all()


def answered_minions(conn: Connection, jid: str) -> set[str]:
    """The minions whose return of a job Salt authenticated (a return a minion wrote itself
    is a claim and does not count as an answer)."""
    return {
        m
        for (m,) in conn.execute(
            select(Return.minion_id)
            .where(Return.jid == jid, Return.authenticated.is_(True))
            .distinct()
        )
    }


def job_returns(conn: Connection, jid: str, limit: int) -> list[Row]:
    """A job's returns, whole, by minion: rows of ``minion_id, success, ret, stored_at,
    authenticated``."""
    return conn.execute(
        select(
            Return.minion_id,
            Return.success,
            Return.ret.label("ret"),
            Return.stored_at,
            Return.authenticated,
        )
        .where(Return.jid == jid)
        .order_by(Return.minion_id)
        .limit(limit)
    ).all()


# -- the live overview -------------------------------------------------------------------------


def changed_nodes(conn: Connection, since: dt.datetime, limit: int) -> list[dict[str, Any]]:
    """Nodes whose status, last contact, drift or operators' metadata (criticality, comment)
    moved at or after ``since``, by id: at most ``limit + 1`` (one more than asked says there
    were more)."""
    stmt = (
        select(
            Node.minion_id,
            Node.status,
            Node.last_seen,
            Node.criticality,
            Node.comment,
            DriftCurrent.score,
        )
        .select_from(Node)
        .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .where(
            or_(
                Node.last_seen >= since,
                Node.status_at >= since,
                DriftCurrent.computed_at >= since,
                Node.meta_at >= since,
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
            "criticality": r.criticality,
            "comment": r.comment,
        }
        for r in conn.execute(stmt)
    ]


def status_counts(conn: Connection) -> dict[str, int]:
    """How many nodes are online, offline, unknown (no status yet counts as unknown)."""
    counts = {"online": 0, "offline": 0, "unknown": 0}
    for status, count in conn.execute(select(Node.status, func.count()).group_by(Node.status)):
        key = status or "unknown"
        counts[key] = counts.get(key, 0) + count
    return counts


def session_versions(conn: Connection, uids: list[int]) -> dict[int, int]:
    """``{user id: session version}`` of those of ``uids`` that exist and are not disabled."""
    rows = conn.execute(
        select(UiUser.id, UiUser.session_version, UiUser.disabled).where(UiUser.id.in_(uids))
    ).all()
    return {row.id: row.session_version for row in rows if not row.disabled}
