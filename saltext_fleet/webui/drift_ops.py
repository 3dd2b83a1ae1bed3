"""What the drift pages and their JSON API both do: check the parameters (``400`` naming a
bad one), look the nodes up (``404`` naming an unknown one) and read the drift reports of
:mod:`saltext_fleet.store.reports`: a node's findings with their rules, the packages that
drift on the most nodes and their nodes, two nodes' inventories compared.
"""

from __future__ import annotations

import math
from typing import Any

from flask import abort, request
from sqlalchemy import Connection

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import compare as core_compare
from saltext_fleet.core import findings as core_findings
from saltext_fleet.core import gate as core_gate
from saltext_fleet.store import reports as store_reports
from saltext_fleet.store.ui import QueryError
from saltext_fleet.webui.base import ctx

#: Differences of two nodes per page, and how the kinds are named.
COMPARE_PER_PAGE = 200
COMPARE_KINDS = {
    "different": "different versions",
    "only_a": "only in A",
    "only_b": "only in B",
}
PACKAGE_NODES_PER_PAGE = 100
MAX_PACKAGE_NAME = core_baseline.MAX_PACKAGE_NAME


def _weights() -> dict[str, float] | None:
    drift = getattr(ctx().config, "drift", None)
    return drift.weight_map() if drift is not None else None


def _minion(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        abort(400, description=f"{name}: a node's minion id is needed")
    if not core_gate.is_minion_id(value):
        abort(400, description=f"{name}: {value[:80]!r} is not a minion id")
    return value


def int_arg(name: str, default: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 9 or not 1 <= int(raw) <= high:
        abort(400, description=f"{name}: a whole number from 1 to {high}, not {raw[:20]!r}")
    return int(raw)


def node_findings(minion_id: str) -> dict[str, Any]:
    """A node's findings with their rules (404 for an unknown node)."""
    if not core_gate.is_minion_id(minion_id):
        abort(404, description="no such node")
    with ctx().engine.connect() as conn:
        found = findings_of(conn, minion_id)
    if found is None:
        abort(404, description=f"no node {minion_id!r} in the store")
    return found


def fleet_drift() -> tuple[store_reports.FleetDriftQuery, dict[str, Any]]:
    """The query string's fleet drift query and its page."""
    try:
        query = store_reports.FleetDriftQuery.from_args(request.args)
    except QueryError as exc:
        abort(400, description=str(exc))
    with ctx().engine.connect() as conn:
        return query, store_reports.fleet_drift(conn, query)


def package_nodes(ecosystem: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The nodes one package drifts on: ``(parameters, page)``."""
    try:
        core_baseline.check_ecosystem(ecosystem, "ecosystem")
    except core_baseline.BaselineError as exc:
        abort(400, description=str(exc))
    if not name or len(name) > MAX_PACKAGE_NAME or "\0" in name:
        abort(400, description="name: not a package name")
    kind = request.args.get("kind") or None
    if kind is not None and kind not in core_findings.PACKAGE_KINDS:
        abort(400, description=f"kind: one of {', '.join(core_findings.PACKAGE_KINDS)}")
    baseline = request.args.get("baseline") or None
    if baseline is not None:
        try:
            core_baseline.check_name(baseline)
        except core_baseline.BaselineError as exc:
            abort(400, description=str(exc))
    page = int_arg("page", 1, 1_000_000)
    per_page = int_arg("per_page", PACKAGE_NODES_PER_PAGE, 500)
    with ctx().engine.connect() as conn:
        result = store_reports.package_nodes(
            conn, ecosystem, name, kind=kind, baseline=baseline, page=page, per_page=per_page
        )
    params = {"ecosystem": ecosystem, "name": name, "kind": kind, "baseline": baseline}
    return params, result


def compare_pair() -> tuple[str, str] | None:
    """The two nodes to compare: ``?a=&b=``, or two ticked ``?node=`` (the overview's form);
    None when none is given (the empty form)."""
    picked = [n for n in request.args.getlist("node") if n]
    a, b = request.args.get("a") or None, request.args.get("b") or None
    if picked and (a or b):
        abort(400, description="give a and b, or two nodes ticked in the overview, not both")
    if picked:
        if len(picked) != 2:
            abort(400, description=f"node: tick exactly two nodes to compare ({len(picked)})")
        a, b = picked
    if a is None and b is None:
        return None
    return _minion(a, "a"), _minion(b, "b")


def compare(a: str, b: str) -> dict[str, Any]:
    """Node ``a`` against node ``b``; ``missing`` names the nodes the store does not know."""
    with ctx().engine.connect() as conn:
        result = store_reports.compare_nodes(conn, a, b)
    result["missing"] = [m for m, side in ((a, "a"), (b, "b")) if result[side] is None]
    return result


def _compare_filters(result: dict[str, Any]) -> tuple[str | None, str | None]:
    ecosystem = request.args.get("ecosystem") or None
    kind = request.args.get("kind") or None
    if kind is not None and kind not in COMPARE_KINDS:
        abort(400, description=f"kind: one of {', '.join(COMPARE_KINDS)}")
    comparison = result.get("comparison")
    if ecosystem is not None and comparison and ecosystem not in comparison["ecosystems"]:
        abort(400, description=f"ecosystem: neither node has packages of {ecosystem[:40]!r}")
    return ecosystem, kind


def compare_page() -> tuple[dict[str, Any], int]:
    """What the compare page shows, and its status: the form alone (no nodes given), or
    the nodes compared, their differences filtered and paged (404 when a node is unknown)."""
    pair = compare_pair()
    values: dict[str, Any] = {"kinds": COMPARE_KINDS, "result": None, "a": None, "b": None}
    if pair is None:
        return values, 200
    a, b = pair
    result = compare(a, b)
    ecosystem, kind = _compare_filters(result)
    comparison = result["comparison"]
    rows = core_compare.rows(comparison, kind, ecosystem) if comparison else []
    pages = max(1, math.ceil(len(rows) / COMPARE_PER_PAGE))
    page = min(int_arg("page", 1, 1_000_000), pages)
    start = (page - 1) * COMPARE_PER_PAGE
    values.update(
        result=result,
        a=a,
        b=b,
        ecosystem=ecosystem,
        kind=kind,
        rows=rows[start : start + COMPARE_PER_PAGE],
        total=len(rows),
        page=page,
        pages=pages,
    )
    return values, 404 if result["missing"] else 200


def compare_api() -> dict[str, Any]:
    """Two nodes compared for the API: 400 without two ids, 404 for an unknown node, 409
    for one without an inventory; only ``?ecosystem=`` if given."""
    pair = compare_pair()
    if pair is None:
        abort(400, description="a, b: two minion ids to compare")
    result = compare(*pair)
    if result["missing"]:
        abort(404, description=f"no node {result['missing'][0]!r} in the store")
    for side in ("a", "b"):
        if not result[side]["has_inventory"]:
            abort(409, description=f"node {result[side]['id']!r} has reported no inventory yet")
    ecosystem, _kind = _compare_filters(result)
    comparison = result["comparison"]
    if ecosystem is not None:
        for name in core_compare.KINDS:
            comparison[name] = [e for e in comparison[name] if e["ecosystem"] == ecosystem]
        comparison["same"] = comparison["ecosystems"][ecosystem]["same"]
        comparison["ecosystems"] = {ecosystem: comparison["ecosystems"][ecosystem]}
    result.pop("missing")
    return result


def findings_of(conn: Connection, minion_id: str) -> dict[str, Any] | None:
    """A known node's findings, on the caller's connection (the node page's)."""
    return store_reports.node_findings(conn, minion_id, _weights())
