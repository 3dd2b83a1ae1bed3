"""The per-device action slots of the KVM rate limits and the ISO library's rows.

A slot (``kvm_action_slots``, see :mod:`saltext_fleet.kvm.limits` for the rules) is taken
by :func:`take` in a transaction of its own: an ``INSERT ... ON CONFLICT DO NOTHING`` makes
sure the row exists, then one ``UPDATE ... WHERE until IS NULL OR until <= now`` takes it.
On PostgreSQL the second of two concurrent updates waits for the first's row lock and then
finds the ``WHERE`` false on the row the first committed; on SQLite the first statement takes
the database's write lock, so the second transaction runs after the first has committed.
Either way exactly one of two concurrent takers gets the slot; nothing is checked in Python
between a read and a write. Times are the callers' clocks (UTC): masters sharing a store
should keep their clocks in sync (NTP) for the limits to mean the same everywhere.

The ISO library's rows (``kvm_isos``) say which images the master has, with their SHA-256;
the files are :mod:`saltext_fleet.kvm.library`'s.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.kvm import limits
from saltext_fleet.store.drift.common import aware, dialect_insert
from saltext_fleet.store.kvm import KvmStoreError, check_name
from saltext_fleet.store.models import KvmActionSlot, KvmIso, utcnow

SLOT_FIELDS = (
    "device",
    "kind",
    "actor",
    "action",
    "image",
    "started_at",
    "until",
    "done_bytes",
    "total_bytes",
)


def _slot_row(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in SLOT_FIELDS}
    for name in ("started_at", "until"):
        if out[name] is not None:
            out[name] = aware(out[name])
    return out


def _slot_key(device: str, kind: str):
    return (KvmActionSlot.device == device) & (KvmActionSlot.kind == kind)


def take(
    engine: Engine,
    device: str,
    action: str,
    actor: str,
    hold_s: float,
    now: dt.datetime | None = None,
    image: str | None = None,
    total_bytes: int | None = None,
    interval: float | None = None,
    label: str | None = None,
) -> str:
    """Take ``device``'s slot for ``action`` (its kind: :func:`limits.slot_of`) for
    ``hold_s`` seconds from ``now``, in a transaction of its own; the token that holds it.
    ``label`` is how the action is recorded and worded (``power reset_hard``; default
    ``action``). Raises :class:`~saltext_fleet.kvm.errors.KvmRateLimitError` (saying who
    holds it and when to retry; ``interval`` is the power interval it names) when it is not
    free."""
    device = check_name(device)
    kind = limits.slot_of(action)
    now = now or utcnow()
    token = secrets.token_hex(16)
    with engine.begin() as conn:
        conn.execute(
            dialect_insert(conn)(KvmActionSlot.__table__)
            .values(device=device, kind=kind)
            .on_conflict_do_nothing(index_elements=["device", "kind"])
        )
        taken = conn.execute(
            update(KvmActionSlot)
            .where(_slot_key(device, kind))
            .where(or_(KvmActionSlot.until.is_(None), KvmActionSlot.until <= now))
            .values(
                token=token,
                actor=actor[:255],
                action=(label or action)[:64],
                image=image,
                started_at=now,
                until=now + dt.timedelta(seconds=hold_s),
                done_bytes=0 if total_bytes is not None else None,
                total_bytes=total_bytes,
            )
        ).rowcount
        if taken == 1:
            return token
        holder = conn.execute(select(KvmActionSlot.__table__).where(_slot_key(device, kind))).one()
        raise limits.refusal(device, action, _slot_row(holder), now, interval, asked=label)


def renew(
    engine: Engine,
    device: str,
    kind: str,
    token: str,
    hold_s: float,
    now: dt.datetime | None = None,
    done_bytes: int | None = None,
    total_bytes: int | None = None,
    **changes: Any,
) -> bool:
    """Extend the hold of ``token`` on ``device``'s ``kind`` slot to ``hold_s`` from ``now``
    and record progress; False when ``token`` no longer holds it (its hold lapsed and another
    action took the slot)."""
    now = now or utcnow()
    values: dict[str, Any] = {"until": now + dt.timedelta(seconds=hold_s), **changes}
    if done_bytes is not None:
        values["done_bytes"] = done_bytes
    if total_bytes is not None:
        values["total_bytes"] = total_bytes
    with engine.begin() as conn:
        return (
            conn.execute(
                update(KvmActionSlot)
                .where(_slot_key(device, kind))
                .where(KvmActionSlot.token == token)
                .values(**values)
            ).rowcount
            == 1
        )


def release(engine: Engine, device: str, kind: str, token: str) -> bool:
    """Give ``device``'s ``kind`` slot back (a ``media`` slot; a power slot is never given
    back: it frees itself when its interval has passed). False when ``token`` did not hold
    it. Who held it last, and what for, stay in the row."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(KvmActionSlot)
                .where(_slot_key(device, kind))
                .where(KvmActionSlot.token == token)
                .values(token=None, until=None)
            ).rowcount
            == 1
        )


def slots(conn: Connection, device: str) -> dict[str, dict[str, Any]]:
    """``{kind: row}`` of the device's slots (only kinds that were ever taken)."""
    rows = conn.execute(select(KvmActionSlot.__table__).where(KvmActionSlot.device == device)).all()
    return {row.kind: _slot_row(row) for row in rows}


def running_media(
    conn: Connection, device: str, now: dt.datetime | None = None
) -> dict[str, Any] | None:
    """The ISO action running on ``device`` now (its slot's row plus ``percent``), or None."""
    found = slots(conn, device).get(limits.MEDIA)
    now = now or utcnow()
    if found is None or limits.is_free(found, now):
        return None
    return {**found, "percent": limits.percent(found["done_bytes"], found["total_bytes"])}


# -- the ISO library's rows ----------------------------------------------------------------------


def _iso_row(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "sha256": row.sha256,
        "size": row.size,
        "source": row.source,
        "added_at": aware(row.added_at).isoformat(),
        "added_by": row.added_by,
    }


def add_iso(
    conn: Connection,
    name: str,
    sha256: str,
    size: int,
    source: str | None,
    actor: str,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any] | None:
    """Record the library image ``name``; the row it replaced (``overwrite``), or None.
    :class:`KvmStoreError` when ``name`` is taken and not ``overwrite``. Call it in the
    transaction that the file is put in place under, so the two go together."""
    old = None
    if overwrite:
        old = conn.execute(
            delete(KvmIso).where(KvmIso.name == name).returning(*KvmIso.__table__.c)
        ).first()
    inserted = conn.execute(
        dialect_insert(conn)(KvmIso.__table__)
        .values(
            name=name,
            sha256=sha256,
            size=int(size),
            source=source,
            added_at=now or utcnow(),
            added_by=actor[:255],
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(KvmIso.name)
    ).first()
    if inserted is None:
        raise KvmStoreError(
            f"the ISO library already has an image named {name!r}; overwrite=True replaces it"
        )
    return _iso_row(old) if old is not None else None


def isos(conn: Connection) -> list[dict[str, Any]]:
    """The library's images, by name."""
    return [_iso_row(row) for row in conn.execute(select(KvmIso.__table__).order_by(KvmIso.name))]


def iso(conn: Connection, name: str) -> dict[str, Any]:
    """One library image; :class:`KvmStoreError` naming it when there is none."""
    row = conn.execute(select(KvmIso.__table__).where(KvmIso.name == name)).first()
    if row is None:
        raise KvmStoreError(f"the ISO library has no image named {name!r}")
    return _iso_row(row)


def remove_iso(conn: Connection, name: str) -> dict[str, Any] | None:
    """Delete the library image's row; the row, or None when there was none."""
    row = conn.execute(
        delete(KvmIso).where(KvmIso.name == name).returning(*KvmIso.__table__.c)
    ).first()
    return _iso_row(row) if row is not None else None
