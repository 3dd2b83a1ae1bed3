"""The key gate's records: keys seen, enrolments, node status.

Salt's own key store (the pki directories) stays the truth about which keys are accepted;
these tables add what Salt does not keep: when a key was first and last seen, who decided and
why, and the enrolments (only token hashes) the gate accepts keys by.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import presence as core_presence
from saltext_fleet.store.models import Enrolment, MinionKey, Node, iso, utcnow

KEY_STATES = ("pending", "accepted", "rejected", "denied", "deleted")


def _insert(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def key_seen(
    conn: Connection,
    minion_id: str,
    fingerprint: str,
    pub: str,
    now: dt.datetime | None = None,
) -> tuple[bool, str]:
    """Record that ``minion_id`` presented the key ``fingerprint``.

    Returns ``(new, state)``: ``new`` is True only the first time this id and key are seen
    (one ``fleet/key/pending`` event per new key, even with several master processes: the
    insert decides). ``state`` is what the gate recorded for it so far.
    """
    now = now or utcnow()
    insert = _insert(conn)
    stmt = (
        insert(MinionKey.__table__)
        .values(
            minion_id=minion_id,
            fingerprint=fingerprint,
            pub=pub,
            state="pending",
            first_seen=now,
            last_seen=now,
            attempts=1,
        )
        .on_conflict_do_nothing(index_elements=["minion_id", "fingerprint"])
        .returning(MinionKey.minion_id)
    )
    if conn.execute(stmt).first() is not None:
        return True, "pending"
    conn.execute(
        update(MinionKey)
        .where(MinionKey.minion_id == minion_id, MinionKey.fingerprint == fingerprint)
        .values(last_seen=now, attempts=MinionKey.attempts + 1)
    )
    state = conn.execute(
        select(MinionKey.state).where(
            MinionKey.minion_id == minion_id, MinionKey.fingerprint == fingerprint
        )
    ).scalar()
    return False, state or "pending"


def set_key_state(
    conn: Connection,
    minion_id: str,
    state: str,
    decided_by: str,
    fingerprint: str | None = None,
    note: str | None = None,
    pub: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Record a decision about ``minion_id``'s key (``fingerprint``: that key only; None:
    every key recorded for the id). A key the gate never saw (accepted by hand with
    ``salt-key``, say) gets a row when its fingerprint is known."""
    if state not in KEY_STATES:
        raise ValueError(f"state: {state!r} is not one of {', '.join(KEY_STATES)}")
    now = now or utcnow()
    values = {"state": state, "decided_by": decided_by[:128], "decided_at": now}
    if note is not None:
        values["note"] = note
    where = [MinionKey.minion_id == minion_id]
    if fingerprint is not None:
        where.append(MinionKey.fingerprint == fingerprint)
    done = conn.execute(update(MinionKey).where(*where).values(**values)).rowcount
    if not done and fingerprint is not None:
        conn.execute(_new_key_row(conn, minion_id, fingerprint, pub, now, values))


def change_key_state(
    conn: Connection,
    minion_id: str,
    state: str,
    decided_by: str,
    fingerprint: str,
    pub: str | None = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Record that ``minion_id``'s key ``fingerprint`` is now ``state``, unless the gate
    recorded that already. Returns the state it had before (``"unknown"`` for a key the gate
    never saw), or None when nothing changed.

    The check and the write are one statement each, so a concurrent decision about the same
    key is waited for (its row lock, or its uncommitted insert) and then seen."""
    if state not in KEY_STATES:
        raise ValueError(f"state: {state!r} is not one of {', '.join(KEY_STATES)}")
    now = now or utcnow()
    where = (MinionKey.minion_id == minion_id, MinionKey.fingerprint == fingerprint)
    was = conn.execute(select(MinionKey.state).where(*where)).scalar()
    values = {"state": state, "decided_by": decided_by[:128], "decided_at": now}
    changed = conn.execute(
        update(MinionKey).where(*where, MinionKey.state != state).values(**values)
    ).rowcount
    if changed:
        return was or "pending"
    inserted = conn.execute(
        _new_key_row(conn, minion_id, fingerprint, pub, now, values).returning(MinionKey.minion_id)
    ).first()
    return "unknown" if inserted is not None else None


#: The decisions another master follows (see :func:`key_decisions`).
FOLLOWED_STATES = ("accepted", "rejected")


def key_decisions(
    conn: Connection, keys: Iterable[tuple[str, str]], states: Iterable[str] = FOLLOWED_STATES
) -> dict[tuple[str, str], dict[str, Any]]:
    """The fleet's decisions about ``keys`` (``[(minion id, fingerprint)]``): ``{(id,
    fingerprint): {state, decided_by, decided_at}}`` for each key the store records as
    accepted or rejected (``states``) by someone (an operator, an enrolment, ``salt-key``).
    Only that id with that fingerprint: another key under the same id is never in the
    answer."""
    states = list(states)
    wanted = {(m, f) for m, f in keys if m and f}
    ids = sorted({m for m, _f in wanted})
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        rows = conn.execute(
            select(
                MinionKey.minion_id,
                MinionKey.fingerprint,
                MinionKey.state,
                MinionKey.decided_by,
                MinionKey.decided_at,
            ).where(
                MinionKey.minion_id.in_(ids[start : start + 500]),
                MinionKey.state.in_(states),
                MinionKey.decided_by.is_not(None),
            )
        )
        for row in rows:
            if (row.minion_id, row.fingerprint) in wanted:
                out[(row.minion_id, row.fingerprint)] = {
                    "state": row.state,
                    "decided_by": row.decided_by,
                    "decided_at": iso(row.decided_at),
                }
    return out


def mark_keys_deleted(
    conn: Connection, minion_id: str, decided_by: str, now: dt.datetime | None = None
) -> list[str]:
    """Mark every key recorded for ``minion_id`` deleted, unless it is already; returns the
    fingerprints that changed (none: the deletion was recorded, or the gate knew no key)."""
    now = now or utcnow()
    return sorted(
        conn.execute(
            update(MinionKey)
            .where(MinionKey.minion_id == minion_id, MinionKey.state != "deleted")
            .values(state="deleted", decided_by=decided_by[:128], decided_at=now)
            .returning(MinionKey.fingerprint)
        ).scalars()
    )


def note_key(conn: Connection, minion_id: str, fingerprint: str, note: str) -> None:
    conn.execute(
        update(MinionKey)
        .where(MinionKey.minion_id == minion_id, MinionKey.fingerprint == fingerprint)
        .values(note=note)
    )


def key_note(conn: Connection, minion_id: str, fingerprint: str) -> str | None:
    return conn.execute(
        select(MinionKey.note).where(
            MinionKey.minion_id == minion_id, MinionKey.fingerprint == fingerprint
        )
    ).scalar()


def key_rows(conn: Connection, minion_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    stmt = select(MinionKey).order_by(MinionKey.minion_id, MinionKey.first_seen)
    if minion_ids is not None:
        stmt = stmt.where(MinionKey.minion_id.in_(list(minion_ids)))
    out = []
    for row in conn.execute(stmt):
        out.append(
            {
                "id": row.minion_id,
                "fingerprint": row.fingerprint,
                "state": row.state,
                "first_seen": iso(row.first_seen),
                "last_seen": iso(row.last_seen),
                "attempts": row.attempts,
                "decided_by": row.decided_by,
                "decided_at": iso(row.decided_at),
                "note": row.note,
            }
        )
    return out


# -- enrolments --------------------------------------------------------------------------------


def create_enrolment(
    conn: Connection,
    minion_id: str,
    token: str,
    ttl: dt.timedelta,
    created_by: str,
    node_group: str | None = None,
    fingerprint: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Store an enrolment (the token's hash only); earlier live enrolments of the id are
    revoked: one live enrolment per minion id."""
    now = now or utcnow()
    revoked = conn.execute(
        update(Enrolment)
        .where(Enrolment.minion_id == minion_id, Enrolment.state == "live")
        .values(state="revoked")
    ).rowcount
    expires = now + ttl
    new_id = conn.execute(
        Enrolment.__table__.insert()
        .values(
            minion_id=minion_id,
            token_hash=core_gate.token_hash(token),
            fingerprint=fingerprint,
            node_group=node_group,
            state="live",
            created_by=created_by[:128],
            created_at=now,
            expires_at=expires,
        )
        .returning(Enrolment.id)
    ).scalar()
    return {"enrolment": new_id, "expires_at": iso(expires), "revoked": revoked or 0}


def _enrolment(row) -> core_gate.Enrolment:
    return core_gate.Enrolment(
        id=row.id,
        minion_id=row.minion_id,
        token_hash=row.token_hash,
        state=row.state,
        expires_at=row.expires_at,
        fingerprint=row.fingerprint,
        node_group=row.node_group,
    )


def find_enrolment(
    conn: Connection, minion_id: str, token: str | None
) -> core_gate.Enrolment | None:
    """The enrolment a presented token belongs to (any state, any id: :func:`core.gate.decide`
    tells reuse and theft apart), or without a token the id's live enrolment by fingerprint."""
    if token is not None:
        row = conn.execute(
            select(Enrolment).where(Enrolment.token_hash == core_gate.token_hash(token))
        ).first()
        return _enrolment(row) if row is not None else None
    row = conn.execute(
        select(Enrolment)
        .where(
            Enrolment.minion_id == minion_id,
            Enrolment.state == "live",
            Enrolment.fingerprint.is_not(None),
        )
        .order_by(Enrolment.id.desc())
    ).first()
    return _enrolment(row) if row is not None else None


def ids_expecting_a_key(conn: Connection, minion_ids: list[str]) -> set[str]:
    """Those of ``minion_ids`` with a live enrolment that names an expected fingerprint: a
    pending key of theirs may be accepted without a token (the recorder asks, per batch)."""
    found: set[str] = set()
    for start in range(0, len(minion_ids), 500):
        chunk = minion_ids[start : start + 500]
        found.update(
            conn.execute(
                select(Enrolment.minion_id)
                .where(
                    Enrolment.minion_id.in_(chunk),
                    Enrolment.state == "live",
                    Enrolment.fingerprint.is_not(None),
                )
                .distinct()
            ).scalars()
        )
    return found


def use_enrolment(
    conn: Connection, enrolment_id: int, fingerprint: str, now: dt.datetime | None = None
) -> bool:
    """Mark a live enrolment used; False when another process used it first (one use)."""
    now = now or utcnow()
    done = conn.execute(
        update(Enrolment)
        .where(and_(Enrolment.id == enrolment_id, Enrolment.state == "live"))
        .values(state="used", used_at=now, used_fingerprint=fingerprint)
    ).rowcount
    return bool(done)


def enrolment_used_by(conn: Connection, enrolment_id: int) -> str | None:
    """The fingerprint of the key that used the enrolment (None: not used)."""
    return conn.execute(
        select(Enrolment.used_fingerprint).where(
            Enrolment.id == enrolment_id, Enrolment.state == "used"
        )
    ).scalar()


def expire_enrolments(conn: Connection, now: dt.datetime | None = None) -> int:
    now = now or utcnow()
    return (
        conn.execute(
            update(Enrolment)
            .where(Enrolment.state == "live", Enrolment.expires_at <= now)
            .values(state="expired")
        ).rowcount
        or 0
    )


def enrolments(conn: Connection, minion_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(Enrolment).order_by(Enrolment.id)
    if minion_id is not None:
        stmt = stmt.where(Enrolment.minion_id == minion_id)
    return [
        {
            "enrolment": row.id,
            "id": row.minion_id,
            "state": row.state,
            "group": row.node_group,
            "fingerprint": row.fingerprint,
            "created_by": row.created_by,
            "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at),
            "used_at": iso(row.used_at),
            "used_fingerprint": row.used_fingerprint,
        }
        for row in conn.execute(stmt)
    ]


# -- node status -------------------------------------------------------------------------------


def set_status(
    conn: Connection,
    minion_ids: Iterable[str],
    status: str,
    now: dt.datetime | None = None,
    node_group: str | None = None,
    onboarded: bool = False,
    reason: str | None = None,
) -> int:
    """Mark nodes online or offline (creating their row if the store has none yet), saying
    why (``reason``); ``status_since`` moves only when the status changes."""
    now = now or utcnow()
    ids = sorted(set(minion_ids))
    if not ids:
        return 0
    values: dict[str, Any] = {
        "status": status,
        "status_at": now,
        "status_since": now,
        "status_reason": (reason or "")[:255] or None,
    }
    if status == "online":
        values["last_seen"] = now
        values["presence_misses"] = 0
    if node_group is not None:
        values["node_group"] = node_group
    if onboarded:
        values["onboarded_at"] = now
    insert = _insert(conn)
    rows = [
        {"minion_id": m, "first_seen": now, "last_seen": now, "facts": {}, **values} for m in ids
    ]
    stmt = insert(Node.__table__)
    table = Node.__table__
    set_ = {k: stmt.excluded[k] for k in values}
    set_["status_since"] = case(
        (
            and_(table.c.status == stmt.excluded.status, table.c.status_since.is_not(None)),
            table.c.status_since,
        ),
        else_=stmt.excluded.status_since,
    )
    stmt = stmt.on_conflict_do_update(index_elements=["minion_id"], set_=set_)
    conn.execute(stmt, rows)
    return len(ids)


def record_presence_check(
    conn: Connection,
    answered: Iterable[str],
    missed: Iterable[str],
    now: dt.datetime | None = None,
) -> dict[str, list[str]]:
    """A presence check's outcome: nodes that answered are online; a node that did not is
    offline only after more than one miss in a row (:mod:`saltext_fleet.core.presence`).
    Returns the ids per status after the check (``online``, ``offline``, ``missed_once``:
    missed but not offline yet)."""
    now = now or utcnow()
    answered = sorted(set(answered))
    missed = sorted(set(missed) - set(answered))
    set_status(conn, answered, "online", now=now, reason=core_presence.REASON_ANSWERED)
    out: dict[str, list[str]] = {"online": list(answered), "offline": [], "missed_once": []}
    if not missed:
        return out
    table = Node.__table__
    known = {
        row.minion_id: core_presence.Presence(
            row.status, row.presence_misses or 0, row.status_since, row.status_reason
        )
        for row in conn.execute(
            select(
                table.c.minion_id,
                table.c.status,
                table.c.presence_misses,
                table.c.status_since,
                table.c.status_reason,
            ).where(table.c.minion_id.in_(missed))
        )
    }
    rows = []
    for minion_id in missed:
        after = known.get(minion_id, core_presence.Presence()).checked(False, now)
        out["offline" if after.status == "offline" else "missed_once"].append(minion_id)
        rows.append(
            {
                "status": after.status,
                "status_at": now,
                "status_since": after.since,
                "status_reason": after.reason,
                "presence_misses": after.misses,
            }
        )
    pairs = list(zip(missed, rows, strict=True))
    new = [
        {"minion_id": m, "first_seen": now, "last_seen": now, "facts": {}, **r}
        for m, r in pairs
        if m not in known
    ]
    if new:
        conn.execute(_insert(conn)(table).on_conflict_do_nothing(index_elements=["minion_id"]), new)
    old = [{"p_" + k: v for k, v in r.items()} | {"p_m": m} for m, r in pairs if m in known]
    if old:
        conn.execute(
            update(table)
            .where(table.c.minion_id == bindparam("p_m"))
            .values({k: bindparam("p_" + k) for k in rows[0]}),
            old,
        )
    return out


def set_beacon(
    conn: Connection, minion_id: str, interval: int | None, now: dt.datetime | None = None
) -> None:
    """Record the ``fleet_pkgset`` beacon as onboarding found it on the node (its interval in
    seconds, 0: not running, None: the node did not say)."""
    conn.execute(
        update(Node)
        .where(Node.minion_id == minion_id)
        .values(beacon_interval=interval, beacon_at=now or utcnow())
    )


def set_group(conn: Connection, minion_id: str, node_group: str, now: dt.datetime | None = None):
    """Put a node in a group (creating its row if the store has none yet)."""
    now = now or utcnow()
    stmt = _insert(conn)(Node.__table__).values(
        minion_id=minion_id, first_seen=now, last_seen=now, facts={}, node_group=node_group
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["minion_id"], set_={"node_group": stmt.excluded.node_group}
        )
    )


def node_status(conn: Connection, minion_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(
            Node.minion_id, Node.status, Node.status_at, Node.node_group, Node.onboarded_at
        ).where(Node.minion_id == minion_id)
    ).first()
    if row is None:
        return None
    return {
        "id": row.minion_id,
        "status": row.status,
        "status_at": iso(row.status_at),
        "group": row.node_group,
        "onboarded_at": iso(row.onboarded_at),
    }


def _new_key_row(conn: Connection, minion_id: str, fingerprint: str, pub, now, values: dict):
    """``INSERT`` of a key row the gate had not recorded, unless another process just did."""
    return (
        _insert(conn)(MinionKey.__table__)
        .values(
            minion_id=minion_id,
            fingerprint=fingerprint,
            pub=pub or "",
            first_seen=now,
            last_seen=now,
            attempts=0,
            **values,
        )
        .on_conflict_do_nothing(index_elements=["minion_id", "fingerprint"])
    )
