"""Signing certificates and Xcode versions in the store: read from the nodes' ``fleet`` grain
in SQL, and the expiry thresholds that fired (``cert_alerts``).

The identities and Xcode bundles are read from ``nodes.grains`` (the ``fleet`` grain's
``macos`` section) by the database's JSON functions (``jsonb_array_elements`` on PostgreSQL,
``json_each`` on SQLite): a page or a check never loads the fleet's grains into Python. What
a node reports is a claim about itself, checked on the way out: an identity needs a 40-digit
SHA-1, a ``not_after`` in the grain's form (``2030-06-30T23:59:59Z``, else it is an unknown
expiry), and a node's list counts up to :data:`MAX_IDENTITIES` entries (its Xcode list up to
:data:`MAX_XCODES`); a value of another shape is skipped, never an error that would hide the
other nodes. Every row names the node that reported it and nothing else.

``cert_alerts`` holds one row per (node, SHA-1, threshold) that fired. :func:`claim` inserts
if absent and returns what it inserted, so whichever process inserts a row fires its event,
once, however many checks run side by side.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection

from saltext_fleet.core import certs as core_certs
from saltext_fleet.store.drift.common import aware, dialect_insert, in_chunks
from saltext_fleet.store.models import CertAlert
from saltext_fleet.store.ui import QueryError, arg_reader, paged, parse_paging, query_args

#: Most identities of one node read (the grain reports at most 256).
MAX_IDENTITIES = 256
#: Most Xcode bundles of one node read (the grain examines at most 32).
MAX_XCODES = 32
#: Most node ids listed with one identity on a page (the count is always given).
NODES_SHOWN = 50
#: Most Xcode versions (columns) of the matrix.
MAX_VERSIONS = 100

_NOT_AFTER_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}[:][0-9]{2}[:][0-9]{2}Z$"
_NOT_AFTER_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z"

_PG_IDENTITIES = f"""
SELECT n.minion_id AS node,
       upper(e.value->>'sha1') AS sha1,
       CASE WHEN jsonb_typeof(e.value->'name') = 'string'
            THEN left(e.value->>'name', 255) END AS name,
       CASE WHEN jsonb_typeof(e.value->'team_id') = 'string'
            THEN left(e.value->>'team_id', 32) END AS team_id,
       CASE WHEN jsonb_typeof(e.value->'not_after') = 'string'
             AND (e.value->>'not_after') ~ '{_NOT_AFTER_RE}'
            THEN e.value->>'not_after' END AS not_after
FROM nodes n
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(n.grains->'fleet'->'macos'->'signing_identities') = 'array'
         THEN n.grains->'fleet'->'macos'->'signing_identities' ELSE '[]'::jsonb END
) WITH ORDINALITY AS e(value, i)
WHERE e.i <= {MAX_IDENTITIES} AND jsonb_typeof(e.value) = 'object'
  AND jsonb_typeof(e.value->'sha1') = 'string'
  AND upper(e.value->>'sha1') ~ '^[0-9A-F]{{40}}$'
"""

_SQLITE_IDENTITIES = f"""
SELECT n.minion_id AS node,
       upper(json_extract(e.value, '$.sha1')) AS sha1,
       CASE WHEN json_type(e.value, '$.name') = 'text'
            THEN substr(json_extract(e.value, '$.name'), 1, 255) END AS name,
       CASE WHEN json_type(e.value, '$.team_id') = 'text'
            THEN substr(json_extract(e.value, '$.team_id'), 1, 32) END AS team_id,
       CASE WHEN json_type(e.value, '$.not_after') = 'text'
             AND json_extract(e.value, '$.not_after') GLOB '{_NOT_AFTER_GLOB}'
            THEN json_extract(e.value, '$.not_after') END AS not_after
FROM nodes n, json_each(
    CASE WHEN json_type(n.grains, '$.fleet.macos.signing_identities') = 'array'
         THEN json_extract(n.grains, '$.fleet.macos.signing_identities') ELSE '[]' END
) AS e
WHERE e.key < {MAX_IDENTITIES} AND e.type = 'object'
  AND json_type(e.value, '$.sha1') = 'text'
  AND length(json_extract(e.value, '$.sha1')) = 40
  AND upper(json_extract(e.value, '$.sha1')) NOT GLOB '*[^0-9A-F]*'
"""

_PG_XCODES = f"""
SELECT n.minion_id AS node,
       left(e.value->>'version', 64) AS version,
       CASE WHEN jsonb_typeof(e.value->'build') = 'string'
            THEN left(e.value->>'build', 64) END AS build,
       coalesce(e.value->'selected' = 'true'::jsonb, false) AS selected
FROM nodes n
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(n.grains->'fleet'->'macos'->'xcode') = 'array'
         THEN n.grains->'fleet'->'macos'->'xcode' ELSE '[]'::jsonb END
) WITH ORDINALITY AS e(value, i)
WHERE e.i <= {MAX_XCODES} AND jsonb_typeof(e.value) = 'object'
  AND jsonb_typeof(e.value->'version') = 'string' AND e.value->>'version' <> ''
"""

_SQLITE_XCODES = f"""
SELECT n.minion_id AS node,
       substr(json_extract(e.value, '$.version'), 1, 64) AS version,
       CASE WHEN json_type(e.value, '$.build') = 'text'
            THEN substr(json_extract(e.value, '$.build'), 1, 64) END AS build,
       coalesce(json_type(e.value, '$.selected') = 'true', 0) AS selected
FROM nodes n, json_each(
    CASE WHEN json_type(n.grains, '$.fleet.macos.xcode') = 'array'
         THEN json_extract(n.grains, '$.fleet.macos.xcode') ELSE '[]' END
) AS e
WHERE e.key < {MAX_XCODES} AND e.type = 'object'
  AND json_type(e.value, '$.version') = 'text' AND json_extract(e.value, '$.version') <> ''
"""

#: node -> its macOS version, whether it reports a ``macos`` section, its assigned baseline
_PG_MACS = """
SELECT n.minion_id AS node,
       left(coalesce(
           CASE WHEN jsonb_typeof(n.grains->'fleet'->'os_version') = 'string'
                THEN n.grains->'fleet'->>'os_version' END,
           CASE WHEN jsonb_typeof(n.grains->'osrelease') = 'string'
                THEN n.grains->>'osrelease' END,
           CASE WHEN jsonb_typeof(n.facts->'osrelease') = 'string'
                THEN n.facts->>'osrelease' END), 64) AS os_version,
       jsonb_typeof(n.grains->'fleet'->'macos') = 'object' AS is_mac,
       d.baseline AS assigned
FROM nodes n LEFT JOIN drift_current d ON d.minion_id = n.minion_id
"""

_SQLITE_MACS = """
SELECT n.minion_id AS node,
       substr(coalesce(
           CASE WHEN json_type(n.grains, '$.fleet.os_version') = 'text'
                THEN json_extract(n.grains, '$.fleet.os_version') END,
           CASE WHEN json_type(n.grains, '$.osrelease') = 'text'
                THEN json_extract(n.grains, '$.osrelease') END,
           CASE WHEN json_type(n.facts, '$.osrelease') = 'text'
                THEN json_extract(n.facts, '$.osrelease') END), 1, 64) AS os_version,
       coalesce(json_type(n.grains, '$.fleet.macos') = 'object', 0) AS is_mac,
       d.baseline AS assigned
FROM nodes n LEFT JOIN drift_current d ON d.minion_id = n.minion_id
"""

_PG_REQUIRED = """
SELECT b.name AS baseline,
       CASE WHEN jsonb_typeof(b.spec->'facts'->'xcode') = 'string'
            THEN b.spec->'facts'->>'xcode' END AS xcode
FROM baselines b
"""

_SQLITE_REQUIRED = """
SELECT b.name AS baseline,
       CASE WHEN json_type(b.spec, '$.facts.xcode') = 'text'
            THEN json_extract(b.spec, '$.facts.xcode') END AS xcode
FROM baselines b
"""


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def identities_sql(conn: Connection) -> str:
    """The SELECT of every (node, sha1, name, team_id, not_after) the nodes report."""
    return _PG_IDENTITIES if _pg(conn) else _SQLITE_IDENTITIES


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# -- expiry checks -----------------------------------------------------------------------------


def expiring(
    conn: Connection, before: dt.datetime, nodes: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Every (node, identity) whose ``not_after`` is at or before ``before``, each as
    ``{"node", "sha1", "name", "team_id", "not_after": datetime}``, ordered by node and SHA-1
    (the same identity listed twice by one node counts once: its earliest ``not_after``)."""
    params: dict[str, Any] = {"before": core_certs.not_after_text(before)}
    where = "not_after IS NOT NULL AND not_after <= :before"
    if nodes is not None:
        nodes = sorted(set(nodes))
        if not nodes:
            return []
        names = [f":n{i}" for i in range(len(nodes))]
        params.update({f"n{i}": node for i, node in enumerate(nodes)})
        where += f" AND node IN ({', '.join(names)})"
    sql = f"SELECT * FROM ({identities_sql(conn)}) AS ids WHERE {where} ORDER BY node, sha1"
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in conn.execute(text(sql), params).mappings():
        not_after = core_certs.parse_not_after(row["not_after"])
        if not_after is None:
            continue
        key = (row["node"], row["sha1"])
        if key in seen and seen[key]["not_after"] <= not_after:
            continue
        seen[key] = {
            "node": row["node"],
            "sha1": row["sha1"],
            "name": row["name"],
            "team_id": row["team_id"],
            "not_after": not_after,
        }
    return list(seen.values())


def recorded(
    conn: Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, dt.datetime | None]]:
    """``{(node, sha1): {threshold: not_after it fired for}}`` of the given pairs."""
    wanted = set(pairs)
    out: dict[tuple[str, str], dict[str, dt.datetime | None]] = {}
    for chunk in in_chunks(sorted({node for node, _sha1 in wanted})):
        stmt = select(CertAlert.node, CertAlert.sha1, CertAlert.threshold, CertAlert.not_after)
        for row in conn.execute(stmt.where(CertAlert.node.in_(chunk))):
            if (row.node, row.sha1) in wanted:
                out.setdefault((row.node, row.sha1), {})[row.threshold] = (
                    aware(row.not_after) if row.not_after else None
                )
    return out


def claim(
    conn: Connection,
    node: str,
    sha1: str,
    not_after: dt.datetime,
    thresholds: Iterable[str],
    now: dt.datetime,
) -> list[str]:
    """Insert the thresholds that are absent for (node, sha1); the ones this call inserted
    (another process that inserted one first keeps it: insert-if-absent decides)."""
    rows = [
        {"node": node, "sha1": sha1, "threshold": t, "not_after": not_after, "fired_at": now}
        for t in thresholds
    ]
    if not rows:
        return []
    stmt = (
        dialect_insert(conn)(CertAlert.__table__)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["node", "sha1", "threshold"])
        .returning(CertAlert.threshold)
    )
    return [threshold for (threshold,) in conn.execute(stmt)]


def release(
    conn: Connection, node: str, sha1: str, thresholds: Iterable[str], fired_at: dt.datetime
) -> int:
    """Give back thresholds :func:`claim` took at ``fired_at`` (their event could not be
    fired): the next check claims them again."""
    stmt = delete(CertAlert).where(
        CertAlert.node == node,
        CertAlert.sha1 == sha1,
        CertAlert.threshold.in_(list(thresholds)),
        CertAlert.fired_at == fired_at,
    )
    return conn.execute(stmt).rowcount


def rearm(
    conn: Connection, node: str, sha1: str, thresholds: Iterable[str], not_after: dt.datetime
) -> int:
    """Forget thresholds recorded for another ``not_after`` than the one reported now (the
    date moved later and they are no longer crossed): they fire again when crossed."""
    stmt = delete(CertAlert).where(
        CertAlert.node == node,
        CertAlert.sha1 == sha1,
        CertAlert.threshold.in_(list(thresholds)),
        CertAlert.not_after != not_after,
    )
    return conn.execute(stmt).rowcount


def move(
    conn: Connection, node: str, sha1: str, thresholds: Iterable[str], not_after: dt.datetime
) -> int:
    """Record the new ``not_after`` of thresholds still crossed under it (not fired again)."""
    stmt = (
        update(CertAlert)
        .where(
            CertAlert.node == node,
            CertAlert.sha1 == sha1,
            CertAlert.threshold.in_(list(thresholds)),
        )
        .values(not_after=not_after)
    )
    return conn.execute(stmt).rowcount


# -- the certificates page and runner ---------------------------------------------------------


@dataclasses.dataclass
class CertsQuery:
    """The certificates page's parameters: ``q`` (part of a name, team, SHA-1 or node id),
    ``team``, ``days`` (expiring within that many days, expired included), paging."""

    q: str | None = None
    team: str | None = None
    days: int | None = None
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> CertsQuery:
        arg = arg_reader(args)
        query = cls(q=arg("q"), team=arg("team", 32))
        try:
            query.days = core_certs.check_days(arg("days", 8))
        except core_certs.CertError as exc:
            raise QueryError("days", str(exc).split(": ", 1)[1]) from exc
        query.page, query.per_page = parse_paging(arg, query.page, query.per_page)
        return query

    def args(self, **changes) -> dict[str, str]:
        values = {
            "q": self.q,
            "team": self.team,
            "days": None if self.days is None else str(self.days),
        }
        return query_args(values, self.page, self.per_page, changes)


def _cert_filters(query: CertsQuery, now: dt.datetime) -> tuple[str, dict[str, Any]]:
    where, params = ["1 = 1"], {}
    if query.q:
        where.append(
            "(name LIKE :q ESCAPE '\\' OR team_id LIKE :q ESCAPE '\\'"
            " OR sha1 LIKE :qs ESCAPE '\\' OR node LIKE :q ESCAPE '\\')"
        )
        params["q"] = _like(query.q)
        params["qs"] = _like(query.q.upper())
    if query.team:
        where.append("team_id = :team")
        params["team"] = query.team
    if query.days is not None:
        # days left <= N  <=>  not_after < now + (N + 1) days (days are rounded down)
        where.append("not_after IS NOT NULL AND not_after < :within")
        params["within"] = core_certs.not_after_text(now + dt.timedelta(days=query.days + 1))
    return " AND ".join(where), params


def certs_page(conn: Connection, query: CertsQuery, now: dt.datetime) -> dict[str, Any]:
    """One page of the fleet's identities, soonest expiry first (unknown expiry last).

    Rows ``{"sha1", "name", "team_id", "not_after", "days_left", "band", "node_count",
    "nodes"}`` (``nodes``: the first :data:`NODES_SHOWN` ids); an identity is (SHA-1, name,
    team, not_after) as the nodes report it, so a node that reports another expiry for a SHA-1
    makes a row of its own. Also ``total``, ``page``, ``pages``, ``per_page``, ``bands`` (how
    many (node, identity) pairs are expired, within 7 and within 30 days) and ``teams`` (every
    team id in the fleet, for a filter). One statement: the grains are read once."""
    where, params = _cert_filters(query, now)
    pg = _pg(conn)
    nodes_agg = (
        f"(array_agg(node ORDER BY node))[1:{NODES_SHOWN}]" if pg else "json_group_array(node)"
    )
    teams_agg = (
        "array_agg(DISTINCT team_id) FILTER (WHERE team_id IS NOT NULL)"
        if pg
        else "json_group_array(DISTINCT team_id)"
    )
    order = "(not_after IS NULL), not_after, sha1, coalesce(name, ''), coalesce(team_id, '')"
    sql = f"""
        WITH a AS MATERIALIZED ({identities_sql(conn)}),
        f AS (SELECT * FROM a WHERE {where}),
        g AS (
            SELECT sha1, name, team_id, not_after, count(DISTINCT node) AS node_count,
                   {nodes_agg} AS nodes
            FROM f GROUP BY sha1, name, team_id, not_after
        ),
        b AS (
            SELECT sum(CASE WHEN not_after < :now THEN 1 ELSE 0 END) AS expired,
                   sum(CASE WHEN not_after >= :now AND not_after < :d7 THEN 1 ELSE 0 END) AS d7,
                   sum(CASE WHEN not_after >= :d7 AND not_after < :d30 THEN 1 ELSE 0 END) AS d30,
                   count(*) AS pairs
            FROM f
        ),
        t AS (SELECT count(*) AS total FROM g),
        tm AS (SELECT {teams_agg} AS teams FROM a),
        p AS (SELECT * FROM g ORDER BY {order} LIMIT :limit OFFSET :offset)
        SELECT p.*, t.total, b.expired, b.d7, b.d30, b.pairs, tm.teams
        FROM t CROSS JOIN b CROSS JOIN tm LEFT JOIN p ON 1 = 1
        ORDER BY {order}
    """
    params.update(
        limit=query.per_page,
        offset=(query.page - 1) * query.per_page,
        now=core_certs.not_after_text(now),
        d7=core_certs.not_after_text(now + dt.timedelta(days=8)),
        d30=core_certs.not_after_text(now + dt.timedelta(days=31)),
    )
    rows, head = [], None
    for r in conn.execute(text(sql), params).mappings():
        head = r
        if r["sha1"] is None:
            continue  # the page is empty: the counts alone
        nodes = r["nodes"]
        if isinstance(nodes, str):
            nodes = json.loads(nodes)
        nodes = sorted(set(nodes or []))[:NODES_SHOWN]
        not_after = core_certs.parse_not_after(r["not_after"])
        days = None if not_after is None else core_certs.days_left(not_after, now)
        rows.append(
            {
                "sha1": r["sha1"],
                "name": r["name"],
                "team_id": r["team_id"],
                "not_after": r["not_after"],
                "days_left": days,
                "band": core_certs.band(days),
                "node_count": r["node_count"],
                "nodes": nodes,
            }
        )
    teams = head["teams"] if head is not None else None
    if isinstance(teams, str):
        teams = json.loads(teams)
    total = int(head["total"]) if head is not None else 0
    return paged(
        total,
        query.page,
        query.per_page,
        rows=rows,
        bands={
            "expired": int((head or {}).get("expired") or 0),
            "7d": int((head or {}).get("d7") or 0),
            "30d": int((head or {}).get("d30") or 0),
            "pairs": int((head or {}).get("pairs") or 0),
        },
        teams=sorted(t for t in (teams or []) if isinstance(t, str))[:200],
    )


def teams(conn: Connection, limit: int = 200) -> list[str]:
    """The team ids in the fleet (for the page's filter)."""
    sql = (
        f"SELECT DISTINCT team_id FROM ({identities_sql(conn)}) AS ids"
        " WHERE team_id IS NOT NULL ORDER BY team_id LIMIT :limit"
    )
    return [t for (t,) in conn.execute(text(sql), {"limit": limit})]


# -- the Xcode matrix --------------------------------------------------------------------------


@dataclasses.dataclass
class XcodeQuery:
    """The Xcode matrix's parameters: ``q`` (part of a node id), ``baseline`` (compare every
    node with this baseline's Xcode instead of its own), ``version`` (nodes that have it),
    ``lacking`` (only nodes that lack the Xcode their baseline requires), paging."""

    q: str | None = None
    baseline: str | None = None
    version: str | None = None
    lacking: bool = False
    page: int = 1
    per_page: int = 100

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> XcodeQuery:
        arg = arg_reader(args)
        query = cls(q=arg("q"), baseline=arg("baseline", 128), version=arg("version", 64))
        lacking = arg("lacking", 8)
        if lacking is not None:
            if lacking.lower() not in ("yes", "no", "true", "false", "1", "0"):
                raise QueryError("lacking", f"{lacking!r} is not yes or no")
            query.lacking = lacking.lower() in ("yes", "true", "1")
        query.page, query.per_page = parse_paging(arg, query.page, query.per_page)
        return query

    def args(self, **changes) -> dict[str, str]:
        values = {
            "q": self.q,
            "baseline": self.baseline,
            "version": self.version,
            "lacking": "yes" if self.lacking else None,
        }
        return query_args(values, self.page, self.per_page, changes)


def baseline_xcode(conn: Connection, name: str) -> tuple[bool, str | None]:
    """``(exists, the Xcode version it requires or None)`` of baseline ``name``."""
    sql = (_PG_REQUIRED if _pg(conn) else _SQLITE_REQUIRED) + " WHERE b.name = :name"
    row = conn.execute(text(sql), {"name": name}).first()
    return (row is not None, row.xcode if row is not None else None)


def xcode_matrix(conn: Connection, query: XcodeQuery) -> dict[str, Any]:
    """One page of the Xcode matrix.

    Rows (nodes that report a ``macos`` section, or whose baseline requires an Xcode, by id):
    ``{"id", "os_version", "baseline", "required", "installed": {version: {"build",
    "selected"}}, "selected", "lacks"}``. ``baseline`` is the node's assigned baseline (its
    latest drift result's), or ``query.baseline`` for every node when given. ``versions``:
    every Xcode version in the fleet and every version a baseline requires, oldest first
    (the columns); ``lacking``: how many nodes (all pages) lack their required version.
    """
    pg = _pg(conn)
    xcodes = _PG_XCODES if pg else _SQLITE_XCODES
    macs = _PG_MACS if pg else _SQLITE_MACS
    required = _PG_REQUIRED if pg else _SQLITE_REQUIRED
    params: dict[str, Any] = {"baseline": query.baseline}
    # the baseline each node is compared with, and the Xcode it requires
    base = f"""
        SELECT m.node, m.os_version, m.is_mac,
               coalesce(CAST(:baseline AS VARCHAR), m.assigned) AS baseline, r.xcode AS required
        FROM ({macs}) AS m
        LEFT JOIN ({required}) AS r ON r.baseline = coalesce(CAST(:baseline AS VARCHAR), m.assigned)
    """
    is_mac = "m2.is_mac" if pg else "m2.is_mac = 1"
    where = [f"({is_mac} OR (m2.required IS NOT NULL AND CAST(:baseline AS VARCHAR) IS NULL))"]
    if query.q:
        where.append("m2.node LIKE :q ESCAPE '\\'")
        params["q"] = _like(query.q)
    if query.version:
        where.append(
            f"EXISTS (SELECT 1 FROM ({xcodes}) AS x WHERE x.node = m2.node AND x.version = :version)"
        )
        params["version"] = query.version
    lacking_expr = (
        "m2.required IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
        f"({xcodes}) AS x WHERE x.node = m2.node AND x.version = m2.required)"
    )
    total_where = " AND ".join(where)
    if query.lacking:
        where.append(f"({lacking_expr})")
    where_sql = " AND ".join(where)
    page_sql = f"""
        SELECT m2.node, m2.os_version, m2.baseline, m2.required
        FROM ({base}) AS m2 WHERE {where_sql}
        ORDER BY m2.node LIMIT :limit OFFSET :offset
    """
    page_rows = conn.execute(
        text(page_sql),
        {**params, "limit": query.per_page, "offset": (query.page - 1) * query.per_page},
    ).mappings()
    rows = {
        r["node"]: {
            "id": r["node"],
            "os_version": r["os_version"],
            "baseline": r["baseline"],
            "required": r["required"],
            "installed": {},
            "selected": None,
            "lacks": False,
        }
        for r in page_rows
    }
    if rows:
        names = [f":n{i}" for i in range(len(rows))]
        installed_sql = (
            f"SELECT * FROM ({xcodes}) AS x WHERE x.node IN ({', '.join(names)})"
            " ORDER BY x.node, x.version"
        )
        node_params = {f"n{i}": node for i, node in enumerate(rows)}
        for x in conn.execute(text(installed_sql), node_params).mappings():
            row = rows[x["node"]]
            row["installed"].setdefault(
                x["version"], {"build": x["build"], "selected": bool(x["selected"])}
            )
            if x["selected"]:
                row["selected"] = x["version"]
        for row in rows.values():
            row["lacks"] = core_certs.lacks(row["installed"], row["required"])
    count = conn.execute(
        text(f"SELECT count(*) FROM ({base}) AS m2 WHERE {where_sql}"), params
    ).scalar_one()
    lacking = conn.execute(
        text(f"SELECT count(*) FROM ({base}) AS m2 WHERE {total_where} AND ({lacking_expr})"),
        params,
    ).scalar_one()
    versions_sql = f"SELECT DISTINCT version FROM ({xcodes}) AS x LIMIT {MAX_VERSIONS}"
    versions = {v for (v,) in conn.execute(text(versions_sql))}
    if query.baseline:
        wanted = baseline_xcode(conn, query.baseline)[1]
        versions.update([wanted] if wanted else [])
    else:
        versions.update(
            v for (v,) in conn.execute(text(f"SELECT xcode FROM ({required}) AS r")) if v
        )
    return paged(
        count,
        query.page,
        query.per_page,
        rows=list(rows.values()),
        versions=sorted(versions, key=core_certs.version_key),
        lacking=lacking,
    )


def node_identities(conn: Connection, node: str) -> list[dict[str, Any]]:
    """One node's identities as it reports them (soonest expiry first)."""
    sql = (
        f"SELECT * FROM ({identities_sql(conn)}) AS ids WHERE node = :node"
        " ORDER BY (not_after IS NULL), not_after, sha1"
    )
    return [dict(r) for r in conn.execute(text(sql), {"node": node}).mappings()]


__all__ = [
    "CertsQuery",
    "XcodeQuery",
    "certs_page",
    "claim",
    "expiring",
    "move",
    "rearm",
    "recorded",
    "release",
    "teams",
    "xcode_matrix",
]
