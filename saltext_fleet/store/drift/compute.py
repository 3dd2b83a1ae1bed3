"""Recompute: the drift of the whole fleet, of one node, and of one node for a read-only view.

The arithmetic is :mod:`saltext_fleet.core.drift`; what is recorded, and how, is
:mod:`saltext_fleet.store.drift.results`.

Two ways to recompute
---------------------
:func:`recompute_node` (the reactor, one node whose inventory changed) reads that node's
inventory as stored and compares it with the baseline: a millisecond or two.

:func:`recompute` (``salt-run fleet.drift``, the whole fleet) never decodes inventories. Each
snapshot's packages are kept as 64-bit keys (``snapshot_keys``, filled the first time drift
needs them by :func:`~saltext_fleet.store.drift.pkgkeys.index_snapshots`, with the names in
``package_keys``); matching packages cancel out as set arithmetic, and only the keys that differ
are looked up. With ``details=False`` nothing is looked up at all: one numpy pass over every
snapshot's keys gives each node's package score and counts
(:meth:`~saltext_fleet.core.drift.CompiledBaseline.summarise_snapshots`), and a node whose
inventory, baseline and weights are unchanged keeps the package score it had.

(Not named ``recompute.py``: a submodule of that name would shadow the package's ``recompute``
function.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Text, and_, bindparam, cast, delete, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from saltext_fleet.core import drift as core_drift
from saltext_fleet.store.drift.baselines import compiled, weights_digest
from saltext_fleet.store.drift.common import facts_of, rows_by_minion
from saltext_fleet.store.drift.pkgkeys import (
    clean_packages,
    index_one,
    index_snapshots,
    named_keys,
    resolve_keys,
    stream_snapshot_blobs,
)
from saltext_fleet.store.drift.results import (
    KEPT_FIELDS,
    current_rows,
    record,
    record_in_transaction,
)
from saltext_fleet.store.models import (
    Baseline,
    DriftCurrent,
    InventorySnapshot,
    Node,
    SnapshotKeys,
    utcnow,
)

Progress = Callable[[str, int, int], None]


def _node_rows(conn: Connection, minions: list[str]) -> dict[str, Any]:
    """The nodes' digests, pending states and facts as stored JSON text (``facts_text``:
    nodes share a handful of fact combinations, each decoded and compared once)."""
    stmt = select(
        Node.minion_id,
        Node.inventory_digest,
        cast(Node.facts, Text).label("facts_text"),
        Node.pending_states,
    )
    return rows_by_minion(conn, stmt, Node.minion_id, minions)


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
        previous = current_rows(conn, minions)
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
    wanted: set[int] = set()  # keys to look up in package_keys (details only)
    if todo and details:
        # a baseline's snapshots streamed (read a chunk ahead), compared a chunk at a time
        for name in sorted({name for name, _ in todo}):
            base = bases[name][0]
            mine = sorted({d for n, d in todo if n == name})
            seen, unknown = set(), set()
            for digest, unexpected, absent in base.unexpected_lists(
                stream_snapshot_blobs(engine, mine)
            ):
                pairs[(name, digest)] = (unexpected, absent)
                unknown.update(unexpected)
                seen.add(digest)
            for digest in mine:  # no keys stored (cannot happen after index_snapshots)
                if digest not in seen:
                    pairs[(name, digest)] = ([], sorted(base.exact_keys))
            unknown.difference_update(base.classified_keys())  # this baseline's cache
            wanted |= unknown
    elif todo:
        with engine.connect() as conn:
            # every known version of the named packages (indexing may have added some)
            for name in {name for name, _ in todo}:
                base = bases[name][0]
                base.prepare_named(named_keys(conn, base.baseline))
        for name in sorted({name for name, _ in todo}):
            mine = sorted({d for n, d in todo if n == name})
            stream = stream_snapshot_blobs(engine, mine)
            for digest, part in bases[name][0].summarise_snapshots(stream).items():
                pairs[(name, digest)] = part
            missing = [d for d in mine if (name, d) not in pairs]
            if missing:  # no keys stored (cannot happen after index_snapshots): no packages
                for digest, part in (
                    bases[name][0].summarise_snapshots({d: b"" for d in missing}).items()
                ):
                    pairs[(name, digest)] = part
    resolved: dict[int, tuple[str, str, str]] = {}
    if details and wanted:
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
            facts=facts_of(row.facts_text, decoded),
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


#: Statements built once per (kind, dialect).
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _node_query(dialect: str, index: bool = False):
    """What :func:`recompute_node` reads, in one statement (built once per dialect); with
    ``index``, also whether the snapshot is indexed and the previous snapshot's keys."""
    key = ("node", dialect, index)
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
        columns += [getattr(DriftCurrent, k).label(f"prev_{k}") for k in KEPT_FIELDS]
        # whether the snapshot is indexed, and the keys of the previous result's snapshot
        # (for index=True: one round trip instead of three)
        now_keys, prev_keys = aliased(SnapshotKeys), aliased(SnapshotKeys)
        if index:
            columns += [now_keys.digest.label("indexed"), prev_keys.keys.label("prev_keys")]
        if dialect == "postgresql":
            # a drift result can always be computed again: no need to wait for the WAL flush
            # (set here, in the same round trip as the read)
            columns.append(func.set_config("synchronous_commit", "off", True).label("sync"))
        stmt = (
            select(*columns)
            .join(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        )
        if index:
            stmt = stmt.outerjoin(now_keys, now_keys.digest == Node.inventory_digest).outerjoin(
                prev_keys,
                and_(
                    prev_keys.digest == DriftCurrent.inventory_digest,
                    DriftCurrent.inventory_digest != Node.inventory_digest,
                ),
            )
        _STATEMENTS[key] = stmt.where(Node.minion_id == bindparam("m"))
    return _STATEMENTS[key]


def recompute_node(
    engine: Engine,
    minion: str,
    baseline_name: str | None,
    weights: Mapping[str, float] | None = None,
    trigger: str = "inventory",
    index: bool = False,
) -> dict[str, Any] | None:
    """Recompute one node from its stored inventory and record it (always a history point).

    ``baseline_name`` None means the node has no baseline: its current result is removed.
    Returns the result, or None when the node has no inventory yet. One connection, one
    transaction: this runs for every inventory change. ``index`` also indexes the node's
    snapshot's package keys (:func:`~saltext_fleet.store.drift.pkgkeys.index_snapshots`) in
    that transaction, if it has none yet, so that the next fleet-wide recompute need not.
    """
    with engine.begin() as conn:
        row = conn.execute(
            _node_query(conn.dialect.name, index), {"m": minion, "b": baseline_name or ""}
        ).first()
        if row is None:
            return None
        if index and row.inventory_digest and row.indexed is None:
            index_one(conn, row.inventory_digest, row.packages, row.prev_keys)
        if baseline_name is None:
            conn.execute(delete(DriftCurrent).where(DriftCurrent.minion_id == minion))
            return None
        base, revision = compiled(conn, baseline_name, weights, revision=row.revision)
        result = base.compute(
            clean_packages(row.packages),
            core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
        )
        now = utcnow()
        result["computed_at"] = now.isoformat()
        result["inventory_digest"] = row.inventory_digest
        result["baseline_revision"] = revision
        result["weights"] = weights_digest(weights)
        previous = {}
        if row.prev_minion is not None:
            previous[minion] = SimpleNamespace(
                **{k: getattr(row, f"prev_{k}") for k in KEPT_FIELDS}
            )
        record_in_transaction(conn, {minion: result}, trigger, now, always=True, previous=previous)
    return result


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
        clean_packages(row.packages),
        core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
    )
