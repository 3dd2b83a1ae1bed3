"""The UI's pages: fleet overview, node, keys, enrolment, bootstrap, jobs, audit log, users,
baselines.

Thin views: what they share with the JSON API is :mod:`saltext_fleet.webui.ops` (checks,
node metadata, actions, bootstrap, baselines); pages read the store (paged and aggregated in
SQL: :mod:`saltext_fleet.store.ui`, :mod:`saltext_fleet.store.ui_queries`); actions go
through Salt's own clients, whose ``fleet.*`` runners write the audit events, or, for what
is the UI's own (node metadata, users), are audited here. Every state-changing route is a
POST with the session's CSRF token.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from saltext_fleet.core import webauth
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import ui_queries
from saltext_fleet.store import users as store_users
from saltext_fleet.webui import alerts_ops, charts, drift_ops, kvm_ops, ops, vulns_ops
from saltext_fleet.webui.base import actor, ctx, reader, requires, salt
from saltext_fleet.webui.salt import SaltError

bp = Blueprint("pages", __name__)


# -- the fleet ---------------------------------------------------------------------------------


@bp.route("/")
@requires("view")
def overview():
    """The fleet: filtered, sorted and paged."""
    query = ops.overview_query()
    with reader().connect() as conn:
        page = store_ui.overview(conn, query)
        os_names = store_ui.os_names(conn)
    return render_template(
        "overview.html",
        page=page,
        query=query,
        os_names=os_names,
        criticalities=store_ui.CRITICALITIES,
        statuses=store_ui.STATUSES,
        sorts=store_ui.SORTS,
    )


@bp.route("/nodes/<minion_id>")
@requires("view")
def node(minion_id):
    """One node: facts, drift findings and history, alerts, jobs, timeline, inventory,
    actions."""
    ops.valid_minion(minion_id)
    with ctx().engine.connect() as conn:
        found = store_ui.node(conn, minion_id)
        if found is None:
            abort(404, description=f"no node {minion_id!r} in the store")
        history = store_ui.drift_history(conn, minion_id)
        jobs = store_ui.recent_jobs(conn, minion_id)
        timeline = store_ui.timeline(conn, minion_id)
        inventory = ops.inventory_summary(
            conn, found.get("inventory_digest"), request.args.get("eco"), ops.page_arg("inv_page")
        )
        findings = drift_ops.findings_of(conn, minion_id)
        vulns = vulns_ops.node_summary(conn, minion_id)
        kvm_devices = kvm_ops.node_devices(conn, minion_id)
        node_alerts = alerts_ops.node_alerts(conn, minion_id)
    threshold = getattr(getattr(ctx().config, "drift", None), "alert_score", None)
    return render_template(
        "node.html",
        node=found,
        chart=charts.line_chart(history, threshold=threshold),
        history=history,
        jobs=jobs,
        timeline=timeline,
        inventory=inventory,
        findings=findings,
        vulns=vulns,
        kvm_devices=kvm_devices,
        node_alerts=node_alerts,
        actions=ops.node_actions(found.get("facts")),
        criticalities=store_ui.CRITICALITIES,
    )


@bp.route("/nodes/<minion_id>/meta", methods=["POST"])
@requires("nodes.edit")
def node_meta(minion_id):
    """Change a node's criticality, audited flag or comment."""
    ops.valid_minion(minion_id)
    ops.save_node_meta(minion_id, ops.meta_values(request.form))
    flash("Saved.")
    return redirect(url_for("pages.node", minion_id=minion_id), 303)


@bp.route("/nodes/<minion_id>/action", methods=["POST"])
@requires("actions.run")
def node_action(minion_id):
    """Run an allow-listed action on a node."""
    ops.valid_minion(minion_id)
    jid, label = ops.run_node_action(minion_id, request.form.get("action") or "")
    flash(f"Started: {label} (job {jid}).")
    return redirect(url_for("pages.node", minion_id=minion_id), 303)


@bp.route("/groups")
@requires("view")
def groups():
    """The node groups and the actions that run on a whole group."""
    with ctx().engine.connect() as conn:
        listed = ui_queries.group_listing(conn)
    return render_template("groups.html", groups=listed, actions=ops.group_actions())


@bp.route("/groups/<group>/action", methods=["POST"])
@requires("actions.run")
def group_action(group):
    """Run an action on every node of a group."""
    ops.valid_group(group)
    result = ops.run_group_action(group, request.form.get("action") or "")
    started = sum(len(j["minions"]) for j in result["jobs"])
    message = (
        f"{group}: started on {started} nodes ({', '.join(j['jid'] for j in result['jobs'])})."
    )
    if result["skipped"]:
        message += f" Skipped (no such command for their system): {', '.join(result['skipped'])}."
    flash(message)
    return redirect(url_for("pages.groups"), 303)


# -- keys and enrolment ------------------------------------------------------------------------


@bp.route("/keys")
@requires("view")
def keys():
    """Minion keys by state, with their fingerprints."""
    try:
        found = salt().runner("fleet.keys", user=actor())
    except SaltError as exc:
        abort(502, description=str(exc))
    groups: dict[str, list] = {"pending": [], "accepted": [], "rejected": [], "denied": []}
    for minion_id, entry in (found or {}).items():
        groups.setdefault(entry.get("state", "pending"), []).append({"id": minion_id, **entry})
    return render_template("keys.html", groups=groups)


@bp.route("/keys/<minion_id>/<decision>", methods=["POST"])
@requires("keys.decide")
def key_decide(minion_id, decision):
    """Accept, reject or delete a minion's key."""
    ops.valid_minion(minion_id)
    if decision not in ops.KEY_DECISIONS:
        abort(404)
    try:
        ops.decide_key(
            minion_id,
            decision,
            request.form.get("fingerprint"),
            bool(request.form.get("include_rejected")),
        )
    except SaltError as exc:
        flash(f"{decision} {minion_id}: {exc}")
        return redirect(url_for("pages.keys"), 303)
    flash(f"{minion_id}: {decision}ed." if decision != "delete" else f"{minion_id}: deleted.")
    return redirect(url_for("pages.keys"), 303)


@bp.route("/enrol", methods=["GET", "POST"])
@requires("enrol")
def enrol():
    """Create an enrolment (expected id, one-time token) and list the open ones."""
    made = None
    if request.method == "POST":
        kwarg = {"minion": request.form.get("minion") or ""}
        for name in ("ttl", "group", "fingerprint"):
            if request.form.get(name):
                kwarg[name] = request.form[name]
        try:
            made = salt().runner("fleet.enrol", kwarg, user=actor())
        except SaltError as exc:
            flash(str(exc))
    try:
        listed = salt().runner("fleet.enrolments", user=actor())
    except SaltError as exc:
        abort(502, description=str(exc))
    return render_template("enrol.html", made=made, enrolments=listed or [])


# -- bootstrap -------------------------------------------------------------------------------


@bp.route("/bootstrap", methods=["GET", "POST"])
@requires("bootstrap")
def bootstrap():
    """Start a bootstrap over SSH; the recent attempts."""
    if request.method == "POST":
        minion_id = ops.start_bootstrap(request.form)
        flash(f"Bootstrap of {minion_id} started.")
        return redirect(url_for("pages.bootstrap_progress", minion_id=minion_id), 303)
    with ctx().engine.connect() as conn:
        groups = [g["name"] for g in store_secrets.groups(conn)]
    return render_template(
        "bootstrap.html", attempts=ops.bootstrap_attempts(None, 20), groups=groups
    )


@bp.route("/bootstrap/<minion_id>")
@requires("view")
def bootstrap_progress(minion_id):
    """One node's latest bootstrap, its steps as they happen (reloads while it runs)."""
    ops.valid_minion(minion_id)
    latest = ops.bootstrap_attempts(minion_id, 1)
    failure = ops.bootstrap_failure(minion_id)
    return render_template(
        "bootstrap_progress.html",
        minion_id=minion_id,
        attempt=latest[0] if latest else None,
        failure=failure,
        waiting=(not latest and not failure) or (latest and latest[0]["state"] == "running"),
    )


# -- jobs and the audit log --------------------------------------------------------------------


@bp.route("/jobs")
@requires("jobs.view")
def jobs():
    """Salt's jobs, newest first, 50 a page."""
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        abort(400, description="page: a whole number")
    per_page = 50
    with reader().connect() as conn:
        rows = ui_queries.jobs_page(conn, per_page + 1, (page - 1) * per_page)
    return render_template("jobs.html", jobs=rows[:per_page], page=page, more=len(rows) > per_page)


@bp.route("/jobs/<jid>")
@requires("jobs.returns")
def job(jid):
    """A job's load and its returns, paged and cut (``?minion=<id>``: one minion's, whole)."""
    ops.valid_jid(jid)
    page = ops.page_arg()
    minion = request.args.get("minion") or None
    if minion is not None:
        ops.valid_minion(minion)
    return render_template("job.html", **ops.job_page(jid, page, minion))


@bp.route("/audit")
@requires("audit.view")
def audit_log():
    """The audit log, newest first (``?verify=1`` checks the chain)."""
    try:
        before = int(request.args["before"]) if request.args.get("before") else None
    except ValueError:
        abort(400, description="before: an event id")
    target = request.args.get("target") or None
    events = store_audit.events(ctx().engine, limit=100, target=target, before=before)
    status = store_audit.verify(ctx().engine) if request.args.get("verify") else None
    return render_template("audit.html", events=events, status=status, target=target)


# -- users -------------------------------------------------------------------------------------


@bp.route("/users", methods=["GET", "POST"])
@requires("users.manage")
def users():
    """The UI's users; create one."""
    c = ctx()
    if request.method == "POST":
        username = (request.form.get("username") or "").strip()
        role = request.form.get("role") or ""
        password = request.form.get("password") or None
        source = request.form.get("source") or "local"
        try:
            with c.engine.begin() as conn:
                store_users.create_user(
                    conn, username, role, password, source=source, rounds=c.bcrypt_rounds
                )
                store_audit.append(
                    conn, actor(), "user.create", username, {"role": role, "source": source}
                )
        except (webauth.WebAuthError, store_users.UserError) as exc:
            flash(str(exc))
            return redirect(url_for("pages.users"), 303)
        flash(f"User {username} created.")
        return redirect(url_for("pages.users"), 303)
    with c.engine.connect() as conn:
        listed = store_users.users(conn)
    return render_template("users.html", users=listed, roles=webauth.ROLES)


@bp.route("/users/<username>/<change>", methods=["POST"])
@requires("users.manage")
def user_change(username, change):
    """Change a user's role, disable, enable, reset TOTP, unlock or delete."""
    c = ctx()
    try:
        with c.engine.begin() as conn:
            if store_users.get_user(conn, username) is None:
                abort(404, description=f"no user {username!r}")
            if change == "role":
                role = request.form.get("role") or ""
                store_users.set_role(conn, username, role)
                details = {"role": role}
            elif change == "disable":
                store_users.set_disabled(conn, username, True)
                details = {}
            elif change == "enable":
                store_users.set_disabled(conn, username, False)
                details = {}
            elif change == "reset-totp":
                store_users.reset_totp(conn, username)
                details = {}
            elif change == "unlock":
                store_users.lock(conn, username, None)
                details = {}
            elif change == "delete":
                if username == g.user["username"]:
                    abort(409, description="you cannot delete yourself")
                store_users.delete_user(conn, username)
                details = {}
            else:
                abort(404)
            store_audit.append(conn, actor(), f"user.{change}", username, details)
    except (webauth.WebAuthError, store_users.UserError) as exc:
        flash(str(exc))
        return redirect(url_for("pages.users"), 303)
    if change in ("unlock", "reset-totp", "role"):
        c.throttle.reset(webauth.user_key(username))
    if c.live is not None and change != "unlock":
        c.live.recheck()  # the user's open websockets close now, not at the next check
    flash(f"{username}: {change} done.")
    return redirect(url_for("pages.users"), 303)


# -- baselines ---------------------------------------------------------------------------------


@bp.route("/baselines")
@requires("view")
def baselines():
    """Every baseline and where it is assigned."""
    try:
        listed = salt().runner("fleet.baseline_list", user=actor())
    except SaltError as exc:
        abort(502, description=str(exc))
    return render_template("baselines.html", baselines=listed or [])


@bp.route("/baselines/<name>")
@requires("view")
def baseline(name):
    """One baseline's rules and facts."""
    try:
        found = salt().runner("fleet.baseline_show", {"name": name}, user=actor())
    except SaltError as exc:
        abort(404, description=str(exc))
    return render_template("baseline.html", baseline=found)


@bp.route("/baselines/<op>", methods=["POST"])
@requires("baselines.edit")
def baseline_edit(op):
    """Pin, edit, assign, unassign or delete a baseline; refusals are flashed."""
    values = request.form
    name = values.get("name") or ""
    try:
        ops.baseline_op(op, values)
    except HTTPException as exc:  # what the runner refused: shown on the page it came from
        if exc.code not in (400, 404):
            raise
        flash(f"{op} {name}: {exc.description}")
        back = url_for("pages.baseline", name=name) if op == "set" and name else None
        return redirect(back or url_for("pages.baselines"), 303)
    flash(f"{op} {name}: done.")
    if op == "set" or op == "pin":
        return redirect(url_for("pages.baseline", name=name), 303)
    return redirect(url_for("pages.baselines"), 303)
