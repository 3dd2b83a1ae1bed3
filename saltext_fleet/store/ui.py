"""What the web UI reads: the fleet overview and a node's page, filtered, sorted and paged in
SQL.

The overview must stay fast with 10,000 nodes: it never loads the fleet into Python. One
query returns the page (``LIMIT``/``OFFSET`` over an indexed order, ``minion_id`` as the tie
breaker so pages never overlap), one counts the matching rows, and one counts nodes per status
for the header. Filters and sort keys are checked against fixed lists here: a value the UI or
the API was given never becomes SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, select

from saltext_fleet.core.errors import FleetError
from saltext_fleet.store import carriers as store_carriers
from saltext_fleet.store.models import (
    AuditEvent,
    DriftCurrent,
    DriftHistory,
    Event,
    Node,
    NodeInventory,
    Return,
    iso,
)

#: Criticality levels, lowest first (the overview sorts by this order, not alphabetically).
CRITICALITIES = ("low", "normal", "high", "critical")
STATUSES = ("online", "offline", "unknown")
PER_PAGE_MAX = 500


class QueryError(FleetError, ValueError):
    """A filter, sort key or page the UI was given is not one it can use; the message names
    the parameter and what is allowed."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def _os_expr():
    return Node.os_name  # generated from facts, indexed (schema 0018)


def _criticality_rank():
    return case(
        {name: rank for rank, name in enumerate(CRITICALITIES)},
        value=Node.criticality,
        else_=len(CRITICALITIES),
    )


#: sort key -> column expression
SORTS = {
    "id": lambda: Node.minion_id,
    "status": lambda: Node.status,
    "os": _os_expr,
    "drift": lambda: DriftCurrent.score,
    "last_seen": lambda: Node.last_seen,
    "criticality": _criticality_rank,
    "audited": lambda: Node.audited,
    "group": lambda: Node.node_group,
}


@dataclass
class OverviewQuery:
    """The overview's parameters, as the UI and the API take them (strings from a URL are
    checked by :meth:`from_args`)."""

    q: str | None = None  # part of the minion id
    status: str | None = None
    os: str | None = None
    group: str | None = None
    criticality: str | None = None
    audited: bool | None = None
    drift_min: float | None = None
    sort: str = "id"
    desc: bool = False
    page: int = 1
    per_page: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args) -> OverviewQuery:
        """From a mapping of strings (a query string); :class:`QueryError` names the bad one."""

        text = arg_reader(args)

        query = cls(q=text("q"), os=text("os"), group=text("group"))
        status = text("status")
        if status is not None and status not in STATUSES:
            raise QueryError("status", f"{status!r} is not one of {', '.join(STATUSES)}")
        query.status = status
        crit = text("criticality")
        if crit is not None and crit not in CRITICALITIES:
            raise QueryError("criticality", f"{crit!r} is not one of {', '.join(CRITICALITIES)}")
        query.criticality = crit
        audited = text("audited")
        if audited is not None:
            if audited.lower() not in ("yes", "no", "true", "false", "1", "0"):
                raise QueryError("audited", f"{audited!r} is not yes or no")
            query.audited = audited.lower() in ("yes", "true", "1")
        drift_min = text("drift_min", 32)
        if drift_min is not None:
            try:
                query.drift_min = float(drift_min)
            except ValueError as exc:
                raise QueryError("drift_min", f"{drift_min!r} is not a number") from exc
        sort = text("sort", 32) or "id"
        if sort.startswith("-"):
            query.desc, sort = True, sort[1:]
        if sort not in SORTS:
            raise QueryError("sort", f"{sort!r} is not one of {', '.join(SORTS)}")
        query.sort = sort
        query.page, query.per_page = parse_paging(text, query.page, query.per_page)
        return query

    def args(self, **changes) -> dict[str, str]:
        """This query as URL arguments (for links to other pages and sorts)."""
        values = {
            "q": self.q,
            "status": self.status,
            "os": self.os,
            "group": self.group,
            "criticality": self.criticality,
            "audited": None if self.audited is None else ("yes" if self.audited else "no"),
            "drift_min": None if self.drift_min is None else f"{self.drift_min:g}",
            "sort": ("-" if self.desc else "") + self.sort,
        }
        return query_args(values, self.page, self.per_page, changes)


def _filters(query: OverviewQuery) -> list:
    where = []
    if query.q:
        pattern = "%" + _like(query.q) + "%"
        where.append(Node.minion_id.like(pattern, escape="\\"))
    if query.status == "unknown":
        where.append(Node.status.is_(None))
    elif query.status:
        where.append(Node.status == query.status)
    if query.os:
        where.append(_os_expr() == query.os)
    if query.group:
        where.append(Node.node_group == query.group)
    if query.criticality:
        where.append(Node.criticality == query.criticality)
    if query.audited is not None:
        where.append(Node.audited.is_(query.audited))
    if query.drift_min is not None:
        where.append(DriftCurrent.score >= query.drift_min)
    return where


def _base(columns):
    return (
        select(*columns)
        .select_from(Node)
        .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
    )


def _columns() -> list:
    return [
        Node.minion_id,
        Node.status,
        _os_expr().label("os"),
        Node.facts["osrelease"].as_string().label("osrelease"),
        Node.node_group,
        DriftCurrent.score,
        DriftCurrent.baseline,
        Node.last_seen,
        Node.criticality,
        Node.audited,
        Node.comment,
    ]


def _row(r) -> dict[str, Any]:
    return {
        "id": r.minion_id,
        "status": r.status or "unknown",
        "os": r.os,
        "osrelease": r.osrelease,
        "group": r.node_group,
        "drift": r.score,
        "baseline": r.baseline,
        "last_seen": iso(r.last_seen),
        "criticality": r.criticality,
        "audited": bool(r.audited),
        "comment": r.comment or "",
    }


def _status_counts(conn: Connection) -> dict[str, int]:
    statuses = {name: 0 for name in STATUSES}
    for status, count in conn.execute(select(Node.status, func.count()).group_by(Node.status)):
        statuses[status or "unknown"] = statuses.get(status or "unknown", 0) + count
    return statuses


def _total_from_statuses(query: OverviewQuery, statuses: dict[str, int]) -> int | None:
    """The number of matching nodes when only the status filters (the header's counts have
    it: no second pass over the fleet), else None."""
    others = (query.q, query.os, query.group, query.criticality, query.audited, query.drift_min)
    if any(value not in (None, "") for value in others):
        return None
    if query.status:
        return statuses.get(query.status, 0)
    return sum(statuses.values())


def _drift_page(conn: Connection, query: OverviewQuery, where: list) -> list:
    """A page sorted by drift score: the nodes with a score in score order (ties by id), then
    the nodes without one, by id. Two queries that each follow an index (the score's, the
    id's) instead of one sort of the whole fleet joined to its scores."""
    offset = (query.page - 1) * query.per_page
    score = DriftCurrent.score.desc() if query.desc else DriftCurrent.score.asc()
    scored = (
        select(*_columns())
        .select_from(Node)
        .join(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .where(and_(True, *where))
        .order_by(score, Node.minion_id.asc())
        .limit(query.per_page)
        .offset(offset)
    )
    rows = list(conn.execute(scored))
    if len(rows) == query.per_page or query.drift_min is not None:
        return rows  # a score filter leaves out every node without a score
    if rows:
        scored_total = offset + len(rows)
    elif offset:
        scored_total = conn.execute(
            select(func.count())
            .select_from(Node)
            .join(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
            .where(and_(True, *where))
        ).scalar_one()
    else:
        scored_total = 0
    unscored = (
        _base(_columns())
        .where(and_(True, *where), DriftCurrent.minion_id.is_(None))
        .order_by(Node.minion_id.asc())
        .limit(query.per_page - len(rows))
        .offset(max(0, offset - scored_total))
    )
    return rows + list(conn.execute(unscored))


def overview(conn: Connection, query: OverviewQuery) -> dict[str, Any]:
    """One page of the fleet: ``{"rows", "total", "page", "pages", "per_page", "statuses"}``.

    Each row: ``id, status, os, osrelease, group, drift, baseline, last_seen, criticality,
    audited, comment``. Nodes without a drift score come last in either direction of the
    drift sort."""
    where = _filters(query)
    if query.sort == "drift":
        found = _drift_page(conn, query, where)
    else:
        order = SORTS[query.sort]()
        ordering = [order.desc().nulls_last() if query.desc else order.asc().nulls_last()]
        if query.sort != "id":
            ordering.append(Node.minion_id.asc())
        stmt = (
            _base(_columns())
            .where(and_(True, *where))
            .order_by(*ordering)
            .limit(query.per_page)
            .offset((query.page - 1) * query.per_page)
        )
        found = conn.execute(stmt)
    rows = [_row(r) for r in found]
    serving = store_carriers.served(conn, [row["id"] for row in rows])
    for row in rows:
        row["served"] = serving[row["id"]]
    statuses = _status_counts(conn)
    total = _total_from_statuses(query, statuses)
    if total is None:
        total = conn.execute(_base([func.count()]).where(and_(True, *where))).scalar_one()
    return paged(total, query.page, query.per_page, rows=rows, statuses=statuses)


def os_names(conn: Connection, limit: int = 100) -> list[str]:
    """The operating systems in the fleet (for the overview's filter), in order.

    An index skip scan: each step asks ``ix_nodes_os_name`` for the least name after the
    previous one, so a fleet of 100,000 nodes and 5 operating systems costs 6 index probes, not
    a pass over every node (which a ``GROUP BY`` would be on both backends)."""
    col = Node.os_name
    first = select(func.min(col).label("name"), literal(1).label("n"))
    names = first.cte("os_names", recursive=True)
    following = select(
        select(func.min(col)).where(col > names.c.name).scalar_subquery(), names.c.n + 1
    ).where(names.c.name.is_not(None), names.c.n < limit)
    names = names.union_all(following)
    stmt = select(names.c.name).where(names.c.name.is_not(None)).order_by(names.c.n)
    return [name for (name,) in conn.execute(stmt)]


def node(conn: Connection, minion_id: str) -> dict[str, Any] | None:
    """A node's page: its row, facts, grains, drift and where it stands."""
    n = conn.execute(select(Node).where(Node.minion_id == minion_id)).first()
    if n is None:
        return None
    drift = conn.execute(select(DriftCurrent).where(DriftCurrent.minion_id == minion_id)).first()
    return {
        "id": n.minion_id,
        "status": n.status or "unknown",
        "status_at": iso(n.status_at),
        "status_since": iso(n.status_since),
        "status_reason": n.status_reason,
        "presence_misses": n.presence_misses or 0,
        "beacon_interval": n.beacon_interval,
        "beacon_at": iso(n.beacon_at),
        "first_seen": iso(n.first_seen),
        "last_seen": iso(n.last_seen),
        "group": n.node_group,
        "facts": n.facts or {},
        "inventory_digest": n.inventory_digest,
        "inventory_at": iso(n.inventory_at),
        "pending_states": n.pending_states,
        "onboarded_at": iso(n.onboarded_at),
        "criticality": n.criticality,
        "audited": bool(n.audited),
        "comment": n.comment or "",
        "served": store_carriers.served(conn, [n.minion_id])[n.minion_id],
        "drift": None
        if drift is None
        else {
            "baseline": drift.baseline,
            "score": drift.score,
            "missing": drift.missing,
            "extra": drift.extra,
            "changed": drift.changed,
            "facts": drift.facts,
            "pending_states": drift.pending_states,
            "computed_at": iso(drift.computed_at),
        },
    }


def drift_history(
    conn: Connection, minion_id: str, since: dt.datetime | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """The node's drift points, oldest first (at most ``limit``, the newest ones)."""
    stmt = select(DriftHistory).where(DriftHistory.minion_id == minion_id)
    if since is not None:
        stmt = stmt.where(DriftHistory.computed_at >= since)
    stmt = stmt.order_by(DriftHistory.computed_at.desc()).limit(limit)
    points = [
        {
            "at": iso(h.computed_at),
            "score": h.score,
            "baseline": h.baseline,
            "missing": h.missing,
            "extra": h.extra,
            "changed": h.changed,
            "facts": h.facts,
            "trigger": h.trigger,
        }
        for h in conn.execute(stmt)
    ]
    points.reverse()
    return points


def recent_jobs(conn: Connection, minion_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The node's latest returns: jid, function, success, when (only those the master stored
    from its job cache: a return a minion wrote itself may name any node)."""
    stmt = (
        select(Return.jid, Return.fun, Return.success, Return.stored_at)
        .where(Return.minion_id == minion_id, Return.authenticated.is_(True))
        .order_by(Return.stored_at.desc())
        .limit(limit)
    )
    return [
        {"jid": r.jid, "fun": r.fun, "success": r.success, "at": iso(r.stored_at)}
        for r in conn.execute(stmt)
    ]


def timeline(conn: Connection, minion_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """What happened to the node, newest first: audit events about it (keys, enrolment,
    onboarding, bootstrap, edits), inventory changes, and its starts."""
    items: list[dict[str, Any]] = []
    audit = (
        select(AuditEvent.at, AuditEvent.actor, AuditEvent.action)
        .where(AuditEvent.target == minion_id)
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    items += [
        {"at": iso(a.at), "what": a.action, "by": a.actor, "kind": "audit"}
        for a in conn.execute(audit)
    ]
    changes = (
        select(NodeInventory.seen_at, NodeInventory.digest)
        .where(NodeInventory.minion_id == minion_id)
        .order_by(NodeInventory.seen_at.desc())
        .limit(limit)
    )
    items += [
        {
            "at": iso(c.seen_at),
            "what": f"inventory {c.digest[:12]}",
            "by": None,
            "kind": "inventory",
        }
        for c in conn.execute(changes)
    ]
    starts = (
        select(Event.stored_at)
        .where(Event.tag == f"salt/minion/{minion_id}/start")
        .order_by(Event.id.desc())
        .limit(limit)
    )
    items += [
        {"at": iso(e.stored_at), "what": "minion started", "by": None, "kind": "event"}
        for e in conn.execute(starts)
    ]
    items.sort(key=lambda item: item["at"] or "", reverse=True)
    return items[:limit]


def _like(text: str) -> str:
    """``text`` for a LIKE pattern, its wildcards escaped (with backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def arg_reader(args: Mapping[str, Any]) -> Callable[..., str | None]:
    """``arg(name, limit=255)`` over a request's arguments: the string, None when absent or
    empty, else :class:`QueryError` naming it (not a string, or longer than ``limit``)."""

    def arg(name: str, limit: int = 255) -> str | None:
        value = args.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise QueryError(name, f"at most {limit} characters")
        return value

    return arg


def query_args(values: dict, page: int, per_page: int, changes: dict) -> dict[str, str]:
    """A page's query as URL arguments (for the pager, sorts and links): ``values`` and the
    paging, with ``changes`` applied; empty ones left out."""
    values = {**values, "page": str(page), "per_page": str(per_page)}
    values.update({k: (None if v is None else str(v)) for k, v in changes.items()})
    return {k: v for k, v in values.items() if v not in (None, "")}


def paged(total: int, page: int, per_page: int, **more) -> dict:
    """What a paged answer says of its paging: ``total``, ``page``, ``pages``, ``per_page``
    (and ``more``, e.g. its ``rows``)."""
    return {
        **more,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // per_page)),
        "per_page": per_page,
    }


def parse_paging(arg, page: int, per_page: int) -> tuple[int, int]:
    """``page`` and ``per_page`` from a request's arguments (``arg(name, max_length)``, None when
    absent), each a whole number in its range, else :class:`QueryError` naming it."""
    values = {"page": page, "per_page": per_page}
    for name, low, high in (("page", 1, 1_000_000), ("per_page", 1, PER_PAGE_MAX)):
        raw = arg(name, 16)
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError as exc:
            raise QueryError(name, f"{raw!r} is not a whole number") from exc
        if not low <= value <= high:
            raise QueryError(name, f"{value} is not between {low} and {high}")
        values[name] = value
    return values["page"], values["per_page"]
