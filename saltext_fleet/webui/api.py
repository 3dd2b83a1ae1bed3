"""The JSON API under ``/api/v1``: the same data and actions as the pages, with the same roles.

Authenticate with the session cookie (and the ``X-CSRF-Token`` header for changes) or with a
per-user API token (``Authorization: Bearer fleet_...``, made on the account page, stored
hashed). Every error is ``{"error": {"code": <HTTP status>, "message": "..."}}``.
``/api/v1/openapi.json`` describes it all.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, jsonify, request, url_for
from sqlalchemy import select

from saltext_fleet import __version__
from saltext_fleet.core import webauth
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import queries as store_queries
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store.models import Job, Return
from saltext_fleet.webui.app import requires
from saltext_fleet.webui.pages import (
    KEY_DECISIONS,
    _meta_values,
    baseline_op,
    overview_query,
    run_group_action,
    run_node_action,
    save_node_meta,
    start_bootstrap,
    valid_group,
    valid_minion,
)
from saltext_fleet.webui.salt import SaltError

bp = Blueprint("api", __name__)


def ctx():
    return current_app.extensions["fleet"]


def actor() -> str:
    return f"ui:{g.user['username']}"


def _salt():
    if ctx().salt is None:
        abort(502, description="this UI has no connection to a Salt master")
    return ctx().salt


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
    query = overview_query()
    with ctx().engine.connect() as conn:
        return jsonify(store_ui.overview(conn, query))


@bp.route("/nodes/<minion_id>")
@requires("view")
def node(minion_id):
    valid_minion(minion_id)
    with ctx().engine.connect() as conn:
        found = store_ui.node(conn, minion_id)
    if found is None:
        abort(404, description=f"no node {minion_id!r}")
    return jsonify(found)


@bp.route("/nodes/<minion_id>", methods=["PATCH"])
@requires("nodes.edit")
def node_edit(minion_id):
    valid_minion(minion_id)
    body = _body()
    form = {k: ("yes" if v is True else "no" if v is False else v) for k, v in body.items()}
    unknown = set(form) - {"criticality", "audited", "comment"}
    if unknown:
        abort(400, description=f"unknown fields: {', '.join(sorted(unknown))}")
    save_node_meta(minion_id, _meta_values(form))
    with ctx().engine.connect() as conn:
        return jsonify(store_ui.node(conn, minion_id))


@bp.route("/nodes/<minion_id>/drift")
@requires("view")
def node_drift(minion_id):
    valid_minion(minion_id)
    with ctx().engine.connect() as conn:
        return jsonify(store_ui.drift_history(conn, minion_id))


@bp.route("/nodes/<minion_id>/actions", methods=["POST"])
@requires("actions.run")
def node_action(minion_id):
    valid_minion(minion_id)
    jid, _label = run_node_action(minion_id, _body().get("action"))
    return jsonify({"jid": jid}), 202


@bp.route("/groups/<group>/actions", methods=["POST"])
@requires("actions.run")
def group_action(group):
    """Run an action on every node of a node group."""
    valid_group(group)
    return jsonify(run_group_action(group, _body().get("action"))), 202


@bp.route("/keys")
@requires("view")
def keys():
    status = request.args.get("status")
    kwarg = {"status": status} if status else {}
    try:
        return jsonify(_salt().runner("fleet.keys", kwarg, user=actor()))
    except SaltError as exc:
        abort(400, description=str(exc))


@bp.route("/keys/<minion_id>/<decision>", methods=["POST"])
@requires("keys.decide")
def key_decide(minion_id, decision):
    valid_minion(minion_id)
    funs = KEY_DECISIONS
    if decision not in funs:
        abort(404, description=f"decision: one of {', '.join(funs)}")
    body = _body()
    kwarg: dict[str, Any] = {"minion": minion_id}
    if body.get("fingerprint") and decision != "delete":
        kwarg["fingerprint"] = str(body["fingerprint"])
    try:
        return jsonify(_salt().runner(funs[decision], kwarg, user=actor()))
    except SaltError as exc:
        abort(409, description=str(exc))


@bp.route("/enrolments", methods=["POST"])
@requires("enrol")
def enrol():
    body = _body()
    kwarg = {k: body[k] for k in ("minion", "ttl", "group", "fingerprint") if body.get(k)}
    try:
        return jsonify(_salt().runner("fleet.enrol", kwarg, user=actor())), 201
    except SaltError as exc:
        abort(400, description=str(exc))


@bp.route("/bootstraps")
@requires("view")
def bootstraps():
    """Bootstrap attempts, newest first (``?id=`` for one node)."""
    from saltext_fleet.master import bootstrapper

    minion_id = request.args.get("id")
    if minion_id is not None:
        valid_minion(minion_id)
    listed = bootstrapper.attempts(ctx().engine, minion_id, 50)
    failure = ctx().bootstrap_failures.get(minion_id) if minion_id else None
    return jsonify({"attempts": listed, "failure": failure})


@bp.route("/bootstraps", methods=["POST"])
@requires("bootstrap")
def bootstrap_start():
    """Start ``fleet.bootstrap``: host, id, group (port, user, python, prefix, service)."""
    minion_id = start_bootstrap(_body())
    return jsonify({"id": minion_id, "progress": f"/api/v1/bootstraps?id={minion_id}"}), 202


@bp.route("/baselines")
@requires("view")
def baselines():
    """Every baseline (fleet.baseline_list)."""
    return jsonify(_salt().runner("fleet.baseline_list", user=actor()))


@bp.route("/baselines/<op>", methods=["POST"])
@requires("baselines.edit")
def baseline_edit(op):
    """Pin, edit (set), assign, unassign or delete a baseline through its runner."""
    return jsonify(baseline_op(op, _body()))


@bp.route("/jobs")
@requires("jobs.view")
def jobs():
    try:
        limit = min(500, max(1, int(request.args.get("limit", "50"))))
    except ValueError:
        abort(400, description="limit: a whole number")
    with ctx().engine.connect() as conn:
        rows = conn.execute(
            select(Job.jid, Job.fun, Job.tgt, Job.user, Job.started_at)
            .order_by(Job.started_at.desc(), Job.jid.desc())
            .limit(limit)
        ).all()
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
    if not jid.isdigit() or len(jid) > 64:
        abort(404, description="no such job")
    try:
        limit = min(1000, max(1, int(request.args.get("limit", "100"))))
    except ValueError:
        abort(400, description="limit: a whole number")
    engine = ctx().engine
    load = store_queries.get_load(engine, jid)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Return.minion_id,
                Return.success,
                Return.ret.label("ret"),
                Return.stored_at,
                Return.authenticated,
            )
            .where(Return.jid == jid)
            .order_by(Return.minion_id)
            .limit(limit)
        ).all()
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
    return jsonify(store_audit.verify(ctx().engine))


@bp.route("/openapi.json")
@requires("view")
def openapi():
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
