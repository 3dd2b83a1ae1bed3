"""A small fleet with advisories, open and resolved findings and history, written straight
into the schema 0008 tables (the import and the matching are other modules' business): for
the triage store tests and the vulnerabilities pages.

- nodes ``web1``, ``web2`` (group ``web``), ``db1`` (group ``db``), ``lone`` (no group, no
  findings);
- advisories ``GHSA-crit-0001`` (critical, 9.8, requests on web1, web2, db1),
  ``PYSEC-2024-2`` (medium, 5.3, urllib3 on web1 and db1), ``DSA-5000-1`` (high, deb
  openssl on db1), ``GHSA-none-0003`` (imported, no findings);
- one resolved finding (web2, PYSEC-2024-2) that no view counts;
- two history points for web1.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert

from saltext_fleet.store.models import Advisory, Node, NodeGroup, VulnFinding, VulnHistory

NOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.timezone.utc)

ADVISORIES = {
    "GHSA-crit-0001": ("critical", 9.8, "requests leaks credentials", ["CVE-2026-0001"]),
    "PYSEC-2024-2": ("medium", 5.3, "urllib3 <script> redirect", ["CVE-2024-0002"]),
    "DSA-5000-1": ("high", 7.5, "openssl: buffer overflow", ["CVE-2026-5000"]),
    "GHSA-none-0003": ("low", 2.0, "nothing installed has it", []),
}

#: (minion, ecosystem, package, version, advisory, fixed, resolved)
FINDINGS = [
    ("web1", "pypi", "requests", "2.0.0", "GHSA-crit-0001", "2.32.0", False),
    ("web2", "pypi", "requests", "2.1.0", "GHSA-crit-0001", "2.32.0", False),
    ("db1", "pypi", "requests", "2.0.0", "GHSA-crit-0001", "2.32.0", False),
    ("web1", "pypi", "urllib3", "1.26.0", "PYSEC-2024-2", "1.26.18", False),
    ("db1", "pypi", "urllib3", "1.26.0", "PYSEC-2024-2", "1.26.18", False),
    ("db1", "deb", "libssl3", "3.0.11-1~deb12u1", "DSA-5000-1", "3.0.11-1~deb12u2", False),
    ("web2", "pypi", "urllib3", "1.25.0", "PYSEC-2024-2", "1.26.18", True),
]


def record(advisory_id: str) -> dict:
    severity, _score, summary, aliases = ADVISORIES[advisory_id]
    return {
        "id": advisory_id,
        "modified": "2026-11-01T00:00:00Z",
        "aliases": aliases,
        "summary": summary,
        "details": f"Details of {advisory_id}.",
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "requests"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}
                ],
            }
        ],
        "references": [{"type": "ADVISORY", "url": f"https://osv.dev/vulnerability/{advisory_id}"}],
    }


def make_vuln_fleet(engine, advisories: bool = True) -> None:
    """Write the fleet above (``advisories=False``: nodes only)."""
    with engine.begin() as conn:
        conn.execute(insert(NodeGroup), [{"name": "web"}, {"name": "db"}])
        conn.execute(
            insert(Node),
            [
                {"minion_id": "web1", "node_group": "web", "facts": {"os": "Debian"}},
                {"minion_id": "web2", "node_group": "web", "facts": {"os": "Debian"}},
                {"minion_id": "db1", "node_group": "db", "facts": {"os": "Debian"}},
                {"minion_id": "lone", "node_group": None, "facts": {}},
            ],
        )
        if not advisories:
            return
        conn.execute(
            insert(Advisory),
            [
                {
                    "id": aid,
                    "modified": NOW - dt.timedelta(days=30),
                    "summary": summary,
                    "aliases": aliases,
                    "cvss_score": score,
                    "severity": severity,
                    "record": record(aid),
                    "source": "tests",
                }
                for aid, (severity, score, summary, aliases) in ADVISORIES.items()
            ],
        )
        conn.execute(
            insert(VulnFinding),
            [
                {
                    "minion_id": minion,
                    "ecosystem": eco,
                    "package": package,
                    "version": version,
                    "advisory_id": aid,
                    "fixed": fixed,
                    "severity": ADVISORIES[aid][0],
                    "cvss_score": ADVISORIES[aid][1],
                    "first_seen": NOW - dt.timedelta(days=3),
                    "last_seen": NOW,
                    "resolved_at": NOW - dt.timedelta(days=1) if resolved else None,
                }
                for minion, eco, package, version, aid, fixed, resolved in FINDINGS
            ],
        )
        conn.execute(
            insert(VulnHistory),
            [
                {
                    "minion_id": "web1",
                    "computed_at": NOW - dt.timedelta(days=2),
                    "open": 1,
                    "critical": 1,
                },
                {
                    "minion_id": "web1",
                    "computed_at": NOW - dt.timedelta(days=1),
                    "open": 2,
                    "critical": 1,
                    "medium": 1,
                },
            ],
        )
