"""Recorded drift: ``drift_current`` and ``drift_history``.

Every recompute updates ``drift_current`` (the latest result per node, :func:`record`).
``drift_history`` gets a point whenever a node's result changes, and always for the reactor's
recompute (an inventory change is an event worth a point even when the score stays put). On
PostgreSQL the history is partitioned by month (:func:`ensure_partition`), and
:func:`prune_history` drops whole months older than ``fleet:drift:history_days``; on SQLite it
deletes rows. :func:`current` and :func:`history` read them back; :func:`forget` drops the
current result of nodes that no longer have a baseline.

(Not named ``history.py``: a submodule of that name would shadow the package's ``history``
function.)
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import drift as core_drift
from saltext_fleet.store.drift.common import aware, copy_upsert, in_chunks, rows_by_minion
from saltext_fleet.store.models import DriftCurrent, DriftHistory, utcnow


def _summary(minion: str, result: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    counts = core_drift.counts(result)
    return {
        "minion_id": minion,
        "baseline": result["baseline"],
        "score": float(result["score"]),
        "missing": counts["missing"],
        "extra": counts["extra"],
        "changed": counts["changed"],
        "facts": counts["facts"],
        "pending_states": result.get("pending_states"),
        "inventory_digest": result.get("inventory_digest"),
        "baseline_revision": result.get("baseline_revision"),
        "weights": result.get("weights"),
        "package_score": result.get("package_score"),
        "computed_at": now,
    }


#: What a history point holds: a node whose summary differs in one of these gets a point.
_SAME = ("baseline", "score", "missing", "extra", "changed", "facts", "pending_states")
#: What a ``drift_current`` row holds besides ``computed_at``: a row equal in all of these is
#: not written again (only its ``computed_at`` moves on).
KEPT_FIELDS = _SAME + ("inventory_digest", "baseline_revision", "weights", "package_score")
_SAME_GETTER = operator.attrgetter(*_SAME)
_KEPT_GETTER = operator.attrgetter(*KEPT_FIELDS)


def record(
    engine: Engine,
    results: Mapping[str, dict[str, Any]],
    trigger: str,
    now: dt.datetime | None = None,
    always: bool = False,
    previous: Mapping[str, Any] | None = None,
) -> None:
    """Upsert ``drift_current`` and append history points; sets ``previous_score`` on results.

    Only rows that changed are written (the others get their ``computed_at`` moved on); a
    history point is added for a node whose summary changed (or for every node when
    ``always``). ``previous`` is the caller's read of ``drift_current``, if it has one.
    """
    if not results:
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql" and len(results) > 50:
            # Drift results can always be computed again: do not wait for the WAL flush.
            conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
        record_in_transaction(conn, results, trigger, now, always, previous)


def record_in_transaction(
    conn: Connection,
    results: Mapping[str, dict[str, Any]],
    trigger: str,
    now: dt.datetime | None = None,
    always: bool = False,
    previous: Mapping[str, Any] | None = None,
) -> None:
    """:func:`record` inside the caller's transaction."""
    now = now or utcnow()
    minions = sorted(results)
    if previous is None:
        previous = current_rows(conn, minions)
    points, changed, unchanged = [], [], []
    same_of, kept_of = _SAME_GETTER, _KEPT_GETTER
    for minion in minions:
        summary = _summary(minion, results[minion], now)
        old = previous.get(minion)
        results[minion]["previous_score"] = old.score if old is not None else None
        same = old is not None and same_of(old) == tuple(summary[k] for k in _SAME)
        if always or not same:
            point = {k: summary[k] for k in _SAME}
            point.update(minion_id=minion, computed_at=now, trigger=trigger)
            points.append(point)
        if same and kept_of(old) == tuple(summary[k] for k in KEPT_FIELDS):
            unchanged.append(minion)
        else:
            changed.append(summary)
    postgres = conn.dialect.name == "postgresql"
    if changed:
        if postgres and len(changed) > 50:
            copy_upsert(
                conn,
                "drift_current",
                _CURRENT_TYPES,
                _tuples(changed, _CURRENT_TYPES),
                ("minion_id",),
                update_rest=True,
            )
        else:
            conn.execute(_small_upsert(conn.dialect.name, "current"), changed)
    if unchanged and postgres:
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(
                "UPDATE drift_current SET computed_at = %b WHERE minion_id = ANY(CAST(%b AS text[]))",
                [now, unchanged],
            )
    elif unchanged:
        for chunk in in_chunks(unchanged, 10_000):
            conn.execute(
                update(DriftCurrent)
                .where(DriftCurrent.minion_id.in_(chunk))
                .values(computed_at=now)
            )
    if points:
        ensure_partition(conn, now)
        if postgres and len(points) > 50:
            copy_upsert(
                conn,
                "drift_history",
                _HISTORY_TYPES,
                _tuples(points, _HISTORY_TYPES),
                ("minion_id", "computed_at"),
            )
        else:
            conn.execute(_small_upsert(conn.dialect.name, "history"), points)


def _tuples(rows: list[dict], types: dict):
    """``rows`` as tuples in ``types``' column order (what :func:`copy_upsert` takes)."""
    columns = list(types)
    return ([row[c] for c in columns] for row in rows)


#: PostgreSQL types of the columns written by :func:`copy_upsert` (for binary COPY).
_CURRENT_TYPES = {
    "minion_id": "text",
    "baseline": "text",
    "score": "float8",
    "missing": "int4",
    "extra": "int4",
    "changed": "int4",
    "facts": "int4",
    "pending_states": "int4",
    "inventory_digest": "text",
    "baseline_revision": "text",
    "weights": "text",
    "package_score": "float8",
    "computed_at": "timestamptz",
}


_HISTORY_TYPES = {
    "minion_id": "text",
    "computed_at": "timestamptz",
    "baseline": "text",
    "score": "float8",
    "missing": "int4",
    "extra": "int4",
    "changed": "int4",
    "facts": "int4",
    "pending_states": "int4",
    "trigger": "text",
}


#: Statements built once per (kind, dialect).
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _small_upsert(dialect: str, kind: str):
    """The INSERT .. ON CONFLICT statements of :func:`record_in_transaction` (built once per dialect)."""
    key = (kind, dialect)
    if key not in _STATEMENTS:
        ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
        if kind == "current":
            stmt = ins(DriftCurrent.__table__)
            columns = [c.name for c in DriftCurrent.__table__.columns if c.name != "minion_id"]
            stmt = stmt.on_conflict_do_update(
                index_elements=["minion_id"], set_={c: stmt.excluded[c] for c in columns}
            )
        else:
            stmt = ins(DriftHistory.__table__).on_conflict_do_nothing(
                index_elements=["minion_id", "computed_at"]
            )
        _STATEMENTS[key] = stmt
    return _STATEMENTS[key]


def current_rows(conn: Connection, minions: list[str]) -> dict[str, Any]:
    """``{minion: drift_current row}`` of ``minions`` (those that have one)."""
    return rows_by_minion(conn, select(DriftCurrent), DriftCurrent.minion_id, minions)


def current(engine: Engine, minions: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The latest recorded drift summary per node."""
    stmt = select(DriftCurrent)
    if minions is not None:
        stmt = stmt.where(DriftCurrent.minion_id.in_(sorted(set(minions))))
    with engine.connect() as conn:
        return {
            row.minion_id: {
                "baseline": row.baseline,
                "score": row.score,
                "missing": row.missing,
                "extra": row.extra,
                "changed": row.changed,
                "facts": row.facts,
                "pending_states": row.pending_states,
                "computed_at": aware(row.computed_at).isoformat(),
            }
            for row in conn.execute(stmt)
        }


def forget(engine: Engine, minions: Iterable[str]) -> int:
    """Drop the current drift of nodes that no longer have a baseline (history stays)."""
    minions = sorted(set(minions))
    gone = 0
    with engine.begin() as conn:
        for chunk in in_chunks(minions):
            gone += (
                conn.execute(delete(DriftCurrent).where(DriftCurrent.minion_id.in_(chunk))).rowcount
                or 0
            )
    return gone


_PARTITIONS: set[tuple[str, str]] = set()
_PARTITION_LOCK_KEY = 0x66_6C_65_65_74_64_72  # "fleetdr"


def _month(at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(at.year, at.month, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return start, end


def partition_name(at: dt.datetime) -> str:
    return f"drift_history_{at.year:04d}_{at.month:02d}"


def ensure_partition(conn: Connection, at: dt.datetime) -> None:
    """On PostgreSQL, create the month's partition of ``drift_history`` (and the next one)."""
    if conn.dialect.name != "postgresql":
        return
    url = conn.engine.url.render_as_string(hide_password=False)
    start, end = _month(at)
    for lower, upper in ((start, end), _month(end)):
        name = partition_name(lower)
        if (url, name) in _PARTITIONS:
            continue
        if not _partition_exists(conn, name):
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PARTITION_LOCK_KEY})
            # Looked up again under the lock, in pg_class itself: a name lookup such as
            # to_regclass() may answer from this backend's catalog cache, which still says
            # "absent" after another transaction (another master, another runner thread)
            # created the partition and committed while this one waited for the lock.
            if not _partition_exists(conn, name):
                conn.execute(
                    text(
                        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF drift_history '
                        f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
                    )
                )
        _PARTITIONS.add((url, name))


def _partition_exists(conn: Connection, name: str) -> bool:
    """Whether table ``name`` exists in the current schema, read from ``pg_class`` with this
    statement's snapshot (what is committed now), not from the catalog cache."""
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_class WHERE relname = :n"
            " AND relnamespace = current_schema()::regnamespace"
        ),
        {"n": name},
    ).first()
    return found is not None


def partitions(engine: Engine) -> list[str]:
    """The names of drift_history's partitions (PostgreSQL), oldest first."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'drift_history'::regclass ORDER BY c.relname"
            )
        )
        return [r[0] for r in rows]


def prune_history(engine: Engine, days: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Forget history older than ``days`` (0 keeps all).

    PostgreSQL drops whole monthly partitions that end before the cutoff (cheap, no vacuum);
    SQLite deletes the rows.
    """
    if not days:
        return {"dropped_partitions": [], "deleted_rows": 0}
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=days)
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            gone = conn.execute(delete(DriftHistory).where(DriftHistory.computed_at < cutoff))
        return {"dropped_partitions": [], "deleted_rows": gone.rowcount or 0}
    dropped = []
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        for name in partitions(engine):
            try:
                year, month = int(name[-7:-3]), int(name[-2:])
            except ValueError:
                continue
            _, end = _month(dt.datetime(year, month, 1, tzinfo=dt.timezone.utc))
            if end <= cutoff:
                conn.execute(text(f'DROP TABLE "{name}"'))
                _PARTITIONS.discard((url, name))
                dropped.append(name)
    return {"dropped_partitions": dropped, "deleted_rows": 0}


def history(engine: Engine, minion: str, days: float | None = None) -> list[dict[str, Any]]:
    """A node's drift points, oldest first, within the last ``days`` (all when None)."""
    stmt = select(DriftHistory).where(DriftHistory.minion_id == minion)
    if days:
        stmt = stmt.where(DriftHistory.computed_at >= utcnow() - dt.timedelta(days=days))
    stmt = stmt.order_by(DriftHistory.computed_at)
    with engine.connect() as conn:
        return [
            {
                "computed_at": aware(p.computed_at).isoformat(),
                "score": p.score,
                "baseline": p.baseline,
                "missing": p.missing,
                "extra": p.extra,
                "changed": p.changed,
                "facts": p.facts,
                "pending_states": p.pending_states,
                "trigger": p.trigger,
            }
            for p in conn.execute(stmt)
        ]
