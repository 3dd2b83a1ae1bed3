"""What the pages and the JSON API both do: check what they were given, change node metadata,
run node and group actions, decide keys, start a bootstrap, run the baseline operations, and
shape a node's inventory and a job's returns for display.

Reads and writes of the store are :mod:`saltext_fleet.store.ui` and
:mod:`saltext_fleet.store.ui_queries`; actions go through Salt's own clients
(:mod:`saltext_fleet.webui.salt`), whose ``fleet.*`` runners write the audit events, or, for
what is the UI's own (node metadata, the actions it publishes), are audited here. A function
here answers a bad request with ``abort`` (400, 404, 409, 502) like a view would.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

from flask import abort, request

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.master import bootstrapper
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import queries as store_queries
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import ui_queries
from saltext_fleet.webui.base import actor, ctx, salt
from saltext_fleet.webui.salt import SaltError

#: Key decisions and the runners that make them.
KEY_DECISIONS = {
    "accept": "fleet.keys_accept",
    "reject": "fleet.keys_reject",
    "delete": "fleet.keys_delete",
}
#: What an operator may run on a node from the UI: name -> (Salt function, arguments, label)
NODE_ACTIONS: dict[str, tuple[str, list, str]] = {
    "inventory": ("fleet.inventory", [], "refresh the inventory"),
    "apply": ("state.apply", [], "apply its states"),
    "apply-test": ("state.apply", ["test=True"], "show what applying its states would change"),
}
#: The fields of the bootstrap form, as ``fleet.bootstrap`` takes them.
BOOTSTRAP_FIELDS = ("host", "id", "group", "port", "user", "python", "prefix", "service")
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

#: What a page renders at most: returns of a job per page, the characters of one return
#: shown in the list (the whole return is one click away), packages of a node per page.
RETURNS_PER_PAGE = 50
RETURN_PREVIEW_CHARS = 4000
PACKAGES_PER_PAGE = 200
MISSING_SHOWN = 100


# -- validation --------------------------------------------------------------------------------


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
    """``minion_id`` when it is a well-formed minion id; 404 otherwise."""
    if not core_gate.is_minion_id(minion_id):
        abort(404, description="no such node")
    return minion_id


def valid_group(group: str) -> str:
    """``group`` when it is a well-formed node group name; 404 otherwise."""
    try:
        return core_gate.check_group(group)
    except core_gate.GateError:
        abort(404, description="no such group")


def valid_jid(jid: str) -> str:
    """``jid`` when it looks like a Salt job id; 404 otherwise."""
    if not jid.isdigit() or len(jid) > 64:
        abort(404, description="no such job")
    return jid


def overview_query() -> store_ui.OverviewQuery:
    """The overview's parameters from the query string (400 naming a bad one)."""
    try:
        return store_ui.OverviewQuery.from_args(request.args)
    except store_ui.QueryError as exc:
        abort(400, description=str(exc))


# -- node metadata -----------------------------------------------------------------------------


def meta_values(form) -> dict[str, Any]:
    """The node metadata a form (or the API's body) changes, checked: criticality, audited,
    comment (400 naming a bad one, or when there is none)."""
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


def save_node_meta(minion_id: str, values: dict[str, Any]) -> None:
    """Store a node's criticality, audited flag or comment, and audit it (404: no node)."""
    with ctx().engine.begin() as conn:
        if not ui_queries.set_node_meta(conn, minion_id, values):
            abort(404, description=f"no node {minion_id!r} in the store")
        store_audit.append(conn, actor(), "node.meta", minion_id, values)


def inventory_summary(
    conn, digest: str | None, eco: str | None = None, page: int = 1
) -> dict[str, Any] | None:
    """The node's inventory for its page: the count per ecosystem, and one page of one
    ecosystem's packages (``eco``, the first by default)."""
    if not digest:
        return None
    snap = ui_queries.inventory_snapshot(conn, digest)
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


# -- node and group actions --------------------------------------------------------------------


def fleet_config():
    """The master's ``fleet:`` options (the defaults when the app was given none)."""
    return ctx().config or config.load({})


def config_action_names() -> list[str]:
    """The names ``fleet:actions`` may give a command."""
    return list(config.ACTION_NAMES)


def node_actions(facts: dict | None) -> dict[str, str]:
    """What may be run on a node with these facts: ``{name: label}`` (the fixed actions, and
    the named commands ``fleet:actions`` holds for its OS)."""
    found = {name: label for name, (_fun, _arg, label) in NODE_ACTIONS.items()}
    for name, command in fleet_config().commands_for(facts).items():
        found[name] = f"{name}: {command.cmd}"
    return found


def group_actions() -> dict[str, str]:
    """What may be run on a node group: ``{name: label}`` (a named command runs on the nodes
    whose system has it)."""
    actions = {name: label for name, (_f, _a, label) in NODE_ACTIONS.items()}
    actions.update({name: name for name in config_action_names()})
    return actions


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
        members = ui_queries.group_members(conn, group)
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


# -- keys --------------------------------------------------------------------------------------


def decide_key(
    minion_id: str, decision: str, fingerprint: Any = None, include_rejected: bool = False
) -> Any:
    """Accept, reject or delete a minion's key through its ``fleet.keys_*`` runner (which
    audits it); :class:`SaltError` with what the runner said. ``decision`` is one of
    :data:`KEY_DECISIONS` (the views check it)."""
    kwarg: dict[str, Any] = {"minion": minion_id}
    if fingerprint and decision != "delete":
        kwarg["fingerprint"] = str(fingerprint)
    if decision == "accept" and include_rejected:
        kwarg["include_rejected"] = True
    return salt().runner(KEY_DECISIONS[decision], kwarg, user=actor())


# -- bootstrap ---------------------------------------------------------------------------------


def start_bootstrap(form) -> str:
    """Start ``fleet.bootstrap`` (through Salt's RunnerClient, in a thread of the engine: it
    runs for minutes); its progress is in the store as it goes. Returns the minion id."""
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


def bootstrap_attempts(minion_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Bootstrap attempts, newest first (of one node, or of all)."""
    return bootstrapper.attempts(ctx().engine, minion_id, limit)


def bootstrap_failure(minion_id: str | None) -> str | None:
    """Why a bootstrap the UI started failed before the store had a row for it."""
    return ctx().bootstrap_failures.get(minion_id) if minion_id else None


# -- baselines ---------------------------------------------------------------------------------


def baseline_op(op: str, values) -> Any:
    """Run one of :data:`BASELINE_OPS` with the fields it takes from ``values`` (404: no such
    op; 400: a field missing, or what the runner refused)."""
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


# -- jobs --------------------------------------------------------------------------------------


def job_page(jid: str, page: int, minion: str | None) -> dict[str, Any]:
    """A job's load and one page of its returns for display, ``RETURNS_PER_PAGE`` a page,
    each cut at ``RETURN_PREVIEW_CHARS``; with ``minion``, that minion's returns whole.
    404 when the store knows nothing of the job."""
    engine = ctx().engine
    with engine.connect() as conn:
        load = store_queries.get_load(engine, jid)
        total = ui_queries.return_count(conn, jid)
        if minion is not None:
            rows = ui_queries.minion_returns(conn, jid, minion, RETURNS_PER_PAGE)
        else:
            rows = ui_queries.return_previews(
                conn,
                jid,
                RETURN_PREVIEW_CHARS,
                RETURNS_PER_PAGE,
                (page - 1) * RETURNS_PER_PAGE,
            )
        missing: list[str] = []
        if load.get("Minions"):
            returned = ui_queries.answered_minions(conn, jid)
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
    return {
        "jid": jid,
        "load": load,
        "returns": returns,
        "total": total,
        "page": page,
        "pages": max(1, math.ceil(total / RETURNS_PER_PAGE)),
        "minion": minion,
        "missing": missing[:MISSING_SHOWN],
        "missing_more": max(0, len(missing) - MISSING_SHOWN),
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
