"""Read-only reports for the web UI and its API: a node's drift findings with their rules, the
packages that drift on the most nodes, and two nodes' inventories side by side.

``drift_current`` keeps each node's score and counts, not its findings, so the findings are
computed when asked for (nothing here writes):

- one node (:func:`node_findings`): its stored inventory against its baseline as it is now,
  the way the reactor computes it (a millisecond or two);
- the fleet (:func:`fleet_drift`, :func:`package_nodes`): nodes share inventory snapshots
  (content-addressed) and baselines, so findings are computed once per *(baseline revision,
  snapshot)* pair, from the snapshot's package keys (``snapshot_keys``; only the keys that
  are not an exact match are looked up) or, for a snapshot not indexed yet, its packages.
  A pair's findings never change (both halves are digests of their content), so they are
  kept per process (:data:`PAIR_CACHE_MAX` pairs) and the next page only reads which node
  has which pair: one query for the fleet, no query per node.

The baseline of a node is the one its latest drift result was computed with
(``drift_current.baseline``): which baseline applies to which node is Salt targeting, the
runner's and the reactor's business.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Text, cast, select, text

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import compare as core_compare
from saltext_fleet.core import drift as core_drift
from saltext_fleet.core import findings as core_findings
from saltext_fleet.store.drift.common import facts_of
from saltext_fleet.store.models import (
    Baseline,
    DriftCurrent,
    InventorySnapshot,
    Node,
    PackageKey,
    SnapshotKeys,
    iso,
)
from saltext_fleet.store.ui import QueryError, arg_reader, parse_paging, query_args

#: Rows per IN (...) list.
CHUNK = 1000
#: (baseline revision, snapshot) pairs whose findings a process keeps, and how many findings
#: they may hold together (a fleet of all-different inventories drifts on many packages).
PAIR_CACHE_MAX = 20_000
PAIR_FINDINGS_MAX = 2_000_000
#: Compiled baselines a process keeps.
COMPILED_MAX = 16
#: Nodes shown with each package of the fleet-wide page (the rest is one click away).
SAMPLE_NODES = 5
#: Packages in the fleet-wide page's chart.
CHART_ROWS = 10

#: Tallies a process keeps (one per baseline filter), each with the fleet it counted.
TALLIES_KEPT = 3

_PAIRS: dict[tuple, tuple] = {}
_PAIR_FINDINGS = [0]
_COMPILED: dict[tuple, core_drift.CompiledBaseline] = {}
_TALLIES: dict[tuple, tuple[int, core_findings.FleetTally]] = {}
_COUNTING = threading.Lock()


def clear_cache() -> None:
    """Forget the compiled baselines and pair findings this process keeps."""
    _PAIRS.clear()
    _PAIR_FINDINGS[0] = 0
    _COMPILED.clear()
    _TALLIES.clear()


def _url(conn: Connection) -> str:
    return conn.engine.url.render_as_string(hide_password=False)


def _compiled(
    conn: Connection, name: str, revision: str, spec: Mapping[str, Any], weights=None
) -> core_drift.CompiledBaseline:
    key = (_url(conn), name, revision, core_baseline.digest_of(core_drift.weights_from(weights)))
    found = _COMPILED.get(key)
    if found is None:
        if len(_COMPILED) >= COMPILED_MAX:
            _COMPILED.clear()
        found = _COMPILED[key] = core_drift.CompiledBaseline(spec, core_drift.weights_from(weights))
    return found


def _clean_packages(packages: Any) -> dict[str, dict[str, str]]:
    """A stored snapshot's packages, strings only (stored data can be anything)."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(packages, dict):
        return out
    for eco, pkgs in packages.items():
        if isinstance(eco, str) and isinstance(pkgs, dict):
            out[eco] = {str(n): str(v) for n, v in pkgs.items() if v is not None}
    return out


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pinned_from(source: str | None) -> str | None:
    """The node a baseline was pinned from (its source ``pin:<minion>``), if any."""
    if source and source.startswith("pin:"):
        return source[4:] or None
    return None


# -- one node ----------------------------------------------------------------------------------


def node_findings(
    conn: Connection, minion_id: str, weights: Mapping[str, float] | None = None
) -> dict[str, Any] | None:
    """A node's drift findings now, each with its baseline rule; None for an unknown node.

    ``{"minion", "state", "baseline", "baseline_source", "baseline_revision", "pinned_from",
    "score", "recorded_score", "recorded_at", "recorded_current", "groups",
    "pending_states"}``: ``state`` is ``ok``, ``no-baseline`` (never scored), ``no-inventory``
    or ``baseline-gone``; ``groups`` as :func:`saltext_fleet.core.findings.explain` (empty
    unless ``ok``). ``recorded_current`` says whether the recorded score was computed from
    this inventory and this revision of the baseline (False: the findings are newer).
    """
    row = conn.execute(
        select(
            Node.minion_id,
            Node.inventory_digest,
            Node.facts,
            Node.pending_states,
            DriftCurrent.baseline,
            DriftCurrent.score,
            DriftCurrent.computed_at,
            DriftCurrent.inventory_digest.label("scored_digest"),
            DriftCurrent.baseline_revision.label("scored_revision"),
            Baseline.spec,
            Baseline.revision,
            Baseline.source,
            InventorySnapshot.packages,
        )
        .select_from(Node)
        .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .outerjoin(Baseline, Baseline.name == DriftCurrent.baseline)
        .outerjoin(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
        .where(Node.minion_id == minion_id)
    ).first()
    if row is None:
        return None
    out: dict[str, Any] = {
        "minion": row.minion_id,
        "baseline": row.baseline,
        "baseline_source": row.source,
        "baseline_revision": row.revision,
        "pinned_from": _pinned_from(row.source),
        "score": None,
        "recorded_score": row.score,
        "recorded_at": iso(row.computed_at),
        "recorded_current": bool(
            row.baseline is not None
            and row.scored_digest == row.inventory_digest
            and row.scored_revision == row.revision
        ),
        "groups": [],
        "pending_states": row.pending_states,
    }
    if row.baseline is None:
        out["state"] = "no-baseline"
    elif row.spec is None:
        out["state"] = "baseline-gone"
    elif row.packages is None:
        out["state"] = "no-inventory"
    else:
        base = _compiled(conn, row.baseline, row.revision, row.spec, weights)
        result = base.compute(
            _clean_packages(row.packages),
            core_drift.NodeInput(facts=row.facts or {}, pending_states=row.pending_states),
        )
        explained = core_findings.explain(result, row.spec)
        out.update(state="ok", score=result["score"], groups=explained["groups"])
    return out


# -- the fleet ---------------------------------------------------------------------------------


@dataclasses.dataclass
class FleetDriftQuery:
    """The fleet-wide drift page's parameters (strings from a URL checked by
    :meth:`from_args`, :class:`~saltext_fleet.store.ui.QueryError` naming a bad one)."""

    sort: str = "nodes"
    desc: bool = True
    kind: str | None = None
    ecosystem: str | None = None
    baseline: str | None = None
    q: str | None = None
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> FleetDriftQuery:
        arg = arg_reader(args)

        query = cls(q=arg("q"), ecosystem=arg("ecosystem", 32), baseline=arg("baseline", 128))
        kind = arg("kind", 16)
        if kind is not None and kind not in core_findings.PACKAGE_KINDS:
            raise QueryError(
                "kind", f"{kind!r} is not one of {', '.join(core_findings.PACKAGE_KINDS)}"
            )
        query.kind = kind
        sort = arg("sort", 32)
        if sort is not None:
            query.desc = sort.startswith("-")
            sort = sort.lstrip("-")
            if sort not in core_findings.TALLY_SORTS:
                raise QueryError(
                    "sort", f"{sort!r} is not one of {', '.join(core_findings.TALLY_SORTS)}"
                )
            query.sort = sort
        query.page, query.per_page = parse_paging(arg, 1, query.per_page)
        return query

    def args(self, **changes) -> dict[str, str]:
        """This query as URL arguments (for links to other pages and sorts)."""
        values = {
            "sort": ("-" if self.desc else "") + self.sort,
            "kind": self.kind,
            "ecosystem": self.ecosystem,
            "baseline": self.baseline,
            "q": self.q,
        }
        return query_args(values, self.page, self.per_page, changes)


def _scored_nodes(conn: Connection, baseline: str | None):
    """Every scored node with an inventory: minion, digest, facts as JSON text, baseline and
    the baseline's revision (one query)."""
    stmt = (
        select(
            Node.minion_id,
            Node.inventory_digest,
            cast(Node.facts, Text).label("facts_text"),
            DriftCurrent.baseline,
            Baseline.revision,
        )
        .join(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .join(Baseline, Baseline.name == DriftCurrent.baseline)
        .where(Node.inventory_digest.is_not(None))
    )
    if baseline is not None:
        stmt = stmt.where(DriftCurrent.baseline == baseline)
    return conn.execute(stmt).all()


def _resolve(conn: Connection, keys: set[int]) -> dict[int, tuple[str, str, str]]:
    """``{key: (ecosystem, name, version)}`` from the package dictionary (PostgreSQL: one
    array parameter per 50,000 keys; elsewhere IN lists)."""
    out: dict[int, tuple[str, str, str]] = {}
    ordered = sorted(keys)
    if conn.dialect.name == "postgresql":
        stmt = text(
            "SELECT key, ecosystem, name, version FROM package_keys "
            "WHERE key = ANY(CAST(:keys AS bigint[]))"
        )
        for chunk in _chunks(ordered, 50_000):
            for key, eco, name, version in conn.execute(stmt, {"keys": chunk}):
                out[key] = (eco, name, version)
        return out
    columns = select(PackageKey.key, PackageKey.ecosystem, PackageKey.name, PackageKey.version)
    for chunk in _chunks(ordered, 5000):
        for key, eco, name, version in conn.execute(columns.where(PackageKey.key.in_(chunk))):
            out[key] = (eco, name, version)
    return out


def _compute_pairs(
    conn: Connection, base: core_drift.CompiledBaseline, digests: list[str]
) -> dict[str, tuple]:
    """``{digest: package findings}`` of snapshots against one baseline, in chunks: from
    package keys where the snapshot has them, from its packages otherwise."""
    out: dict[str, tuple] = {}
    bare = core_drift.NodeInput(facts={})
    for chunk in _chunks(digests):
        blobs = dict(
            conn.execute(
                select(SnapshotKeys.digest, SnapshotKeys.keys).where(SnapshotKeys.digest.in_(chunk))
            ).all()
        )
        split = {}
        wanted: set[int] = set()
        for digest, blob in blobs.items():
            keys = core_drift.unpack_keys(bytes(blob or b""), base.scope)
            unexpected, absent = base.unexpected_keys(keys)
            split[digest] = (unexpected, absent)
            wanted |= unexpected
        names = _resolve(conn, wanted) if wanted else {}
        rest = [d for d in chunk if d not in split]
        for digest, (unexpected, absent) in split.items():
            try:
                result = base.compute_keys(unexpected, absent, names.get, bare)
            except KeyError:  # a key without its name: read the packages instead
                rest.append(digest)
                continue
            out[digest] = _shared(core_findings.package_findings(result))
        for start in range(0, len(rest), 100):
            rows = conn.execute(
                select(InventorySnapshot.digest, InventorySnapshot.packages).where(
                    InventorySnapshot.digest.in_(rest[start : start + 100])
                )
            )
            for digest, packages in rows:
                result = base.compute(_clean_packages(packages), bare)
                out[digest] = _shared(core_findings.package_findings(result))
    return out


def _shared(findings: tuple) -> tuple:
    """``findings`` with their strings interned: the same names and versions recur across
    the snapshots of a fleet, and the pairs are kept."""
    intern = sys.intern
    return tuple(
        (kind, intern(eco), intern(name), exp and intern(exp), found and intern(found))
        for kind, eco, name, exp, found in findings
    )


def fleet_tally(conn: Connection, baseline: str | None = None) -> core_findings.FleetTally:
    """The package findings and fact mismatches of every scored node, counted (see
    :class:`~saltext_fleet.core.findings.FleetTally`); only the nodes of ``baseline`` if given.

    The tally is kept while no node changes its inventory, facts or baseline (and no
    baseline changes): the next page only reads the list of nodes."""
    url = _url(conn)
    nodes = _scored_nodes(conn, baseline)
    fingerprint = hash(tuple(tuple(row) for row in nodes))
    kept = _TALLIES.get((url, baseline))
    if kept is not None and kept[0] == fingerprint:
        return kept[1]
    # one count at a time: a second page asked for meanwhile waits and takes this one's
    with _COUNTING:
        kept = _TALLIES.get((url, baseline))
        if kept is not None and kept[0] == fingerprint:
            return kept[1]
        return _count(conn, url, baseline, nodes, fingerprint)


def _count(conn: Connection, url: str, baseline: str | None, nodes, fingerprint: int):
    """:func:`fleet_tally`'s work, kept under ``(url, baseline)`` with ``fingerprint``."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    facts_wanted: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for row in nodes:
        groups.setdefault((row.baseline, row.revision, row.inventory_digest), []).append(
            row.minion_id
        )
        facts_wanted.setdefault((row.baseline, row.revision), []).append(
            (row.minion_id, row.facts_text)
        )
    bases: dict[str, tuple[core_drift.CompiledBaseline, str]] = {}
    for name, revision in sorted({(name, revision) for name, revision, _ in groups}):
        spec = conn.execute(
            select(Baseline.spec).where(Baseline.name == name, Baseline.revision == revision)
        ).scalar()
        if spec is not None:  # None: changed since the node list was read (next time)
            bases[name] = (_compiled(conn, name, revision, spec), revision)
    # this fleet's pairs: from the process's cache, the others computed now (and kept)
    pairs: dict[tuple[str, str, str], tuple] = {}
    todo: dict[str, list[str]] = {}
    for name, revision, digest in groups:
        if name not in bases:
            continue
        found = _PAIRS.get((url, name, revision, digest))
        if found is None:
            todo.setdefault(name, []).append(digest)
        else:
            pairs[(name, revision, digest)] = found
    for name, digests in todo.items():
        base, revision = bases[name]
        computed = _compute_pairs(conn, base, sorted(digests))
        _keep_pairs(url, name, revision, computed)
        for digest, found in computed.items():
            pairs[(name, revision, digest)] = found
    tally = core_findings.FleetTally()
    for key, minions in sorted(groups.items()):
        found = pairs.get(key)
        if found is not None:
            tally.add(key[0], minions, found)
    decoded: dict[str, dict] = {}
    for (name, _revision), members in facts_wanted.items():
        base = bases.get(name, (None,))[0]
        if base is None or not base.facts:
            continue
        for minion, facts_text in members:
            node = core_drift.NodeInput(facts=facts_of(facts_text, decoded), facts_key=facts_text)
            tally.add_facts(name, minion, base.node_facts(node))
    if len(_TALLIES) >= TALLIES_KEPT:
        _TALLIES.clear()
    _TALLIES[(url, baseline)] = (fingerprint, tally)
    return tally


def _keep_pairs(url: str, name: str, revision: str, computed: Mapping[str, tuple]) -> None:
    """Keep pair findings, within :data:`PAIR_CACHE_MAX` and :data:`PAIR_FINDINGS_MAX`."""
    adding = sum(len(found) for found in computed.values())
    if (
        len(_PAIRS) + len(computed) > PAIR_CACHE_MAX
        or _PAIR_FINDINGS[0] + adding > PAIR_FINDINGS_MAX
    ):
        _PAIRS.clear()
        _PAIR_FINDINGS[0] = 0
    if adding > PAIR_FINDINGS_MAX:
        return  # more than may be kept at all: computed again next time
    for digest, found in computed.items():
        _PAIRS[(url, name, revision, digest)] = found
    _PAIR_FINDINGS[0] += adding


def fleet_drift(conn: Connection, query: FleetDriftQuery) -> dict[str, Any]:
    """One page of the packages that drift on the most nodes (or as sorted), each with its
    first nodes, and the fleet's fact mismatches.

    ``{"rows", "total", "page", "pages", "per_page", "nodes", "drifting", "chart", "facts",
    "ecosystems", "baselines"}``: ``nodes`` is how many scored nodes were looked at,
    ``drifting`` how many of them have a package finding; ``chart`` the packages on most
    nodes (at most :data:`CHART_ROWS`, whatever the sort)."""
    tally = fleet_tally(conn, query.baseline)
    filters = {"kind": query.kind, "ecosystem": query.ecosystem, "q": query.q}
    keys = tally.order(query.sort, query.desc, **filters)
    total = len(keys)
    pages = max(1, math.ceil(total / query.per_page))
    start = (query.page - 1) * query.per_page
    shown = []
    for key in keys[start : start + query.per_page]:
        row = dict(tally.row(key, query.kind))
        row["sample"] = tally.sample(key, query.kind, SAMPLE_NODES)
        shown.append(row)
    top = [tally.row(key, query.kind) for key in tally.order("nodes", True, **filters)[:CHART_ROWS]]
    baselines = sorted(
        conn.execute(
            select(DriftCurrent.baseline).where(DriftCurrent.baseline.is_not(None)).distinct()
        ).scalars()
    )
    return {
        "rows": shown,
        "total": total,
        "page": query.page,
        "pages": pages,
        "per_page": query.per_page,
        "nodes": tally.nodes,
        "drifting": tally.drifting_nodes(),
        "chart": [
            {
                "label": f"{r['ecosystem']}/{r['name']}",
                "missing": r["missing"],
                "changed": r["changed"],
                "extra": r["extra"],
            }
            for r in top
        ],
        "facts": tally.fact_rows(),
        "ecosystems": tally.ecosystems(),
        "baselines": baselines,
    }


def package_nodes(
    conn: Connection,
    ecosystem: str,
    name: str,
    kind: str | None = None,
    baseline: str | None = None,
    page: int = 1,
    per_page: int = 100,
) -> dict[str, Any]:
    """The nodes one package drifts on, by minion id, paged: ``{"package", "rows", "total",
    "page", "pages", "per_page"}`` (``package`` is the package's fleet-wide row, None when it
    drifts nowhere)."""
    tally = fleet_tally(conn, baseline)
    listed = tally.nodes_of(ecosystem, name, kind)
    package = tally.row((ecosystem, name), kind) if listed else None
    pages = max(1, math.ceil(len(listed) / per_page))
    start = (page - 1) * per_page
    return {
        "package": package,
        "rows": listed[start : start + per_page],
        "total": len(listed),
        "page": page,
        "pages": pages,
        "per_page": per_page,
    }


# -- two nodes ---------------------------------------------------------------------------------


def compare_nodes(conn: Connection, a: str, b: str) -> dict[str, Any]:
    """Node ``a``'s inventory against node ``b``'s (:func:`saltext_fleet.core.compare.
    compare_inventories`): ``{"a", "b", "comparison"}``; ``a`` and ``b`` describe the nodes
    (id, inventory digest and time, baseline) and are None for a node the store does not
    know; ``comparison`` is None unless both have an inventory."""
    rows = {
        row.minion_id: row
        for row in conn.execute(
            select(
                Node.minion_id,
                Node.inventory_digest,
                Node.inventory_at,
                DriftCurrent.baseline,
                InventorySnapshot.packages,
            )
            .select_from(Node)
            .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
            .outerjoin(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .where(Node.minion_id.in_(sorted({a, b})))
        )
    }

    def describe(minion: str) -> dict[str, Any] | None:
        row = rows.get(minion)
        if row is None:
            return None
        return {
            "id": minion,
            "digest": row.inventory_digest,
            "inventory_at": iso(row.inventory_at),
            "baseline": row.baseline,
            "has_inventory": row.packages is not None,
        }

    out: dict[str, Any] = {"a": describe(a), "b": describe(b), "comparison": None}
    if out["a"] and out["b"] and out["a"]["has_inventory"] and out["b"]["has_inventory"]:
        out["comparison"] = core_compare.compare_inventories(
            _clean_packages(rows[a].packages), _clean_packages(rows[b].packages)
        )
    return out
