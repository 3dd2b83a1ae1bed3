"""The UI's pages: fleet overview, node, keys, enrolment, jobs, audit log, users.

Pages read the store (paged and aggregated in SQL: :mod:`saltext_fleet.store.ui`); actions
go through Salt's own clients (:class:`saltext_fleet.webui.salt.SaltGateway`), whose
``fleet.*`` runners write the audit events, or, for what is the UI's own (node metadata,
users), write them here. Every state-changing route is a POST with the session's CSRF token.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import Text, cast, func, select, update
from werkzeug.exceptions import HTTPException

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import webauth
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import queries as store_queries
from saltext_fleet.store import reports as store_reports
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import Job, Node, Return
from saltext_fleet.webui import charts
from saltext_fleet.webui.app import requires
from saltext_fleet.webui.salt import SaltError

bp = Blueprint("pages", __name__)

#: What an operator may run on a node from the UI: name -> (Salt function, arguments, label)
#: Key decisions and the runners that make them.
KEY_DECISIONS = {
    "accept": "fleet.keys_accept",
    "reject": "fleet.keys_reject",
    "delete": "fleet.keys_delete",
}
NODE_ACTIONS: dict[str, tuple[str, list, str]] = {
    "inventory": ("fleet.inventory", [], "refresh the inventory"),
    "apply": ("state.apply", [], "apply its states"),
    "apply-test": ("state.apply", ["test=True"], "show what applying its states would change"),
}


def ctx():
    return current_app.extensions["fleet"]


def actor() -> str:
    return f"ui:{g.user['username']}"


def salt():
    gateway = ctx().salt
    if gateway is None:
        abort(502, description="this UI has no connection to a Salt master")
    return gateway


#: What a page renders at most: returns of a job per page, the characters of one return
#: shown in the list (the whole return is one click away), packages of a node per page.
RETURNS_PER_PAGE = 50
RETURN_PREVIEW_CHARS = 4000
PACKAGES_PER_PAGE = 200
MISSING_SHOWN = 100


def page_arg(name: str = "page") -> int:
    """A page number from the query string: 1 when absent, 400 naming it when not a whole
    number of at least 1."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return 1
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        abort(400, description=f"{name}: a whole number from 1, not {raw[:20]!r}")
    return int(raw)


def valid_minion(minion_id: str) -> str:
    if not core_gate.is_minion_id(minion_id):
        abort(404, description="no such node")
    return minion_id


# -- the fleet ---------------------------------------------------------------------------------


def overview_query() -> store_ui.OverviewQuery:
    """The overview's parameters from the query string (400 naming a bad one)."""
    try:
        return store_ui.OverviewQuery.from_args(request.args)
    except store_ui.QueryError as exc:
        abort(400, description=str(exc))


@bp.route("/")
@requires("view")
def overview():
    query = overview_query()
    with ctx().engine.connect() as conn:
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
    valid_minion(minion_id)
    with ctx().engine.connect() as conn:
        found = store_ui.node(conn, minion_id)
        if found is None:
            abort(404, description=f"no node {minion_id!r} in the store")
        history = store_ui.drift_history(conn, minion_id)
        jobs = store_ui.recent_jobs(conn, minion_id)
        timeline = store_ui.timeline(conn, minion_id)
        inventory = _inventory_summary(
            conn, found.get("inventory_digest"), request.args.get("eco"), page_arg("inv_page")
        )
        drift = getattr(ctx().config, "drift", None)
        findings = store_reports.node_findings(
            conn, minion_id, drift.weight_map() if drift is not None else None
        )
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
        actions=node_actions(found.get("facts")),
        criticalities=store_ui.CRITICALITIES,
    )


def _inventory_summary(
    conn, digest: str | None, eco: str | None = None, page: int = 1
) -> dict[str, Any] | None:
    """The node's inventory for its page: the count per ecosystem, and one page of one
    ecosystem's packages (``eco``, the first by default)."""
    from saltext_fleet.store.models import InventorySnapshot

    if not digest:
        return None
    snap = conn.execute(
        select(InventorySnapshot.packages, InventorySnapshot.package_count).where(
            InventorySnapshot.digest == digest
        )
    ).first()
    if snap is None:
        return None
    packages = snap.packages if isinstance(snap.packages, dict) else {}
    ecosystems = {
        str(name): len(pkgs) if isinstance(pkgs, dict) else 0
        for name, pkgs in sorted(packages.items())
    }
    selected = eco if eco in ecosystems else next(iter(ecosystems), None)
    listed = packages.get(selected) if selected is not None else None
    listed = sorted(listed.items()) if isinstance(listed, dict) else []
    pages = max(1, math.ceil(len(listed) / PACKAGES_PER_PAGE))
    page = min(page, pages)
    start = (page - 1) * PACKAGES_PER_PAGE
    return {
        "digest": digest,
        "count": snap.package_count,
        "ecosystems": ecosystems,
        "eco": selected,
        "packages": listed[start : start + PACKAGES_PER_PAGE],
        "first": start + 1,
        "page": page,
        "pages": pages,
    }


@bp.route("/nodes/<minion_id>/meta", methods=["POST"])
@requires("nodes.edit")
def node_meta(minion_id):
    valid_minion(minion_id)
    save_node_meta(minion_id, _meta_values(request.form))
    flash("Saved.")
    return redirect(url_for("pages.node", minion_id=minion_id), 303)


def save_node_meta(minion_id: str, values: dict[str, Any]) -> None:
    """Store a node's criticality, audited flag or comment, and audit it (404: no node)."""
    with ctx().engine.begin() as conn:
        done = conn.execute(
            update(Node).where(Node.minion_id == minion_id).values(**values)
        ).rowcount
        if not done:
            abort(404, description=f"no node {minion_id!r} in the store")
        store_audit.append(conn, actor(), "node.meta", minion_id, values)


def _meta_values(form) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "criticality" in form:
        crit = form.get("criticality")
        if crit not in store_ui.CRITICALITIES:
            abort(400, description=f"criticality: one of {', '.join(store_ui.CRITICALITIES)}")
        values["criticality"] = crit
    if "audited" in form:
        raw = (form.get("audited") or "").lower()
        if raw not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
            abort(400, description="audited: yes or no")
        values["audited"] = raw in ("yes", "true", "on", "1")
    if "comment" in form:
        comment = form.get("comment") or ""
        if len(comment) > 2000:
            abort(400, description="comment: at most 2000 characters")
        values["comment"] = comment
    if not values:
        abort(400, description="nothing to change: criticality, audited or comment")
    return values


@bp.route("/nodes/<minion_id>/action", methods=["POST"])
@requires("actions.run")
def node_action(minion_id):
    valid_minion(minion_id)
    name = request.form.get("action") or ""
    jid, label = run_node_action(minion_id, name)
    flash(f"Started: {label} (job {jid}).")
    return redirect(url_for("pages.node", minion_id=minion_id), 303)


def fleet_config():
    from saltext_fleet import config

    return ctx().config or config.load({})


def node_actions(facts: dict | None) -> dict[str, str]:
    """What may be run on a node with these facts: ``{name: label}`` (the fixed actions, and
    the named commands ``fleet:actions`` holds for its OS)."""
    found = {name: label for name, (_fun, _arg, label) in NODE_ACTIONS.items()}
    for name, command in fleet_config().commands_for(facts).items():
        found[name] = f"{name}: {command.cmd}"
    return found


def _publish(targets: list[str], name: str, command) -> str:
    if command is None:
        fun, arg, _label = NODE_ACTIONS[name]
        return salt().local_async(targets, fun, arg, user=actor())
    kwarg = {"python_shell": True, "timeout": command.timeout}
    if command.cwd:
        kwarg["cwd"] = command.cwd
    if command.runas:
        kwarg["runas"] = command.runas
    return salt().local_async(targets, "cmd.run", [command.cmd], user=actor(), kwarg=kwarg)


def run_node_action(minion_id: str, name: str) -> tuple[str, str]:
    """Publish an allow-listed action to a node and audit it: ``(jid, label)``."""
    with ctx().engine.connect() as conn:
        found = store_ui.node(conn, minion_id)
    facts = (found or {}).get("facts") or {}
    allowed = node_actions(facts)
    if name not in allowed:
        abort(400, description=f"action: one of {', '.join(allowed)} for this node")
    command = None if name in NODE_ACTIONS else fleet_config().commands_for(facts)[name]
    try:
        jid = _publish([minion_id], name, command)
    except SaltError as exc:
        abort(502, description=str(exc))
    details = {"action": name, "jid": jid}
    if command is not None:
        details["command"] = command.cmd
    store_audit.record(ctx().engine, actor(), "node.action", minion_id, details)
    return jid, allowed[name]


def run_group_action(group: str, name: str) -> dict[str, Any]:
    """Run an action on every node of a node group: one job per distinct command (the nodes
    of a group may run different systems). ``{"jobs": [{jid, minions, command}], "skipped"}``:
    nodes with no such command for their OS are skipped, and named."""
    with ctx().engine.connect() as conn:
        members = conn.execute(
            select(Node.minion_id, Node.facts).where(Node.node_group == group)
        ).all()
    if not members:
        abort(404, description=f"no node in group {group!r}")
    if name not in NODE_ACTIONS and name not in config_action_names():
        abort(
            400, description=f"action: one of {', '.join([*NODE_ACTIONS, *config_action_names()])}"
        )
    buckets: dict[Any, list[str]] = {}
    skipped = []
    for minion_id, facts in members:
        if name in NODE_ACTIONS:
            buckets.setdefault(None, []).append(minion_id)
            continue
        command = fleet_config().commands_for(facts).get(name)
        if command is None:
            skipped.append(minion_id)
        else:
            buckets.setdefault(command, []).append(minion_id)
    jobs = []
    for command, minions in buckets.items():
        try:
            jid = _publish(sorted(minions), name, command)
        except SaltError as exc:
            abort(502, description=str(exc))
        jobs.append(
            {"jid": jid, "minions": sorted(minions), "command": command.cmd if command else None}
        )
    store_audit.record(
        ctx().engine,
        actor(),
        "group.action",
        group,
        {
            "action": name,
            "jobs": [{"jid": j["jid"], "count": len(j["minions"])} for j in jobs],
            "skipped": skipped,
        },
    )
    return {"jobs": jobs, "skipped": sorted(skipped)}


def config_action_names() -> list[str]:
    from saltext_fleet.config import ACTION_NAMES

    return list(ACTION_NAMES)


def valid_group(group: str) -> str:
    try:
        return core_gate.check_group(group)
    except core_gate.GateError:
        abort(404, description="no such group")


@bp.route("/groups")
@requires("view")
def groups():
    from saltext_fleet.store.models import NodeGroup

    with ctx().engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(Node.node_group, func.count())
                .where(Node.node_group.is_not(None))
                .group_by(Node.node_group)
            ).all()
        )
        defined = {name for (name,) in conn.execute(select(NodeGroup.name))}
    listed = [
        {"name": name, "nodes": counts.get(name, 0), "defined": name in defined}
        for name in sorted(set(counts) | defined)
    ]
    actions = {name: label for name, (_f, _a, label) in NODE_ACTIONS.items()}
    actions.update({name: name for name in config_action_names()})
    return render_template("groups.html", groups=listed, actions=actions)


@bp.route("/groups/<group>/action", methods=["POST"])
@requires("actions.run")
def group_action(group):
    valid_group(group)
    result = run_group_action(group, request.form.get("action") or "")
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
    valid_minion(minion_id)
    funs = KEY_DECISIONS
    if decision not in funs:
        abort(404)
    kwarg: dict[str, Any] = {"minion": minion_id}
    fingerprint = request.form.get("fingerprint")
    if fingerprint and decision != "delete":
        kwarg["fingerprint"] = fingerprint
    if decision == "accept" and request.form.get("include_rejected"):
        kwarg["include_rejected"] = True
    try:
        salt().runner(funs[decision], kwarg, user=actor())
    except SaltError as exc:
        flash(f"{decision} {minion_id}: {exc}")
        return redirect(url_for("pages.keys"), 303)
    flash(f"{minion_id}: {decision}ed." if decision != "delete" else f"{minion_id}: deleted.")
    return redirect(url_for("pages.keys"), 303)


@bp.route("/enrol", methods=["GET", "POST"])
@requires("enrol")
def enrol():
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

#: The fields of the bootstrap form, as ``fleet.bootstrap`` takes them.
BOOTSTRAP_FIELDS = ("host", "id", "group", "port", "user", "python", "prefix", "service")


def start_bootstrap(form) -> str:
    """Start ``fleet.bootstrap`` (through Salt's RunnerClient, in a thread of the engine: it
    runs for minutes); its progress is in the store as it goes. Returns the minion id."""
    import threading

    from saltext_fleet.master import bootstrapper

    kwarg = {name: str(form[name]) for name in BOOTSTRAP_FIELDS if form.get(name)}
    for name in ("host", "id", "group"):
        if not kwarg.get(name):
            abort(400, description=f"{name}: needed")
    minion_id = valid_minion(kwarg["id"])
    latest = bootstrapper.attempts(ctx().engine, minion_id, 1)
    if latest and latest[0]["state"] == "running":
        abort(409, description=f"{minion_id} is still bootstrapping; wait for it to end")
    gateway, who, failures = salt(), actor(), ctx().bootstrap_failures
    failures.pop(minion_id, None)

    def run():
        try:
            gateway.runner("fleet.bootstrap", kwarg, user=who)
        except SaltError as exc:  # refused before it started, or failed: shown on its page
            failures[minion_id] = str(exc)

    threading.Thread(target=run, name=f"fleet-ui-bootstrap-{minion_id}", daemon=True).start()
    return minion_id


@bp.route("/bootstrap", methods=["GET", "POST"])
@requires("bootstrap")
def bootstrap():
    from saltext_fleet.master import bootstrapper

    if request.method == "POST":
        minion_id = start_bootstrap(request.form)
        flash(f"Bootstrap of {minion_id} started.")
        return redirect(url_for("pages.bootstrap_progress", minion_id=minion_id), 303)
    with ctx().engine.connect() as conn:
        from saltext_fleet.store import secrets as store_secrets

        groups = [g["name"] for g in store_secrets.groups(conn)]
    return render_template(
        "bootstrap.html", attempts=bootstrapper.attempts(ctx().engine, None, 20), groups=groups
    )


@bp.route("/bootstrap/<minion_id>")
@requires("view")
def bootstrap_progress(minion_id):
    """One node's latest bootstrap, its steps as they happen (the page reloads itself while
    the bootstrap runs)."""
    from saltext_fleet.master import bootstrapper

    valid_minion(minion_id)
    latest = bootstrapper.attempts(ctx().engine, minion_id, 1)
    failure = ctx().bootstrap_failures.get(minion_id)
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
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        abort(400, description="page: a whole number")
    per_page = 50
    with ctx().engine.connect() as conn:
        rows = conn.execute(
            select(Job.jid, Job.fun, Job.tgt, Job.user, Job.started_at)
            .order_by(Job.started_at.desc(), Job.jid.desc())
            .limit(per_page + 1)
            .offset((page - 1) * per_page)
        ).all()
    return render_template("jobs.html", jobs=rows[:per_page], page=page, more=len(rows) > per_page)


@bp.route("/jobs/<jid>")
@requires("jobs.returns")
def job(jid):
    """A job's load and its returns, ``RETURNS_PER_PAGE`` a page, each cut at
    ``RETURN_PREVIEW_CHARS``; ``?minion=<id>`` shows that minion's returns whole."""
    if not jid.isdigit() or len(jid) > 64:
        abort(404, description="no such job")
    page = page_arg()
    minion = request.args.get("minion") or None
    if minion is not None:
        valid_minion(minion)
    columns = (Return.minion_id, Return.success, Return.stored_at, Return.authenticated)
    # a return may be megabytes: the list reads only its length and its first characters
    as_text = cast(Return.ret, Text)
    with ctx().engine.connect() as conn:
        load = store_queries.get_load(ctx().engine, jid)
        total = conn.execute(
            select(func.count()).select_from(Return).where(Return.jid == jid)
        ).scalar()
        if minion is not None:
            rows = conn.execute(
                select(*columns, Return.ret.label("ret"))
                .where(Return.jid == jid, Return.minion_id == minion)
                .order_by(Return.id)
                .limit(RETURNS_PER_PAGE)  # self-reported rows can be many
            ).all()
        else:
            rows = conn.execute(
                select(
                    *columns,
                    func.length(as_text).label("chars"),
                    func.substr(as_text, 1, RETURN_PREVIEW_CHARS).label("head"),
                )
                .where(Return.jid == jid)
                .order_by(Return.minion_id, Return.id)
                .limit(RETURNS_PER_PAGE)
                .offset((page - 1) * RETURNS_PER_PAGE)
            ).all()
        missing: list[str] = []
        if load.get("Minions"):
            returned = {
                m
                for (m,) in conn.execute(
                    # a return a minion wrote itself (a claim) does not count as an answer
                    select(Return.minion_id)
                    .where(Return.jid == jid, Return.authenticated.is_(True))
                    .distinct()
                )
            }
            missing = [m for m in load["Minions"] if m not in returned]
    if not load and not total:
        abort(404, description=f"no job {jid}")
    returns = []
    for row in rows:
        if minion is not None:
            text, chars, cut = _pretty(row.ret), None, False
        elif row.chars is None or row.chars <= RETURN_PREVIEW_CHARS:
            text, chars, cut = _pretty(_loads(row.head)), row.chars, False
        else:  # the first characters of the stored JSON, as they are
            text, chars, cut = row.head, row.chars, True
        returns.append(
            {
                "minion_id": row.minion_id,
                "success": row.success,
                "stored_at": row.stored_at,
                "authenticated": row.authenticated,
                "text": text,
                "chars": chars,
                "truncated": cut,
            }
        )
    return render_template(
        "job.html",
        jid=jid,
        load=load,
        returns=returns,
        total=total,
        page=page,
        pages=max(1, math.ceil(total / RETURNS_PER_PAGE)),
        minion=minion,
        missing=missing[:MISSING_SHOWN],
        missing_more=max(0, len(missing) - MISSING_SHOWN),
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@bp.route("/audit")
@requires("audit.view")
def audit_log():
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
        c.throttle.reset(f"user:{username}")
    if c.live is not None and change != "unlock":
        c.live.recheck()  # the user's open websockets close now, not at the next check
    flash(f"{username}: {change} done.")
    return redirect(url_for("pages.users"), 303)


# -- baselines ---------------------------------------------------------------------------------


@bp.route("/baselines")
@requires("view")
def baselines():
    try:
        listed = salt().runner("fleet.baseline_list", user=actor())
    except SaltError as exc:
        abort(502, description=str(exc))
    return render_template("baselines.html", baselines=listed or [])


@bp.route("/baselines/<name>")
@requires("view")
def baseline(name):
    try:
        found = salt().runner("fleet.baseline_show", {"name": name}, user=actor())
    except SaltError as exc:
        abort(404, description=str(exc))
    return render_template("baseline.html", baseline=found)


#: What the baselines pages may ask of the ``fleet.baseline_*`` runners: op -> (runner,
#: the form fields it takes, those it needs). The runners check the values and audit.
BASELINE_OPS = {
    "pin": ("fleet.baseline_pin", ("minion", "name", "description"), ("minion", "name")),
    "set": (
        "fleet.baseline_set",
        ("name", "package", "rule", "version", "remove", "fact", "value", "description", "create"),
        ("name",),
    ),
    "assign": (
        "fleet.baseline_assign",
        ("name", "target", "tgt_type", "priority"),
        ("name", "target"),
    ),
    "unassign": ("fleet.baseline_unassign", ("name", "target"), ("name",)),
    "delete": ("fleet.baseline_delete", ("name",), ("name",)),
}


def baseline_op(op: str, values) -> Any:
    if op not in BASELINE_OPS:
        abort(404, description=f"op: one of {', '.join(BASELINE_OPS)}")
    fun, fields, needed = BASELINE_OPS[op]
    kwarg = {k: values[k] for k in fields if values.get(k) not in (None, "")}
    for k in needed:
        if k not in kwarg:
            abort(400, description=f"{k}: needed")
    for flag in ("remove", "create"):
        if flag in kwarg:
            kwarg[flag] = str(kwarg[flag]).lower() in ("1", "yes", "true", "on")
    try:
        return salt().runner(fun, kwarg, user=actor())
    except SaltError as exc:
        abort(400, description=str(exc))


@bp.route("/baselines/<op>", methods=["POST"])
@requires("baselines.edit")
def baseline_edit(op):
    values = request.form
    name = values.get("name") or ""
    try:
        baseline_op(op, values)
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
