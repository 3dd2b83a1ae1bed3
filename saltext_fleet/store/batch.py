"""Write a batch of spooled records to the database in one transaction.

A record is a dict with ``kind`` and ``rid`` (unique id) plus kind-specific fields:

``return``   ``{"ret": <Salt return load>}``: a job return (``jid``, ``id``, ``fun``, ...)
``event``    ``{"tag", "data", "master_id"}``
``load``     ``{"jid", "load", "publish": bool, "minions": [...] | None}``
``minions``  ``{"jid", "minions": [...]}`` (added to the job's minion list)
``endtime``  ``{"jid", "endtime"}``

Returns and events are inserted with ``ON CONFLICT (rid) DO NOTHING`` so a replayed batch
stores each record exactly once. A record the database rejects (NUL bytes in JSONB, values too
large, ...) is isolated: the batch is retried one record at a time inside savepoints and the
rejected record becomes a ``quarantine`` row with the error; the rest of the batch is stored.
Connection failures propagate (:func:`is_connection_error`) so the caller keeps the batch in
the spool and retries later.

Returns of ``fleet.inventory`` (and of ``grains.items``/``grains.item``) are also ingested:
the node row is upserted, the inventory snapshot is inserted if its digest is new, and the
caller is told which nodes' inventories changed so it can fire ``fleet/inventory/changed``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from saltext_fleet.store.models import (
    MINION_ID_LEN,
    Event,
    InventorySnapshot,
    Job,
    Node,
    NodeInventory,
    Quarantine,
    Return,
    utcnow,
)

log = logging.getLogger(__name__)

#: Largest record (as JSON) stored as is; larger ones are quarantined with the reason.
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: How much of a rejected record the quarantine keeps (escaped JSON text).
QUARANTINE_PAYLOAD_CHARS = 1024 * 1024

INVENTORY_FUNS = ("fleet.inventory",)
GRAINS_FUNS = ("grains.items", "grains.item")


class RecordRejected(ValueError):
    """A record that cannot be stored as it is (too large, malformed)."""


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means "the database is not reachable now", not "bad record"."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        name = type(orig).__name__ if orig is not None else ""
        module = type(orig).__module__ if orig is not None else ""
        if name in ("OperationalError", "InterfaceError") and "sqlite" not in module:
            return True
        if "sqlite" in module and "locked" in str(orig):
            return True
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


# -- making values storable -----------------------------------------------------------------


def jsonable(value: Any, depth: int = 0) -> Any:
    """Turn any Salt payload into JSON-compatible data.

    bytes become UTF-8 text when they decode, else ``{"__bytes_b64__": "..."}``; sets and
    tuples become lists; mapping keys become strings; anything else unknown becomes its repr.
    """
    if depth > 200:
        raise RecordRejected("record nested deeper than 200 levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # NaN/Infinity are not JSON.
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        )
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v, depth + 1) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"__bytes_b64__": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return repr(value)


def quarantine_payload(record: Any) -> tuple[str, int]:
    """The record as escaped JSON text (safe in any TEXT column) and its full size."""
    try:
        text = json.dumps(record, default=repr, ensure_ascii=True, sort_keys=True)
    except Exception as exc:  # noqa: BLE001 - anything at all must still be quarantined
        text = json.dumps(
            {"unserialisable": repr(record)[:QUARANTINE_PAYLOAD_CHARS], "error": str(exc)}
        )
    size = len(text)
    if size > QUARANTINE_PAYLOAD_CHARS:
        text = text[:QUARANTINE_PAYLOAD_CHARS] + "...(truncated)"
    return text, size


# -- row builders -----------------------------------------------------------------------------


def _clean_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MINION_ID_LEN:
        raise RecordRejected(
            f"{what} is not a string of 1-{MINION_ID_LEN} characters: {value!r:.80}"
        )
    return value


def _return_row(record: dict) -> dict:
    ret = record.get("ret")
    if not isinstance(ret, dict):
        raise RecordRejected(f"a return must be a mapping, got {type(ret).__name__}")
    ret = jsonable(ret)
    _check_size(ret)
    retcode = ret.get("retcode")
    return {
        "rid": record["rid"],
        "jid": _clean_id(str(ret.get("jid", "")), "jid"),
        "minion_id": _clean_id(ret.get("id"), "minion id"),
        "fun": str(ret.get("fun"))[:255] if ret.get("fun") is not None else None,
        "success": ret.get("success") if isinstance(ret.get("success"), bool) else None,
        "retcode": retcode
        if isinstance(retcode, int) and not isinstance(retcode, bool) and abs(retcode) < 2**31
        else None,
        "ret": ret.get("return"),
        "full_ret": ret,
        "stored_at": utcnow(),
    }


def _event_row(record: dict) -> dict:
    tag = record.get("tag")
    if not isinstance(tag, str) or not tag:
        raise RecordRejected(f"an event needs a tag string, got {tag!r:.80}")
    data = jsonable(record.get("data"))
    _check_size(data)
    master_id = record.get("master_id")
    return {
        "rid": record["rid"],
        "tag": tag,
        "data": data,
        "master_id": master_id if isinstance(master_id, str) else None,
        "stored_at": utcnow(),
    }


def _check_size(value: Any) -> None:
    # Cheap upper bound first; exact JSON size only for big values.
    size = len(json.dumps(value, default=repr))
    if size > MAX_RECORD_BYTES:
        raise RecordRejected(f"record of {size} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")


# -- the batch --------------------------------------------------------------------------------


class BatchResult:
    def __init__(self) -> None:
        self.stored = 0
        self.quarantined = 0
        #: [(minion_id, new_digest, previous_digest)] for fleet/inventory/changed
        self.inventory_changed: list[tuple[str, str, str | None]] = []


def write_batch(conn: Connection, records: Iterable[dict]) -> BatchResult:
    """Store ``records`` on ``conn`` (the caller commits). See the module docstring."""
    result = BatchResult()
    by_kind: dict[str, list[dict]] = {}
    for record in records:
        if not isinstance(record, dict) or record.get("__corrupt__"):
            _quarantine(
                conn,
                record if isinstance(record, dict) else {"record": record},
                "spool",
                (record or {}).get("error", "corrupt spool record")
                if isinstance(record, dict)
                else "not a mapping",
            )
            result.quarantined += 1
            continue
        by_kind.setdefault(str(record.get("kind")), []).append(record)
    for kind, group in by_kind.items():
        handler = _HANDLERS.get(kind)
        if handler is None:
            for record in group:
                _quarantine(conn, record, kind, f"unknown record kind {kind!r}")
                result.quarantined += 1
            continue
        handler(conn, group, result)
    return result


def _insert_ignoring_duplicates(conn: Connection, model, rows: list[dict]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    table = model.__table__
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=["rid"])
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["rid"])
    conn.execute(stmt, rows)


def _rows_or_quarantine(conn, group, kind, build, result) -> list[tuple[dict, dict]]:
    pairs = []
    for record in group:
        try:
            pairs.append((record, build(record)))
        except (RecordRejected, KeyError, TypeError, ValueError) as exc:
            _quarantine(conn, record, kind, f"{type(exc).__name__}: {exc}")
            result.quarantined += 1
    return pairs


def _store_isolating(conn: Connection, model, kind: str, pairs, result: BatchResult) -> list[dict]:
    """Insert all rows; if the database rejects the batch, isolate the bad rows."""
    if not pairs:
        return []
    rows = [row for _, row in pairs]
    try:
        with conn.begin_nested():
            _insert_ignoring_duplicates(conn, model, rows)
        result.stored += len(rows)
        return rows
    except SQLAlchemyError as exc:
        if is_connection_error(exc):
            raise
        log.warning(
            "saltext-fleet: a %s batch of %d was rejected (%s); isolating",
            kind,
            len(rows),
            exc.__class__.__name__,
        )
    stored = []
    for record, row in pairs:
        try:
            with conn.begin_nested():
                _insert_ignoring_duplicates(conn, model, [row])
            stored.append(row)
            result.stored += 1
        except SQLAlchemyError as exc:
            if is_connection_error(exc):
                raise
            _quarantine(conn, record, kind, _db_error(exc))
            result.quarantined += 1
    return stored


def _handle_returns(conn: Connection, group: list[dict], result: BatchResult) -> None:
    pairs = _rows_or_quarantine(conn, group, "return", _return_row, result)
    rows = _store_isolating(conn, Return, "return", pairs, result)
    _touch_nodes(conn, {row["minion_id"] for row in rows})
    for row in rows:
        if row["fun"] in INVENTORY_FUNS or row["fun"] in GRAINS_FUNS:
            _ingest(
                conn,
                row["minion_id"],
                row["fun"],
                row["ret"],
                row.get("success"),
                result,
                row["rid"],
            )


def _handle_events(conn: Connection, group: list[dict], result: BatchResult) -> None:
    pairs = _rows_or_quarantine(conn, group, "event", _event_row, result)
    rows = _store_isolating(conn, Event, "event", pairs, result)
    for row in rows:
        # With only event_return configured, inventories arrive as job return events.
        data = row["data"] if isinstance(row["data"], dict) else {}
        if (
            row["tag"].startswith("salt/job/")
            and "/ret/" in row["tag"]
            and data.get("fun") in INVENTORY_FUNS + GRAINS_FUNS
        ):
            minion = data.get("id")
            if isinstance(minion, str) and minion:
                _touch_nodes(conn, {minion})
                _ingest(
                    conn,
                    minion,
                    data["fun"],
                    data.get("return"),
                    data.get("success"),
                    result,
                    row["rid"],
                )


def _handle_loads(conn: Connection, group: list[dict], result: BatchResult) -> None:
    for record in group:
        try:
            jid = _clean_id(str(record.get("jid", "")), "jid")
            load = jsonable(record.get("load") or {})
            if not isinstance(load, dict):
                raise RecordRejected("a job load must be a mapping")
            _check_size(load)
            publish = bool(record.get("publish"))
            with conn.begin_nested():
                _upsert_job(conn, jid, load, publish, record.get("minions"))
            result.stored += 1
        except (RecordRejected, SQLAlchemyError, TypeError, ValueError) as exc:
            if isinstance(exc, SQLAlchemyError) and is_connection_error(exc):
                raise
            _quarantine(
                conn,
                record,
                "load",
                _db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc),
            )
            result.quarantined += 1


def _upsert_job(conn: Connection, jid: str, load: dict, publish: bool, minions) -> None:
    row = conn.execute(select(Job.jid, Job.publish, Job.minions).where(Job.jid == jid)).first()
    values = {
        "fun": str(load.get("fun"))[:255] if load.get("fun") is not None else None,
        "tgt": str(load.get("tgt")) if load.get("tgt") is not None else None,
        "tgt_type": str(load.get("tgt_type"))[:32] if load.get("tgt_type") is not None else None,
        "user": str(load.get("user"))[:255] if load.get("user") is not None else None,
        "load": load,
        "publish": publish,
    }
    new_minions = sorted({m for m in (minions or []) if isinstance(m, str)})
    if row is None:
        conn.execute(
            Job.__table__.insert().values(
                jid=jid, minions=new_minions or None, started_at=_jid_time(jid), **values
            )
        )
    elif publish and not row.publish:
        # The publish load wins over a load made from a return; the reverse never happens.
        if new_minions:
            values["minions"] = sorted(set(row.minions or []) | set(new_minions))
        conn.execute(update(Job).where(Job.jid == jid).values(**values))
    elif new_minions:
        conn.execute(
            update(Job)
            .where(Job.jid == jid)
            .values(minions=sorted(set(row.minions or []) | set(new_minions)))
        )


def _handle_minions(conn: Connection, group: list[dict], result: BatchResult) -> None:
    for record in group:
        try:
            jid = _clean_id(str(record.get("jid", "")), "jid")
            minions = record.get("minions") or []
            if not isinstance(minions, (list, tuple, set)):
                raise RecordRejected("minions must be a list")
            with conn.begin_nested():
                row = conn.execute(select(Job.jid).where(Job.jid == jid)).first()
                if row is None:
                    conn.execute(
                        Job.__table__.insert().values(
                            jid=jid, publish=False, minions=None, started_at=_jid_time(jid)
                        )
                    )
                _upsert_job_minions(conn, jid, minions)
            result.stored += 1
        except (RecordRejected, SQLAlchemyError) as exc:
            if isinstance(exc, SQLAlchemyError) and is_connection_error(exc):
                raise
            _quarantine(conn, record, "minions", str(exc))
            result.quarantined += 1


def _upsert_job_minions(conn: Connection, jid: str, minions) -> None:
    current = conn.execute(select(Job.minions).where(Job.jid == jid)).scalar()
    merged = sorted(set(current or []) | {m for m in minions if isinstance(m, str)})
    conn.execute(update(Job).where(Job.jid == jid).values(minions=merged))


def _handle_endtimes(conn: Connection, group: list[dict], result: BatchResult) -> None:
    for record in group:
        jid, endtime = str(record.get("jid", "")), record.get("endtime")
        if not jid or not isinstance(endtime, str):
            _quarantine(conn, record, "endtime", "an endtime needs a jid and a time string")
            result.quarantined += 1
            continue
        conn.execute(update(Job).where(Job.jid == jid).values(endtime=endtime[:64]))
        result.stored += 1


_HANDLERS = {
    "return": _handle_returns,
    "event": _handle_events,
    "load": _handle_loads,
    "minions": _handle_minions,
    "endtime": _handle_endtimes,
}


# -- nodes and inventories --------------------------------------------------------------------


def _touch_nodes(conn: Connection, minion_ids: set[str]) -> None:
    """Upsert ``nodes`` rows: first seen once, last seen now."""
    if not minion_ids:
        return
    now = utcnow()
    rows = [
        {"minion_id": m, "first_seen": now, "last_seen": now, "facts": {}}
        for m in sorted(minion_ids)
    ]
    table = Node.__table__
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table)
    else:
        stmt = sqlite.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["minion_id"], set_={"last_seen": stmt.excluded.last_seen}
    )
    conn.execute(stmt, rows)


def _ingest(conn, minion_id, fun, ret, success, result: BatchResult, rid) -> None:
    """Upsert a node's inventory or grains from a return; isolated from the batch."""
    if success is False:
        return
    try:
        with conn.begin_nested():
            if fun in INVENTORY_FUNS:
                change = ingest_inventory(conn, minion_id, ret)
                if change:
                    result.inventory_changed.append(change)
            else:
                ingest_grains(conn, minion_id, ret)
    except SQLAlchemyError as exc:
        if is_connection_error(exc):
            raise
        _quarantine(
            conn, {"rid": rid, "minion_id": minion_id, "fun": fun}, "ingest", _db_error(exc)
        )
        result.quarantined += 1
    except RecordRejected as exc:
        log.warning("saltext-fleet: %s return of %s not ingested: %s", fun, minion_id, exc)


def ingest_inventory(
    conn: Connection, minion_id: str, inv: Any
) -> tuple[str, str, str | None] | None:
    """Store an inventory; returns ``(minion, digest, previous)`` when the node's digest changed."""
    if not isinstance(inv, dict):
        raise RecordRejected(f"inventory of {minion_id} is not a mapping")
    digest = inv.get("digest")
    packages = inv.get("packages")
    if not isinstance(digest, str) or len(digest) != 64 or not isinstance(packages, dict):
        raise RecordRejected(f"inventory of {minion_id} has no digest or packages")
    exists = conn.execute(
        select(InventorySnapshot.digest).where(InventorySnapshot.digest == digest)
    ).first()
    if exists is None:
        count = sum(len(p) for p in packages.values() if isinstance(p, dict))
        conn.execute(
            InventorySnapshot.__table__.insert().values(
                digest=digest,
                packages=packages,
                sources=inv.get("sources") if isinstance(inv.get("sources"), dict) else {},
                facts=inv.get("facts") if isinstance(inv.get("facts"), dict) else {},
                package_count=count,
                created_at=utcnow(),
            )
        )
    previous = conn.execute(
        select(Node.inventory_digest).where(Node.minion_id == minion_id)
    ).scalar()
    now = utcnow()
    facts = inv.get("facts") if isinstance(inv.get("facts"), dict) else {}
    if previous == digest:
        conn.execute(update(Node).where(Node.minion_id == minion_id).values(inventory_at=now))
        return None
    conn.execute(
        update(Node)
        .where(Node.minion_id == minion_id)
        .values(inventory_digest=digest, inventory_at=now, facts=facts)
    )
    conn.execute(
        NodeInventory.__table__.insert().values(
            minion_id=minion_id, digest=digest, previous_digest=previous, seen_at=now
        )
    )
    return (minion_id, digest, previous)


def ingest_grains(conn: Connection, minion_id: str, grains: Any) -> None:
    if not isinstance(grains, dict):
        raise RecordRejected(f"grains of {minion_id} are not a mapping")
    conn.execute(update(Node).where(Node.minion_id == minion_id).values(grains=grains))


# -- quarantine -------------------------------------------------------------------------------


def _quarantine(conn: Connection, record: dict, kind: str, error: str) -> None:
    payload, size = quarantine_payload(record)
    rid = record.get("rid") if isinstance(record, dict) else None
    log.warning("saltext-fleet: quarantined a %s record (%s): %s", kind, rid, error[:300])
    conn.execute(
        Quarantine.__table__.insert().values(
            rid=rid if isinstance(rid, str) else None,
            kind=kind[:32],
            error=error[:4000],
            payload=payload,
            payload_bytes=size,
            stored_at=utcnow(),
        )
    )


def _db_error(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {str(orig or exc).splitlines()[0][:500]}"


def _jid_time(jid: str) -> dt.datetime:
    """A jid is a timestamp (YYYYmmddHHMMSSffffff); fall back to now for odd ones."""
    try:
        return dt.datetime.strptime(jid[:20], "%Y%m%d%H%M%S%f").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return utcnow()
