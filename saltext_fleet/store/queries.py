"""Small named read queries over the store, shaped the way Salt's job cache interface answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from saltext_fleet.store.models import Event, Job, Node, Quarantine, Return


def get_load(engine: Engine, jid: str) -> dict[str, Any]:
    """The job's publish load, with ``Minions`` as Salt's local_cache adds it; {} if unknown."""
    with engine.connect() as conn:
        row = conn.execute(select(Job.load, Job.minions).where(Job.jid == str(jid))).first()
    if row is None:
        return {}
    load = dict(row.load or {})
    if row.minions:
        load["Minions"] = sorted(row.minions)
    return load


def get_jid(engine: Engine, jid: str) -> dict[str, Any]:
    """``{minion: {"return": ..., "retcode": ..., "success": ..., "out": ...}}`` (latest each).

    Only returns the master stored from its job cache (``authenticated``): Salt's clients read
    this to learn what a minion answered, and a return a minion wrote itself may name any id.
    """
    stmt = (
        select(Return.minion_id, Return.full_ret)
        .where(Return.jid == str(jid), Return.authenticated.is_(True))
        .order_by(Return.id)
    )
    ret: dict[str, Any] = {}
    with engine.connect() as conn:
        for minion_id, full in conn.execute(stmt):
            full = full or {}
            entry = {"return": full.get("return")}
            for key in ("retcode", "success", "out"):
                if key in full:
                    entry[key] = full[key]
            ret[minion_id] = entry
    return ret


def iter_jobs(engine: Engine, limit: int | None = None, newest_first: bool = False):
    """Job rows ``(jid, load)`` for jobs with a load, oldest first unless told otherwise."""
    stmt = select(Job.jid, Job.load).where(Job.load.is_not(None))
    stmt = stmt.order_by(Job.jid.desc() if newest_first else Job.jid)
    if limit:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        yield from conn.execute(stmt)


def get_fun(engine: Engine, fun: str) -> dict[str, str]:
    """``{minion: latest jid}`` of the minions that ran ``fun``."""
    stmt = (
        select(Return.minion_id, func.max(Return.jid))
        .where(Return.fun == fun, Return.authenticated.is_(True))
        .group_by(Return.minion_id)
    )
    with engine.connect() as conn:
        return {minion: jid for minion, jid in conn.execute(stmt)}


def get_minions(engine: Engine) -> list[str]:
    stmt = (
        select(Return.minion_id)
        .where(Return.authenticated.is_(True))
        .distinct()
        .order_by(Return.minion_id)
    )
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(stmt)]


def get_endtime(engine: Engine, jid: str) -> str | bool:
    with engine.connect() as conn:
        value = conn.execute(select(Job.endtime).where(Job.jid == str(jid))).scalar()
    return value or False


def clean_old_jobs(engine: Engine, keep_seconds: int) -> int:
    """Delete jobs (and their returns) started more than ``keep_seconds`` ago; 0 keeps all."""
    if not keep_seconds:
        return 0
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=keep_seconds)
    with engine.begin() as conn:
        old = select(Job.jid).where(Job.started_at < cutoff).scalar_subquery()
        conn.execute(delete(Return).where(Return.jid.in_(old)))
        removed = conn.execute(delete(Job).where(Job.started_at < cutoff)).rowcount
        conn.execute(delete(Return).where(Return.stored_at < cutoff))
        conn.execute(delete(Event).where(Event.stored_at < cutoff))
    return removed or 0


def counts(engine: Engine) -> dict[str, int]:
    out = {}
    with engine.connect() as conn:
        for name, model in (
            ("nodes", Node),
            ("jobs", Job),
            ("returns", Return),
            ("events", Event),
            ("quarantine", Quarantine),
        ):
            out[name] = conn.execute(select(func.count()).select_from(model)).scalar() or 0
    return out
