"""What the vulnerabilities pages and their JSON API both do: check the parameters (``400``
naming a bad one), look the advisory or node up (``404``), read the views of
:mod:`saltext_fleet.store.vulns.triage` (paged in SQL), and make or revoke triage decisions.

Triage decisions are the UI's own data, like a node's metadata: they are written to the
store here, each with its audit event under the user's name (``ui:<name>``), in one
transaction; ``salt-run fleet.cve_triage`` writes the same rows for the shell.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from flask import abort, request, url_for
from sqlalchemy import Connection

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core.vulns import triage as core_triage
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store.vulns import triage as store_triage
from saltext_fleet.webui import charts
from saltext_fleet.webui.base import actor, ctx

#: The fields a triage form or the API's body may carry.
TRIAGE_FIELDS = (
    "advisory",
    "state",
    "where",
    "node",
    "group",
    "fleet",
    "package",
    "justification",
    "expires",
    "detail",
)
#: How to import advisories, for the empty pages.
IMPORT_HINT = "salt-run fleet.cve_import /path/to/osv/PyPI/all.zip"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def findings_query(**fixed) -> store_triage.FindingsQuery:
    """The query string's findings query (400 naming a bad parameter); ``fixed`` values
    (an advisory's page, a node's tab) override the query string's."""
    try:
        query = store_triage.FindingsQuery.from_args(request.args, **fixed)
    except store_ui.QueryError as exc:
        abort(400, description=str(exc))
    if query.node is not None and not core_gate.is_minion_id(query.node):
        abort(400, description=f"node: {query.node[:60]!r} is not a minion id")
    if query.advisory is not None:
        try:
            core_triage.check_advisory_id(query.advisory)
        except core_triage.TriageError as exc:
            abort(400, description=str(exc))
    return query


def fleet_page(view: str | None = None) -> dict[str, Any]:
    """The fleet-wide page: ``{"query", "summary", "page", "choices", "advisories"}``
    (``page`` by advisory, by node or by finding, as ``?view=`` says)."""
    query = findings_query(**({"view": view} if view else {}))
    at = now()
    readers = {
        "advisory": store_triage.by_advisory,
        "node": store_triage.by_node,
        "finding": store_triage.findings_page,
    }
    with ctx().engine.connect() as conn:
        return {
            "query": query,
            "summary": store_triage.summary(conn, query, at),
            "page": readers[query.view](conn, query, at),
            "choices": store_triage.choices(conn),
            "advisories": store_triage.advisory_count(conn),
            "import_hint": IMPORT_HINT,
        }


def advisory_page(advisory_id: str) -> dict[str, Any]:
    """One advisory: its record, the open findings it has (paged, filtered as the query
    string says), the decisions about it (ended ones too); 404 when it is not imported."""
    try:
        core_triage.check_advisory_id(advisory_id)
    except core_triage.TriageError:
        abort(404, description="no such advisory")
    query = findings_query(advisory=advisory_id, view="finding")
    at = now()
    with ctx().engine.connect() as conn:
        found = store_triage.advisory(conn, advisory_id)
        if found is None:
            abort(404, description=f"no advisory {advisory_id!r} has been imported")
        findings = store_triage.findings_page(conn, query, at)
        choices = store_triage.choices(conn)
        return {
            "advisory": found,
            "query": query,
            "summary": store_triage.summary(conn, query, at),
            "findings": findings,
            "decisions": store_triage.decisions(conn, at, advisory_id=advisory_id, live_only=False),
            # what the triage form offers: the fleet, each group, the nodes on this page
            "wheres": [("fleet", "the whole fleet")]
            + [(f"group:{g}", f"group {g}") for g in choices["groups"]]
            + [
                (f"node:{n}", f"node {n}")
                for n in dict.fromkeys(r["minion"] for r in findings["rows"])
            ],
            "packages": sorted({r["package"] for r in findings["rows"]}),
        }


def node_page(minion_id: str) -> dict[str, Any]:
    """One node's vulnerabilities: open counts, its chart's points, its open findings
    (paged, filtered), the decisions made for it; 404 for an unknown node."""
    if not core_gate.is_minion_id(minion_id):
        abort(404, description="no such node")
    query = findings_query(node=minion_id, view="finding")
    at = now()
    with ctx().engine.connect() as conn:
        node = store_ui.node(conn, minion_id)
        if node is None:
            abort(404, description=f"no node {minion_id!r} in the store")
        return {
            "node": {"id": node["id"], "group": node["group"], "status": node["status"]},
            "query": query,
            "summary": store_triage.summary(conn, query, at),
            "findings": store_triage.findings_page(conn, query, at),
            "history": store_triage.history(conn, minion_id),
            "decisions": store_triage.decisions_for_node(conn, at, minion_id, node["group"]),
            "advisories": store_triage.advisory_count(conn),
            "import_hint": IMPORT_HINT,
            "sbom_url": f"{request.script_root}/api/v1/nodes/{minion_id}/sbom",
        }


def node_summary(conn: Connection, minion_id: str) -> dict[str, Any]:
    """The node page's vulnerabilities section, on its connection: open and triaged counts
    (the node's tab has the rest)."""
    return {
        "summary": store_triage.summary(conn, store_triage.FindingsQuery(node=minion_id), now()),
        "advisories": store_triage.advisory_count(conn),
    }


def history_chart(points: list[dict[str, Any]]) -> str:
    """The node's open findings over time (untriaged), drawn like the drift chart."""
    return charts.line_chart(points, value="open", title="open findings")


def back_url(form: Mapping[str, Any], advisory_id: str | None) -> str:
    """Where a triage form returns to: the node tab it came from (``back=node:<id>``), else
    the advisory's page, else the fleet's."""
    back = form.get("back") or ""
    if back.startswith("node:") and core_gate.is_minion_id(back[5:]):
        return url_for("vulns.node", minion_id=back[5:])
    if advisory_id and core_triage.ADVISORY_ID_RE.fullmatch(advisory_id):
        return url_for("vulns.advisory", advisory_id=advisory_id)
    return url_for("vulns.fleet")


# -- triage ------------------------------------------------------------------------------------


def _scope_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``node``/``group``/``fleet`` from a form's ``where`` (``node:<id>``,
    ``group:<name>``, ``fleet``) or the API's own fields."""
    where = values.get("where")
    if where:
        if not isinstance(where, str):
            abort(400, description="where: node:<minion id>, group:<name> or fleet")
        kind, _sep, target = where.partition(":")
        if kind == "fleet" and not target:
            return {"fleet": True}
        if kind in ("node", "group") and target:
            return {kind: target}
        abort(400, description=f"where: {where[:60]!r} is not node:<id>, group:<name> or fleet")
    fleet = values.get("fleet")
    return {
        "node": values.get("node") or None,
        "group": values.get("group") or None,
        "fleet": fleet in (True, "true", "True", "yes", "on", "1"),
    }


def decide(values: Mapping[str, Any], advisory_id: str | None = None) -> dict[str, Any]:
    """Make the decision a form or the API's body describes (400 naming what is wrong),
    audited under the user's name."""
    unknown = sorted(set(values) - set(TRIAGE_FIELDS) - {"csrf_token", "back"})
    if unknown:
        abort(400, description=f"unknown fields: {', '.join(unknown)[:200]}")
    for name in TRIAGE_FIELDS:
        value = values.get(name)
        if value is not None and not isinstance(value, (str, bool)):
            abort(400, description=f"{name}: text, not {type(value).__name__}")
    at = now()
    try:
        scope, target = core_triage.scope_of(**_scope_values(values))
        decision = core_triage.check(
            advisory_id or values.get("advisory"),
            values.get("state"),
            scope,
            target,
            now=at,
            package=values.get("package") or None,
            justification=values.get("justification") or None,
            detail=values.get("detail") or "",
            expires=values.get("expires") or None,
        )
        with ctx().engine.begin() as conn:
            return store_triage.decide(conn, decision, actor(), at)
    except core_triage.TriageError as exc:
        abort(400, description=str(exc))


def revoke(triage_id: str) -> dict[str, Any]:
    """End decision ``triage_id`` (404 when there is none, 409 when it already ended)."""
    try:
        number = store_triage.check_id(triage_id)
    except core_triage.TriageError:
        abort(404, description="no such decision")
    try:
        with ctx().engine.begin() as conn:
            return store_triage.revoke(conn, number, actor(), now())
    except store_triage.AlreadyRevoked as exc:
        abort(409, description=str(exc))
    except core_triage.TriageError as exc:
        abort(404, description=str(exc))


def decisions() -> list[dict[str, Any]]:
    """The decisions the query string asks for: ``?advisory=``, ``?all=1`` (ended too)."""
    advisory_id = request.args.get("advisory") or None
    if advisory_id is not None:
        try:
            core_triage.check_advisory_id(advisory_id)
        except core_triage.TriageError as exc:
            abort(400, description=str(exc))
    every = (request.args.get("all") or "").lower()
    if every not in ("", "0", "1", "true", "false", "yes", "no"):
        abort(400, description="all: yes or no")
    with ctx().engine.connect() as conn:
        return store_triage.decisions(
            conn, now(), advisory_id=advisory_id, live_only=every not in ("1", "true", "yes")
        )


def form_choices() -> dict[str, Any]:
    """What a triage form offers."""
    return {
        "states": core_triage.STATES,
        "justifications": core_triage.JUSTIFICATIONS,
        "severities": store_triage.SEVERITIES,
        "triage_filters": store_triage.TRIAGE_FILTERS,
        "tomorrow": (now() + dt.timedelta(days=1)).date().isoformat(),
    }
