"""Triage decisions in the store, and the views of findings with the decision that applies.

Writing (:func:`decide`, :func:`revoke`): one ``vuln_triage`` row per decision, and an audit
event in the same transaction (``vuln.triage`` / ``vuln.triage.revoke``, target the advisory
id), so no decision exists that the chain does not record. Rows are never deleted: a decision
ends when it expires or is revoked.

Reading: which decision applies to a finding is decided in SQL, with the rules of
:func:`saltext_fleet.core.vulns.triage.applying` (live; node > group > fleet; one package >
any package; the newest of equals): the live decisions are joined to the findings on the
advisory and ranked per finding with ``row_number()`` (:func:`best_decisions`), set-based,
not a sub-select per finding. The views (:func:`findings_page`, :func:`by_advisory`,
:func:`by_node`, :func:`summary`) filter, group, count and page in SQL: nothing loads the
fleet's findings into Python. Findings here are the open ones (``resolved_at IS NULL``);
an open finding with an applying decision is *triaged*, else *open*.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from packageurl import PackageURL
from sqlalchemy import Connection, and_, case, distinct, func, or_, select
from sqlalchemy.orm import aliased

from saltext_fleet.core.vulns import triage as core_triage
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store.models import (
    Advisory,
    Node,
    NodeGroup,
    VulnFinding,
    VulnHistory,
    VulnTriage,
    iso,
)
from saltext_fleet.store.ui import QueryError, arg_reader, paged, parse_paging, query_args

#: Severities, worst first (``none``: CVSS 0; ``unknown``: the record has no CVSS vector).
SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")
SEVERITY_RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}
#: The ``triage=`` filter: open (no decision applies), triaged (one does), or one state.
TRIAGE_FILTERS = ("open", "triaged", *core_triage.STATES)
VIEWS = ("advisory", "node", "finding")
#: Points of a node's chart.
HISTORY_POINTS = 500


def utc(at: dt.datetime) -> dt.datetime:
    """``at`` in UTC (SQLite compares times as text: every bound time must be UTC)."""
    return (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def _aware(at: dt.datetime | None) -> dt.datetime | None:
    return None if at is None else (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc))


# -- decisions ---------------------------------------------------------------------------------


class AlreadyRevoked(core_triage.TriageError):
    """The decision to revoke has ended already (a conflict, not bad input)."""


def decision_of(row: Any) -> core_triage.Decision:
    """A ``vuln_triage`` row as a :class:`~saltext_fleet.core.vulns.triage.Decision`."""
    return core_triage.Decision(
        advisory_id=row.advisory_id,
        state=row.state,
        scope=row.scope,
        target=row.target,
        package=row.package,
        justification=row.justification,
        detail=row.detail or "",
        expires_at=_aware(row.expires_at),
        id=row.id,
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at),
        revoked_at=_aware(row.revoked_at),
        revoked_by=row.revoked_by,
    )


def as_dict(decision: core_triage.Decision, now: dt.datetime) -> dict[str, Any]:
    """A decision for the API and the pages (times as ISO text, ``live`` at ``now``)."""
    return {
        "id": decision.id,
        "advisory": decision.advisory_id,
        "state": decision.state,
        "scope": decision.scope,
        "target": decision.target,
        "package": decision.package,
        "justification": decision.justification,
        "detail": decision.detail,
        "expires_at": iso(decision.expires_at),
        "decided_by": decision.decided_by,
        "decided_at": iso(decision.decided_at),
        "revoked_at": iso(decision.revoked_at),
        "revoked_by": decision.revoked_by,
        "live": decision.live(now),
        "text": core_triage.describe(decision),
        "vex": core_triage.vex_analysis(decision),
    }


def _need_target(conn: Connection, decision: core_triage.Decision) -> None:
    found = conn.execute(
        select(Advisory.id).where(Advisory.id == decision.advisory_id)
    ).scalar_one_or_none()
    if found is None:
        raise core_triage.TriageError(
            "advisory",
            f"no advisory {decision.advisory_id!r} has been imported (salt-run fleet.cve_import)",
        )
    if decision.scope == "node":
        known = conn.execute(
            select(Node.minion_id).where(Node.minion_id == decision.target)
        ).scalar_one_or_none()
        if known is None:
            raise core_triage.TriageError("node", f"no node {decision.target!r} in the store")
    elif decision.scope == "group":
        named = conn.execute(
            select(NodeGroup.name).where(NodeGroup.name == decision.target)
        ).scalar_one_or_none()
        member = conn.execute(
            select(Node.minion_id).where(Node.node_group == decision.target).limit(1)
        ).scalar_one_or_none()
        if named is None and member is None:
            raise core_triage.TriageError(
                "group", f"no node group {decision.target!r} (and no node in one of that name)"
            )


def decide(
    conn: Connection, decision: core_triage.Decision, actor: str, now: dt.datetime
) -> dict[str, Any]:
    """Record ``decision`` (checked by :func:`saltext_fleet.core.vulns.triage.check`) by
    ``actor`` at ``now``, with its audit event, in the caller's transaction. The advisory,
    the node or the group must be known (:class:`~saltext_fleet.core.vulns.triage.
    TriageError` naming it otherwise). Returns the decision as :func:`as_dict`."""
    now = utc(now)
    _need_target(conn, decision)
    values = {
        "advisory_id": decision.advisory_id,
        "scope": decision.scope,
        "target": decision.target,
        "package": decision.package,
        "state": decision.state,
        "justification": decision.justification,
        "detail": decision.detail,
        "expires_at": utc(decision.expires_at) if decision.expires_at else None,
        "decided_by": actor[:255],
        "decided_at": now,
    }
    new_id = conn.execute(
        VulnTriage.__table__.insert().values(**values).returning(VulnTriage.id)
    ).scalar_one()
    made = dataclasses.replace(decision, id=new_id, decided_by=actor[:255], decided_at=now)
    store_audit.append(
        conn,
        actor,
        "vuln.triage",
        decision.advisory_id,
        {
            "id": new_id,
            "state": decision.state,
            "scope": decision.scope,
            "target": decision.target,
            "package": decision.package,
            "justification": decision.justification,
            "expires_at": iso(values["expires_at"]),
            "detail": decision.detail,
        },
    )
    return as_dict(made, now)


def get(conn: Connection, triage_id: int) -> core_triage.Decision | None:
    row = conn.execute(select(VulnTriage).where(VulnTriage.id == int(triage_id))).first()
    return None if row is None else decision_of(row)


def check_id(value: Any) -> int:
    """A decision's id from the command line, a form or a URL."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise core_triage.TriageError("id", "a decision's id (a whole number) is needed")
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise core_triage.TriageError("id", f"{text[:20]!r} is not a decision's id")
    return int(text)


def revoke(conn: Connection, triage_id: Any, actor: str, now: dt.datetime) -> dict[str, Any]:
    """End decision ``triage_id`` now, audited; an unknown or already revoked one is a
    :class:`~saltext_fleet.core.vulns.triage.TriageError`."""
    now = utc(now)
    triage_id = check_id(triage_id)
    found = get(conn, triage_id)
    if found is None:
        raise core_triage.TriageError("id", f"no triage decision {triage_id}")
    if found.revoked_at is not None:
        raise AlreadyRevoked(
            "id",
            f"decision {triage_id} was already revoked by {found.revoked_by} at "
            f"{iso(found.revoked_at)}",
        )
    changed = conn.execute(
        VulnTriage.__table__.update()
        .where(VulnTriage.id == triage_id, VulnTriage.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by=actor[:255])
    ).rowcount
    if changed != 1:  # revoked meanwhile by someone else
        raise AlreadyRevoked("id", f"decision {triage_id} was revoked meanwhile")
    store_audit.append(
        conn,
        actor,
        "vuln.triage.revoke",
        found.advisory_id,
        {"id": triage_id, "state": found.state, "scope": found.scope, "target": found.target},
    )
    return as_dict(dataclasses.replace(found, revoked_at=now, revoked_by=actor[:255]), now)


def decisions(
    conn: Connection,
    now: dt.datetime,
    advisory_id: str | None = None,
    live_only: bool = True,
    scope: str | None = None,
    target: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Decisions, newest first: the live ones (``live_only``), or all with the ended ones;
    only those about ``advisory_id``, or of ``scope`` (and ``target``), if given."""
    now = utc(now)
    stmt = select(VulnTriage).order_by(VulnTriage.id.desc()).limit(max(1, min(limit, 10_000)))
    if advisory_id is not None:
        stmt = stmt.where(VulnTriage.advisory_id == advisory_id)
    if scope is not None:
        stmt = stmt.where(VulnTriage.scope == scope)
    if target is not None:
        stmt = stmt.where(VulnTriage.target == target)
    if live_only:
        stmt = stmt.where(*_live(VulnTriage, now))
    return [as_dict(decision_of(row), now) for row in conn.execute(stmt)]


def decisions_for_node(
    conn: Connection, now: dt.datetime, minion_id: str, group: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    """The decisions that concern a node, newest first, ended ones too: its own, its
    group's, and the fleet's about advisories it has open findings of."""
    now = utc(now)
    its_advisories = select(VulnFinding.advisory_id).where(
        VulnFinding.minion_id == minion_id, VulnFinding.resolved_at.is_(None)
    )
    scopes = [
        and_(VulnTriage.scope == "node", VulnTriage.target == minion_id),
        and_(VulnTriage.scope == "fleet", VulnTriage.advisory_id.in_(its_advisories)),
    ]
    if group:
        scopes.append(and_(VulnTriage.scope == "group", VulnTriage.target == group))
    stmt = (
        select(VulnTriage)
        .where(or_(*scopes))
        .order_by(VulnTriage.id.desc())
        .limit(max(1, min(limit, 10_000)))
    )
    return [as_dict(decision_of(row), now) for row in conn.execute(stmt)]


# -- which decision applies, in SQL ------------------------------------------------------------


def _live(t, now: dt.datetime) -> list:
    return [t.revoked_at.is_(None), or_(t.expires_at.is_(None), t.expires_at > now)]


def best_decisions(now: dt.datetime, where: list):
    """``(finding id, decision id)`` of the open findings matching ``where`` (over
    ``VulnFinding`` joined with ``Node``) that a live decision covers, the applying one for
    each: the candidates are joined on the advisory (few decisions, many findings: a hash
    join) and ranked with a window function, as a sub-query with columns ``fid``, ``tid``
    and ``tstate`` (the decision's state)."""
    t = aliased(VulnTriage, name="cand_t")
    specificity = case((t.scope == "node", 6), (t.scope == "group", 4), else_=2) + case(
        (t.package.is_not(None), 1), else_=0
    )
    ranked = (
        select(
            VulnFinding.id.label("fid"),
            t.id.label("tid"),
            t.state.label("tstate"),
            func.row_number()
            .over(
                partition_by=VulnFinding.id,
                order_by=(specificity.desc(), t.decided_at.desc(), t.id.desc()),
            )
            .label("rn"),
        )
        .select_from(VulnFinding)
        .outerjoin(Node, Node.minion_id == VulnFinding.minion_id)
        .join(
            t,
            and_(
                t.advisory_id == VulnFinding.advisory_id,
                *_live(t, utc(now)),
                or_(t.package.is_(None), t.package == VulnFinding.package),
                or_(
                    t.scope == "fleet",
                    and_(t.scope == "node", t.target == VulnFinding.minion_id),
                    and_(t.scope == "group", t.target == Node.node_group),
                ),
            ),
        )
        .where(*where)
        .subquery("ranked")
    )
    return (
        select(ranked.c.fid, ranked.c.tid, ranked.c.tstate).where(ranked.c.rn == 1).subquery("best")
    )


def _severity_rank(column):
    return case(SEVERITY_RANK, value=column, else_=0)


@dataclasses.dataclass
class FindingsQuery:
    """The vulnerabilities pages' parameters (strings from a URL checked by
    :meth:`from_args`, :class:`~saltext_fleet.store.ui.QueryError` naming a bad one).

    ``severity``: at or above it; ``triage``: one of :data:`TRIAGE_FILTERS`; ``q``: part of
    a package name or an advisory id."""

    view: str = "advisory"
    severity: str | None = None
    ecosystem: str | None = None
    group: str | None = None
    triage: str | None = None
    advisory: str | None = None
    node: str | None = None
    q: str | None = None
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_args(cls, args: Mapping[str, Any], **fixed) -> FindingsQuery:
        arg = arg_reader(args)
        query = cls(
            ecosystem=arg("ecosystem", 64),
            group=arg("group", 64),
            advisory=arg("advisory", core_triage.ADVISORY_ID_MAX),
            node=arg("node", 253),
            q=arg("q", 200),
        )
        view = arg("view", 16)
        if view is not None:
            if view not in VIEWS:
                raise QueryError("view", f"{view!r} is not one of {', '.join(VIEWS)}")
            query.view = view
        severity = arg("severity", 16)
        if severity is not None and severity not in SEVERITIES:
            raise QueryError("severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
        query.severity = severity
        triage = arg("triage", 16)
        if triage is not None and triage not in TRIAGE_FILTERS:
            raise QueryError("triage", f"{triage!r} is not one of {', '.join(TRIAGE_FILTERS)}")
        query.triage = triage
        query.page, query.per_page = parse_paging(arg, 1, query.per_page)
        for name, value in fixed.items():
            setattr(query, name, value)
        return query

    def args(self, **changes) -> dict[str, str]:
        """This query as URL arguments (for links to other pages and views)."""
        values = {
            "view": self.view,
            "severity": self.severity,
            "ecosystem": self.ecosystem,
            "group": self.group,
            "triage": self.triage,
            "advisory": self.advisory,
            "node": self.node,
            "q": self.q,
        }
        return query_args(values, self.page, self.per_page, changes)

    def filtered(self) -> bool:
        return any((self.severity, self.ecosystem, self.group, self.triage, self.q))


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(query: FindingsQuery) -> list:
    """The query's filters over open ``VulnFinding`` rows (joined with ``Node``)."""
    where = [VulnFinding.resolved_at.is_(None)]
    if query.severity:
        where.append(_severity_rank(VulnFinding.severity) >= SEVERITY_RANK[query.severity])
    if query.ecosystem:
        where.append(VulnFinding.ecosystem == query.ecosystem)
    if query.group:
        where.append(Node.node_group == query.group)
    if query.advisory:
        where.append(VulnFinding.advisory_id == query.advisory)
    if query.node:
        where.append(VulnFinding.minion_id == query.node)
    if query.q:
        pattern = "%" + _like(query.q) + "%"
        where.append(
            or_(
                VulnFinding.package.like(pattern, escape="\\"),
                VulnFinding.advisory_id.like(pattern, escape="\\"),
            )
        )
    return where


def _open_findings(query: FindingsQuery, now: dt.datetime, triage_filter: bool = True):
    """The open findings the query selects, each with its group and applying decision's id
    and state (``triage_id``, ``triage_state``), as a sub-query, and the conditions of the
    query's triage filter over it. (Advisories and decisions are joined to a page's rows
    only: the planner cannot tell how many findings are untriaged, and a join over all of
    them on a wrong guess is a nested loop over the fleet.)"""
    where = _where(query)
    best = best_decisions(now, where)
    inner = (
        select(
            VulnFinding.id,
            VulnFinding.minion_id,
            VulnFinding.ecosystem,
            VulnFinding.package,
            VulnFinding.version,
            VulnFinding.advisory_id,
            VulnFinding.fixed,
            VulnFinding.severity,
            VulnFinding.cvss_score,
            VulnFinding.first_seen,
            VulnFinding.last_seen,
            Node.node_group.label("grp"),
            best.c.tid.label("triage_id"),
            best.c.tstate.label("triage_state"),
        )
        .select_from(VulnFinding)
        .outerjoin(Node, Node.minion_id == VulnFinding.minion_id)
        .outerjoin(best, best.c.fid == VulnFinding.id)
        .where(*where)
        .subquery("f")
    )
    conditions = []
    if triage_filter and query.triage == "open":
        conditions.append(inner.c.triage_id.is_(None))
    elif triage_filter and query.triage == "triaged":
        conditions.append(inner.c.triage_id.is_not(None))
    elif triage_filter and query.triage:
        conditions.append(inner.c.triage_state == query.triage)
    return inner, conditions


def _page_of(total: int, query: FindingsQuery) -> dict[str, Any]:
    return paged(total, query.page, query.per_page)


def _triage_cols(t):
    return [
        t.id.label("t_id"),
        t.state.label("t_state"),
        t.scope.label("t_scope"),
        t.target.label("t_target"),
        t.package.label("t_package"),
        t.justification.label("t_justification"),
        t.detail.label("t_detail"),
        t.expires_at.label("t_expires_at"),
        t.decided_by.label("t_decided_by"),
        t.decided_at.label("t_decided_at"),
    ]


def _triage_of(row) -> dict[str, Any] | None:
    if row.t_id is None:
        return None
    decision = core_triage.Decision(
        advisory_id=row.advisory_id,
        state=row.t_state,
        scope=row.t_scope,
        target=row.t_target,
        package=row.t_package,
        justification=row.t_justification,
        detail=row.t_detail or "",
        expires_at=_aware(row.t_expires_at),
        id=row.t_id,
        decided_by=row.t_decided_by,
        decided_at=_aware(row.t_decided_at),
    )
    return {
        "id": decision.id,
        "state": decision.state,
        "scope": decision.scope,
        "target": decision.target,
        "package": decision.package,
        "justification": decision.justification,
        "detail": decision.detail,
        "expires_at": iso(decision.expires_at),
        "decided_by": decision.decided_by,
        "decided_at": iso(decision.decided_at),
        "text": core_triage.describe(decision),
    }


def findings_page(conn: Connection, query: FindingsQuery, now: dt.datetime) -> dict[str, Any]:
    """One page of open findings, worst first, each with its advisory's summary and aliases
    and the decision that applies (``triage``, None when open): ``{"rows", "total", "page",
    "pages", "per_page"}``."""
    inner, conditions = _open_findings(query, now)

    def order(c):
        return (
            _severity_rank(c.severity).desc(),
            c.cvss_score.desc().nulls_last(),
            c.advisory_id,
            c.minion_id,
            c.package,
            c.id,
        )

    shown = (
        select(inner)
        .where(and_(True, *conditions))
        .order_by(*order(inner.c))
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
        .subquery("shown")
    )
    t = aliased(VulnTriage, name="t")
    stmt = (
        select(shown, Advisory.summary, Advisory.aliases, *_triage_cols(t))
        .select_from(shown)
        .outerjoin(t, t.id == shown.c.triage_id)
        .outerjoin(Advisory, Advisory.id == shown.c.advisory_id)
        .order_by(*order(shown.c))
    )
    rows = [
        {
            "id": r.id,
            "minion": r.minion_id,
            "group": r.grp,
            "ecosystem": r.ecosystem,
            "package": r.package,
            "version": r.version,
            "advisory": r.advisory_id,
            "summary": r.summary or "",
            "aliases": list(r.aliases or []),
            "severity": r.severity,
            "cvss": r.cvss_score,
            "fixed": r.fixed,
            "first_seen": iso(r.first_seen),
            "last_seen": iso(r.last_seen),
            "triage": _triage_of(r),
        }
        for r in conn.execute(stmt)
    ]
    total = conn.execute(
        select(func.count()).select_from(inner).where(and_(True, *conditions))
    ).scalar_one()
    return {"rows": rows, **_page_of(total, query)}


def _open_sum(inner, *extra):
    return func.sum(case((and_(inner.c.triage_id.is_(None), *extra), 1), else_=0))


def by_advisory(conn: Connection, query: FindingsQuery, now: dt.datetime) -> dict[str, Any]:
    """One page of advisories with open findings, worst first: ``{"rows": [{"advisory",
    "summary", "aliases", "severity", "cvss", "findings", "nodes", "open", "triaged",
    "packages"}], "total", ...}``; ``open`` counts the untriaged findings."""
    inner, conditions = _open_findings(query, now)
    rank = func.max(_severity_rank(inner.c.severity))
    open_count = _open_sum(inner)
    grouped = (
        select(
            inner.c.advisory_id,
            func.count().label("findings"),
            func.count(distinct(inner.c.minion_id)).label("nodes"),
            func.count(distinct(inner.c.package)).label("packages"),
            open_count.label("open"),
            rank.label("rank"),
            func.max(inner.c.cvss_score).label("cvss"),
            func.min(inner.c.package).label("package"),
        )
        .select_from(inner)
        .where(and_(True, *conditions))
        .group_by(inner.c.advisory_id)
        .subquery("g")
    )

    def order(c):
        return (c.rank.desc(), c.cvss.desc().nulls_last(), c.open.desc(), c.advisory_id)

    shown = (
        select(grouped)
        .order_by(*order(grouped.c))
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
        .subquery("shown")
    )
    stmt = (
        select(shown, Advisory.summary, Advisory.aliases, Advisory.severity)
        .select_from(shown)
        .outerjoin(Advisory, Advisory.id == shown.c.advisory_id)
        .order_by(*order(shown.c))
    )
    by_rank = {rank: name for name, rank in SEVERITY_RANK.items()}
    rows = [
        {
            "advisory": r.advisory_id,
            "summary": r.summary or "",
            "aliases": list(r.aliases or []),
            "severity": r.severity or by_rank.get(r.rank, "unknown"),
            "cvss": r.cvss,
            "findings": r.findings,
            "nodes": r.nodes,
            "packages": r.packages,
            "package": r.package,
            "open": int(r.open or 0),
            "triaged": r.findings - int(r.open or 0),
        }
        for r in conn.execute(stmt)
    ]
    total = conn.execute(select(func.count()).select_from(grouped)).scalar_one()
    return {"rows": rows, **_page_of(total, query)}


def by_node(conn: Connection, query: FindingsQuery, now: dt.datetime) -> dict[str, Any]:
    """One page of nodes with open findings, most critical open first: ``{"rows":
    [{"minion", "group", "findings", "open", "triaged", "critical", "high", "medium",
    "low", "other"}], "total", ...}`` (severity counts are of the untriaged findings)."""
    inner, conditions = _open_findings(query, now)
    severity = {
        name: _open_sum(inner, inner.c.severity == name).label(name)
        for name in ("critical", "high", "medium", "low")
    }
    grouped = (
        select(
            inner.c.minion_id,
            func.max(inner.c.grp).label("grp"),
            func.count().label("findings"),
            _open_sum(inner).label("open"),
            *severity.values(),
        )
        .select_from(inner)
        .where(and_(True, *conditions))
        .group_by(inner.c.minion_id)
        .subquery("g")
    )
    stmt = (
        select(grouped)
        .order_by(
            grouped.c.critical.desc(),
            grouped.c.high.desc(),
            grouped.c.open.desc(),
            grouped.c.minion_id,
        )
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    rows = []
    for r in conn.execute(stmt):
        opened = int(r.open or 0)
        counted = {name: int(getattr(r, name) or 0) for name in severity}
        rows.append(
            {
                "minion": r.minion_id,
                "group": r.grp,
                "findings": r.findings,
                "open": opened,
                "triaged": r.findings - opened,
                **counted,
                "other": opened - sum(counted.values()),
            }
        )
    total = conn.execute(select(func.count()).select_from(grouped)).scalar_one()
    return {"rows": rows, **_page_of(total, query)}


def summary(conn: Connection, query: FindingsQuery, now: dt.datetime) -> dict[str, Any]:
    """Counts over the query's filters (its triage filter aside): ``{"open", "triaged",
    "nodes", "advisories", "open_by_severity": {severity: n}, "triaged_by_state": {state:
    n}}``; ``open`` excludes triaged findings."""
    inner, _conditions = _open_findings(query, now, triage_filter=False)
    out: dict[str, Any] = {
        "open": 0,
        "triaged": 0,
        "open_by_severity": {name: 0 for name in SEVERITIES},
        "triaged_by_state": {name: 0 for name in core_triage.STATES},
    }
    stmt = (
        select(inner.c.severity, inner.c.triage_state, func.count())
        .select_from(inner)
        .group_by(inner.c.severity, inner.c.triage_state)
    )
    for severity, state, count in conn.execute(stmt):
        if state is None:
            out["open"] += count
            key = severity if severity in out["open_by_severity"] else "unknown"
            out["open_by_severity"][key] += count
        else:
            out["triaged"] += count
            out["triaged_by_state"][state] = out["triaged_by_state"].get(state, 0) + count
    # which nodes and advisories: no decision needed
    out["nodes"], out["advisories"] = conn.execute(
        select(
            func.count(distinct(VulnFinding.minion_id)),
            func.count(distinct(VulnFinding.advisory_id)),
        )
        .select_from(VulnFinding)
        .outerjoin(Node, Node.minion_id == VulnFinding.minion_id)
        .where(*_where(query))
    ).one()
    return out


def choices(conn: Connection) -> dict[str, list[str]]:
    """What the filters offer: the ecosystems of open findings, the node groups."""
    ecosystems = conn.execute(
        select(VulnFinding.ecosystem)
        .where(VulnFinding.resolved_at.is_(None))
        .group_by(VulnFinding.ecosystem)
        .order_by(VulnFinding.ecosystem)
        .limit(100)
    ).scalars()
    groups = set(conn.execute(select(NodeGroup.name).limit(500)).scalars())
    groups |= set(
        conn.execute(
            select(Node.node_group).where(Node.node_group.is_not(None)).distinct().limit(500)
        ).scalars()
    )
    return {"ecosystems": list(ecosystems), "groups": sorted(groups)}


def advisory_count(conn: Connection) -> int:
    """How many advisories are imported (0: the pages say how to import them)."""
    return conn.execute(select(func.count()).select_from(Advisory)).scalar_one()


# -- one advisory, one node --------------------------------------------------------------------


def advisory(conn: Connection, advisory_id: str) -> dict[str, Any] | None:
    """An imported advisory for its page: ``{"id", "summary", "details", "aliases",
    "severity", "cvss", "vectors", "published", "modified", "withdrawn", "references",
    "affected", "source"}``; None when it is not imported."""
    row = conn.execute(select(Advisory).where(Advisory.id == advisory_id)).first()
    if row is None:
        return None
    adv = row
    record = adv.record if isinstance(adv.record, dict) else {}

    def strings(items: Any, key: str) -> list[dict[str, str]]:
        out = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get(key), str):
                out.append({k: str(v) for k, v in item.items() if isinstance(v, (str, int))})
        return out[:200]

    affected = []
    for entry in (record.get("affected") or [])[:200] if isinstance(record, dict) else []:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict):
            continue
        ranges = []
        for rng in entry.get("ranges") or []:
            if not isinstance(rng, dict):
                continue
            events = [
                f"{kind} {value}"
                for event in rng.get("events") or []
                if isinstance(event, dict)
                for kind, value in event.items()
            ]
            ranges.append({"type": str(rng.get("type", "")), "events": events})
        versions = entry.get("versions") if isinstance(entry.get("versions"), list) else []
        affected.append(
            {
                "ecosystem": str(package.get("ecosystem", "")),
                "name": str(package.get("name", "")),
                "ranges": ranges,
                "versions": [str(v) for v in versions[:50]],
                "more_versions": max(0, len(versions) - 50),
            }
        )
    return {
        "id": adv.id,
        "summary": adv.summary or "",
        "details": str(record.get("details") or "")[:20_000],
        "aliases": list(adv.aliases or []),
        "severity": adv.severity,
        "cvss": adv.cvss_score,
        "vectors": strings(record.get("severity"), "score"),
        "published": iso(adv.published),
        "modified": iso(adv.modified),
        "withdrawn": iso(adv.withdrawn),
        "references": strings(record.get("references"), "url"),
        "affected": affected,
        "source": adv.source,
    }


def history(conn: Connection, minion_id: str, limit: int = HISTORY_POINTS) -> list[dict[str, Any]]:
    """A node's open-findings points, oldest first (the newest ``limit``)."""
    stmt = (
        select(VulnHistory)
        .where(VulnHistory.minion_id == minion_id)
        .order_by(VulnHistory.computed_at.desc())
        .limit(limit)
    )
    points = [
        {
            "at": iso(h.computed_at),
            "open": h.open,
            "critical": h.critical,
            "high": h.high,
            "medium": h.medium,
            "low": h.low,
            "unknown": h.unknown,
            "triaged": h.triaged,
        }
        for h in conn.execute(stmt)
    ]
    points.reverse()
    return points


def open_counts(conn: Connection, minion_id: str, now: dt.datetime) -> dict[str, int]:
    """A node's open findings now, as a ``vuln_history`` row counts them: ``{"open",
    "critical", "high", "medium", "low", "unknown", "triaged"}`` (``open`` and the
    severities exclude triaged findings; ``unknown`` holds ``none`` and ``unknown``)."""
    found = summary(conn, FindingsQuery(node=minion_id), now)
    by = found["open_by_severity"]
    return {
        "open": found["open"],
        "critical": by["critical"],
        "high": by["high"],
        "medium": by["medium"],
        "low": by["low"],
        "unknown": by["none"] + by["unknown"],
        "triaged": found["triaged"],
    }


def applying(
    conn: Connection, finding_ids: Iterable[int], now: dt.datetime
) -> dict[int, dict[str, Any]]:
    """``{finding id: decision}`` for those of ``finding_ids`` a decision applies to (open
    findings only): what the alerting of new findings asks before it fires."""
    ids = sorted({int(i) for i in finding_ids})
    out: dict[int, dict[str, Any]] = {}
    t = aliased(VulnTriage, name="t")
    for start in range(0, len(ids), 1000):
        where = [
            VulnFinding.id.in_(ids[start : start + 1000]),
            VulnFinding.resolved_at.is_(None),
        ]
        best = best_decisions(now, where)
        stmt = (
            select(best.c.fid.label("id"), t.advisory_id, *_triage_cols(t))
            .select_from(best)
            .join(t, t.id == best.c.tid)
        )
        for row in conn.execute(stmt):
            out[row.id] = _triage_of(row)
    return out


# -- VEX -----------------------------------------------------------------------------------------

#: inventory ecosystem -> purl type, for :func:`simple_purl`
PURL_TYPES = {
    "pypi": "pypi",
    "npm": "npm",
    "deb": "deb",
    "rpm": "rpm",
    "apk": "apk",
    "brew": "brew",
    "nix": "nix",
}


def simple_purl(ecosystem: str, name: str, version: str, facts: Mapping | None = None) -> str:
    """A package URL for a finding's package, without qualifiers (the SBOM's own purls may
    carry more; :func:`vex_for_node` takes the SBOM's function instead when given one)."""
    kind = PURL_TYPES.get(ecosystem, "generic")
    namespace = None
    if kind in ("deb", "rpm", "apk"):
        namespace = str((facts or {}).get("os") or "").lower() or None
    if kind == "npm" and name.startswith("@") and "/" in name:
        namespace, name = name.split("/", 1)
    if kind == "pypi":
        name = name.lower().replace("_", "-").replace(".", "-")
    return PackageURL(type=kind, namespace=namespace, name=name, version=version).to_string()


def vex_for_node(
    conn: Connection,
    minion_id: str,
    now: dt.datetime,
    purl_of: Callable[[str, str, str], str | None] | None = None,
) -> list[dict[str, Any]]:
    """The VEX entries of a node's triaged open findings, for its SBOM: one per advisory and
    analysis, ``{"id", "aliases", "state", "justification", "responses", "detail", "purls",
    "packages", "decision"}`` (``state``, ``justification``, ``response`` as CycloneDX 1.6
    names them, see :mod:`saltext_fleet.core.vulns.triage`; ``purls`` the affected
    components, by ``purl_of(ecosystem, name, version)`` or :func:`simple_purl`; ``packages``
    the same as ``{"ecosystem", "name", "version"}``; ``decision`` the decision's id)."""
    facts = conn.execute(select(Node.facts).where(Node.minion_id == minion_id)).scalar()
    query = FindingsQuery(node=minion_id, triage="triaged", per_page=1000)
    entries: dict[tuple, dict[str, Any]] = {}
    page = 1
    while True:
        query.page = page
        found = findings_page(conn, query, now)
        for row in found["rows"]:
            decision = row["triage"]
            analysis = core_triage.vex_analysis(
                core_triage.Decision(
                    advisory_id=row["advisory"],
                    state=decision["state"],
                    scope=decision["scope"],
                    justification=decision["justification"],
                    detail=decision["detail"],
                )
            )
            key = (row["advisory"], decision["id"])
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = {
                    "id": row["advisory"],
                    "aliases": row["aliases"],
                    **analysis,
                    "purls": [],
                    "packages": [],
                    "decision": decision["id"],
                }
            purl = (
                purl_of(row["ecosystem"], row["package"], row["version"])
                if purl_of is not None
                else simple_purl(row["ecosystem"], row["package"], row["version"], facts)
            )
            if purl and purl not in entry["purls"]:
                entry["purls"].append(purl)
            entry["packages"].append(
                {"ecosystem": row["ecosystem"], "name": row["package"], "version": row["version"]}
            )
        if page >= found["pages"]:
            break
        page += 1
    return [entries[key] for key in sorted(entries)]


def node_findings_count(conn: Connection, minion_id: str) -> int:
    """How many findings (open or resolved) a node ever had."""
    return conn.execute(
        select(func.count()).select_from(VulnFinding).where(VulnFinding.minion_id == minion_id)
    ).scalar_one()
