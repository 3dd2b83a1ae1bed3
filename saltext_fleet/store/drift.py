"""Baselines, drift results and drift history in the store.

The runners and the reactor call these; the arithmetic is :mod:`saltext_fleet.core.drift`.
Which baseline applies to which node (Salt targeting) is the caller's business: the functions
here take ``{minion: baseline name}``.

Two ways to recompute
---------------------
:func:`recompute_node` (the reactor, one node whose inventory changed) reads that node's
inventory as stored and compares it with the baseline: a millisecond or two.

:func:`recompute` (``salt-run fleet.drift``, the whole fleet) never decodes inventories. Each
snapshot carries its packages as 64-bit keys (``inventory_snapshots.package_keys``, filled the
first time drift needs them by :func:`index_snapshots`, with the names in ``package_keys``);
matching packages cancel out as set arithmetic, and only the keys that differ are looked up.

History
-------
Every recompute updates ``drift_current``. ``drift_history`` gets a point whenever a node's
result changes, and always for the reactor's recompute (an inventory change is an event worth
a point even when the score stays put). On PostgreSQL the history is partitioned by month
(:func:`ensure_partition`), and :func:`prune_history` drops whole months older than
``fleet:drift:history_days``; on SQLite it deletes rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.store.models import (
    Baseline,
    BaselineAssignment,
    DriftCurrent,
    DriftHistory,
    InventorySnapshot,
    Node,
    PackageKey,
    utcnow,
)

log = logging.getLogger(__name__)

#: Rows per IN (...) list.
CHUNK = 2000

Progress = Callable[[str, int, int], None]


class DriftError(ValueError):
    """A drift request that cannot be served (unknown baseline, unknown node...)."""


def _insert(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- baselines ---------------------------------------------------------------------------------


def save_baseline(engine: Engine, spec: Mapping[str, Any], source: str) -> bool:
    """Create or replace a baseline (already in normal form); True when it is new."""
    now = utcnow()
    row = {
        "name": spec["name"],
        "description": spec.get("description") or "",
        "spec": dict(spec),
        "revision": core_baseline.revision(spec),
        "source": source[:1000],
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        existed = conn.execute(select(Baseline.name).where(Baseline.name == spec["name"])).first()
        stmt = _insert(conn)(Baseline.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                k: stmt.excluded[k]
                for k in ("description", "spec", "revision", "source", "updated_at")
            },
        )
        conn.execute(stmt, row)
    return existed is None


def get_baseline(engine: Engine, name: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(Baseline).where(Baseline.name == name)).first()
    return None if row is None else _baseline_dict(row)


def _baseline_dict(row) -> dict[str, Any]:
    spec = dict(row.spec)
    spec.update(
        {
            "revision": row.revision,
            "source": row.source,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        }
    )
    return spec


def load_baselines(engine: Engine, names: Iterable[str] | None = None) -> dict[str, dict]:
    """``{name: normal-form spec}`` of the named baselines (all when ``names`` is None)."""
    stmt = select(Baseline.name, Baseline.spec)
    if names is not None:
        stmt = stmt.where(Baseline.name.in_(sorted(set(names))))
    with engine.connect() as conn:
        return {name: spec for name, spec in conn.execute(stmt)}


def list_baselines(engine: Engine) -> list[dict[str, Any]]:
    """Every baseline: name, description, source, package/fact counts, assignments, times."""
    with engine.connect() as conn:
        rows = conn.execute(select(Baseline).order_by(Baseline.name)).all()
        assigned: dict[str, list] = {}
        for a in conn.execute(
            select(BaselineAssignment).order_by(BaselineAssignment.priority, BaselineAssignment.id)
        ):
            assigned.setdefault(a.baseline, []).append(
                {"target": a.target, "tgt_type": a.tgt_type, "priority": a.priority}
            )
        scored = dict(
            conn.execute(
                select(DriftCurrent.baseline, func.count()).group_by(DriftCurrent.baseline)
            ).all()
        )
    out = []
    for row in rows:
        spec = row.spec
        out.append(
            {
                "name": row.name,
                "description": row.description,
                "source": row.source,
                "packages": sum(len(p) for p in spec["packages"].values()),
                "ecosystems": spec.get("ecosystems", []),
                "facts": len(spec.get("facts") or {}),
                "assigned": assigned.get(row.name, []),
                "nodes_scored": scored.get(row.name, 0),
                "updated_at": row.updated_at.isoformat(),
            }
        )
    return out


def delete_baseline(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        conn.execute(delete(BaselineAssignment).where(BaselineAssignment.baseline == name))
        gone = conn.execute(delete(Baseline).where(Baseline.name == name)).rowcount
        conn.execute(delete(DriftCurrent).where(DriftCurrent.baseline == name))
    return bool(gone)


def assign(engine: Engine, name: str, target: str, tgt_type: str, priority: int = 0) -> dict:
    """Assign baseline ``name`` to a Salt target; re-assigning updates the priority."""
    with engine.begin() as conn:
        if conn.execute(select(Baseline.name).where(Baseline.name == name)).first() is None:
            raise DriftError(f"no baseline named {name!r}")
        stmt = _insert(conn)(BaselineAssignment.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["baseline", "target", "tgt_type"],
            set_={"priority": stmt.excluded.priority},
        )
        conn.execute(
            stmt,
            {
                "baseline": name,
                "target": target,
                "tgt_type": tgt_type,
                "priority": priority,
                "created_at": utcnow(),
            },
        )
    return {"baseline": name, "target": target, "tgt_type": tgt_type, "priority": priority}


def unassign(engine: Engine, name: str, target: str | None = None) -> int:
    stmt = delete(BaselineAssignment).where(BaselineAssignment.baseline == name)
    if target is not None:
        stmt = stmt.where(BaselineAssignment.target == target)
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount or 0


def assignments(engine: Engine) -> list[dict[str, Any]]:
    """All assignments, lowest priority first (later entries win), oldest first on ties."""
    stmt = select(BaselineAssignment).order_by(BaselineAssignment.priority, BaselineAssignment.id)
    with engine.connect() as conn:
        return [
            {
                "baseline": a.baseline,
                "target": a.target,
                "tgt_type": a.tgt_type,
                "priority": a.priority,
            }
            for a in conn.execute(stmt)
        ]


# -- package keys ------------------------------------------------------------------------------


def index_snapshots(conn: Connection, digests: Iterable[str]) -> int:
    """Fill ``package_keys`` of the given snapshots that lack it; returns how many."""
    todo = []
    for chunk in _chunks(sorted(set(digests))):
        todo += (
            conn.execute(
                select(InventorySnapshot.digest)
                .where(InventorySnapshot.digest.in_(chunk))
                .where(InventorySnapshot.package_keys.is_(None))
            )
            .scalars()
            .all()
        )
    done = 0
    for chunk in _chunks(todo, 200):
        rows = conn.execute(
            select(InventorySnapshot.digest, InventorySnapshot.packages).where(
                InventorySnapshot.digest.in_(chunk)
            )
        ).all()
        names: dict[int, dict] = {}
        updates = []
        for digest, packages in rows:
            packages = _clean_packages(packages)
            for eco, pkgs in packages.items():
                for name, version in pkgs.items():
                    key = core_drift.package_key(eco, name, version)
                    if key not in names:
                        names[key] = {
                            "key": key,
                            "ecosystem": eco,
                            "name": name,
                            "version": version,
                        }
            updates.append({"d": digest, "k": core_drift.pack_keys(packages)})
        add_package_keys(conn, names)
        conn.execute(
            update(InventorySnapshot)
            .where(InventorySnapshot.digest == bindparam("d"))
            .values(package_keys=bindparam("k")),
            updates,
        )
        done += len(updates)
    return done


def _clean_packages(packages: Any) -> dict[str, dict[str, str]]:
    """The packages of a stored snapshot, strings only (stored data can be anything)."""
    out = {}
    if not isinstance(packages, dict):
        return out
    for eco, pkgs in packages.items():
        if isinstance(eco, str) and isinstance(pkgs, dict):
            out[eco] = {str(n): str(v) for n, v in pkgs.items() if v is not None}
    return out


def add_package_keys(conn: Connection, names: Mapping[int, dict]) -> None:
    """Insert dictionary rows ``{key: {key, ecosystem, name, version}}``, skipping known keys."""
    keys = sorted(names)
    for chunk in _chunks(keys, 5000):
        known = set(conn.execute(select(PackageKey.key).where(PackageKey.key.in_(chunk))).scalars())
        rows = [names[k] for k in chunk if k not in known]
        if rows:
            stmt = _insert(conn)(PackageKey.__table__).on_conflict_do_nothing(
                index_elements=["key"]
            )
            conn.execute(stmt, rows)


def resolve_keys(conn: Connection, keys: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    out = {}
    keys = list(keys)
    if conn.dialect.name == "postgresql":
        for chunk in _chunks(keys, 50_000):
            rows = conn.execute(
                text(
                    "SELECT key, ecosystem, name, version FROM package_keys WHERE key = ANY(:keys)"
                ),
                {"keys": chunk},
            )
            for key, eco, name, version in rows:
                out[key] = (eco, name, version)
        return out
    for chunk in _chunks(keys, 5000):
        stmt = select(PackageKey.key, PackageKey.ecosystem, PackageKey.name, PackageKey.version)
        for key, eco, name, version in conn.execute(stmt.where(PackageKey.key.in_(chunk))):
            out[key] = (eco, name, version)
    return out


# -- recompute ---------------------------------------------------------------------------------


def _node_rows(conn: Connection, minions: list[str]) -> dict[str, Any]:
    stmt = select(Node.minion_id, Node.inventory_digest, Node.facts, Node.pending_states)
    rows = {}
    if len(minions) > CHUNK:
        wanted = set(minions)
        for row in conn.execute(stmt):
            if row.minion_id in wanted:
                rows[row.minion_id] = row
        return rows
    for row in conn.execute(stmt.where(Node.minion_id.in_(minions))):
        rows[row.minion_id] = row
    return rows


def _blobs(conn: Connection, digests: list[str]) -> dict[str, bytes]:
    out = {}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text("SELECT digest, package_keys FROM inventory_snapshots WHERE digest = ANY(:d)"),
            {"d": digests},
        )
        return {d: bytes(b) for d, b in rows}
    for chunk in _chunks(digests, 5000):
        stmt = select(InventorySnapshot.digest, InventorySnapshot.package_keys).where(
            InventorySnapshot.digest.in_(chunk)
        )
        out.update({d: b for d, b in conn.execute(stmt)})
    return out


def recompute(
    engine: Engine,
    assignment: Mapping[str, str],
    weights: Mapping[str, float] | None = None,
    trigger: str = "runner",
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Recompute the drift of every node in ``{minion: baseline}`` and record it.

    Returns ``{minion: result}`` (see :mod:`saltext_fleet.core.drift`; plus ``computed_at``
    and ``previous_score``). Nodes with no inventory yet are left out.
    """
    report = progress or (lambda *_: None)
    minions = sorted(assignment)
    with engine.connect() as conn:
        nodes = _node_rows(conn, minions)
        specs = load_baselines(engine, set(assignment.values()))
    unknown = sorted(set(assignment.values()) - set(specs))
    if unknown:
        raise DriftError(f"no baseline named {unknown[0]!r}")
    digests = sorted({row.inventory_digest for row in nodes.values() if row.inventory_digest})
    with engine.begin() as conn:
        indexed = index_snapshots(conn, digests)
    if indexed:
        report(f"indexed the packages of {indexed} inventory snapshots", indexed, len(digests))
    with engine.connect() as conn:
        blobs = _blobs(conn, digests)
    compiled = {name: core_drift.CompiledBaseline(spec, weights) for name, spec in specs.items()}
    revisions = {name: core_baseline.revision(spec) for name, spec in specs.items()}
    # Per (baseline, digest): keys that are not an exact match, and exact keys not installed.
    pairs: dict[tuple[str, str], tuple[set, set]] = {}
    wanted: set[int] = set()
    for minion in minions:
        row = nodes.get(minion)
        if row is None or not row.inventory_digest:
            continue
        name = assignment[minion]
        pair = (name, row.inventory_digest)
        if pair in pairs:
            continue
        base = compiled[name]
        keys = core_drift.unpack_keys(blobs.get(row.inventory_digest) or b"", base.scope)
        unexpected, absent = base.unexpected_keys(keys)
        pairs[pair] = (unexpected, absent)
        wanted.update(unexpected)
    with engine.connect() as conn:
        names = resolve_keys(conn, wanted)
    now = utcnow()
    stamp = now.isoformat()
    results: dict[str, dict[str, Any]] = {}
    total = len(minions)
    step = max(1000, total // 10)
    for done, minion in enumerate(minions, 1):
        row = nodes.get(minion)
        if row is None or not row.inventory_digest:
            continue
        name = assignment[minion]
        unexpected, absent = pairs[(name, row.inventory_digest)]
        result = compiled[name].compute_keys(
            unexpected,
            absent,
            names.get,
            core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
        )
        result["computed_at"] = stamp
        result["inventory_digest"] = row.inventory_digest
        result["baseline_revision"] = revisions[name]
        results[minion] = result
        if done % step == 0 and done < total:
            report(f"computed drift of {done} of {total} nodes", done, total)
    record(engine, results, trigger, now)
    return results


def recompute_node(
    engine: Engine,
    minion: str,
    baseline_name: str | None,
    weights: Mapping[str, float] | None = None,
    trigger: str = "inventory",
) -> dict[str, Any] | None:
    """Recompute one node from its stored inventory and record it (always a history point).

    ``baseline_name`` None means the node has no baseline: its current result is removed.
    Returns the result, or None when the node has no inventory yet.
    """
    with engine.connect() as conn:
        row = conn.execute(
            select(
                Node.inventory_digest,
                Node.facts,
                Node.pending_states,
                InventorySnapshot.packages,
            )
            .join(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .where(Node.minion_id == minion)
        ).first()
        spec = None
        if baseline_name is not None:
            spec = conn.execute(
                select(Baseline.spec).where(Baseline.name == baseline_name)
            ).scalar()
            if spec is None:
                raise DriftError(f"no baseline named {baseline_name!r}")
    if row is None:
        return None
    if spec is None:
        with engine.begin() as conn:
            conn.execute(delete(DriftCurrent).where(DriftCurrent.minion_id == minion))
        return None
    base = core_drift.CompiledBaseline(spec, weights)
    result = base.compute(
        _clean_packages(row.packages),
        core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
    )
    now = utcnow()
    result["computed_at"] = now.isoformat()
    result["inventory_digest"] = row.inventory_digest
    result["baseline_revision"] = core_baseline.revision(spec)
    record(engine, {minion: result}, trigger, now, always=True)
    return result


def forget(engine: Engine, minions: Iterable[str]) -> int:
    """Drop the current drift of nodes that no longer have a baseline (history stays)."""
    minions = sorted(set(minions))
    gone = 0
    with engine.begin() as conn:
        for chunk in _chunks(minions):
            gone += (
                conn.execute(delete(DriftCurrent).where(DriftCurrent.minion_id.in_(chunk))).rowcount
                or 0
            )
    return gone


def detail(
    engine: Engine, minion: str, baseline_name: str, weights: Mapping[str, float] | None = None
) -> dict[str, Any] | None:
    """One node's drift computed now, without recording it (for a read-only view)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Node.facts, Node.pending_states, InventorySnapshot.packages)
            .join(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .where(Node.minion_id == minion)
        ).first()
        spec = conn.execute(select(Baseline.spec).where(Baseline.name == baseline_name)).scalar()
    if spec is None:
        raise DriftError(f"no baseline named {baseline_name!r}")
    if row is None:
        return None
    return core_drift.CompiledBaseline(spec, weights).compute(
        _clean_packages(row.packages),
        core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
    )


# -- recording ---------------------------------------------------------------------------------


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
        "computed_at": now,
    }


_SAME = ("baseline", "score", "missing", "extra", "changed", "facts", "pending_states")


def record(
    engine: Engine,
    results: Mapping[str, dict[str, Any]],
    trigger: str,
    now: dt.datetime | None = None,
    always: bool = False,
) -> None:
    """Upsert ``drift_current`` and append history points; sets ``previous_score`` on results.

    A history point is added for a node whose summary changed (or for every node when
    ``always``).
    """
    if not results:
        return
    now = now or utcnow()
    minions = sorted(results)
    summaries = [_summary(m, results[m], now) for m in minions]
    with engine.begin() as conn:
        previous = {}
        stmt = select(DriftCurrent)
        if len(minions) > CHUNK:
            wanted = set(minions)
            for row in conn.execute(stmt):
                if row.minion_id in wanted:
                    previous[row.minion_id] = row
        else:
            for row in conn.execute(stmt.where(DriftCurrent.minion_id.in_(minions))):
                previous[row.minion_id] = row
        points = []
        for summary in summaries:
            old = previous.get(summary["minion_id"])
            results[summary["minion_id"]]["previous_score"] = old.score if old else None
            if always or old is None or any(getattr(old, k) != summary[k] for k in _SAME):
                point = {k: summary[k] for k in _SAME}
                point.update(minion_id=summary["minion_id"], computed_at=now, trigger=trigger)
                points.append(point)
        stmt = _insert(conn)(DriftCurrent.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["minion_id"],
            set_={k: stmt.excluded[k] for k in summaries[0] if k != "minion_id"},
        )
        conn.execute(stmt, summaries)
        if points:
            ensure_partition(conn, now)
            ins = _insert(conn)(DriftHistory.__table__).on_conflict_do_nothing(
                index_elements=["minion_id", "computed_at"]
            )
            conn.execute(ins, points)


# -- history -----------------------------------------------------------------------------------

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
        exists = conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
        if exists is None:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PARTITION_LOCK_KEY})
            exists = conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar()
            if exists is None:
                conn.execute(
                    text(
                        f'CREATE TABLE "{name}" PARTITION OF drift_history '
                        f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
                    )
                )
        _PARTITIONS.add((url, name))


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
                "computed_at": _aware(p.computed_at).isoformat(),
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
                "computed_at": _aware(row.computed_at).isoformat(),
            }
            for row in conn.execute(stmt)
        }


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def node_ids(engine: Engine) -> list[str]:
    """Every node with an inventory."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Node.minion_id)
                .where(Node.inventory_digest.is_not(None))
                .order_by(Node.minion_id)
            ).scalars()
        )


def node_inventory(engine: Engine, minion: str) -> dict[str, Any] | None:
    """A node's stored inventory ``{"packages", "facts", "digest"}`` (for pinning)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Node.inventory_digest, Node.facts, InventorySnapshot.packages)
            .join(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .where(Node.minion_id == minion)
        ).first()
    if row is None:
        return None
    return {"packages": _clean_packages(row.packages), "facts": row.facts or {}, "digest": row[0]}


def set_pending_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record ``[{"m": minion, "n": pending, "at": when}]`` from highstate test runs."""
    if rows:
        conn.execute(
            update(Node)
            .where(Node.minion_id == bindparam("m"))
            .values(pending_states=bindparam("n"), pending_states_at=bindparam("at")),
            rows,
        )


def node_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every node with its inventory digest, pending states and latest drift score."""
    stmt = (
        select(
            Node.minion_id,
            Node.first_seen,
            Node.last_seen,
            Node.inventory_digest,
            Node.inventory_at,
            Node.pending_states,
            DriftCurrent.score,
            DriftCurrent.baseline,
        )
        .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .order_by(Node.minion_id)
    )
    out = []
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            out.append(
                {
                    "minion_id": row.minion_id,
                    "first_seen": _iso(row.first_seen),
                    "last_seen": _iso(row.last_seen),
                    "digest": row.inventory_digest,
                    "inventory_at": _iso(row.inventory_at),
                    "pending_states": row.pending_states,
                    "drift_score": row.score,
                    "baseline": row.baseline,
                }
            )
    return out


def _iso(at: dt.datetime | None) -> str | None:
    return None if at is None else _aware(at).isoformat()
