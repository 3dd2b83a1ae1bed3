"""Drift pages and their API: a node's findings, drift across the fleet, two nodes compared.

Everything here reads (:mod:`saltext_fleet.store.reports`) and needs the ``view``
permission, like the node pages. The pages (blueprint ``drift``) and the JSON API (blueprint
``drift_api``, under ``/api/v1``) are thin views over the same operations below, which check
the parameters (``400`` naming a bad one) and look the nodes up (``404`` naming an unknown
one).
"""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, render_template, request

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import compare as core_compare
from saltext_fleet.core import findings as core_findings
from saltext_fleet.core import gate as core_gate
from saltext_fleet.store import reports as store_reports
from saltext_fleet.store.ui import QueryError
from saltext_fleet.webui import charts
from saltext_fleet.webui.app import requires

bp = Blueprint("drift", __name__)
api_bp = Blueprint("drift_api", __name__)

#: Differences of two nodes per page, and how the kinds are named.
COMPARE_PER_PAGE = 200
COMPARE_KINDS = {
    "different": "different versions",
    "only_a": "only in A",
    "only_b": "only in B",
}
PACKAGE_NODES_PER_PAGE = 100
MAX_PACKAGE_NAME = core_baseline.MAX_PACKAGE_NAME


def _ctx():
    return current_app.extensions["fleet"]


def _weights() -> dict[str, float] | None:
    drift = getattr(_ctx().config, "drift", None)
    return drift.weight_map() if drift is not None else None


def _minion(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        abort(400, description=f"{name}: a node's minion id is needed")
    if not core_gate.is_minion_id(value):
        abort(400, description=f"{name}: {value[:80]!r} is not a minion id")
    return value


def _int_arg(name: str, default: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 9 or not 1 <= int(raw) <= high:
        abort(400, description=f"{name}: a whole number from 1 to {high}, not {raw[:20]!r}")
    return int(raw)


# -- operations shared by the pages and the API ------------------------------------------------


def node_findings(minion_id: str) -> dict[str, Any]:
    """A node's findings with their rules (404 for an unknown node)."""
    _minion(minion_id, "node")
    with _ctx().engine.connect() as conn:
        found = store_reports.node_findings(conn, minion_id, _weights())
    if found is None:
        abort(404, description=f"no node {minion_id!r} in the store")
    return found


def fleet_drift() -> tuple[store_reports.FleetDriftQuery, dict[str, Any]]:
    """The query string's fleet drift query and its page."""
    try:
        query = store_reports.FleetDriftQuery.from_args(request.args)
    except QueryError as exc:
        abort(400, description=str(exc))
    with _ctx().engine.connect() as conn:
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
    page = _int_arg("page", 1, 1_000_000)
    per_page = _int_arg("per_page", PACKAGE_NODES_PER_PAGE, 500)
    with _ctx().engine.connect() as conn:
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
    with _ctx().engine.connect() as conn:
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


# -- pages ---------------------------------------------------------------------------------------


@bp.route("/drift")
@requires("view")
def fleet():
    """The packages that drift on the most nodes, and their nodes."""
    query, page = fleet_drift()
    return render_template(
        "drift_fleet.html",
        query=query,
        page=page,
        kinds=core_findings.PACKAGE_KINDS,
        chart=charts.bar_chart(page["chart"], title="drifting packages"),
    )


@bp.route("/drift/packages/<ecosystem>/<path:name>")
@requires("view")
def package(ecosystem, name):
    """The nodes one package drifts on."""
    params, result = package_nodes(ecosystem, name)
    return render_template("drift_package.html", result=result, **params)


@bp.route("/compare", endpoint="compare")
@requires("view")
def compare_page():
    """Two nodes' inventories side by side."""
    pair = compare_pair()
    values: dict[str, Any] = {"kinds": COMPARE_KINDS, "result": None, "a": None, "b": None}
    if pair is None:
        return render_template("compare.html", **values)
    a, b = pair
    result = compare(a, b)
    ecosystem, kind = _compare_filters(result)
    rows = core_compare.rows(result["comparison"], kind, ecosystem) if result["comparison"] else []
    pages = max(1, math.ceil(len(rows) / COMPARE_PER_PAGE))
    page = min(_int_arg("page", 1, 1_000_000), pages)
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
    return render_template("compare.html", **values), 404 if result["missing"] else 200


# -- API -----------------------------------------------------------------------------------------


@api_bp.route("/nodes/<minion_id>/drift/findings")
@requires("view")
def api_node_findings(minion_id):
    """A node's drift findings now, each with the baseline rule that produced it."""
    return jsonify(node_findings(minion_id))


@api_bp.route("/drift/packages")
@requires("view")
def api_fleet_drift():
    """The packages that drift on the most nodes (one page), with their first nodes."""
    _query, page = fleet_drift()
    page.pop("chart", None)
    return jsonify(page)


@api_bp.route("/drift/packages/<ecosystem>/<path:name>")
@requires("view")
def api_package_nodes(ecosystem, name):
    """The nodes one package drifts on, by minion id."""
    _params, result = package_nodes(ecosystem, name)
    return jsonify(result)


@api_bp.route("/compare")
@requires("view")
def api_compare():
    """Two nodes' inventories compared (?a=<id>&b=<id>)."""
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
    return jsonify(result)
