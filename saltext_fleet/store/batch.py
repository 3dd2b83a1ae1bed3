"""Write a batch of spooled records to the database in one transaction.

A record is a dict with ``kind`` and ``rid`` (unique id) plus kind-specific fields:

``return``   ``{"ret": <Salt return load>, "master_id": <this master's id>}``: a job return
             (``jid``, ``id``, ``fun``, ...) and the master whose job cache stored it. The
             master's writer spools it encoded (:func:`encode_record`): ``"ret_rest_json"``
             (the load without ``return``, as JSON text) and ``"ret_value_json"`` (the
             ``return``, as JSON text; None when the load has none) instead of ``"ret"``
``event``    ``{"tag", "data", "master_id"}``; encoded, ``"data_json"`` instead of ``"data"``
``load``     ``{"jid", "load", "publish": bool, "minions": [...] | None}``
``minions``  ``{"jid", "minions": [...]}`` (added to the job's minion list); with
             ``"syndic_id"`` (the id of the connection Salt authenticated), ``"master_id"`` (this
             master's id) and ``"claims"`` (the minions it may claim to carry,
             :func:`saltext_fleet.core.carriers.claimed_minions`) also ``job_carriers`` rows
``endtime``  ``{"jid", "endtime"}``

Returns and events are inserted with ``ON CONFLICT (rid) DO NOTHING`` so a replayed batch
stores each record exactly once. A return's rid is derived from the return itself
(:func:`return_rid`: jid, minion id, function, arguments, return value, retcode, success), so
the masters of a hot-hot multi-master fleet that share the store also store it once; only the
returns a batch really inserted feed the nodes (inventory, grains, pending states). Events keep
a random rid: each master's bus stamps its own, and nothing tells one event heard by two
masters from two alike events. A record the database rejects (NUL bytes in JSONB, values too
large, ...) is isolated: the batch is retried one record at a time inside savepoints and the
rejected record becomes a ``quarantine`` row with the error; the rest of the batch is stored.
Connection failures propagate (:func:`is_connection_error`) so the caller keeps the batch in
the spool and retries later.

Returns of ``fleet.inventory`` (and of ``grains.items``/``grains.item``) are also ingested:
the node row is upserted, the inventory snapshot is inserted if its digest is new, and the
caller is told which nodes' inventories changed so it can fire ``fleet/inventory/changed``.
The inventories of a batch are ingested together (a handful of statements per batch, not per
inventory); if the database rejects that, each one is retried alone in its own savepoint.

Who a record speaks for
-----------------------
Node data (inventory, facts, grains, pending states, ``last_seen``) is taken only from
``return`` records of minion jobs (a runner's or wheel's return carries the id of the master
that ran it: only minions are nodes), whose minion id is the one Salt authenticated (the job cache's
``returner()`` load, which the master's ``_return`` hands over after checking the sender).
Events are stored as events and nothing more: a minion may fire ``salt/job/<jid>/ret/<other>``
itself, and an event in a minion's ``events`` batch reaches the bus exactly as the sender wrote
it, so no field of an event says who sent it. The inventory digest a minion reports is a claim
too: snapshots are content-addressed by the digest the master computes over the content it
stores (:func:`saltext_fleet.core.inventory.inventory_digest`), so a minion cannot park other
content under the digest its neighbours will report next.

How it stays fast
-----------------
Each payload is serialised to JSON text once, by the C encoder of the standard library, and
that text goes to the database as is (``full_ret`` is spliced from the encoded ``return``, not
encoded a second time). The master's writer encodes returns and events when it spools them
(:func:`encode_record`): the spool holds the JSON text, which its msgpack frames carry as one
string, so the flusher neither unpacks a return's objects nor encodes them again, and decodes
a return's value only where it feeds a node (inventory, grains, state runs). Only payloads
the encoder refuses (bytes, sets, NaN, odd keys) take the slow path through :func:`jsonable`. On PostgreSQL the returns and events of a batch are written
with ``COPY ... FROM STDIN`` inside a savepoint, after one indexed look-up drops the rids that
are already stored (a replay): the unique index on ``rid`` still guarantees exactly once, and
if the ``COPY`` fails for any reason other than the connection (a duplicate that raced in, a
value the database rejects) the savepoint is rolled back and the batch takes the
``INSERT ... ON CONFLICT (rid) DO NOTHING`` path with per-record isolation described above.
Records whose JSON holds ``\\u0000`` (which JSONB refuses) go to that path directly.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import msgpack
from sqlalchemy import DateTime, Text, bindparam, cast, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError

from saltext_fleet.core.carriers import CarrierClaimError
from saltext_fleet.core.dburl import AWAY_SQLSTATES
from saltext_fleet.core.drift import pending_states, state_run
from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.inventory import inventory_digest
from saltext_fleet.core.redact import redact, redact_text
from saltext_fleet.store.carriers import record_carriers
from saltext_fleet.store.drift import set_pending_states
from saltext_fleet.store.models import (
    MINION_ID_LEN,
    RID_LEN,
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


class RecordRejected(FleetError, ValueError):
    """A record that cannot be stored as it is (too large, malformed)."""


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means "the database is not reachable now", not "bad record".

    A standby that is still read-only (SQLSTATE 25006, a failover under way) and a server
    shutting down count as away: the batch waits in the spool, never in the quarantine.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        sqlstate = str(getattr(orig, "sqlstate", None) or "")
        if sqlstate in AWAY_SQLSTATES or sqlstate.startswith("08"):  # 08: connection exception
            return True
        name = type(orig).__name__ if orig is not None else ""
        module = type(orig).__module__ if orig is not None else ""
        if name in ("OperationalError", "InterfaceError") and "sqlite" not in module:
            return True
        if "sqlite" in module and "locked" in str(orig):
            return True
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


#: SQLSTATEs of errors that say "try the transaction again", not "bad record": a deadlock
#: between two writers, a serialization failure.
_TRANSIENT_SQLSTATES = ("40P01", "40001")


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` aborts this attempt but the same batch will go in when retried."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES
    return False


def must_retry_batch(exc: BaseException) -> bool:
    """Errors that must leave the whole batch in the spool (retried), never quarantined."""
    return is_connection_error(exc) or is_transient(exc)


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


# -- JSON text --------------------------------------------------------------------------------

#: The standard library's C encoder, compact; NaN and Infinity are refused (and then made
#: strings by :func:`jsonable`, the slow path). No cycle check: a cycle ends in RecursionError,
#: which sends the value to :func:`jsonable`, which rejects it as too deep.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":"), check_circular=False).encode
#: What the encoder raises for values it cannot encode as they are.
_ENCODE_ERRORS = (TypeError, ValueError, RecursionError)
#: How an escaped U+0000 looks in JSON text: PostgreSQL's JSONB refuses it.
_NUL_ESCAPE = "\\u0000"


def to_json(value: Any) -> tuple[str, Any]:
    """``(JSON text, the value it encodes)`` for any payload.

    JSON-ready values (the usual case) are encoded once, at C speed, and returned unchanged;
    anything else goes through :func:`jsonable` first (which may raise :class:`RecordRejected`).
    The only difference from encoding ``jsonable(value)``: boolean and ``None`` mapping keys
    become ``"true"``/``"false"``/``"null"`` (JSON's spelling) instead of ``"True"``/``"None"``.
    """
    try:
        return _encode(value), value
    except _ENCODE_ERRORS:
        value = jsonable(value)
        return _encode(value), value


def _check_length(text_: str) -> None:
    # ensure_ascii: one character is one byte.
    if len(text_) > MAX_RECORD_BYTES:
        raise RecordRejected(
            f"record of {len(text_)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit"
        )


# -- row builders -----------------------------------------------------------------------------


def _clean_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MINION_ID_LEN:
        raise RecordRejected(
            f"{what} is not a string of 1-{MINION_ID_LEN} characters: {value!r:.80}"
        )
    return value


def _clean_rid(record: dict) -> str:
    rid = record["rid"]
    if not isinstance(rid, str) or not rid or len(rid) > RID_LEN:
        raise RecordRejected(f"rid is not a string of 1-{RID_LEN} characters: {rid!r:.80}")
    return rid


def _encode_parts(ret: dict) -> tuple[dict, Any, str | None, str]:
    """``(the load without "return", the return value, its JSON or None when the load has no
    "return", the JSON of the load without it)``."""
    has_return = "return" in ret
    try:
        value = ret.get("return")
        rest = {k: v for k, v in ret.items() if k != "return"} if has_return else ret
        value_json, rest_json = _encode(value), _encode(rest)
    except _ENCODE_ERRORS:
        clean = jsonable(ret)
        has_return = "return" in clean
        value = clean.get("return")
        rest = {k: v for k, v in clean.items() if k != "return"}
        value_json, rest_json = _encode(value), _encode(rest)
    return rest, value, value_json if has_return else None, rest_json


def _splice(rest_json: str, value_json: str | None) -> str:
    """The whole load's JSON: the rest's object with ``"return"`` (when there is one) last."""
    if value_json is None:
        return rest_json
    sep = "," if len(rest_json) > 2 else ""
    return f'{rest_json[:-1]}{sep}"return":{value_json}}}'


def _encode_return(ret: dict) -> tuple[dict, Any, str, str]:
    """``(the load without "return", the return value, its JSON, the whole load's JSON)``.

    The return value (the big part) is encoded once; the load's JSON is the rest of the load
    with that text spliced in.
    """
    rest, value, value_json, rest_json = _encode_parts(ret)
    return _return_parts(rest, value, value_json, rest_json)


def _return_parts(rest: dict, value: Any, value_json: str | None, rest_json: str) -> tuple:
    """What :func:`return_row` takes: the value's JSON (``null`` for a load without
    ``return``) and the whole load's JSON spliced from the parts."""
    return rest, value, "null" if value_json is None else value_json, _splice(rest_json, value_json)


def encode_record(record: dict) -> dict:
    """``record`` (redacted: :func:`redact_record`) with a return's load or an event's data as
    JSON text, as the master's writer spools it; see the module docstring. A payload the
    encoder cannot take at all (nested too deep, an object whose ``repr`` raises) stays as it
    is: the spool takes it as before and its write stores or quarantines it; nothing is lost
    because it could not be encoded here. Changes and returns ``record``."""
    if not record.get("redacted"):
        return record  # never encode what was not masked first
    kind = record.get("kind")
    try:
        if kind == "return" and isinstance(record.get("ret"), dict):
            _, _, value_json, rest_json = _encode_parts(record["ret"])
            del record["ret"]
            record["ret_rest_json"], record["ret_value_json"] = rest_json, value_json
        elif kind == "event" and "data" in record:
            record["data_json"] = to_json(record["data"])[0]
            del record["data"]
    except Exception:  # left for the spool and the write path, as before
        log.debug("saltext-fleet: a %s record is spooled unencoded", kind, exc_info=True)
    return record


class _InventoryMemo:
    """The last inventories the flusher decoded, by their exact JSON text, with their digest.

    A fleet's nodes report the same inventory again and again (a node that did not change,
    the nodes of one image), and decoding and hashing 1,500 packages is most of a return's
    cost to the flusher. The decoded value is shared by the rows that reported the same
    text; the ingest only reads it. Bounded (``size`` entries, least recently used first
    out), and safe between threads."""

    def __init__(self, size: int = 32):
        self.size = size
        self._entries: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._by_id: dict[int, list] = {}
        self._lock = threading.Lock()

    def value(self, text: str) -> Any:
        """``json.loads(text)``, the same object for the same text while it is remembered."""
        with self._lock:
            entry = self._entries.get(text)
            if entry is not None:
                self._entries.move_to_end(text)
                return entry[0]
        value = json.loads(text)
        entry = [value, None]
        with self._lock:
            self._entries[text] = entry
            self._by_id[id(value)] = entry
            while len(self._entries) > self.size:
                _, old = self._entries.popitem(last=False)
                self._by_id.pop(id(old[0]), None)
        return value

    def digest(self, inv: Any, compute) -> str:
        """``compute()``, the digest of ``inv``, once per remembered value."""
        with self._lock:
            entry = self._by_id.get(id(inv))
        if entry is None or entry[0] is not inv:
            return compute()
        if entry[1] is None:
            entry[1] = compute()
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_id.clear()


INVENTORY_MEMO = _InventoryMemo()


def _decoded_return(record: dict) -> tuple[dict, Any, str, str]:
    """What :func:`_encode_return` gives, from an encoded return record (the value decoded
    only where it feeds a node: :data:`_INGESTED_FUNS`, state runs; else None)."""
    rest_json, value_json = record["ret_rest_json"], record.get("ret_value_json")
    if not isinstance(rest_json, str) or not (value_json is None or isinstance(value_json, str)):
        raise RecordRejected("an encoded return's JSON fields must be text")
    rest = json.loads(rest_json)
    if not isinstance(rest, dict):
        raise RecordRejected(f"a return must be a mapping, got {type(rest).__name__}")
    value = None
    fun = str(rest.get("fun"))[:255] if rest.get("fun") is not None else None  # as in the row
    if value_json is not None and fun in INVENTORY_FUNS:
        value = INVENTORY_MEMO.value(value_json)
    elif value_json is not None and (
        fun in _INGESTED_FUNS or state_run(fun, rest.get("fun_args")) is not None
    ):
        value = json.loads(value_json)
    return _return_parts(rest, value, value_json, rest_json)


#: The field of a record that may hold secrets, by kind.
_SECRET_FIELD = {"return": "ret", "event": "data", "load": "load"}


def redact_record(record: Any) -> Any:
    """``record`` with its secrets masked (:mod:`saltext_fleet.core.redact`) and marked
    ``redacted``: done once, before the record is spooled, kept locally or stored, so that no
    secret reaches a disk in clear. Package listings are data and stay as they are."""
    if not isinstance(record, dict) or record.get("redacted"):
        return record
    field = _SECRET_FIELD.get(record.get("kind"))
    if field is not None and field in record:
        record[field] = redact(record[field])
    record["redacted"] = True
    return record


def _redacted(data: Any, record: dict) -> Any:
    """``data`` of ``record`` with secrets masked, unless :func:`redact_record` did it."""
    return data if record.get("redacted") else redact(data)


#: The fields of a return load that make up the return itself: what every master that hears
#: the return receives identically. Not the master's own additions (``_stamp``, set by each
#: master's event bus, tracing headers), which differ between masters.
RETURN_IDENTITY_FIELDS = ("jid", "id", "fun", "fun_args", "return", "retcode", "success")


def return_rid(ret: Any) -> str:
    """The record id of a job return: a SHA-256 over its jid, its (authenticated) minion id
    and the return itself (:data:`RETURN_IDENTITY_FIELDS`), so that every master of a
    multi-master fleet that stores the same return gives it the same id, and the second
    insert is a no-op (``rid`` is unique). Called on the redacted return (no digest of a
    secret is ever stored). A return that is not a mapping gets a random id (it is
    quarantined anyway)."""
    if not isinstance(ret, dict):
        return uuid.uuid4().hex
    identity = [[key, ret.get(key)] for key in RETURN_IDENTITY_FIELDS]
    try:
        try:
            packed = msgpack.packb(identity, use_bin_type=True, default=repr)
        except (TypeError, ValueError, OverflowError):
            packed = json.dumps(identity, default=repr, sort_keys=True).encode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - an object whose repr raises (a runner's): stored anyway
        return uuid.uuid4().hex
    return hashlib.sha256(b"fleet-return\0" + packed).hexdigest()


def return_row(record: dict, now: dt.datetime) -> dict:
    """The ``returns`` row of a ``return`` record (:class:`RecordRejected` if it has none)."""
    if "ret_rest_json" in record:  # encoded by the master's writer (encode_record)
        rest, value, value_json, full_json = _decoded_return(record)
    else:
        ret = record.get("ret")
        if not isinstance(ret, dict):
            raise RecordRejected(f"a return must be a mapping, got {type(ret).__name__}")
        ret = _redacted(ret, record)
        rest, value, value_json, full_json = _encode_return(ret)
    _check_length(full_json)
    retcode = rest.get("retcode")
    success = rest.get("success")
    return {
        "rid": _clean_rid(record),
        "jid": _clean_id(str(rest.get("jid", "")), "jid"),
        "minion_id": _clean_id(rest.get("id"), "minion id"),
        "fun": str(rest.get("fun"))[:255] if rest.get("fun") is not None else None,
        "success": success if isinstance(success, bool) else None,
        "retcode": retcode
        if isinstance(retcode, int) and not isinstance(retcode, bool) and abs(retcode) < 2**31
        else None,
        "ret_json": value_json,
        "full_json": full_json,
        "stored_at": now,
        # write_batch is the master's path: the job cache's returner(), whose minion id Salt
        # authenticated (a minion's own writes go through store/minion.py, without it)
        "authenticated": True,
        # the master's own id, put in the record by its returner; never ret["master_id"]
        # (which master published the job, as the minion says)
        "master_id": _master_id(record),
        # not columns: JSON that PostgreSQL will refuse (full_json holds the return's JSON)
        "suspicious": _NUL_ESCAPE in full_json,
        # not columns: the return value, for inventory and grains ingest
        "value": value,
        "fun_args": rest.get("fun_args"),
    }


def _master_id(record: dict) -> str | None:
    master_id = record.get("master_id")
    return master_id if isinstance(master_id, str) and 0 < len(master_id) <= MINION_ID_LEN else None


def event_row(record: dict, now: dt.datetime) -> dict:
    """The ``events`` row of an ``event`` record (:class:`RecordRejected` if it has none)."""
    tag = record.get("tag")
    if not isinstance(tag, str) or not tag:
        raise RecordRejected(f"an event needs a tag string, got {tag!r:.80}")
    if "data_json" in record:  # encoded by the master's writer (encode_record)
        data_json = record["data_json"]
        if not isinstance(data_json, str):
            raise RecordRejected("an encoded event's data must be JSON text")
    else:
        data_json = to_json(_redacted(record.get("data"), record))[0]
    _check_length(data_json)
    master_id = record.get("master_id")
    return {
        "rid": _clean_rid(record),
        "tag": tag,
        "data_json": data_json,
        "master_id": master_id if isinstance(master_id, str) else None,
        "stored_at": now,
        "suspicious": _NUL_ESCAPE in data_json,
    }


def _check_size(value: Any) -> None:
    _check_length(json.dumps(value, default=repr))


class TableSpec:
    """How rows of one kind (returns, events) are written: columns, JSON columns, COPY."""

    def __init__(self, model, columns: dict[str, str], json_columns: dict[str, str]):
        #: ``columns`` maps each column to its PostgreSQL type (binary COPY needs them);
        #: ``json_columns`` maps a JSON column to the row key holding its JSON text.
        self.model = model
        self.table = model.__table__
        self.columns = tuple(columns)
        self.pg_types = list(columns.values())
        self.json_columns = json_columns
        self.keys = [json_columns.get(c, c) for c in columns]
        names = ", ".join(f'"{c}"' for c in columns)
        self.copy_sql = f"COPY {self.table.name} ({names}) FROM STDIN (FORMAT BINARY)"
        self.existing_sql = text(f"SELECT rid FROM {self.table.name} WHERE rid = ANY(:rids)")
        self._statements: dict[str, Any] = {}

    def copy_tuple(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.keys)

    def insert_statement(self, dialect: str):
        """``INSERT ... ON CONFLICT (rid) DO NOTHING`` taking the JSON columns as text."""
        stmt = self._statements.get(dialect)
        if stmt is None:
            values = {}
            for column in self.columns:
                key = self.json_columns.get(column)
                if key is None:
                    typ = DateTime(timezone=True) if column == "stored_at" else None
                    values[column] = bindparam(column, type_=typ)
                elif dialect == "postgresql":
                    values[column] = cast(bindparam(key, type_=Text), postgresql.JSONB)
                else:
                    values[column] = bindparam(key, type_=Text)
            ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = ins(self.table).values(values).on_conflict_do_nothing(index_elements=["rid"])
            self._statements[dialect] = stmt
        return stmt

    def params(self, row: dict) -> dict:
        return {k: row[k] for k in self.keys}

    @staticmethod
    def suspicious(row: dict) -> bool:
        """JSON that PostgreSQL will refuse (an escaped NUL): isolate it from the start."""
        return row["suspicious"]


RETURNS_TABLE = TableSpec(
    Return,
    {
        "rid": "varchar",
        "jid": "varchar",
        "minion_id": "varchar",
        "fun": "varchar",
        "success": "bool",
        "retcode": "int4",
        "return": "jsonb",
        "full_ret": "jsonb",
        "stored_at": "timestamptz",
        "authenticated": "bool",
        "master_id": "varchar",
    },
    {"return": "ret_json", "full_ret": "full_json"},
)
EVENTS_TABLE = TableSpec(
    Event,
    {
        "rid": "varchar",
        "tag": "text",
        "data": "jsonb",
        "master_id": "varchar",
        "stored_at": "timestamptz",
    },
    {"data": "data_json"},
)


class _JsonText(str):
    """Marker type for the dumper below (registered by oid: the str values use it)."""


def _jsonb_text_dumper():
    """psycopg binary dumper that sends JSON *text* as jsonb (format version 1 + UTF-8)."""
    # psycopg is the PostgreSQL driver: imported when a batch first goes to PostgreSQL (as
    # SQLAlchemy does), so a store on SQLite never loads it.
    import psycopg
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class JsonbTextBinaryDumper(Dumper):
        format = Format.BINARY
        oid = psycopg.postgres.types["jsonb"].oid

        def dump(self, obj):
            return b"\x01" + obj.encode("utf-8")

    return JsonbTextBinaryDumper


# -- the batch --------------------------------------------------------------------------------


class BatchResult:
    def __init__(self) -> None:
        self.stored = 0
        self.quarantined = 0
        #: [(minion_id, new_digest, previous_digest)] for fleet/inventory/changed
        self.inventory_changed: list[tuple[str, str, str | None]] = []
        #: ``[(minion, pending states, test run?)]`` of the state runs in the batch
        self.states_run: list[tuple[str, int, bool]] = []
        #: minions whose grains report other signing identities than before (for
        #: ``fleet/certs/changed``: their certificate expiry is checked at once)
        self.certs_changed: list[str] = []


def write_batch(conn: Connection, records: Iterable[dict]) -> BatchResult:
    """Store ``records`` on ``conn`` (the caller commits). See the module docstring."""
    result = BatchResult()
    by_kind: dict[str, list[dict]] = {}
    for record in records:
        if not isinstance(record, dict) or record.get("__corrupt__"):
            quarantine_record(
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
    # A fixed order of kinds, and jids sorted within them: every writer takes its row locks
    # in the same order, so two master processes never deadlock on each other's batches.
    order = {kind: n for n, kind in enumerate(_HANDLERS)}
    for kind in sorted(by_kind, key=lambda k: (order.get(k, len(order)), k)):
        group = by_kind[kind]
        handler = _HANDLERS.get(kind)
        if handler is None:
            for record in group:
                quarantine_record(conn, record, kind, f"unknown record kind {kind!r}")
                result.quarantined += 1
            continue
        handler(conn, group, result)
    return result


def _insert_ignoring_duplicates(conn: Connection, spec: TableSpec, rows: list[dict]) -> set[str]:
    """Insert ``rows``, skipping rids that are stored already; the rids really inserted."""
    if not rows:
        return set()
    stmt = spec.insert_statement(conn.dialect.name).returning(spec.table.c.rid)
    return set(conn.execute(stmt, [spec.params(row) for row in rows]).scalars())


def _rows_or_quarantine(conn, group, kind, build, result) -> list[tuple[dict, dict]]:
    pairs = []
    now = utcnow()
    for record in group:
        try:
            pairs.append((record, build(record, now)))
        except (RecordRejected, KeyError, TypeError, ValueError) as exc:
            quarantine_record(conn, record, kind, f"{type(exc).__name__}: {exc}")
            result.quarantined += 1
    return pairs


def _store_group(conn: Connection, group: list[dict], kind: str, spec: TableSpec, build, result):
    """Build and store the rows of ``group``; returns the rows this call inserted (not those
    stored before: a replay, or the same return stored by another master of the fleet, whose
    rid is the same, :func:`return_rid`).

    Records that cannot be built are quarantined; rows the database refuses are isolated and
    quarantined (:func:`_store_isolating`). On PostgreSQL the rows are built while ``COPY``
    streams them, so the server parses one part of the batch while this process encodes the
    next.
    """
    if conn.dialect.name != "postgresql":
        pairs = _rows_or_quarantine(conn, group, kind, build, result)
        return _store_isolating(conn, spec, kind, pairs, result)
    now = utcnow()
    built: list[tuple[dict, dict]] = []
    rejected: list[tuple[dict, Exception]] = []
    seen: set[str] = set(
        conn.execute(
            spec.existing_sql,
            {"rids": [r["rid"] for r in group if isinstance(r.get("rid"), str)]},
        ).scalars()
    )

    def new_rows():
        for record in group:
            try:
                row = build(record, now)
            except (RecordRejected, KeyError, TypeError, ValueError) as exc:
                rejected.append((record, exc))
                continue
            built.append((record, row))
            # Stored already (a replay) or twice in this batch: nothing to write. Suspicious
            # JSON is isolated after the COPY instead of failing it.
            if row["rid"] in seen or spec.suspicious(row):
                continue
            seen.add(row["rid"])
            copied.append(row)
            yield row

    copied: list[dict] = []  # the rows the COPY streams (new ones only)
    rows = new_rows()
    done = False
    try:
        with conn.begin_nested():
            _copy_rows(conn, spec, rows)
        done = True
    except SQLAlchemyError as exc:
        if must_retry_batch(exc):
            raise
        log.warning(
            "saltext-fleet: COPY of a %s batch of %d failed (%s); inserting instead",
            kind,
            len(group),
            describe_db_error(exc),
        )
    for _ in rows:  # build what an interrupted COPY left unbuilt
        pass
    for record, exc in rejected:
        quarantine_record(conn, record, kind, f"{type(exc).__name__}: {exc}")
        result.quarantined += 1
    if not done:
        return _store_isolating(conn, spec, kind, built, result)
    result.stored += sum(1 for _, row in built if not spec.suspicious(row))
    odd = [(record, row) for record, row in built if spec.suspicious(row)]
    return copied + _store_isolating(conn, spec, kind, odd, result)


_JSONB_DUMPER = None


def _copy_rows(conn: Connection, spec: TableSpec, rows: Iterable[dict]) -> None:
    """COPY ``rows`` into the table (PostgreSQL; the caller holds a savepoint)."""
    import psycopg  # the PostgreSQL driver, only where the store is on PostgreSQL

    global _JSONB_DUMPER
    if _JSONB_DUMPER is None:
        _JSONB_DUMPER = _jsonb_text_dumper()
    dbapi_conn = conn.connection.dbapi_connection
    try:
        with dbapi_conn.cursor() as cur:
            # Binary COPY: no text-format escaping on either side; the JSON columns carry
            # the JSON text as is (this cursor's own adapters, nobody else's).
            cur.adapters.register_dumper(_JsonText, _JSONB_DUMPER)
            with cur.copy(spec.copy_sql) as copy:
                copy.set_types(spec.pg_types)
                for row in rows:  # what building a row raises propagates as it is
                    try:
                        copy.write_row(spec.copy_tuple(row))
                    except psycopg.Error:
                        raise
                    except Exception as exc:  # a value the driver cannot send
                        raise StatementError(
                            f"{type(exc).__name__}: {exc}", spec.copy_sql, None, exc
                        ) from exc
    except psycopg.Error as exc:
        # Raised by the driver, not through SQLAlchemy: give it SQLAlchemy's shape so that
        # is_connection_error() and the isolation see it like any other database error.
        raise DBAPIError.instance(
            spec.copy_sql,
            None,
            exc,
            psycopg.Error,
            connection_invalidated=bool(getattr(dbapi_conn, "broken", False)),
        ) from exc


#: What inserting a row raises when the row (not the connection) is the problem. Drivers raise
#: UnicodeEncodeError themselves (a lone surrogate), and SQLAlchemy passes it on unwrapped.
ROW_ERRORS = (SQLAlchemyError, UnicodeError)


def _store_isolating(
    conn: Connection, spec: TableSpec, kind: str, pairs, result: BatchResult
) -> list[dict]:
    """Insert all rows; if the database rejects the batch, isolate the bad rows. Returns the
    rows inserted (not those whose rid was stored already)."""
    if not pairs:
        return []
    rows = [row for _, row in pairs]
    if conn.dialect.name != "postgresql" or not any(spec.suspicious(row) for row in rows):
        try:
            with conn.begin_nested():
                inserted = _insert_ignoring_duplicates(conn, spec, rows)
            result.stored += len(rows)
            return _first_of_each(rows, inserted)
        except ROW_ERRORS as exc:
            if must_retry_batch(exc):
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
                if _insert_ignoring_duplicates(conn, spec, [row]):
                    stored.append(row)
            result.stored += 1
        except ROW_ERRORS as exc:
            if must_retry_batch(exc):
                raise
            quarantine_record(conn, record, kind, describe_db_error(exc))
            result.quarantined += 1
    return stored


def _first_of_each(rows: list[dict], inserted: set[str]) -> list[dict]:
    """The rows whose rid is in ``inserted``, each rid once (a batch may hold a record twice)."""
    out = []
    for row in rows:
        if row["rid"] in inserted:
            inserted.discard(row["rid"])
            out.append(row)
    return out


_INGESTED_FUNS = INVENTORY_FUNS + GRAINS_FUNS


def _handle_returns(conn: Connection, group: list[dict], result: BatchResult) -> None:
    # Only the returns this batch inserted feed the nodes: the same return stored again (a
    # replay, or another master of the fleet that heard it too) changes nothing, so an
    # inventory change is ingested and announced once for the fleet.
    rows = _store_group(conn, group, "return", RETURNS_TABLE, return_row, result)
    _touch_nodes(
        conn,
        {row["minion_id"]: row["master_id"] for row in rows if not is_master_job(row["fun"])},
    )
    _ingest_many(
        conn,
        [
            (row["minion_id"], row["fun"], row["value"], row["success"], row["rid"])
            for row in rows
            if row["fun"] in _INGESTED_FUNS
        ],
        result,
    )
    _ingest_state_tests(
        conn,
        [(row["minion_id"], row["fun"], row["fun_args"], row["value"]) for row in rows],
        result,
    )


def _ingest_state_tests(conn: Connection, items: list[tuple], result: BatchResult) -> None:
    """Record what state runs left to do on each node (highstate compliance, a drift signal).

    A ``test=True`` run counts the changes it would make; a real run the states that failed.
    """
    now = utcnow()
    latest: dict[str, tuple[int, bool]] = {}
    for minion_id, fun, fun_args, value in items:
        kind = state_run(fun, fun_args)
        if kind is None:
            continue
        pending = pending_states(value, test=kind == "test")
        if pending is not None:
            latest[minion_id] = (pending, kind == "test")
    if not latest:
        return
    try:
        with conn.begin_nested():
            set_pending_states(
                conn, [{"m": m, "n": n, "at": now} for m, (n, _) in sorted(latest.items())]
            )
    except SQLAlchemyError as exc:
        if must_retry_batch(exc):
            raise
        log.warning("saltext-fleet: pending states not recorded: %s", describe_db_error(exc))
        return
    result.states_run.extend((m, n, test) for m, (n, test) in sorted(latest.items()))


def _handle_events(conn: Connection, group: list[dict], result: BatchResult) -> None:
    # Stored as events only: nothing in an event says who sent it (module docstring), so no
    # node data is ever taken from one, job return events included.
    _store_group(conn, group, "event", EVENTS_TABLE, event_row, result)


def _by_jid(group: list[dict]) -> list[dict]:
    return sorted(group, key=lambda record: str(record.get("jid", "")))


def _handle_loads(conn: Connection, group: list[dict], result: BatchResult) -> None:
    for record in _by_jid(group):
        try:
            jid = _clean_id(str(record.get("jid", "")), "jid")
            load = _redacted(jsonable(record.get("load") or {}), record)
            if not isinstance(load, dict):
                raise RecordRejected("a job load must be a mapping")
            _check_size(load)
            publish = bool(record.get("publish"))
            with conn.begin_nested():
                _upsert_job(conn, jid, load, publish, record.get("minions"))
            result.stored += 1
        except (RecordRejected, SQLAlchemyError, TypeError, ValueError) as exc:
            if isinstance(exc, SQLAlchemyError) and must_retry_batch(exc):
                raise
            quarantine_record(
                conn,
                record,
                "load",
                describe_db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc),
            )
            result.quarantined += 1


def _insert_job_if_absent(conn: Connection, jid: str, **values) -> None:
    """Create the job row unless another process already did (no check-then-insert race)."""
    table = Job.__table__
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(table).values(jid=jid, started_at=_jid_time(jid), **values)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["jid"]))


def _lock_job(conn: Connection, jid: str):
    """The job row, locked for this transaction where the database can (PostgreSQL)."""
    stmt = select(Job.jid, Job.publish, Job.minions).where(Job.jid == jid)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first()


def _upsert_job(conn: Connection, jid: str, load: dict, publish: bool, minions) -> None:
    values = {
        "fun": str(load.get("fun"))[:255] if load.get("fun") is not None else None,
        "tgt": str(load.get("tgt")) if load.get("tgt") is not None else None,
        "tgt_type": str(load.get("tgt_type"))[:32] if load.get("tgt_type") is not None else None,
        "user": str(load.get("user"))[:255] if load.get("user") is not None else None,
        "load": load,
        "publish": publish,
    }
    new_minions = sorted({m for m in (minions or []) if isinstance(m, str)})
    # Several master processes write loads of the same job at once (the publish, and each
    # return's load): insert-if-absent, then update under a row lock.
    _insert_job_if_absent(conn, jid, minions=new_minions or None, **values)
    row = _lock_job(conn, jid)
    if publish and not row.publish:
        # The publish load wins over a load made from a return; the reverse never happens.
        values["minions"] = sorted(set(row.minions or []) | set(new_minions)) or None
        conn.execute(update(Job).where(Job.jid == jid).values(**values))
    elif new_minions and not set(new_minions) <= set(row.minions or []):
        merged = sorted(set(row.minions or []) | set(new_minions))
        conn.execute(update(Job).where(Job.jid == jid).values(minions=merged))


def _handle_minions(conn: Connection, group: list[dict], result: BatchResult) -> None:
    for record in _by_jid(group):
        try:
            jid = _clean_id(str(record.get("jid", "")), "jid")
            minions = record.get("minions") or []
            if not isinstance(minions, (list, tuple, set)):
                raise RecordRejected("minions must be a list")
            with conn.begin_nested():
                _insert_job_if_absent(conn, jid, publish=False, minions=None)
                _upsert_job_minions(conn, jid, minions)
                if record.get("syndic_id") is not None:
                    record_carriers(
                        conn,
                        jid,
                        record.get("claims") or [],
                        record["syndic_id"],
                        _master_id(record),
                    )
            result.stored += 1
        except (RecordRejected, CarrierClaimError, SQLAlchemyError) as exc:
            if isinstance(exc, SQLAlchemyError) and must_retry_batch(exc):
                raise
            quarantine_record(conn, record, "minions", str(exc))
            result.quarantined += 1


def _upsert_job_minions(conn: Connection, jid: str, minions) -> None:
    current = _lock_job(conn, jid).minions
    merged = sorted(set(current or []) | {m for m in minions if isinstance(m, str)})
    conn.execute(update(Job).where(Job.jid == jid).values(minions=merged))


def _handle_endtimes(conn: Connection, group: list[dict], result: BatchResult) -> None:
    for record in _by_jid(group):
        jid, endtime = str(record.get("jid", "")), record.get("endtime")
        if not jid or not isinstance(endtime, str):
            quarantine_record(conn, record, "endtime", "an endtime needs a jid and a time string")
            result.quarantined += 1
            continue
        conn.execute(update(Job).where(Job.jid == jid).values(endtime=endtime[:64]))
        result.stored += 1


#: Handlers, in the order a batch is written (jobs first: returns and events refer to them).
_HANDLERS = {
    "load": _handle_loads,
    "minions": _handle_minions,
    "endtime": _handle_endtimes,
    "return": _handle_returns,
    "event": _handle_events,
}


# -- nodes and inventories --------------------------------------------------------------------


#: Salt's name prefixes of jobs a master runs itself: their returns carry the master's id.
MASTER_JOB_PREFIXES = ("runner.", "wheel.")


def is_master_job(fun: str | None) -> bool:
    """Whether a return is of a runner or wheel job (the master's, not a minion's): only
    minions are nodes."""
    return isinstance(fun, str) and fun.startswith(MASTER_JOB_PREFIXES)


#: :func:`_touch_nodes` on PostgreSQL: the other columns take their server defaults, as the
#: model's defaults are.
_TOUCH_NODES_PG = text(
    "INSERT INTO nodes (minion_id, first_seen, last_seen, facts, heard_by) "
    "SELECT m, :now, :now, '{}'::jsonb, h "
    "FROM unnest(CAST(:ids AS text[]), CAST(:by AS text[])) WITH ORDINALITY AS t(m, h, n) "
    "ORDER BY n "
    "ON CONFLICT (minion_id) DO UPDATE SET last_seen = excluded.last_seen, "
    "heard_by = coalesce(excluded.heard_by, nodes.heard_by)"
)


def _touch_nodes(conn: Connection, heard_by: dict[str, str | None]) -> None:
    """Upsert ``nodes`` rows: first seen once, last seen now, heard by the master that stored
    the return (``{minion: master id}``)."""
    if not heard_by:
        return
    now = utcnow()
    ids = sorted(heard_by)
    if conn.dialect.name == "postgresql":
        # one statement for the batch's nodes (not one per node), in id order
        conn.execute(_TOUCH_NODES_PG, {"now": now, "ids": ids, "by": [heard_by[m] for m in ids]})
        return
    rows = [
        {"minion_id": m, "first_seen": now, "last_seen": now, "facts": {}, "heard_by": heard_by[m]}
        for m in ids
    ]
    table = Node.__table__
    stmt = sqlite.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["minion_id"],
        set_={
            "last_seen": stmt.excluded.last_seen,
            "heard_by": func.coalesce(stmt.excluded.heard_by, table.c.heard_by),
        },
    )
    conn.execute(stmt, rows)


def _ingest_many(conn: Connection, items: list[tuple], result: BatchResult) -> None:
    """Ingest ``[(minion_id, fun, return value, success, rid)]``, in batch order.

    All inventories of the batch are ingested together in one savepoint; if the database
    rejects that, each is retried alone (:func:`_ingest`), so one bad inventory is quarantined
    and the others are stored. Grains go one by one (they are rare).
    """
    inventories = []
    for minion_id, fun, value, success, rid in items:
        if success is False:
            continue
        if fun not in INVENTORY_FUNS:
            _ingest(conn, minion_id, fun, value, success, result, rid)
            continue
        try:
            inventories.append((minion_id, _parse_inventory(minion_id, value), value, rid))
        except RecordRejected as exc:
            log.warning("saltext-fleet: %s return of %s not ingested: %s", fun, minion_id, exc)
    if not inventories:
        return
    try:
        with conn.begin_nested():
            changes = _ingest_inventories(conn, [(m, parsed) for m, parsed, _, _ in inventories])
    except SQLAlchemyError as exc:
        if must_retry_batch(exc):
            raise
        log.warning(
            "saltext-fleet: ingesting %d inventories together failed (%s); one by one",
            len(inventories),
            describe_db_error(exc),
        )
        for minion_id, _parsed, value, rid in inventories:
            _ingest(conn, minion_id, INVENTORY_FUNS[0], value, True, result, rid)
        return
    result.inventory_changed.extend(changes)


def _parse_inventory(minion_id: str, inv: Any) -> tuple[str, dict, dict, dict]:
    """``(digest, packages, sources, facts)`` of an inventory document, or RecordRejected.

    The digest is the master's own, computed over the content that is stored; the one the
    minion reports is only compared with it (a mismatch is logged).
    """
    if not isinstance(inv, dict):
        raise RecordRejected(f"inventory of {minion_id} is not a mapping")
    packages = inv.get("packages")
    if not isinstance(packages, dict):
        raise RecordRejected(f"inventory of {minion_id} has no packages mapping")
    sources = inv.get("sources") if isinstance(inv.get("sources"), dict) else {}
    facts = inv.get("facts") if isinstance(inv.get("facts"), dict) else {}
    try:
        digest = INVENTORY_MEMO.digest(inv, lambda: inventory_digest(packages, sources, facts))
    except (TypeError, ValueError) as exc:
        raise RecordRejected(f"inventory of {minion_id} cannot be hashed: {exc}") from exc
    claimed = inv.get("digest")
    if claimed != digest:
        log.warning(
            "saltext-fleet: the inventory of %r claims digest %r but its content hashes to %s;"
            " stored under the computed one",
            minion_id,
            str(claimed)[:80],
            digest,
        )
    return digest, packages, sources, facts


def _ingest_inventories(conn: Connection, items: list[tuple[str, tuple]]) -> list[tuple]:
    """Store the inventories ``[(minion_id, parsed)]`` of one batch with a few statements.

    Same effect as :func:`ingest_inventory` called for each in order: new digests become
    snapshots, each change of a node's digest is a ``node_inventory`` row, the node ends on
    its last inventory. Returns the changes ``[(minion, digest, previous)]`` in order.
    """
    now = utcnow()
    digests = sorted({parsed[0] for _, parsed in items})
    have = set(
        conn.execute(
            select(InventorySnapshot.digest).where(InventorySnapshot.digest.in_(digests))
        ).scalars()
    )
    snapshots = {}
    for _, (digest, packages, sources, facts) in items:
        if digest not in have and digest not in snapshots:
            snapshots[digest] = {
                "digest": digest,
                "packages": packages,
                "sources": sources,
                "facts": facts,
                "package_count": sum(len(p) for p in packages.values() if isinstance(p, dict)),
                "created_at": now,
            }
    if snapshots:
        table = InventorySnapshot.__table__
        ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(
            ins(table).on_conflict_do_nothing(index_elements=["digest"]),
            [snapshots[d] for d in sorted(snapshots)],
        )
    minions = sorted({minion for minion, _ in items})
    current = dict(
        conn.execute(
            select(Node.minion_id, Node.inventory_digest).where(Node.minion_id.in_(minions))
        ).all()
    )
    changed: dict[str, dict] = {}  # minion -> its final digest and facts
    history, changes = [], []
    for minion, (digest, _packages, _sources, facts) in items:
        previous = current.get(minion)
        if previous == digest:
            continue
        current[minion] = digest
        changed[minion] = {"m": minion, "d": digest, "f": facts, "at": now}
        history.append(
            {"minion_id": minion, "digest": digest, "previous_digest": previous, "seen_at": now}
        )
        changes.append((minion, digest, previous))
    if conn.dialect.name == "postgresql":
        _update_inventory_nodes_pg(conn, now, [m for m in minions if m not in changed], changed)
        if history:
            conn.execute(
                _NODE_INVENTORY_PG,
                {
                    "at": now,
                    "ids": [h["minion_id"] for h in history],
                    "digests": [h["digest"] for h in history],
                    "previous": [h["previous_digest"] for h in history],
                },
            )
        return changes
    seen = [{"m": minion, "at": now} for minion in minions if minion not in changed]
    if seen:
        conn.execute(
            update(Node)
            .where(Node.minion_id == bindparam("m"))
            .values(inventory_at=bindparam("at")),
            seen,
        )
    if changed:
        conn.execute(
            update(Node)
            .where(Node.minion_id == bindparam("m"))
            .values(
                inventory_digest=bindparam("d"),
                inventory_at=bindparam("at"),
                facts=bindparam("f"),
            ),
            [changed[m] for m in sorted(changed)],
        )
        conn.execute(NodeInventory.__table__.insert(), history)
    return changes


#: :func:`_update_inventory_nodes_pg`: one statement each for the nodes whose inventory is
#: unchanged and for those whose inventory changed, not one per node. Their rows are locked
#: already, in id order, by :func:`_touch_nodes` earlier in the transaction.
_INVENTORY_SEEN_PG = text(
    "UPDATE nodes SET inventory_at = :at FROM unnest(CAST(:ids AS text[])) AS t(m) "
    "WHERE nodes.minion_id = t.m"
)
_INVENTORY_CHANGED_PG = text(
    "UPDATE nodes SET inventory_digest = t.d, inventory_at = :at, facts = CAST(t.f AS jsonb) "
    "FROM unnest(CAST(:ids AS text[]), CAST(:digests AS text[]), CAST(:facts AS text[])) "
    "AS t(m, d, f) WHERE nodes.minion_id = t.m"
)


#: The batch's ``node_inventory`` rows in one statement, in batch order (their ids too).
_NODE_INVENTORY_PG = text(
    "INSERT INTO node_inventory (minion_id, digest, previous_digest, seen_at) "
    "SELECT m, d, p, :at FROM unnest(CAST(:ids AS text[]), CAST(:digests AS text[]), "
    "CAST(:previous AS text[])) WITH ORDINALITY AS t(m, d, p, n) ORDER BY n"
)


def _update_inventory_nodes_pg(conn: Connection, now, seen: list[str], changed: dict) -> None:
    if seen:
        conn.execute(_INVENTORY_SEEN_PG, {"at": now, "ids": seen})
    if changed:
        ids = sorted(changed)
        conn.execute(
            _INVENTORY_CHANGED_PG,
            {
                "at": now,
                "ids": ids,
                "digests": [changed[m]["d"] for m in ids],
                "facts": [json.dumps(changed[m]["f"]) for m in ids],
            },
        )


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
            elif ingest_grains(conn, minion_id, ret):
                result.certs_changed.append(minion_id)
    except SQLAlchemyError as exc:
        if must_retry_batch(exc):
            raise
        quarantine_record(
            conn, {"rid": rid, "minion_id": minion_id, "fun": fun}, "ingest", describe_db_error(exc)
        )
        result.quarantined += 1
    except RecordRejected as exc:
        log.warning("saltext-fleet: %s return of %s not ingested: %s", fun, minion_id, exc)


def ingest_inventory(
    conn: Connection, minion_id: str, inv: Any
) -> tuple[str, str, str | None] | None:
    """Store an inventory; returns ``(minion, digest, previous)`` when the node's digest changed.

    The one-at-a-time path, independent of :func:`_ingest_inventories` on purpose: it is the
    fallback when the batched ingest fails.
    """
    digest, packages, sources, facts = _parse_inventory(minion_id, inv)
    exists = conn.execute(
        select(InventorySnapshot.digest).where(InventorySnapshot.digest == digest)
    ).first()
    if exists is None:
        count = sum(len(p) for p in packages.values() if isinstance(p, dict))
        conn.execute(
            InventorySnapshot.__table__.insert().values(
                digest=digest,
                packages=packages,
                sources=sources,
                facts=facts,
                package_count=count,
                created_at=utcnow(),
            )
        )
    previous = conn.execute(
        select(Node.inventory_digest).where(Node.minion_id == minion_id)
    ).scalar()
    now = utcnow()
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


def ingest_grains(conn: Connection, minion_id: str, grains: Any) -> bool:
    """Store a node's grains; True when they report signing identities (the ``fleet``
    grain's ``macos:signing_identities``) other than those stored before."""
    if not isinstance(grains, dict):
        raise RecordRejected(f"grains of {minion_id} are not a mapping")
    before = conn.execute(select(Node.grains).where(Node.minion_id == minion_id)).scalar()
    conn.execute(update(Node).where(Node.minion_id == minion_id).values(grains=grains))
    identities = _signing_identities(grains)
    return bool(identities) and identities != _signing_identities(before)


def _signing_identities(grains: Any) -> Any:
    fleet = grains.get("fleet") if isinstance(grains, dict) else None
    macos = fleet.get("macos") if isinstance(fleet, dict) else None
    return macos.get("signing_identities") if isinstance(macos, dict) else None


# -- quarantine -------------------------------------------------------------------------------


def quarantine_key(rid: Any, kind: str, payload: str) -> str:
    """The quarantine's key for a record: its rid, or for a record without a usable one
    (missing, not a string, too long: the payload keeps it) ``sha224:<hex>`` of its kind and
    quarantined payload, which for a corrupt spool frame holds its spool position."""
    if isinstance(rid, str) and rid and len(rid) <= RID_LEN:
        return rid
    return "sha224:" + hashlib.sha224(f"{kind}\0{payload}".encode()).hexdigest()


def quarantine_record(conn: Connection, record: dict, kind: str, error: str) -> bool:
    """Keep a record the database refused, with the error. One row per record: a record
    quarantined again (a batch replayed after a crash before the spool's checkpoint) is left
    as it is, and False is returned."""
    if isinstance(record, dict) and not record.get("redacted"):
        record = redact_record(dict(record))  # the quarantine keeps no more than the tables
    error = redact_text(error)
    kind = kind[:32]
    payload, size = quarantine_payload(record)
    rid = quarantine_key(record.get("rid") if isinstance(record, dict) else None, kind, payload)
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stored = conn.execute(
        dialect_insert(Quarantine.__table__)
        .values(
            rid=rid,
            kind=kind,
            error=error[:4000],
            payload=payload,
            payload_bytes=size,
            stored_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["rid"])
        .returning(Quarantine.id)
    ).first()
    if stored is not None:
        log.warning("saltext-fleet: quarantined a %s record (%s): %s", kind, rid, error[:300])
    else:
        log.info("saltext-fleet: the %s record %s is in the quarantine already", kind, rid)
    return stored is not None


def describe_db_error(exc: SQLAlchemyError) -> str:
    """The driver's error in one line: its class and the first line of its message."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {str(orig or exc).splitlines()[0][:500]}"


def _jid_time(jid: str) -> dt.datetime:
    """A jid is a timestamp (YYYYmmddHHMMSSffffff); fall back to now for odd ones."""
    try:
        return dt.datetime.strptime(jid[:20], "%Y%m%d%H%M%S%f").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return utcnow()
