"""Baselines, drift results and drift history in the store.

The runners and the reactor call these; the arithmetic is :mod:`saltext_fleet.core.drift`.
Which baseline applies to which node (Salt targeting) is the caller's business: the functions
here take ``{minion: baseline name}``.

Two ways to recompute
---------------------
:func:`recompute_node` (the reactor, one node whose inventory changed) reads that node's
inventory as stored and compares it with the baseline: a millisecond or two.

:func:`recompute` (``salt-run fleet.drift``, the whole fleet) never decodes inventories. Each
snapshot's packages are kept as 64-bit keys (``snapshot_keys``, filled the first time drift
needs them by :func:`index_snapshots`, with the names in ``package_keys``); matching packages
cancel out as set arithmetic, and only the keys that differ are looked up. With
``details=False`` nothing is looked up at all: one numpy pass over every snapshot's keys gives
each node's package score and counts
(:meth:`~saltext_fleet.core.drift.CompiledBaseline.summarise_snapshots`), and a node whose
inventory, baseline and weights are unchanged keeps the package score it had.

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
import json
import logging
import operator
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Text, bindparam, cast, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.core.errors import FleetError
from saltext_fleet.store.models import (
    Baseline,
    BaselineAssignment,
    DriftCurrent,
    DriftHistory,
    InventorySnapshot,
    Node,
    PackageKey,
    SnapshotKeys,
    utcnow,
)

log = logging.getLogger(__name__)

#: Rows per IN (...) list.
CHUNK = 2000

Progress = Callable[[str, int, int], None]


class DriftError(FleetError, ValueError):
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
    """Write the ``snapshot_keys`` of the given snapshots that have none; returns how many."""
    wanted = set(digests)
    if len(wanted) > CHUNK:  # one scan of a small table beats thousands of parameters
        have = set(conn.execute(select(SnapshotKeys.digest)).scalars())
    else:
        have = set()
        for chunk in _chunks(sorted(wanted)):
            have.update(
                conn.execute(
                    select(SnapshotKeys.digest).where(SnapshotKeys.digest.in_(chunk))
                ).scalars()
            )
    todo = sorted(wanted - have)
    done = 0
    for chunk in _chunks(todo, 500):
        rows = conn.execute(
            select(InventorySnapshot.digest, InventorySnapshot.packages).where(
                InventorySnapshot.digest.in_(chunk)
            )
        ).all()
        names: dict[int, tuple[str, str, str]] = {}
        keyed_rows = []
        for digest, packages in rows:
            keyed = {}
            for eco, pkgs in _clean_packages(packages).items():
                eco_keys = keyed[eco] = {}
                for name, version in pkgs.items():
                    key = core_drift.package_key(eco, name, version)
                    eco_keys[name] = key
                    names[key] = (eco, name, version)
            keyed_rows.append({"digest": digest, "keys": core_drift.pack_package_keys(keyed)})
        add_package_keys(conn, names)
        if keyed_rows:
            conn.execute(
                _insert(conn)(SnapshotKeys.__table__).on_conflict_do_nothing(
                    index_elements=["digest"]
                ),
                keyed_rows,
            )
        done += len(keyed_rows)
    return done


def _clean_packages(packages: Any) -> dict[str, dict[str, str]]:
    """The packages of a stored snapshot, strings only (stored data can be anything)."""
    out = {}
    if not isinstance(packages, dict):
        return out
    for eco, pkgs in packages.items():
        if isinstance(eco, str) and isinstance(pkgs, dict):
            if all(type(v) is str for v in pkgs.values()):  # the usual case: as it is
                out[eco] = pkgs
            else:
                out[eco] = {str(n): str(v) for n, v in pkgs.items() if v is not None}
    return out


def add_package_keys(conn: Connection, names: Mapping[int, tuple[str, str, str]]) -> None:
    """Add dictionary rows ``{key: (ecosystem, name, version)}``, skipping known keys."""
    keys = sorted(names)
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        for chunk in _chunks(keys, 20_000):
            conn.execute(
                text(
                    "INSERT INTO package_keys (key, ecosystem, name, version) "
                    "SELECT * FROM unnest(CAST(:k AS bigint[]), CAST(:e AS text[]), "
                    "CAST(:n AS text[]), CAST(:v AS text[])) ON CONFLICT (key) DO NOTHING"
                ),
                {
                    "k": chunk,
                    "e": [names[k][0] for k in chunk],
                    "n": [names[k][1] for k in chunk],
                    "v": [names[k][2] for k in chunk],
                },
            )
        return
    stmt = text(
        "INSERT OR IGNORE INTO package_keys (key, ecosystem, name, version) "
        "VALUES (:key, :e, :n, :v)"
    )
    conn.execute(
        stmt, [{"key": k, "e": names[k][0], "n": names[k][1], "v": names[k][2]} for k in keys]
    )


def resolve_keys(conn: Connection, keys: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    out = {}
    keys = list(keys)
    size = 50_000 if conn.dialect.name == "postgresql" else 5000
    for chunk in _chunks(keys, size):
        if conn.dialect.name == "postgresql":
            rows = conn.execute(
                text(
                    "SELECT key, ecosystem, name, version FROM package_keys "
                    "WHERE key = ANY(CAST(:keys AS bigint[]))"
                ),
                {"keys": chunk},
            )
        else:
            stmt = select(PackageKey.key, PackageKey.ecosystem, PackageKey.name, PackageKey.version)
            rows = conn.execute(stmt.where(PackageKey.key.in_(chunk)))
        for key, eco, name, version in rows:
            out[key] = (eco, name, version)
    return out


def named_keys(conn: Connection, spec: Mapping[str, Any]) -> list[tuple[int, str, str, str]]:
    """Every known key of a version of a package the baseline names."""
    out = []
    for eco, rules in spec["packages"].items():
        for chunk in _chunks(sorted(rules), 1000):
            stmt = select(
                PackageKey.key, PackageKey.ecosystem, PackageKey.name, PackageKey.version
            ).where(PackageKey.ecosystem == eco, PackageKey.name.in_(chunk))
            out.extend(tuple(row) for row in conn.execute(stmt))
    return out


# -- compiled baselines, kept per process ------------------------------------------------------

_COMPILED: dict[tuple, core_drift.CompiledBaseline] = {}
_COMPILED_MAX = 32


def weights_digest(weights: Mapping[str, float] | None) -> str:
    return core_baseline.digest_of(core_drift.weights_from(weights))


def compiled(
    conn: Connection, name: str, weights: Mapping[str, float] | None, revision: str | None = None
) -> tuple[core_drift.CompiledBaseline, str]:
    """The baseline ``name`` compiled (cached per process by name, revision and weights)."""
    if revision is None:
        revision = conn.execute(select(Baseline.revision).where(Baseline.name == name)).scalar()
        if revision is None:
            raise DriftError(f"no baseline named {name!r}")
    key = (
        conn.engine.url.render_as_string(hide_password=False),
        name,
        revision,
        weights_digest(weights),
    )
    found = _COMPILED.get(key)
    if found is None:
        spec = conn.execute(select(Baseline.spec).where(Baseline.name == name)).scalar()
        if spec is None:
            raise DriftError(f"no baseline named {name!r}")
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        found = _COMPILED[key] = core_drift.CompiledBaseline(spec, weights)
    return found, revision


# -- recompute ---------------------------------------------------------------------------------


def _rows_by_minion(conn: Connection, stmt, minion_column, minions: list[str]) -> dict[str, Any]:
    """``{minion: row}`` of ``stmt`` for ``minions`` (a scan instead of a huge IN list)."""
    if len(minions) > CHUNK:
        wanted = set(minions)
        return {row.minion_id: row for row in conn.execute(stmt).all() if row.minion_id in wanted}
    rows = conn.execute(stmt.where(minion_column.in_(minions))).all()
    return {row.minion_id: row for row in rows}


def _node_rows(conn: Connection, minions: list[str]) -> dict[str, Any]:
    """The nodes' digests, pending states and facts as stored JSON text (``facts_text``:
    nodes share a handful of fact combinations, each decoded and compared once)."""
    stmt = select(
        Node.minion_id,
        Node.inventory_digest,
        cast(Node.facts, Text).label("facts_text"),
        Node.pending_states,
    )
    return _rows_by_minion(conn, stmt, Node.minion_id, minions)


def _facts_of(facts_text: str | None, decoded: dict[str, dict]) -> dict[str, Any]:
    """Facts from their stored JSON text, decoded once per distinct text."""
    if not facts_text:
        return {}
    found = decoded.get(facts_text)
    if found is None:
        try:
            found = json.loads(facts_text)
        except ValueError:
            found = {}
        if not isinstance(found, dict):
            found = {}
        decoded[facts_text] = found
    return found


def _current_rows(conn: Connection, minions: list[str]) -> dict[str, Any]:
    return _rows_by_minion(conn, select(DriftCurrent), DriftCurrent.minion_id, minions)


def _blobs(conn: Connection, digests: list[str]) -> dict[str, bytes]:
    """``{digest: snapshot keys blob}`` of ``digests``."""
    return dict(_blob_chunk(conn, digests))


def _blob_chunk(conn: Connection, digests: list[str]) -> list[tuple[str, bytes]]:
    if conn.dialect.name == "postgresql":
        # psycopg's binary format: the keys come as they are stored, not as hex text
        raw = conn.connection.driver_connection
        with raw.cursor(binary=True) as cur:
            cur.execute(
                "SELECT digest, keys FROM snapshot_keys WHERE digest = ANY(%s)",
                [digests],
            )
            return [(digest, bytes(blob) if blob is not None else b"") for digest, blob in cur]
    out = []
    for chunk in _chunks(digests, 5000):
        stmt = select(SnapshotKeys.digest, SnapshotKeys.keys).where(SnapshotKeys.digest.in_(chunk))
        out.extend((d, b or b"") for d, b in conn.execute(stmt))
    return out


#: Snapshots per read of :func:`_blob_stream`.
STREAM_CHUNK = 1000


def _blob_stream(engine: Engine, digests: list[str], chunk: int = STREAM_CHUNK):
    """``(digest, keys blob)`` pairs of ``digests``, read ``chunk`` snapshots at a time.

    On PostgreSQL a thread of its own (with a connection of its own) reads the next chunks
    while the caller works on this one: the server, the socket and numpy all release the GIL,
    so reading and comparing overlap. At most two chunks wait in memory.
    """
    if engine.dialect.name != "postgresql" or len(digests) <= chunk:
        with engine.connect() as conn:
            for start in range(0, len(digests), chunk):
                yield from _blob_chunk(conn, digests[start : start + chunk])
        return
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        try:
            with engine.connect() as conn:
                for start in range(0, len(digests), chunk):
                    if stop.is_set():
                        return
                    chunks.put(("ok", _blob_chunk(conn, digests[start : start + chunk])))
            chunks.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            chunks.put(("error", exc))

    reader = threading.Thread(target=read, name="fleet-drift-blobs", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = chunks.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield from value
    finally:
        stop.set()
        while reader.is_alive():  # let a reader blocked on a full queue finish
            try:
                chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()


def recompute(
    engine: Engine,
    assignment: Mapping[str, str],
    weights: Mapping[str, float] | None = None,
    trigger: str = "runner",
    progress: Progress | None = None,
    details: bool = True,
) -> dict[str, dict[str, Any]]:
    """Recompute the drift of every node in ``{minion: baseline}`` and record it.

    Returns ``{minion: result}`` (see :mod:`saltext_fleet.core.drift`, plus ``computed_at``
    and ``previous_score``). Nodes with no inventory yet are left out.

    ``details=False`` gives scores, counts and fact mismatches, not the lists of packages
    (``"missing"``, ``"extra"`` and ``"changed"`` are None; ``counts`` has how many): only the
    keys of packages the baseline names are looked at, and the package part of a node whose
    inventory, baseline and weights did not change since the last recompute is taken from
    ``drift_current`` rather than compared again (facts and pending states are always
    compared again). ``details=True`` compares and lists everything.
    """
    report = progress or (lambda *_: None)
    minions = sorted(assignment)
    wdigest = weights_digest(weights)
    names = sorted(set(assignment.values()))
    with engine.connect() as conn:
        nodes = _node_rows(conn, minions)
        previous = _current_rows(conn, minions)
        bases = {name: compiled(conn, name, weights) for name in names}
    # Nodes whose package part must be compared: (baseline, digest) pairs.
    todo: dict[tuple[str, str], None] = {}
    for minion in minions:
        row = nodes.get(minion)
        if row is None or not row.inventory_digest:
            continue
        name = assignment[minion]
        old = previous.get(minion)
        if (
            not details
            and old is not None
            and old.package_score is not None
            and old.baseline == name
            and old.inventory_digest == row.inventory_digest
            and old.baseline_revision == bases[name][1]
            and old.weights == wdigest
        ):
            continue
        todo[(name, row.inventory_digest)] = None
    digests = sorted({digest for _, digest in todo})
    if digests:
        with engine.begin() as conn:
            indexed = index_snapshots(conn, digests)
        if indexed:
            report(f"indexed the packages of {indexed} inventory snapshots", indexed, len(digests))
    pairs: dict[tuple[str, str], Any] = {}
    if todo and details:
        with engine.connect() as conn:
            blobs = _blobs(conn, digests)
        for name, digest in todo:
            base = bases[name][0]
            keys = core_drift.unpack_keys(blobs.get(digest) or b"", base.scope)
            pairs[(name, digest)] = base.unexpected_keys(keys)
        del blobs
    elif todo:
        with engine.connect() as conn:
            # every known version of the named packages (indexing may have added some)
            for name in {name for name, _ in todo}:
                base = bases[name][0]
                base.prepare_named(named_keys(conn, base.baseline))
        for name in sorted({name for name, _ in todo}):
            mine = sorted({d for n, d in todo if n == name})
            stream = _blob_stream(engine, mine)
            for digest, part in bases[name][0].summarise_snapshots(stream).items():
                pairs[(name, digest)] = part
            missing = [d for d in mine if (name, d) not in pairs]
            if missing:  # no keys stored (cannot happen after index_snapshots): no packages
                for digest, part in (
                    bases[name][0].summarise_snapshots({d: b"" for d in missing}).items()
                ):
                    pairs[(name, digest)] = part
    resolved: dict[int, tuple[str, str, str]] = {}
    if details and pairs:
        wanted: set[int] = set()
        for (name, _), (unexpected, _absent) in pairs.items():
            cache = bases[name][0]._cache
            wanted.update(k for k in unexpected if k not in cache)
        with engine.connect() as conn:
            resolved = resolve_keys(conn, wanted)
    now = utcnow()
    stamp = now.isoformat()
    results: dict[str, dict[str, Any]] = {}
    decoded: dict[str, dict] = {}
    total = len(minions)
    step = max(1000, total // 10)
    for done, minion in enumerate(minions, 1):
        row = nodes.get(minion)
        if row is None or not row.inventory_digest:
            continue
        name = assignment[minion]
        base, revision = bases[name]
        node = core_drift.NodeInput(
            facts=_facts_of(row.facts_text, decoded),
            pending_states=row.pending_states,
            facts_key=row.facts_text,
        )
        pair = pairs.get((name, row.inventory_digest))
        if pair is None:  # unchanged package part: from drift_current
            old = previous[minion]
            result = base.summary(old.package_score, old.missing, old.extra, old.changed, node)
        elif not details:
            result = base.summary(*pair, node)
        else:
            result = base.compute_keys(pair[0], pair[1], resolved.get, node)
        result["computed_at"] = stamp
        result["inventory_digest"] = row.inventory_digest
        result["baseline_revision"] = revision
        result["weights"] = wdigest
        results[minion] = result
        if done % step == 0 and done < total:
            report(f"computed drift of {done} of {total} nodes", done, total)
    record(engine, results, trigger, now, previous=previous)
    return results


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _node_query(dialect: str):
    """What :func:`recompute_node` reads, in one statement (built once per dialect)."""
    key = ("node", dialect)
    if key not in _STATEMENTS:
        revision_of = (
            select(Baseline.revision).where(Baseline.name == bindparam("b")).scalar_subquery()
        )
        columns = [
            Node.inventory_digest,
            Node.facts,
            Node.pending_states,
            InventorySnapshot.packages,
            revision_of.label("revision"),
            DriftCurrent.minion_id.label("prev_minion"),
        ]
        columns += [getattr(DriftCurrent, k).label(f"prev_{k}") for k in _KEPT]
        if dialect == "postgresql":
            # a drift result can always be computed again: no need to wait for the WAL flush
            # (set here, in the same round trip as the read)
            columns.append(func.set_config("synchronous_commit", "off", True).label("sync"))
        _STATEMENTS[key] = (
            select(*columns)
            .join(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
            .where(Node.minion_id == bindparam("m"))
        )
    return _STATEMENTS[key]


def _small_upsert(dialect: str, kind: str):
    """The INSERT .. ON CONFLICT statements of :func:`_record` (built once per dialect)."""
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


def recompute_node(
    engine: Engine,
    minion: str,
    baseline_name: str | None,
    weights: Mapping[str, float] | None = None,
    trigger: str = "inventory",
) -> dict[str, Any] | None:
    """Recompute one node from its stored inventory and record it (always a history point).

    ``baseline_name`` None means the node has no baseline: its current result is removed.
    Returns the result, or None when the node has no inventory yet. One connection, one
    transaction: this runs for every inventory change.
    """
    with engine.begin() as conn:
        row = conn.execute(
            _node_query(conn.dialect.name), {"m": minion, "b": baseline_name or ""}
        ).first()
        if row is None:
            return None
        if baseline_name is None:
            conn.execute(delete(DriftCurrent).where(DriftCurrent.minion_id == minion))
            return None
        base, revision = compiled(conn, baseline_name, weights, revision=row.revision)
        result = base.compute(
            _clean_packages(row.packages),
            core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
        )
        now = utcnow()
        result["computed_at"] = now.isoformat()
        result["inventory_digest"] = row.inventory_digest
        result["baseline_revision"] = revision
        result["weights"] = weights_digest(weights)
        previous = {}
        if row.prev_minion is not None:
            previous[minion] = SimpleNamespace(**{k: getattr(row, f"prev_{k}") for k in _KEPT})
        _record(conn, {minion: result}, trigger, now, always=True, previous=previous)
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
        base, _ = compiled(conn, baseline_name, weights)
    if row is None:
        return None
    return base.compute(
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
        "weights": result.get("weights"),
        "package_score": result.get("package_score"),
        "computed_at": now,
    }


_SAME = ("baseline", "score", "missing", "extra", "changed", "facts", "pending_states")
_KEPT = _SAME + ("inventory_digest", "baseline_revision", "weights", "package_score")
_SAME_GETTER = operator.attrgetter(*_SAME)
_KEPT_GETTER = operator.attrgetter(*_KEPT)


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
        _record(conn, results, trigger, now, always, previous)


def _record(
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
        previous = _current_rows(conn, minions)
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
        if same and kept_of(old) == tuple(summary[k] for k in _KEPT):
            unchanged.append(minion)
        else:
            changed.append(summary)
    postgres = conn.dialect.name == "postgresql"
    if changed:
        if postgres and len(changed) > 50:
            _pg_upsert(conn, "drift_current", _CURRENT_TYPES, changed, ("minion_id",), True)
        else:
            conn.execute(_small_upsert(conn.dialect.name, "current"), changed)
    if unchanged and postgres:
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(
                "UPDATE drift_current SET computed_at = %b WHERE minion_id = ANY(CAST(%b AS text[]))",
                [now, unchanged],
            )
    elif unchanged:
        for chunk in _chunks(unchanged, 10_000):
            conn.execute(
                update(DriftCurrent)
                .where(DriftCurrent.minion_id.in_(chunk))
                .values(computed_at=now)
            )
    if points:
        ensure_partition(conn, now)
        if postgres and len(points) > 50:
            _pg_upsert(
                conn,
                "drift_history",
                _HISTORY_TYPES,
                points,
                ("minion_id", "computed_at"),
                False,
            )
        else:
            conn.execute(_small_upsert(conn.dialect.name, "history"), points)


#: PostgreSQL types of the columns written by :func:`_pg_upsert` (for binary COPY).
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


def _pg_upsert(conn, table: str, types: dict, rows: list, key: tuple, update_rest: bool) -> None:
    """Many rows in two statements: binary ``COPY`` into a temporary table of this
    transaction, then one ``INSERT .. SELECT .. ON CONFLICT`` from it (psycopg writes
    ``COPY`` rows in C; array parameters would be built element by element in Python)."""
    columns = list(types)
    names = ", ".join(f'"{c}"' for c in columns)
    if update_rest:
        sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in key)
        conflict = f"DO UPDATE SET {sets}"
    else:
        conflict = "DO NOTHING"
    scratch = f"_fleet_load_{table}"
    with conn.connection.driver_connection.cursor() as cur:
        cur.execute(
            f"CREATE TEMPORARY TABLE {scratch} ON COMMIT DROP AS "
            f"SELECT {names} FROM {table} WITH NO DATA"
        )
        with cur.copy(f"COPY {scratch} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([types[c] for c in columns])
            for row in rows:
                copy.write_row([row[c] for c in columns])
        cur.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {scratch} "
            f"ON CONFLICT ({', '.join(key)}) {conflict}"
        )
        cur.execute(f"DROP TABLE {scratch}")


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
