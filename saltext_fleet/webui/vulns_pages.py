"""The vulnerabilities pages and their JSON API: the fleet's open findings (by advisory, by
node, one by one), an advisory, a node's findings with their history, and triage. Thin
views over :mod:`saltext_fleet.webui.vulns_ops`: reading needs ``view``, deciding and
revoking ``vulns.triage`` (operators and admins).

Blueprints: ``vulns`` (the pages) and ``vulns_api`` (registered under ``/api/v1``).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from saltext_fleet.webui import vulns_ops
from saltext_fleet.webui.base import requires

bp = Blueprint("vulns", __name__)
api_bp = Blueprint("vulns_api", __name__)


# -- pages -------------------------------------------------------------------------------------


@bp.route("/vulns")
@requires("view")
def fleet():
    """The fleet's open findings by advisory, by node or one by one, filtered and paged."""
    return render_template("vulns.html", **vulns_ops.fleet_page(), **vulns_ops.form_choices())


@bp.route("/vulns/<advisory_id>")
@requires("view")
def advisory(advisory_id):
    """One advisory: summary, aliases, severity, the nodes it hits, its triage."""
    return render_template(
        "vuln_advisory.html",
        **vulns_ops.advisory_page(advisory_id),
        **vulns_ops.form_choices(),
    )


@bp.route("/nodes/<minion_id>/vulns")
@requires("view")
def node(minion_id):
    """One node's open findings, their history and triage, and its SBOM."""
    values = vulns_ops.node_page(minion_id)
    return render_template(
        "vuln_node.html",
        chart=vulns_ops.history_chart(values["history"]),
        **values,
        **vulns_ops.form_choices(),
    )


@bp.route("/vulns/<advisory_id>/triage", methods=["POST"])
@requires("vulns.triage")
def triage(advisory_id):
    """Decide about an advisory: not affected, accepted until a date, or will fix."""
    try:
        made = vulns_ops.decide(request.form, advisory_id)
    except HTTPException as exc:  # a refusal is shown on the page the form was on
        if exc.code != 400:
            raise
        flash(f"Not recorded: {exc.description}")
        return redirect(vulns_ops.back_url(request.form, advisory_id), 303)
    flash(f"Recorded decision {made['id']}: {made['text']}.")
    return redirect(vulns_ops.back_url(request.form, advisory_id), 303)


@bp.route("/vulns/triage/<triage_id>/revoke", methods=["POST"])
@requires("vulns.triage")
def revoke(triage_id):
    """End a triage decision now."""
    try:
        ended = vulns_ops.revoke(triage_id)
    except HTTPException as exc:
        if exc.code not in (404, 409):
            raise
        flash(f"Not revoked: {exc.description}")
        return redirect(vulns_ops.back_url(request.form, request.form.get("advisory")), 303)
    flash(f"Revoked decision {ended['id']} ({ended['text']}).")
    return redirect(vulns_ops.back_url(request.form, ended["advisory"]), 303)


# -- API ---------------------------------------------------------------------------------------


def _body() -> dict:
    if not request.content_length:
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="the body must be a JSON object")
    return data


def _listing(view: str):
    values = vulns_ops.fleet_page(view)
    return jsonify(
        {"summary": values["summary"], "advisories": values["advisories"], **values["page"]}
    )


@api_bp.route("/vulns/findings")
@requires("view")
def findings():
    """Open findings, worst first, each with the decision that applies (filters, paging)."""
    return _listing("finding")


@api_bp.route("/vulns/advisories")
@requires("view")
def advisories():
    """Advisories with open findings: nodes, open and triaged counts (filters, paging)."""
    return _listing("advisory")


@api_bp.route("/vulns/nodes")
@requires("view")
def nodes():
    """Nodes with open findings: open counts by severity, triaged (filters, paging)."""
    return _listing("node")


@api_bp.route("/vulns/advisories/<advisory_id>")
@requires("view")
def advisory_detail(advisory_id):
    """One advisory: its record, its open findings (paged) and every decision about it."""
    values = vulns_ops.advisory_page(advisory_id)
    values.pop("wheres")
    values.pop("packages")
    values["query"] = values["query"].args()
    return jsonify(values)


@api_bp.route("/nodes/<minion_id>/vulns")
@requires("view")
def node_findings(minion_id):
    """A node's open findings (paged, filtered), counts, history and its decisions."""
    values = vulns_ops.node_page(minion_id)
    values["query"] = values["query"].args()
    return jsonify(values)


@api_bp.route("/vulns/triage")
@requires("view")
def decisions():
    """Triage decisions, newest first (``?advisory=``, ``?all=1`` for ended ones too)."""
    return jsonify(vulns_ops.decisions())


@api_bp.route("/vulns/triage", methods=["POST"])
@requires("vulns.triage")
def decide():
    """Decide: advisory, state, node|group|fleet, package, justification, expires, detail."""
    return jsonify(vulns_ops.decide(_body())), 201


@api_bp.route("/vulns/triage/<triage_id>/revoke", methods=["POST"])
@requires("vulns.triage")
def revoke_api(triage_id):
    """End a triage decision now."""
    return jsonify(vulns_ops.revoke(triage_id))
