"""The drift pages and their JSON API: a node's findings, drift across the fleet (and one
package's nodes), two nodes compared. Thin views over :mod:`saltext_fleet.webui.drift_ops`;
they only read, with the ``view`` permission, like the node pages.

Blueprints: ``drift`` (the pages) and ``drift_api`` (registered under ``/api/v1``).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from saltext_fleet.core import findings as core_findings
from saltext_fleet.webui import charts, drift_ops
from saltext_fleet.webui.base import requires

bp = Blueprint("drift", __name__)
api_bp = Blueprint("drift_api", __name__)


# -- pages -------------------------------------------------------------------------------------


@bp.route("/drift")
@requires("view")
def fleet():
    """The packages that drift on the most nodes, and their nodes."""
    query, page = drift_ops.fleet_drift()
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
    params, result = drift_ops.package_nodes(ecosystem, name)
    return render_template("drift_package.html", result=result, **params)


@bp.route("/compare", endpoint="compare")
@requires("view")
def compare_page():
    """Two nodes' inventories side by side."""
    values, status = drift_ops.compare_page()
    return render_template("compare.html", **values), status


# -- API ---------------------------------------------------------------------------------------


@api_bp.route("/nodes/<minion_id>/drift/findings")
@requires("view")
def node_findings(minion_id):
    """A node's drift findings now, each with the baseline rule that produced it."""
    return jsonify(drift_ops.node_findings(minion_id))


@api_bp.route("/drift/packages")
@requires("view")
def fleet_drift():
    """The packages that drift on the most nodes (one page), with their first nodes."""
    _query, page = drift_ops.fleet_drift()
    page.pop("chart", None)
    return jsonify(page)


@api_bp.route("/drift/packages/<ecosystem>/<path:name>")
@requires("view")
def package_nodes(ecosystem, name):
    """The nodes one package drifts on, by minion id."""
    _params, result = drift_ops.package_nodes(ecosystem, name)
    return jsonify(result)


@api_bp.route("/compare")
@requires("view")
def compare():
    """Two nodes' inventories compared (?a=<id>&b=<id>)."""
    return jsonify(drift_ops.compare_api())
