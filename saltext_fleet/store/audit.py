"""The audit chain in the store (the rules are :mod:`saltext_fleet.core.audit`).

:func:`append` adds one event inside the caller's transaction. Appends are serialised by the
one row of ``audit_head``: the append first updates it (a row lock on PostgreSQL, the write
lock on SQLite), so two master processes never link two events to the same predecessor. Keep
the transaction short: the next append waits for its commit.

With :func:`use_anchor` (every master-side adapter calls it with ``fleet:key_file``), each
transaction that appended writes the chain's signed anchor (:mod:`saltext_fleet.core.anchor`)
just before it commits, while it still holds the head lock, and :func:`verify` checks the
chain against it: a truncated or rewritten chain is named even when the ``audit_head`` row
went with it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import anchor as core_anchor
from saltext_fleet.core import audit as core_audit
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store.models import AuditEvent, AuditHead

log = logging.getLogger(__name__)

#: Rows per fetch while verifying (the chain is streamed, never loaded whole).
VERIFY_BATCH = 2000


# -- the anchor ------------------------------------------------------------------------------

#: Where a connection keeps the (id, hash) its transaction appended, until commit or rollback.
_PENDING = "saltext_fleet.audit_anchor"
_anchors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_anchors_lock = threading.Lock()


class Anchor:
    """The anchor file of the chain in one database, signed with one key file's keys."""

    def __init__(self, key_file: str):
        self.key_file = key_file
        self.path = core_anchor.path_for(key_file)
        self._vault: core_secrets.Vault | None = None
        self._lock = threading.Lock()

    def vault(self) -> core_secrets.Vault:
        """The key file's keys, loaded again when another process rotated them."""
        with self._lock:
            if self._vault is None:
                self._vault = core_secrets.Vault.open(self.key_file)
            else:
                self._vault = self._vault.refreshed()
            return self._vault

    def read(self) -> dict[str, Any] | None:
        return core_anchor.read(self.path, self.vault())

    def advance(self, last_id: int, last_hash: str) -> bool:
        return core_anchor.advance(self.path, self.vault(), last_id, last_hash)

    def resign(self) -> bool:
        return core_anchor.resign(self.path, self.vault())


def use_anchor(engine: Engine, key_file: str) -> Anchor:
    """Anchor the chain of ``engine``'s database in ``<key_file>.audit-anchor`` from now on
    (idempotent; call it wherever an engine that appends is made, with ``fleet:key_file``)."""
    with _anchors_lock:
        anchor = _anchors.get(engine)
        if anchor is not None and anchor.key_file == key_file:
            return anchor
        anchor = Anchor(key_file)
        _anchors[engine] = anchor
        if not event.contains(engine, "commit", _before_commit):
            event.listen(engine, "commit", _before_commit)
            event.listen(engine, "rollback", _forget)
            event.listen(engine, "rollback_savepoint", _forget_savepoint)
        return anchor


def anchor_of(engine: Engine) -> Anchor | None:
    return _anchors.get(engine)


#: When a failed anchor write was last logged (time.monotonic()).
_anchor_failed_logged = [-3600.0]


def _before_commit(conn: Connection) -> None:
    pending = conn.info.pop(_PENDING, None)
    if pending is None:
        return
    anchor = _anchors.get(conn.engine)
    if anchor is None:
        return
    try:
        anchor.advance(*pending)
    except Exception as exc:  # noqa: BLE001 - a failed anchor must not undo what was recorded
        # once a minute per process at most: an unwritable folder fails every append
        now = time.monotonic()
        if now - _anchor_failed_logged[0] >= 60:
            _anchor_failed_logged[0] = now
            log.error(
                "saltext-fleet: could not write the audit anchor %s for event %s (%s: %s); "
                "fleet.audit_verify will report the events after the anchor (said at most "
                "once a minute)",
                anchor.path,
                pending[0],
                type(exc).__name__,
                exc,
            )


def _forget(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _forget_savepoint(conn: Connection, _name, _context) -> None:
    # What the savepoint held may be gone: anchor nothing rather than an event that is not
    # there (a later append in the same transaction anchors again).
    conn.info.pop(_PENDING, None)


def resign_anchor(engine: Engine) -> bool:
    """Sign the anchor again with the newest key of the key file (``fleet.rotate_key``,
    before the old keys are retired), under the head lock so no append moves it meanwhile."""
    anchor = _anchors.get(engine)
    if anchor is None:
        return False
    with engine.connect() as conn:
        _lock_head(conn)
        try:
            return anchor.resign()
        finally:
            conn.rollback()


def _lock_head(conn: Connection) -> None:
    """Wait for appends in flight and hold off new ones until this transaction ends."""
    conn.execute(update(AuditHead).where(AuditHead.one == 1).values(last_id=AuditHead.last_id))


# -- appending -------------------------------------------------------------------------------


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
    if conn.engine in _anchors:
        conn.info[_PENDING] = (row["id"], row["hash"])
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


def verify(engine: Engine, anchor: Anchor | None = None) -> dict[str, Any]:
    """Check the whole chain, streaming it in id order, its head, and its anchor.

    ``{"ok": True, "checked": N, "last_id": id, "last_hash": h}``, or at the first broken
    event ``{"ok": False, "checked": N, "broken": id, "reason": ..., "message": ...}``. A chain
    whose newest events were deleted (every remaining event still links) is caught by the head:
    ``reason`` ``"head"`` names the id the head expects.

    With an anchor (``anchor``, or the one :func:`use_anchor` set for ``engine``) the result
    has ``"anchor": {"last_id", "key_id"}`` and these failures too: ``"truncated"`` (the
    chain ends before the anchor's id: "the chain ends at id N but the anchor says M"),
    ``"rewritten"`` (the event at the anchor's id has another hash), ``"anchor"`` (the anchor
    file is missing on a chain with events, unreadable, or not signed by the key file).
    Events after the anchor's id (written by a process without the key file) leave the
    result ok, with a ``"warning"``.
    """
    anchor = anchor or _anchors.get(engine)
    anchored, problem = None, None
    if anchor is not None:
        with engine.connect() as conn:
            # The anchor is written just before an append commits: read it while no append
            # is in flight, so that it is never ahead of the chain read below.
            _lock_head(conn)
            try:
                anchored = anchor.read()
            except (core_anchor.AnchorError, core_secrets.SecretsError) as exc:
                problem = str(exc)
            finally:
                conn.rollback()
    at_anchor: dict[str, str] = {}

    def rows() -> Iterator[Any]:
        for row in _stream(engine):
            if anchored is not None and row.id == anchored["last_id"]:
                at_anchor["hash"] = row.hash
            yield row

    result = core_audit.verify(rows())
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
    if anchor is None:
        return result
    return _check_anchor(result, anchor, anchored, problem, at_anchor.get("hash"))


def _check_anchor(result, anchor, anchored, problem, hash_at_anchor) -> dict[str, Any]:
    last_id = result["last_id"] or 0

    def failed(reason: str, broken: Any, message: str) -> dict[str, Any]:
        return {
            "ok": False,
            "checked": result["checked"],
            "broken": broken,
            "reason": reason,
            "message": message,
        }

    if problem is not None:
        return failed("anchor", None, f"the audit anchor cannot be trusted: {problem}")
    if anchored is None:
        if not result["checked"]:
            return result
        return failed(
            "anchor",
            None,
            f"there is no audit anchor at {anchor.path}, so the end of the chain cannot be "
            "checked: it was removed, or no event was written since this version was "
            "installed (the next audit event writes it)",
        )
    if anchored["last_id"] > last_id:
        return failed(
            "truncated",
            anchored["last_id"],
            f"the chain ends at id {last_id} but the anchor says {anchored['last_id']}: "
            "the newest events were deleted",
        )
    if hash_at_anchor != anchored["last_hash"]:
        found = f"has hash {hash_at_anchor[:16]}..." if hash_at_anchor else "is missing"
        return failed(
            "rewritten",
            anchored["last_id"],
            f"event {anchored['last_id']} {found}, but the anchor says "
            f"{anchored['last_hash'][:16]}...: the chain was rewritten",
        )
    out = {**result, "anchor": {"last_id": anchored["last_id"], "key_id": anchored["key_id"]}}
    if last_id > anchored["last_id"]:
        out["warning"] = (
            f"{last_id - anchored['last_id']} events after the anchor (id "
            f"{anchored['last_id']}) are not covered by it: written by a process without "
            f"the key file, or the anchor could not be written (see the master log)"
        )
    return out


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
