"""The signing certificates page and the Xcode matrix page, and their JSON API. Thin views
over :mod:`saltext_fleet.store.certs` (read in SQL, paged); reading needs ``view`` (every
role, viewers included).

* ``/certs``: every code-signing identity the nodes report, soonest expiry first, its nodes
  and days left (counted on the master's clock), expired / 7 days or less / 30 days or less
  highlighted; filtered by text (name, team, SHA-1, node), team and days.
* ``/xcode``: rows nodes, columns the Xcode versions in the fleet, the macOS version, the
  selected Xcode marked, the cells of a version a node's baseline requires and it lacks
  highlighted; ``?baseline=`` compares every node with one baseline.

Blueprints: ``certs`` (the pages) and ``certs_api`` (registered under ``/api/v1``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort, jsonify, render_template, request

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.store import certs as store_certs
from saltext_fleet.store.ui import QueryError
from saltext_fleet.webui.base import reader, requires

bp = Blueprint("certs", __name__)
api_bp = Blueprint("certs_api", __name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def certs_values() -> dict[str, Any]:
    try:
        query = store_certs.CertsQuery.from_args(request.args)
    except QueryError as exc:
        abort(400, description=str(exc))
    now = _now()
    with reader().connect() as conn:
        page = store_certs.certs_page(conn, query, now)
    return {"query": query, "page": page, "teams": page.pop("teams"), "now": now.isoformat()}


def xcode_values() -> dict[str, Any]:
    try:
        query = store_certs.XcodeQuery.from_args(request.args)
    except QueryError as exc:
        abort(400, description=str(exc))
    with reader().connect() as conn:
        if query.baseline is not None:
            if not core_baseline.NAME_RE.match(query.baseline):
                abort(400, description=f"baseline: {query.baseline[:60]!r} is not a baseline name")
            exists, _required = store_certs.baseline_xcode(conn, query.baseline)
            if not exists:
                abort(404, description=f"no baseline {query.baseline!r}")
        return {"query": query, "matrix": store_certs.xcode_matrix(conn, query)}


@bp.route("/certs")
@requires("view")
def certs():
    """Every signing identity in the fleet, soonest expiry first."""
    return render_template("certs.html", **certs_values())


@bp.route("/xcode")
@requires("view")
def xcode():
    """The Xcode matrix: nodes x Xcode versions, with the macOS version and baselines."""
    return render_template("xcode.html", **xcode_values())


@api_bp.route("/certs")
@requires("view")
def certs_api():
    """The certificates page's rows (filters and paging as the page's query string)."""
    values = certs_values()
    values["query"] = values["query"].args()
    return jsonify(values)


@api_bp.route("/xcode")
@requires("view")
def xcode_api():
    """The Xcode matrix's rows and columns (filters and paging as the page's query string)."""
    values = xcode_values()
    values["query"] = values["query"].args()
    return jsonify(values)
