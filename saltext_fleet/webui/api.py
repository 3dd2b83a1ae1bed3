"""The JSON API under ``/api/v1``: the same data and actions as the pages, with the same roles.

Authenticate with the session cookie (and the ``X-CSRF-Token`` header for changes) or with a
per-user API token (``Authorization: Bearer fleet_...``, made on the account page, stored
hashed). Every error is ``{"error": {"code": <HTTP status>, "message": "..."}}``.
``/api/v1/openapi.json`` describes it all.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, request, url_for

from saltext_fleet import __version__
from saltext_fleet.core import webauth
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import queries as store_queries
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import ui_queries
from saltext_fleet.webui import ops, sbom_ops
from saltext_fleet.webui.base import actor, ctx, requires, salt
from saltext_fleet.webui.salt import SaltError

bp = Blueprint("api", __name__)


def _body() -> dict[str, Any]:
    if not request.content_length:
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="the body must be a JSON object")
    return data


@bp.route("/me")
@requires("view")
def me():
    """The user asking: name, role, permissions, second factor."""
    user = g.user
    return jsonify(
        {
            "username": user["username"],
            "role": user["role"],
            "permissions": sorted(webauth.permissions_of(user["role"])),
            "totp": user["totp"],
        }
    )


@bp.route("/nodes")
@requires("view")
def nodes():
    """The fleet, filtered, sorted and paged as the overview is."""
    query = ops.overview_query()
    with ctx().engine.connect() as conn:
        return jsonify(store_ui.overview(conn, query))


@bp.route("/nodes/<minion_id>")
@requires("view")
def node(minion_id):
    """One node."""
    ops.valid_minion(minion_id)
    with ctx().engine.connect() as conn:
        found = store_ui.node(conn, minion_id)
    if found is None:
        abort(404, description=f"no node {minion_id!r}")
    return jsonify(found)


@bp.route("/nodes/<minion_id>", methods=["PATCH"])
@requires("nodes.edit")
def node_edit(minion_id):
    """Change a node's criticality, audited flag or comment."""
    ops.valid_minion(minion_id)
    body = _body()
    form = {k: ("yes" if v is True else "no" if v is False else v) for k, v in body.items()}
    unknown = set(form) - {"criticality", "audited", "comment"}
    if unknown:
        abort(400, description=f"unknown fields: {', '.join(sorted(unknown))}")
    ops.save_node_meta(minion_id, ops.meta_values(form))
    with ctx().engine.connect() as conn:
        return jsonify(store_ui.node(conn, minion_id))


@bp.route("/nodes/<minion_id>/drift")
@requires("view")
def node_drift(minion_id):
    """A node's drift history."""
    ops.valid_minion(minion_id)
    with ctx().engine.connect() as conn:
        return jsonify(store_ui.drift_history(conn, minion_id))


@bp.route("/nodes/<minion_id>/sbom")
@requires("view")
def node_sbom(minion_id):
    """A node's CycloneDX 1.6 SBOM from its stored inventory (``?format=cyclonedx-xml``)."""
    ops.valid_minion(minion_id)
    fmt = sbom_ops.requested_format()
    text, media_type, filename = sbom_ops.node_document(
        minion_id, fmt, vex=sbom_ops.requested_vex()
    )
    return Response(
        text,
        mimetype=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.route("/nodes/<minion_id>/actions", methods=["POST"])
@requires("actions.run")
def node_action(minion_id):
    """Run an allow-listed action on a node."""
    ops.valid_minion(minion_id)
    jid, _label = ops.run_node_action(minion_id, _body().get("action"))
    return jsonify({"jid": jid}), 202


@bp.route("/groups/<group>/actions", methods=["POST"])
@requires("actions.run")
def group_action(group):
    """Run an action on every node of a node group."""
    ops.valid_group(group)
    return jsonify(ops.run_group_action(group, _body().get("action"))), 202


@bp.route("/keys")
@requires("view")
def keys():
    """Minion keys (``?status=`` for one state)."""
    status = request.args.get("status")
    kwarg = {"status": status} if status else {}
    try:
        return jsonify(salt().runner("fleet.keys", kwarg, user=actor()))
    except SaltError as exc:
        abort(400, description=str(exc))


@bp.route("/keys/<minion_id>/<decision>", methods=["POST"])
@requires("keys.decide")
def key_decide(minion_id, decision):
    """Accept, reject or delete a minion's key."""
    ops.valid_minion(minion_id)
    if decision not in ops.KEY_DECISIONS:
        abort(404, description=f"decision: one of {', '.join(ops.KEY_DECISIONS)}")
    try:
        return jsonify(ops.decide_key(minion_id, decision, _body().get("fingerprint")))
    except SaltError as exc:
        abort(409, description=str(exc))


@bp.route("/enrolments", methods=["POST"])
@requires("enrol")
def enrol():
    """Create an enrolment: minion, ttl, group, fingerprint."""
    body = _body()
    kwarg = {k: body[k] for k in ("minion", "ttl", "group", "fingerprint") if body.get(k)}
    try:
        return jsonify(salt().runner("fleet.enrol", kwarg, user=actor())), 201
    except SaltError as exc:
        abort(400, description=str(exc))


@bp.route("/bootstraps")
@requires("view")
def bootstraps():
    """Bootstrap attempts, newest first (``?id=`` for one node)."""
    minion_id = request.args.get("id")
    if minion_id is not None:
        ops.valid_minion(minion_id)
    listed = ops.bootstrap_attempts(minion_id, 50)
    return jsonify({"attempts": listed, "failure": ops.bootstrap_failure(minion_id)})


@bp.route("/bootstraps", methods=["POST"])
@requires("bootstrap")
def bootstrap_start():
    """Start ``fleet.bootstrap``: host, id, group (port, user, python, prefix, service)."""
    minion_id = ops.start_bootstrap(_body())
    return jsonify({"id": minion_id, "progress": f"/api/v1/bootstraps?id={minion_id}"}), 202


@bp.route("/baselines")
@requires("view")
def baselines():
    """Every baseline (fleet.baseline_list)."""
    return jsonify(salt().runner("fleet.baseline_list", user=actor()))


@bp.route("/baselines/<op>", methods=["POST"])
@requires("baselines.edit")
def baseline_edit(op):
    """Pin, edit (set), assign, unassign or delete a baseline through its runner."""
    return jsonify(ops.baseline_op(op, _body()))


@bp.route("/jobs")
@requires("jobs.view")
def jobs():
    """Salt's jobs, newest first (``?limit=``, at most 500)."""
    try:
        limit = min(500, max(1, int(request.args.get("limit", "50"))))
    except ValueError:
        abort(400, description="limit: a whole number")
    with ctx().engine.connect() as conn:
        rows = ui_queries.jobs_page(conn, limit)
    return jsonify(
        [
            {
                "jid": r.jid,
                "fun": r.fun,
                "tgt": r.tgt,
                "user": r.user,
                "started": _iso(r.started_at),
            }
            for r in rows
        ]
    )


@bp.route("/jobs/<jid>")
@requires("jobs.returns")
def job(jid):
    """A job's load and its returns (auditor and up: returns hold command output)."""
    ops.valid_jid(jid)
    try:
        limit = min(1000, max(1, int(request.args.get("limit", "100"))))
    except ValueError:
        abort(400, description="limit: a whole number")
    engine = ctx().engine
    load = store_queries.get_load(engine, jid)
    with engine.connect() as conn:
        rows = ui_queries.job_returns(conn, jid, limit)
    if not load and not rows:
        abort(404, description=f"no job {jid}")
    return jsonify(
        {
            "jid": jid,
            "load": load,
            "returns": [
                {
                    "minion": r.minion_id,
                    "success": r.success,
                    "return": r.ret,
                    "stored": _iso(r.stored_at),
                    # False: a minion wrote it itself (--return fleet), a claim about "minion"
                    "authenticated": r.authenticated,
                }
                for r in rows
            ],
        }
    )


@bp.route("/audit")
@requires("audit.view")
def audit():
    """The audit log, newest first (``?limit=``, ``?before=``, ``?target=``)."""
    try:
        limit = min(1000, max(1, int(request.args.get("limit", "100"))))
        before = int(request.args["before"]) if request.args.get("before") else None
    except ValueError:
        abort(400, description="limit and before: whole numbers")
    return jsonify(
        store_audit.events(
            ctx().engine, limit=limit, target=request.args.get("target"), before=before
        )
    )


@bp.route("/audit/verify")
@requires("audit.view")
def audit_verify():
    """Check the audit chain."""
    return jsonify(store_audit.verify(ctx().engine))


@bp.route("/openapi.json")
@requires("view")
def openapi():
    """This API's OpenAPI description."""
    return jsonify(spec())


def _iso(at) -> str | None:
    return at.isoformat() if at is not None else None


def spec() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API, built from the app's own URL map."""
    app = current_app
    paths: dict[str, dict] = {}
    error = {"$ref": "#/components/schemas/Error"}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api.openapi":
            continue
        view = app.view_functions[rule.endpoint]
        path = rule.rule[len("/api/v1") :]
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", "{" + arg + "}")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = {
                "operationId": rule.endpoint.replace("api.", "", 1) + "_" + method.lower(),
                "summary": (view.__doc__ or rule.endpoint).strip().splitlines()[0],
                "x-permission": getattr(view, "fleet_permission", None),
                "parameters": [
                    {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
                    for arg in sorted(rule.arguments)
                ],
                "responses": {
                    "200": {"description": "OK"},
                    "default": {
                        "description": "an error",
                        "content": {"application/json": {"schema": error}},
                    },
                },
            }
    return {
        "openapi": "3.1.0",
        "info": {"title": "saltext-fleet", "version": __version__},
        "servers": [{"url": url_for("pages.overview").rstrip("/") + "/api/v1"}],
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "fleet_session"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "integer"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }
