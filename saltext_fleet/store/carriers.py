"""Which syndic carried a return, and how each node is served (``job_carriers``, schema 0017).

Written by the batch writer from the job cache's ``save_minions(..., syndic_id=...)``
(:func:`record_carriers`); read at query time (:func:`carriers_of`, :func:`served`), so the
order in which a syndic's announcement and the returns it carried reach the store does not
matter. Who is believed is :mod:`saltext_fleet.core.carriers`' rule: one claimant per (jid,
minion), never one of several.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from saltext_fleet.core import carriers as core_carriers
from saltext_fleet.store.models import JobCarrier, Node, utcnow


def record_carriers(
    conn: Connection, jid: str, minions: Iterable[str], syndic_id: str, master_id: str | None
) -> int:
    """Record that ``syndic_id`` (the id Salt authenticated) announced ``minions`` for
    ``jid`` to the master ``master_id``; the number of new rows. A sender never carries
    itself (:func:`saltext_fleet.core.carriers.claimed_minions`)."""
    claimed = core_carriers.claimed_minions(syndic_id, list(minions))
    if not claimed:
        return 0
    now = utcnow()
    rows = [
        {
            "jid": jid,
            "minion_id": minion,
            "syndic_id": syndic_id,
            "master_id": master_id,
            "announced_at": now,
        }
        for minion in claimed
    ]
    ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = ins(JobCarrier.__table__).on_conflict_do_nothing(
        index_elements=["jid", "minion_id", "syndic_id"]
    )
    return conn.execute(stmt, rows).rowcount or 0


def _claims(conn: Connection, condition) -> dict[tuple[str, str], dict]:
    """``{(jid, minion): {"claimants": {syndic: master}}}`` of the rows matching
    ``condition``."""
    found: dict[tuple[str, str], dict] = {}
    stmt = select(
        JobCarrier.jid, JobCarrier.minion_id, JobCarrier.syndic_id, JobCarrier.master_id
    ).where(condition)
    for row in conn.execute(stmt):
        found.setdefault((row.jid, row.minion_id), {})[row.syndic_id] = row.master_id
    return found


def _resolved(claimants: dict[str, str | None]) -> dict:
    carrier = core_carriers.resolve(claimants)
    carrier["via"] = claimants[carrier["syndic"]] if carrier["syndic"] else None
    return carrier


def carriers_of(conn: Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple, dict]:
    """The carrier of each (jid, minion) a syndic announced: ``{(jid, minion): {"syndic",
    "via", "claimants", "disputed"}}``; pairs nobody announced are absent (heard directly)."""
    pairs = sorted(set(pairs))
    if not pairs:
        return {}
    condition = tuple_(JobCarrier.jid, JobCarrier.minion_id).in_(pairs)
    return {pair: _resolved(claims) for pair, claims in _claims(conn, condition).items()}


def served(conn: Connection, minion_ids: Iterable[str]) -> dict[str, dict]:
    """How each node is served (:func:`saltext_fleet.core.carriers.served`): the master that
    stored its latest return, and the syndic that announced it for its latest announced job
    (one claimant believed, several disputed)."""
    minion_ids = sorted(set(minion_ids))
    if not minion_ids:
        return {}
    heard = dict(
        conn.execute(
            select(Node.minion_id, Node.heard_by).where(Node.minion_id.in_(minion_ids))
        ).all()
    )
    latest = (
        select(JobCarrier.minion_id, func.max(JobCarrier.jid).label("jid"))
        .where(JobCarrier.minion_id.in_(minion_ids))
        .group_by(JobCarrier.minion_id)
        .subquery()
    )
    condition = and_(
        tuple_(JobCarrier.minion_id, JobCarrier.jid).in_(select(latest.c.minion_id, latest.c.jid))
    )
    carriers = {
        minion: _resolved(claims) for (_, minion), claims in _claims(conn, condition).items()
    }
    return {m: core_carriers.served(heard.get(m), carriers.get(m)) for m in minion_ids}
