"""The audit chain in the store (the rules are :mod:`saltext_fleet.core.audit`).

:func:`append` adds one event inside the caller's transaction. Appends are serialised by the
one row of ``audit_head``: the append first updates it (a row lock on PostgreSQL, the write
lock on SQLite), so two master processes never link two events to the same predecessor. Keep
the transaction short: the next append waits for its commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import audit as core_audit
from saltext_fleet.store.models import AuditEvent, AuditHead

#: Rows per fetch while verifying (the chain is streamed, never loaded whole).
VERIFY_BATCH = 2000


def _parse(at: str) -> dt.datetime:
    return dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def append(
    conn: Connection,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Append an event; returns the row as written (``at`` as the hashed ISO string)."""
    head = conn.execute(
        update(AuditHead)
        .where(AuditHead.one == 1)
        .values(last_id=AuditHead.last_id)
        .returning(AuditHead.last_id, AuditHead.last_hash)
    ).first()
    if head is None:  # the head row is gone: rebuild it from the newest event
        last = conn.execute(
            select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
        ).first()
        last_id, last_hash = (last.id, last.hash) if last else (0, core_audit.GENESIS)
        conn.execute(
            AuditHead.__table__.insert().values(one=1, last_id=last_id, last_hash=last_hash)
        )
    else:
        last_id, last_hash = head.last_id, head.last_hash
    row = core_audit.new_event(
        last_hash,
        last_id + 1,
        at or core_audit.utc_now(),
        actor,
        action,
        target,
        details,
    )
    conn.execute(AuditEvent.__table__.insert().values(**{**row, "at": _parse(row["at"])}))
    conn.execute(
        update(AuditHead).where(AuditHead.one == 1).values(last_id=row["id"], last_hash=row["hash"])
    )
    return row


def record(
    engine: Engine,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`append` in a transaction of its own."""
    with engine.begin() as conn:
        return append(conn, actor, action, target, details)


def _stream(engine: Engine) -> Iterator[Any]:
    after = None
    while True:
        with engine.connect() as conn:
            stmt = select(AuditEvent).order_by(AuditEvent.id).limit(VERIFY_BATCH)
            if after is not None:
                stmt = stmt.where(AuditEvent.id > after)
            rows = conn.execute(stmt).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].id


def verify(engine: Engine) -> dict[str, Any]:
    """Check the whole chain, streaming it in id order, and its head.

    ``{"ok": True, "checked": N, "last_id": id, "last_hash": h}``, or at the first broken
    event ``{"ok": False, "checked": N, "broken": id, "reason": ..., "message": ...}``. A chain
    whose newest events were deleted (every remaining event still links) is caught by the head:
    ``reason`` ``"head"`` names the id the head expects.
    """
    result = core_audit.verify(_stream(engine))
    if not result["ok"]:
        return result
    with engine.connect() as conn:
        head = conn.execute(select(AuditHead.last_id, AuditHead.last_hash)).first()
    if (
        head is not None
        and (head.last_id or 0)
        and (head.last_id != result["last_id"] or head.last_hash != result["last_hash"])
    ):
        return {
            "ok": False,
            "checked": result["checked"],
            "broken": head.last_id,
            "reason": "head",
            "message": (
                f"the chain ends at event {result['last_id']}, but the newest event written "
                f"was {head.last_id}: events at the end were deleted, or the chain was replaced"
            ),
        }
    return result


def events(
    engine: Engine,
    limit: int = 100,
    target: str | None = None,
    action: str | None = None,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """The newest events first (``before``: only ids below it, for paging)."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(int(limit), 10_000)))
    if target is not None:
        stmt = stmt.where(AuditEvent.target == target)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if before is not None:
        stmt = stmt.where(AuditEvent.id < int(before))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        {
            "id": row.id,
            "at": core_audit.normalise_at(row.at),
            "actor": row.actor,
            "action": row.action,
            "target": row.target,
            "details": row.details,
            "hash": row.hash,
        }
        for row in rows
    ]
