"""What the alert pages do: check their parameters (``400`` naming a bad one), read the views
of :mod:`saltext_fleet.store.alert_views` (paged in SQL), and turn their forms into calls of
the ``fleet.alert_*`` runners through Salt's RunnerClient as the user (``ui:<name>``), like
every action of the UI: the runners check, write the store and the audit chain, so a change
made here and one made with ``salt-run`` are recorded in one place.

- acknowledge (``alerts.ack``: operators, admins): ``fleet.alert_ack`` with the alert's
  condition ``(kind, node, subject)`` and a comment;
- test-send (``alerts.test``: operators, admins): ``fleet.alert_test`` through one route; the
  outcome (ok, HTTP status, latency, error) is shown on the routes page;
- routes and their secrets (``alerts.routes``: admins): ``fleet.alert_route_set``,
  ``fleet.alert_route_delete``, ``fleet.alert_secret``. A secret goes from the form to the
  runner and the vault, and is never shown back: the pages say "set" or "not set".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from flask import abort, request, session

from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core.errors import FleetError
from saltext_fleet.master import alertsend
from saltext_fleet.store import alert_views
from saltext_fleet.store.ui import QueryError
from saltext_fleet.webui import charts
from saltext_fleet.webui.base import actor, ctx, salt
from saltext_fleet.webui.salt import SaltError

#: Where an alert goes, and the secrets each destination needs (kept in the vault).
DESTINATIONS = alertsend.DESTINATIONS
SECRET_NAMES = alertsend.SECRET_NAMES
SECRET_LABELS = {
    "hmac": "HMAC secret",
    "url": "incoming webhook URL",
    "routing_key": "routing key",
    "password": "SMTP password",
}
#: The target fields of each destination's form: (name, type, label, placeholder). Types:
#: ``text``, ``int``, ``bool``, ``list`` (comma-separated).
TARGET_FIELDS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "webhook": (
        ("url", "text", "URL", "https://receiver.example/fleet"),
        ("timeout", "int", "Timeout (s)", "10"),
    ),
    "slack": (("channel", "text", "Channel (optional)", "#builds"),),
    "pagerduty": (
        ("url", "text", "Events API URL (optional)", "https://events.pagerduty.com/v2/enqueue"),
    ),
    "email": (
        ("host", "text", "SMTP host", "smtp.example.com"),
        ("port", "int", "Port", "587"),
        ("starttls", "bool", "STARTTLS", ""),
        ("from", "text", "From", "fleet@example.com"),
        ("to", "list", "To (comma-separated)", "oncall@example.com"),
        ("username", "text", "Username (optional)", ""),
    ),
}
#: The kinds of alert a route can match.
KINDS = core_alerts.KINDS
#: A route's name (the runner checks it again).
ROUTE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The delivery log's chart windows, in hours (the default first).
WINDOWS = (24, 72, 168)
#: The longest comment an acknowledgement carries.
COMMENT_MAX = 1000
#: The session key of the last test-send's outcome (shown once by the routes page).
TEST_OUTCOME = "alert_test_outcome"


class RouteFormError(FleetError, ValueError):
    """A route form's field is not usable; the message names it."""


# -- reading -------------------------------------------------------------------------------------


def alerts_query(**fixed) -> alert_views.AlertsQuery:
    """The query string's alert filters (400 naming a bad one)."""
    try:
        query = alert_views.AlertsQuery.from_args(request.args, **fixed)
    except QueryError as exc:
        abort(400, description=str(exc))
    if query.node is not None and not core_gate.is_minion_id(query.node.replace("*", "x")):
        abort(400, description=f"node: {query.node[:60]!r} is not a minion id (or a glob)")
    return query


def alerts_page() -> dict[str, Any]:
    """The fleet's alerts page: ``{"query", "page", "summary", "kinds", "latest"}``."""
    query = alerts_query()
    with ctx().engine.connect() as conn:
        return {
            "query": query,
            "page": alert_views.alerts_page(conn, query),
            "summary": alert_views.summary(conn),
            "kinds": KINDS,
            "latest": alert_views.latest_alert_id(conn),
        }


def alert_page(alert_id: str) -> dict[str, Any]:
    """One alert with its data, condition, deliveries and every attempt (404 when none)."""
    if not alert_id.isdigit() or len(alert_id) > 18:
        abort(404, description="no such alert")
    with ctx().engine.connect() as conn:
        found = alert_views.alert(conn, int(alert_id))
    if found is None:
        abort(404, description=f"no alert {alert_id}")
    return {"alert": found}


def node_alerts(conn, minion_id: str) -> dict[str, Any]:
    """A node page's alerts section."""
    return alert_views.node_alerts(conn, minion_id)


def hours_arg() -> int:
    raw = request.args.get("hours")
    if raw is None or raw == "":
        return WINDOWS[0]
    if not raw.isdigit() or int(raw) not in WINDOWS:
        abort(400, description=f"hours: one of {', '.join(map(str, WINDOWS))}, not {raw[:20]!r}")
    return int(raw)


def deliveries_page() -> dict[str, Any]:
    """The delivery log: ``{"query", "page", "routes", "hours", "windows", "over_time"}``."""
    try:
        query = alert_views.DeliveriesQuery.from_args(request.args)
    except QueryError as exc:
        abort(400, description=str(exc))
    hours = hours_arg()
    with ctx().engine.connect() as conn:
        routes = [r["key"] for r in config_routes()] + [
            r["key"] for r in alert_views.ui_routes(conn)
        ]
        return {
            "query": query,
            "page": alert_views.deliveries_page(conn, query),
            "routes": routes,
            "statuses": alert_views.DELIVERY_STATUSES,
            "hours": hours,
            "windows": WINDOWS,
            "over_time": alert_views.deliveries_over_time(conn, hours=hours),
        }


def deliveries_chart(over_time: list[dict[str, Any]]) -> str:
    """Deliveries per hour, stacked by status."""
    return charts.column_chart(
        over_time,
        parts=("delivered", "failed", "pending", "suppressed"),
        title="deliveries per hour by status",
    )


def config_routes() -> list[dict[str, Any]]:
    """The master config's routes (``fleet:alerts:routes``), read-only: key ``config:<name>``
    (:meth:`saltext_fleet.core.alerts.Route.as_dict`)."""
    alerts = getattr(ctx().config, "alerts", None)
    return [route.as_dict() for route in getattr(alerts, "routes", ())]


def routes_page() -> dict[str, Any]:
    """Both kinds of route, which secrets each has set, their deliveries, the form to edit
    (``?edit=<name>``) and the last test-send's outcome."""
    edit_name = request.args.get("edit") or None
    with ctx().engine.connect() as conn:
        ui = alert_views.ui_routes(conn)
        configured = config_routes()
        keys = [r["key"] for r in configured + ui]
        secrets = alert_views.secrets_set(conn, keys)
        stats = alert_views.route_stats(conn)
    for route in configured + ui:
        names = SECRET_NAMES.get(route["destination"], ())
        have = secrets.get(route["key"], {})
        route["secrets"] = [
            {"name": n, "label": SECRET_LABELS.get(n, n), "set": n in have, "at": have.get(n)}
            for n in names
        ]
        route["stats"] = stats.get(route["key"])
    editing = None
    if edit_name is not None:
        editing = next((r for r in ui if r["name"] == edit_name), None)
        if editing is None:
            abort(404, description=f"no UI route named {edit_name[:64]!r}")
    outcome = session.pop(TEST_OUTCOME, None)
    return {
        "config_routes": configured,
        "ui_routes": ui,
        "editing": editing,
        "outcome": outcome,
        "destinations": DESTINATIONS,
        "target_fields": TARGET_FIELDS,
        "secret_names": SECRET_NAMES,
        "secret_labels": SECRET_LABELS,
        "kinds": KINDS,
        "severities": alert_views.SEVERITIES,
    }


# -- acting ----------------------------------------------------------------------------------------


def back_url(form: Mapping[str, Any], default: str) -> str:
    """Where a form returns to: its ``back`` when it is a path of this site, else
    ``default``."""
    back = form.get("back") or ""
    if isinstance(back, str) and back.startswith("/") and not back.startswith("//"):
        if "\\" not in back and len(back) <= 2000:
            return back
    return default


def ack_values(values: Mapping[str, Any]) -> dict[str, str]:
    """The runner's arguments from an Acknowledge form or the API's body: ``kind``, ``node``
    (empty: an alert about no node), ``subject`` and ``comment``; 400 naming a bad one."""
    out = {}
    for name, limit in (("kind", 32), ("node", 255), ("subject", 255), ("comment", COMMENT_MAX)):
        value = values.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            abort(400, description=f"{name}: a string")
        if len(value) > limit:
            abort(400, description=f"{name}: at most {limit} characters")
        out[name] = value if name == "subject" else value.strip()
    if not out["kind"]:
        abort(400, description="kind: the alert's kind")
    if out["node"] and not core_gate.is_minion_id(out["node"]):
        abort(400, description=f"node: {out['node'][:60]!r} is not a minion id")
    return out


def acknowledge(form: Mapping[str, Any]) -> str:
    """Run ``fleet.alert_ack`` as the user for the form's condition; what to flash."""
    values = ack_values(form)
    kind, node, subject = values["kind"], values["node"], values["subject"]
    what = f"{kind} on {node or 'the fleet'}" + (f" ({subject})" if subject else "")
    try:
        done = salt().runner("fleet.alert_ack", values, user=actor())
    except SaltError as exc:
        return f"Not acknowledged: {what}: {exc}"
    condition = (done or {}).get("acked_condition") or (done or {}).get("condition")
    held = f" ({condition})" if condition else ""
    return f"Acknowledged {what}{held}: repeats stop until the condition changes."


def withdraw(form: Mapping[str, Any]) -> str:
    """Run ``fleet.alert_unack`` as the user for the form's condition; what to flash."""
    values = ack_values(form)
    values.pop("comment", None)
    kind, node, subject = values["kind"], values["node"], values["subject"]
    what = f"{kind} on {node or 'the fleet'}" + (f" ({subject})" if subject else "")
    try:
        done = salt().runner("fleet.alert_unack", values, user=actor())
    except SaltError as exc:
        return f"Acknowledgement not withdrawn: {what}: {exc}"
    if not (done or {}).get("withdrawn"):
        return f"{what} was not acknowledged."
    return f"Acknowledgement of {what} withdrawn: its alerts are sent again."


def acknowledge_api(body: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``fleet.alert_ack`` as the user; the condition it acknowledged, or 400 with the
    runner's refusal."""
    try:
        done = salt().runner("fleet.alert_ack", ack_values(body), user=actor())
    except SaltError as exc:
        abort(400, description=str(exc))
    return done or {}


def route_key_arg(form: Mapping[str, Any]) -> str:
    """The form's route key (``ui:<name>`` or ``config:<name>``); 400 otherwise."""
    key = form.get("route") or ""
    source, _sep, name = key.partition(":")
    if source not in ("ui", "config") or not ROUTE_NAME_RE.fullmatch(name):
        abort(400, description=f"route: ui:<name> or config:<name>, not {key[:80]!r}")
    return key


def _shown_outcome(route: str, result: Any) -> dict[str, Any]:
    result = result if isinstance(result, Mapping) else {}
    latency = result.get("latency_ms")
    error = result.get("error")
    return {
        "route": route,
        "ok": bool(result.get("ok")),
        "status_code": result.get("status_code"),
        "latency_ms": round(float(latency), 1) if isinstance(latency, int | float) else None,
        "error": str(error)[:300] if error else None,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def send_test(form: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``fleet.alert_test`` as the user through the form's route; the outcome, kept for
    the routes page to show once."""
    route = route_key_arg(form)
    try:
        result = salt().runner("fleet.alert_test", {"route": route}, user=actor())
    except SaltError as exc:
        result = {"ok": False, "status_code": None, "latency_ms": None, "error": str(exc)}
    outcome = _shown_outcome(route, result)
    session[TEST_OUTCOME] = outcome
    return outcome


def _text(form: Mapping[str, Any], name: str, limit: int = 2000) -> str:
    value = form.get(name) or ""
    if not isinstance(value, str) or len(value) > limit:
        raise RouteFormError(f"{name}: at most {limit} characters")
    return value.strip()


def route_values(form: Mapping[str, Any]) -> dict[str, Any]:
    """The runner's arguments from a route form: name, destination, match, target, the
    secrets typed in (blank ones are left as they are) and enabled."""
    name = _text(form, "name", 64)
    try:
        core_alerts.check_route_name(name)
    except core_alerts.AlertError as exc:
        raise RouteFormError(str(exc)) from exc
    destination = _text(form, "destination", 16)
    if destination not in DESTINATIONS:
        raise RouteFormError(f"destination: one of {', '.join(DESTINATIONS)}")
    match: dict[str, Any] = {}
    kinds = [k for k in form.getlist("kinds")] if hasattr(form, "getlist") else []
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise RouteFormError(f"kinds: {', '.join(unknown)[:80]} not among {', '.join(KINDS)}")
    if kinds:
        match["kinds"] = [k for k in KINDS if k in kinds]
    severity = _text(form, "min_severity", 16)
    if severity:
        if severity not in alert_views.SEVERITIES:
            raise RouteFormError(f"min_severity: one of {', '.join(alert_views.SEVERITIES)}")
        match["min_severity"] = severity
    for key in ("group", "node"):
        value = _text(form, key, 255)
        if value:
            match[key] = value
    target: dict[str, Any] = {}
    for field, kind, _label, _placeholder in TARGET_FIELDS[destination]:
        raw = _text(form, f"target-{destination}-{field}")
        if kind == "bool":
            target[field] = bool(form.get(f"target-{destination}-{field}"))
        elif not raw:
            continue
        elif kind == "int":
            if not raw.isdigit() or not 0 < int(raw) < 100_000:
                raise RouteFormError(f"{field}: a whole number, not {raw[:20]!r}")
            target[field] = int(raw)
        elif kind == "list":
            target[field] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            target[field] = raw
    secrets = {}
    for secret in SECRET_NAMES[destination]:
        value = form.get(f"secret-{destination}-{secret}") or ""
        if not isinstance(value, str) or len(value) > 4096:
            raise RouteFormError(f"{secret}: at most 4096 characters")
        if value:
            secrets[secret] = value
    values = {
        "name": name,
        "destination": destination,
        "match": match,
        "target": target,
        "enabled": bool(form.get("enabled")),
    }
    if secrets:
        values["secrets"] = secrets
    return values


def set_route(form: Mapping[str, Any]) -> str:
    """Run ``fleet.alert_route_set`` as the user; what to flash (secrets never in it)."""
    try:
        values = route_values(form)
    except RouteFormError as exc:
        return f"Not saved: {exc}"
    try:
        salt().runner("fleet.alert_route_set", values, user=actor())
    except SaltError as exc:
        return f"Not saved: {values['name']}: {exc}"
    secrets = sorted(values.get("secrets", {}))
    said = (
        f" (secret{'s' if len(secrets) > 1 else ''} set: {', '.join(secrets)})" if secrets else ""
    )
    return f"Route ui:{values['name']} saved{said}."


def delete_route(name: str) -> str:
    """Run ``fleet.alert_route_delete`` as the user; what to flash."""
    if not ROUTE_NAME_RE.fullmatch(name):
        abort(404, description="no such route")
    try:
        salt().runner("fleet.alert_route_delete", {"name": name}, user=actor())
    except SaltError as exc:
        return f"Not deleted: {name}: {exc}"
    return f"Route ui:{name} deleted."


def set_secret(form: Mapping[str, Any]) -> str:
    """Run ``fleet.alert_secret`` as the user for one route's secret; what to flash."""
    route = route_key_arg(form)
    name = form.get("name") or ""
    names = {n for names in SECRET_NAMES.values() for n in names}
    if name not in names:
        abort(400, description=f"name: one of {', '.join(sorted(names))}")
    value = form.get("value") or ""
    if not value or len(value) > 4096:
        return (
            f"Not set: {route}: type the {SECRET_LABELS.get(name, name)} (at most 4096 characters)."
        )
    try:
        salt().runner(
            "fleet.alert_secret", {"route": route, "name": name, "value": value}, user=actor()
        )
    except SaltError as exc:
        return f"Not set: {route} {name}: {exc}"
    return f"{route}: {SECRET_LABELS.get(name, name)} set."
