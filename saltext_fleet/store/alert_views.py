"""What the web UI reads about alerts (schema 0012): the fleet's alerts, newest first, filtered
and paged in SQL, each with the status of its deliveries and the acknowledgement of its
condition; one node's alerts and conditions; the delivery log with each delivery's latest
attempts; deliveries over time by status (the delivery log's chart); the UI's routes and
which of their secrets are set (never the secrets themselves).

Reads only: alerts, conditions, deliveries and attempts are written by the alert worker and
the ``fleet.alert_*`` runners (:mod:`saltext_fleet.store.alerts`), which the UI's forms call
through Salt, so every change is audited in one place.

Every function takes an open ``Connection``; filters are checked against fixed lists here
(:class:`~saltext_fleet.store.ui.QueryError` names a bad one): a value the UI was given never
becomes SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, or_, select

from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import (
    Alert,
    AlertAttempt,
    AlertCondition,
    AlertDelivery,
    AlertRoute,
    Secret,
    iso,
)
from saltext_fleet.store.ui import QueryError, arg_reader, paged, parse_paging, query_args

#: Severities, lowest first (PagerDuty's scale).
SEVERITIES = core_alerts.SEVERITIES
STATES = ("firing", "resolved")
#: Why an alert was not sent (``alerts.suppressed``).
SUPPRESSIONS = tuple(core_alerts.SUPPRESSIONS)
#: The ``suppressed`` filter: sent (not suppressed), any suppression, or one reason.
SUPPRESSED_FILTERS = ("no", "yes", *SUPPRESSIONS)
DELIVERY_STATUSES = store_alerts.STATUSES
#: The secrets' scope in the vault (owner: the route's key, ``ui:<name>``/``config:<name>``).
SECRET_SCOPE = store_secrets.ALERT_SCOPE
#: How many of a delivery's attempts a page of the delivery log shows (the newest).
ATTEMPTS_SHOWN = 5


def _yes_no(name: str, raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise QueryError(name, f"{raw!r} is not yes or no")
    return raw.lower() in ("yes", "true", "1")


def _one_of(name: str, raw: str | None, allowed: Sequence[str]) -> str | None:
    if raw is not None and raw not in allowed:
        raise QueryError(name, f"{raw[:40]!r} is not one of {', '.join(allowed)}")
    return raw


def _rank(column):
    """A severity column as its rank (unknown severities rank below ``info``)."""
    return case({name: rank for rank, name in enumerate(SEVERITIES)}, value=column, else_=-1)


def _node_match(column, pattern: str):
    """``column`` equal to ``pattern``, or LIKE it when it has ``*`` (a glob; LIKE's own
    wildcards and the escape character are taken literally)."""
    if "*" not in pattern:
        return column == pattern
    literal_text = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(literal_text.replace("*", "%"), escape="\\")


def _condition_join():
    """The alert's condition: the same ``(kind, node, subject)`` (a node-less alert's
    condition has node ``""``)."""
    return and_(
        AlertCondition.kind == Alert.kind,
        AlertCondition.node == func.coalesce(Alert.node, literal("")),
        AlertCondition.subject == Alert.subject,
    )


def _flapping():
    """Whether an alert is the grouped "flapping" alert of a condition that changes too
    often (sent instead of the change that made it flap: its condition is ``flapping``)."""
    return Alert.condition == core_alerts.FLAPPING


# -- the fleet's alerts ----------------------------------------------------------------------


@dataclass
class AlertsQuery:
    """The alerts page's filters and page (strings from a URL checked by :meth:`from_args`)."""

    kind: str | None = None
    severity: str | None = None  # at least this severity
    node: str | None = None  # a node id, or a glob with ``*``
    state: str | None = None
    suppressed: str | None = None  # one of SUPPRESSED_FILTERS
    acknowledged: bool | None = None  # the alert's condition is acknowledged now
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_args(cls, args: Mapping[str, Any], **fixed) -> AlertsQuery:
        """From a query string's arguments; ``fixed`` values override them (a node's page)."""
        text = arg_reader(args)
        query = cls(
            kind=text("kind", 32),
            severity=_one_of("severity", text("severity", 16), SEVERITIES),
            node=text("node"),
            state=_one_of("state", text("state", 16), STATES),
            suppressed=_one_of("suppressed", text("suppressed", 16), SUPPRESSED_FILTERS),
            acknowledged=_yes_no("acknowledged", text("acknowledged", 8)),
        )
        query.page, query.per_page = parse_paging(text, query.page, query.per_page)
        for name, value in fixed.items():
            setattr(query, name, value)
        return query

    def filtered(self) -> bool:
        return any(
            v is not None
            for v in (
                self.kind,
                self.severity,
                self.node,
                self.state,
                self.suppressed,
                self.acknowledged,
            )
        )

    def args(self, **changes) -> dict[str, str]:
        """This query as URL arguments (for the pager and links)."""
        values = {
            "kind": self.kind,
            "severity": self.severity,
            "node": self.node,
            "state": self.state,
            "suppressed": self.suppressed,
            "acknowledged": None
            if self.acknowledged is None
            else ("yes" if self.acknowledged else "no"),
        }
        return query_args(values, self.page, self.per_page, changes)


def _alert_filters(query: AlertsQuery) -> list:
    where = []
    if query.kind:
        where.append(Alert.kind == query.kind)
    if query.severity:
        where.append(_rank(Alert.severity) >= SEVERITIES.index(query.severity))
    if query.node:
        where.append(_node_match(Alert.node, query.node))
    if query.state:
        where.append(Alert.state == query.state)
    if query.suppressed == "no":
        where.append(Alert.suppressed.is_(None))
    elif query.suppressed == "yes":
        where.append(Alert.suppressed.is_not(None))
    elif query.suppressed:
        where.append(Alert.suppressed == query.suppressed)
    if query.acknowledged is True:
        where.append(AlertCondition.acked_condition.is_not(None))
    elif query.acknowledged is False:
        where.append(AlertCondition.acked_condition.is_(None))
    return where


_ALERT_COLUMNS = (
    Alert.id,
    Alert.kind,
    Alert.node,
    Alert.subject,
    Alert.state,
    Alert.condition,
    Alert.severity,
    Alert.summary,
    Alert.raised_at,
    Alert.received_at,
    Alert.master,
    Alert.suppressed,
    Alert.tag,
    _flapping().label("flapping"),
    AlertCondition.condition.label("current_condition"),
    AlertCondition.state.label("current_state"),
    AlertCondition.last_alert_id,
    AlertCondition.acked_by,
    AlertCondition.acked_at,
    AlertCondition.acked_condition,
    AlertCondition.ack_comment,
)


def _alert_row(r) -> dict[str, Any]:
    acked = r.acked_condition is not None
    return {
        "id": r.id,
        "kind": r.kind,
        "node": r.node,
        "subject": r.subject or "",
        "state": r.state,
        "condition": r.condition,
        "severity": r.severity,
        "summary": r.summary,
        "raised_at": iso(r.raised_at),
        "received_at": iso(r.received_at),
        "master": r.master,
        "suppressed": r.suppressed,
        "tag": r.tag,
        "flapping": bool(r.flapping),
        # the condition (kind, node, subject) now, and its acknowledgement
        "current": {
            "state": r.current_state,
            "condition": r.current_condition,
            "latest": r.last_alert_id == r.id,
        }
        if r.current_condition is not None
        else None,
        "ack": {
            "by": r.acked_by,
            "at": iso(r.acked_at),
            "condition": r.acked_condition,
            "comment": r.ack_comment or "",
        }
        if acked
        else None,
        # what an Acknowledge button sends: the condition this alert is about
        "ackable": r.current_condition is not None and not acked,
        "deliveries": [],
    }


def _alerts_select(columns):
    return select(*columns).select_from(Alert).outerjoin(AlertCondition, _condition_join())


def alerts_page(conn: Connection, query: AlertsQuery) -> dict[str, Any]:
    """One page of alerts, newest first: ``{"rows", "total", "page", "pages", "per_page"}``;
    each row with its condition's acknowledgement (``ack``) and its ``deliveries`` (route,
    destination, status, attempts, last error, delivered at)."""
    where = and_(True, *_alert_filters(query))
    stmt = (
        _alerts_select(_ALERT_COLUMNS)
        .where(where)
        .order_by(Alert.raised_at.desc(), Alert.id.desc())
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    rows = [_alert_row(r) for r in conn.execute(stmt)]
    _attach_deliveries(conn, rows)
    # the count needs the conditions only to filter on their acknowledgement
    counted = (
        _alerts_select([func.count()])
        if query.acknowledged is not None
        else select(func.count()).select_from(Alert)
    )
    total = conn.execute(counted.where(where)).scalar_one()
    return paged(total, query.page, query.per_page, rows=rows)


_DELIVERY_COLUMNS = (
    AlertDelivery.id,
    AlertDelivery.alert_id,
    AlertDelivery.route,
    AlertDelivery.destination,
    AlertDelivery.status,
    AlertDelivery.attempts,
    AlertDelivery.next_at,
    AlertDelivery.created_at,
    AlertDelivery.delivered_at,
    AlertDelivery.last_error,
)


def _delivery(r) -> dict[str, Any]:
    return {
        "id": r.id,
        "alert_id": r.alert_id,
        "route": r.route,
        "destination": r.destination,
        "status": r.status,
        "attempts": r.attempts or 0,
        "next_at": iso(r.next_at),
        "created_at": iso(r.created_at),
        "delivered_at": iso(r.delivered_at),
        "last_error": r.last_error,
    }


def _attach_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    by_id = {row["id"]: row for row in rows}
    if not by_id:
        return
    stmt = (
        select(*_DELIVERY_COLUMNS)
        .where(AlertDelivery.alert_id.in_(sorted(by_id)))
        .order_by(AlertDelivery.alert_id, AlertDelivery.route)
    )
    for r in conn.execute(stmt):
        by_id[r.alert_id]["deliveries"].append(_delivery(r))


def alert_log(
    conn: Connection,
    kind: str | None = None,
    node: str | None = None,
    status: str | None = None,
    limit: int = 100,
    before: int | None = None,
    ui_url: str | None = None,
) -> list[dict[str, Any]]:
    """The alert log of ``salt-run fleet.alerts``: alerts newest first (``before``: ids below
    this one, for the next page), each the alert record (:func:`core.alerts.record`) plus
    ``suppressed``, ``received_at`` and its ``deliveries``. ``status``: only alerts with a
    delivery in that status (``suppressed`` also takes alerts suppressed as a whole)."""
    stmt = select(Alert.__table__)
    if kind:
        stmt = stmt.where(Alert.kind == kind)
    if node:
        stmt = stmt.where(Alert.node == node)
    if before is not None:
        stmt = stmt.where(Alert.id < int(before))
    if status:
        if status not in DELIVERY_STATUSES:
            raise store_alerts.AlertStoreError(
                f"status: {status!r} is not one of {', '.join(DELIVERY_STATUSES)}"
            )
        cond = (
            select(AlertDelivery.id)
            .where(AlertDelivery.alert_id == Alert.id, AlertDelivery.status == status)
            .exists()
        )
        if status == "suppressed":
            cond = or_(cond, Alert.suppressed.is_not(None))
        stmt = stmt.where(cond)
    limit = store_alerts.check_limit(limit)
    out = []
    for row in conn.execute(stmt.order_by(Alert.id.desc()).limit(limit)):
        item = core_alerts.record(row._mapping, ui_url)
        item.update(
            suppressed=row.suppressed,
            received_at=iso(row.received_at),
            raised_at=iso(row.raised_at),
            deliveries=[],
        )
        out.append(item)
    _attach_deliveries(conn, out)
    return out


def alert(conn: Connection, alert_id: int, attempts_limit: int = 200) -> dict[str, Any] | None:
    """One alert with its data, its condition, and each delivery with its attempts (oldest
    first, at most ``attempts_limit`` each); None when there is no such alert."""
    r = conn.execute(_alerts_select(_ALERT_COLUMNS).where(Alert.id == alert_id)).first()
    if r is None:
        return None
    found = _alert_row(r)
    found["data"] = conn.execute(select(Alert.data).where(Alert.id == alert_id)).scalar_one()
    _attach_deliveries(conn, [found])
    for delivery in found["deliveries"]:
        delivery["attempt_list"] = attempts(conn, delivery["id"], attempts_limit)
    return found


def summary(conn: Connection) -> dict[str, Any]:
    """The alerts page's header: conditions firing and acknowledged now, deliveries by
    status."""
    firing, acked = conn.execute(
        select(
            func.count().filter(AlertCondition.state == "firing"),
            func.count().filter(AlertCondition.acked_condition.is_not(None)),
        )
    ).one()
    deliveries = dict.fromkeys(DELIVERY_STATUSES, 0)
    for status, count in conn.execute(
        select(AlertDelivery.status, func.count()).group_by(AlertDelivery.status)
    ):
        deliveries[status] = count
    return {"firing": firing or 0, "acknowledged": acked or 0, "deliveries": deliveries}


def latest_alert_id(conn: Connection) -> int:
    """The newest alert's id (0 with none): the live page compares it with its own."""
    return conn.execute(select(func.max(Alert.id))).scalar() or 0


# -- one node ----------------------------------------------------------------------------------


def node_conditions(conn: Connection, node: str) -> list[dict[str, Any]]:
    """The node's alert conditions now (firing first, then by kind and subject): state,
    condition, severity, since when, flapping since, and the acknowledgement."""
    stmt = (
        select(AlertCondition)
        .where(AlertCondition.node == node)
        .order_by(
            case((AlertCondition.state == "firing", 0), else_=1),
            AlertCondition.kind,
            AlertCondition.subject,
        )
        .limit(200)
    )
    return [
        {
            "kind": c.kind,
            "node": c.node,
            "subject": c.subject or "",
            "state": c.state,
            "condition": c.condition,
            "severity": c.severity,
            "changed_at": iso(c.changed_at),
            "flapping_since": iso(c.flapping_since),
            "last_alert_id": c.last_alert_id,
            "ack": {
                "by": c.acked_by,
                "at": iso(c.acked_at),
                "condition": c.acked_condition,
                "comment": c.ack_comment or "",
            }
            if c.acked_condition is not None
            else None,
        }
        for c in conn.execute(stmt)
    ]


def node_alerts(conn: Connection, node: str, limit: int = 20) -> dict[str, Any]:
    """A node's page: its conditions now, its latest ``limit`` alerts (with their
    deliveries) and how many it has in all."""
    page = alerts_page(conn, AlertsQuery(node=node, per_page=limit))
    return {
        "conditions": node_conditions(conn, node),
        "alerts": page["rows"],
        "total": page["total"],
    }


def condition(conn: Connection, kind: str, node: str, subject: str = "") -> dict[str, Any] | None:
    """One condition (its acknowledgement included), or None."""
    for c in node_conditions(conn, node):
        if c["kind"] == kind and c["subject"] == subject:
            return c
    return None


# -- deliveries and attempts -------------------------------------------------------------------


@dataclass
class DeliveriesQuery:
    """The delivery log's filters and page."""

    status: str | None = None
    route: str | None = None
    alert: int | None = None
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> DeliveriesQuery:
        text = arg_reader(args)
        query = cls(
            status=_one_of("status", text("status", 16), DELIVERY_STATUSES),
            route=text("route", 80),
        )
        raw = text("alert", 20)
        if raw is not None:
            if not raw.isdigit():
                raise QueryError("alert", f"{raw!r} is not an alert id")
            query.alert = int(raw)
        query.page, query.per_page = parse_paging(text, query.page, query.per_page)
        return query

    def filtered(self) -> bool:
        return any(v is not None for v in (self.status, self.route, self.alert))

    def args(self, **changes) -> dict[str, str]:
        values = {
            "status": self.status,
            "route": self.route,
            "alert": None if self.alert is None else str(self.alert),
        }
        return query_args(values, self.page, self.per_page, changes)


def _delivery_filters(query: DeliveriesQuery) -> list:
    where = []
    if query.status:
        where.append(AlertDelivery.status == query.status)
    if query.route:
        where.append(AlertDelivery.route == query.route)
    if query.alert is not None:
        where.append(AlertDelivery.alert_id == query.alert)
    return where


def deliveries_page(
    conn: Connection, query: DeliveriesQuery, attempts_shown: int = ATTEMPTS_SHOWN
) -> dict[str, Any]:
    """One page of the delivery log, newest first (by id); each delivery with its alert (kind, node,
    severity, summary) and its newest ``attempts_shown`` attempts (``attempt_list``, newest
    first; ``attempts`` counts them all)."""
    where = and_(True, *_delivery_filters(query))
    stmt = (
        select(
            *_DELIVERY_COLUMNS,
            Alert.kind,
            Alert.node,
            Alert.subject,
            Alert.severity,
            Alert.state,
            Alert.summary,
        )
        .select_from(AlertDelivery)
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(where)
        # newest first by id (deliveries are made in order; the primary key walks back
        # without sorting the table)
        .order_by(AlertDelivery.id.desc())
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    rows = []
    for r in conn.execute(stmt):
        row = _delivery(r)
        row["alert"] = {
            "id": r.alert_id,
            "kind": r.kind,
            "node": r.node,
            "subject": r.subject or "",
            "severity": r.severity,
            "state": r.state,
            "summary": r.summary,
        }
        row["attempt_list"] = []
        rows.append(row)
    by_id = {row["id"]: row for row in rows}
    if by_id and attempts_shown > 0:
        numbered = (
            select(
                *_ATTEMPT_COLUMNS,
                func.row_number()
                .over(
                    partition_by=AlertAttempt.delivery_id,
                    order_by=(AlertAttempt.at.desc(), AlertAttempt.id.desc()),
                )
                .label("n"),
            )
            .where(AlertAttempt.delivery_id.in_(sorted(by_id)))
            .subquery()
        )
        newest = (
            select(numbered)
            .where(numbered.c.n <= attempts_shown)
            .order_by(numbered.c.delivery_id, numbered.c.n)
        )
        for a in conn.execute(newest):
            by_id[a.delivery_id]["attempt_list"].append(_attempt(a))
    total = conn.execute(select(func.count()).select_from(AlertDelivery).where(where)).scalar_one()
    return paged(total, query.page, query.per_page, rows=rows)


_ATTEMPT_COLUMNS = (
    AlertAttempt.id,
    AlertAttempt.delivery_id,
    AlertAttempt.at,
    AlertAttempt.ok,
    AlertAttempt.status_code,
    AlertAttempt.latency_ms,
    AlertAttempt.error,
    AlertAttempt.master,
)


def _attempt(a) -> dict[str, Any]:
    return {
        "id": a.id,
        "delivery_id": a.delivery_id,
        "at": iso(a.at),
        "ok": bool(a.ok),
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "master": a.master,
    }


def attempts(conn: Connection, delivery_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """A delivery's attempts, oldest first (the first ``limit``)."""
    stmt = (
        select(*_ATTEMPT_COLUMNS)
        .where(AlertAttempt.delivery_id == delivery_id)
        .order_by(AlertAttempt.at, AlertAttempt.id)
        .limit(limit)
    )
    return [_attempt(a) for a in conn.execute(stmt)]


def _hour_bucket(conn: Connection, column):
    if conn.dialect.name == "postgresql":
        return func.to_char(
            func.date_trunc("hour", func.timezone("UTC", column)), "YYYY-MM-DD HH24:00:00"
        )
    return func.strftime("%Y-%m-%d %H:00:00", column)


def deliveries_over_time(
    conn: Connection, hours: int = 24, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Deliveries made in the last ``hours`` by hour (UTC) and current status, oldest first:
    ``[{"at": "YYYY-MM-DD HH:00", "pending": n, "delivered": n, "failed": n, "suppressed":
    n}]``, one entry per hour of the window (hours with none count 0). Counted in SQL."""
    now = now or dt.datetime.now(dt.timezone.utc)
    first = (now - dt.timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    bucket = _hour_bucket(conn, AlertDelivery.created_at).label("bucket")
    stmt = (
        select(bucket, AlertDelivery.status, func.count())
        .where(AlertDelivery.created_at >= first)
        .group_by(bucket, AlertDelivery.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for at, status, n in conn.execute(stmt):
        counts.setdefault(str(at)[:13], {})[status] = n
    out = []
    for i in range(hours):
        at = first + dt.timedelta(hours=i)
        key = at.strftime("%Y-%m-%d %H")
        found = counts.get(key, {})
        out.append(
            {"at": at.strftime("%Y-%m-%d %H:00"), **{s: found.get(s, 0) for s in DELIVERY_STATUSES}}
        )
    return out


# -- routes --------------------------------------------------------------------------------------


def ui_routes(conn: Connection) -> list[dict[str, Any]]:
    """The routes admins made in the UI (``alert_routes``), by name; each with its key
    (``ui:<name>``). No secrets: see :func:`secrets_set`."""
    stmt = select(AlertRoute).order_by(AlertRoute.name)
    return [
        {
            "key": f"ui:{r.name}",
            "name": r.name,
            "source": "ui",
            "destination": r.destination,
            "match": r.match or {},
            "target": r.target or {},
            "enabled": bool(r.enabled),
            "created_by": r.created_by,
            "created_at": iso(r.created_at),
            "updated_at": iso(r.updated_at),
        }
        for r in conn.execute(stmt)
    ]


def ui_route(conn: Connection, name: str) -> dict[str, Any] | None:
    """One UI route by name, or None."""
    for route in ui_routes(conn):
        if route["name"] == name:
            return route
    return None


def secrets_set(conn: Connection, route_keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{route key: {secret name: updated at}}`` of the secrets that are set for these routes
    (names and times only: the values are never read here)."""
    if not route_keys:
        return {}
    stmt = select(Secret.owner, Secret.name, Secret.updated_at).where(
        Secret.scope == SECRET_SCOPE, Secret.owner.in_(sorted(set(route_keys)))
    )
    out: dict[str, dict[str, str]] = {}
    for owner, name, at in conn.execute(stmt):
        out.setdefault(owner, {})[name] = iso(at)
    return out


def route_stats(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per route key: deliveries by status and the time of the last one delivered."""
    out: dict[str, dict[str, Any]] = {}
    stmt = select(
        AlertDelivery.route,
        AlertDelivery.status,
        func.count(),
        func.max(AlertDelivery.delivered_at),
    ).group_by(AlertDelivery.route, AlertDelivery.status)
    for route, status, n, last in conn.execute(stmt):
        entry = out.setdefault(
            route, {"counts": dict.fromkeys(DELIVERY_STATUSES, 0), "last_delivered": None}
        )
        entry["counts"][status] = n
        if last is not None:
            shown = iso(last)
            if entry["last_delivered"] is None or shown > entry["last_delivered"]:
                entry["last_delivered"] = shown
    return out
