"""Vulnerability findings in the store (SQLite and PostgreSQL): opened, kept and resolved with
their times, one node after an inventory change, deb through the source map, ecosystems OSV
does not cover, alerts only for new findings at or above the threshold and not triaged."""

import datetime as dt
import gc

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from saltext_fleet.store.models import Advisory, VulnFinding, VulnHistory, VulnTriage
from saltext_fleet.store.vulns import findings
from tests.support.vulns import T0, inventory, put_advisories, record, store_inventory

H = dt.timedelta(hours=1)

PYPI_ADVISORIES = [
    # requests < 2.31.0 (fixed 2.31.0), high
    record("PYSEC-T-1", "PyPI", "Requests", [("introduced", "0"), ("fixed", "2.31.0")]),
    # urllib3 1.26.0 <= v <= 1.26.17 (last_affected), medium
    record(
        "GHSA-t2",
        "PyPI",
        "urllib3",
        [("introduced", "1.26.0"), ("last_affected", "1.26.17")],
        aliases=["CVE-2026-0002"],
    ),
]
SEVERITY = {"PYSEC-T-1": "high", "GHSA-t2": "medium", "DEBIAN-T-3": "critical"}
SCORE = {"PYSEC-T-1": 7.5, "GHSA-t2": 5.3, "DEBIAN-T-3": 9.8}


def rows(engine, minion=None):
    stmt = select(VulnFinding).order_by(VulnFinding.id)
    if minion:
        stmt = stmt.where(VulnFinding.minion_id == minion)
    with Session(engine) as session:
        return session.execute(stmt).scalars().all()


def triage(engine, *decisions):
    """Insert ``vuln_triage`` rows (missing columns None)."""
    columns = ("target", "package", "justification", "expires_at", "revoked_at", "revoked_by")
    with engine.begin() as conn:
        conn.execute(
            VulnTriage.__table__.insert(), [{**dict.fromkeys(columns), **d} for d in decisions]
        )


def aware(at):
    return at if at is None or at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def test_findings_open_stay_and_resolve_with_their_times(engine):
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    store_inventory(engine, "web-1", inventory({"pypi": {"requests": "2.30.0", "six": "1.16.0"}}))
    store_inventory(
        engine, "web-2", inventory({"pypi": {"requests": "2.31.0", "urllib3": "1.26.5"}})
    )

    first = findings.recompute(engine, now=T0)
    assert {m: [f["advisory_id"] for f in fs] for m, fs in first["opened"].items()} == {
        "web-1": ["PYSEC-T-1"],
        "web-2": ["GHSA-t2"],
    }
    assert first["verdicts"]["unique"] == 3  # requests 2.30.0 and 2.31.0, urllib3 1.26.5
    (one,) = rows(engine, "web-1")
    assert (one.package, one.version, one.fixed, one.severity, one.cvss_score) == (
        "requests",
        "2.30.0",
        "2.31.0",
        "high",
        7.5,
    )
    assert aware(one.first_seen) == T0 and one.resolved_at is None

    # nothing changed: nothing written, the finding keeps its first-seen time
    again = findings.recompute(engine, now=T0 + H)
    assert again["changed"] == 0 and again["opened"] == {} and again["resolved"] == 0
    assert [aware(r.first_seen) for r in rows(engine, "web-1")] == [T0]

    # web-1 upgrades past the fix: resolved at the time of the recompute
    store_inventory(
        engine, "web-1", inventory({"pypi": {"requests": "2.31.0", "six": "1.16.0"}}), "2"
    )
    node = findings.recompute_node(engine, "web-1", now=T0 + 2 * H)
    assert node["resolved"] == 1 and node["opened"] == []
    (gone,) = rows(engine, "web-1")
    assert aware(gone.resolved_at) == T0 + 2 * H

    # and downgrades again: a new row, the old one stays resolved
    store_inventory(
        engine, "web-1", inventory({"pypi": {"requests": "2.28.0", "six": "1.16.0"}}), "3"
    )
    node = findings.recompute_node(engine, "web-1", now=T0 + 3 * H)
    assert [f["advisory_id"] for f in node["opened"]] == ["PYSEC-T-1"]
    old, new = rows(engine, "web-1")
    assert aware(old.resolved_at) == T0 + 2 * H
    assert (new.version, aware(new.first_seen), new.resolved_at) == ("2.28.0", T0 + 3 * H, None)

    # the fleet-wide recompute agrees with the node's and writes nothing
    agree = findings.recompute(engine, now=T0 + 4 * H)
    assert agree["changed"] == 0 and agree["resolved"] == 0

    # history: one point per change of the counts
    points = findings.history(engine, "web-1")
    assert [(p["open"], p["high"]) for p in points] == [(1, 1), (0, 0), (1, 1)]

    shown = findings.node_findings(engine, ["web-1"], resolved=True)["web-1"]
    assert [(f["version"], f["resolved_at"] is None) for f in shown] == [
        ("2.28.0", True),
        ("2.30.0", False),
    ]
    assert findings.node_findings(engine, severity="critical") == {}
    by_alias = findings.node_findings(engine, advisory="CVE-2026-0002")
    assert list(by_alias) == ["web-2"] and by_alias["web-2"][0]["aliases"] == ["CVE-2026-0002"]


def test_a_new_import_and_a_withdrawal_reach_every_node(engine):
    put_advisories(engine, PYPI_ADVISORIES[:1], SEVERITY, SCORE)
    store_inventory(engine, "web-1", inventory({"pypi": {"requests": "2.30.0", "jinja2": "3.1.2"}}))
    findings.recompute(engine, now=T0)
    # an advisory for jinja2 is imported later; and the requests one is withdrawn
    put_advisories(
        engine,
        [
            record("GHSA-jj", "PyPI", "Jinja2", [("introduced", "0"), ("fixed", "3.1.3")]),
            record(
                "PYSEC-T-1",
                "PyPI",
                "requests",
                [("introduced", "0"), ("fixed", "2.31.0")],
                withdrawn="2026-12-01T11:00:00Z",
            ),
        ],
        at=T0 + H,
    )
    later = findings.recompute(engine, now=T0 + 2 * H)
    assert [f["advisory_id"] for f in later["opened"]["web-1"]] == ["GHSA-jj"]
    assert later["resolved"] == 1
    open_ = [(r.advisory_id, r.resolved_at is None) for r in rows(engine)]
    assert open_ == [("PYSEC-T-1", False), ("GHSA-jj", True)]


def test_deb_packages_match_through_their_source_package(engine):
    put_advisories(
        engine,
        [
            record(
                "DEBIAN-T-3",
                "Debian:12",
                "openssl",
                [("introduced", "0"), ("fixed", "3.0.11-1~deb12u2")],
            ),
            # a binary without a source entry is matched under its own name
            record("DEBIAN-T-4", "Debian:12", "bash", [("introduced", "0"), ("fixed", "5.2.15-3")]),
            # another release's advisory does not apply
            record("DEBIAN-T-5", "Debian:11", "openssl", [("introduced", "0")]),
        ],
        SEVERITY,
        SCORE,
    )
    deb = {"libssl3": "3.0.11-1~deb12u1", "openssl": "3.0.11-1~deb12u1", "bash": "5.2.15-2+b2"}
    sources = {
        "deb": {
            "libssl3": {"name": "openssl", "version": "3.0.11-1~deb12u1"},
            "openssl": {"name": "openssl", "version": "3.0.11-1~deb12u1"},
        }
    }
    store_inventory(engine, "db-1", inventory({"deb": deb}, sources))
    # the same packages on a node whose facts do not tell the release: not covered
    store_inventory(engine, "db-2", inventory({"deb": deb}, sources, facts={"os": "Debian"}))
    result = findings.recompute(engine, now=T0)
    got = sorted((f["package"], f["advisory_id"], f["fixed"]) for f in result["opened"]["db-1"])
    assert got == [
        ("bash", "DEBIAN-T-4", "5.2.15-3"),
        ("libssl3", "DEBIAN-T-3", "3.0.11-1~deb12u2"),
        ("openssl", "DEBIAN-T-3", "3.0.11-1~deb12u2"),
    ]
    assert "db-2" not in result["opened"]
    assert result["not_covered"] == {"db-2": {"deb": 3}}
    assert findings.node_states(engine, ["db-2"])["db-2"]["not_covered"] == {"deb": 3}
    assert findings.history(engine, "db-1")[-1]["critical"] == 2


def test_ecosystems_osv_does_not_cover_are_reported_never_clean(engine):
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    mac = {
        "brew": {"openssl@3": "3.3.1", "git": "2.45.2"},
        "brew-cask": {"firefox": "128.0"},
        "pypi": {"requests": "2.31.0"},
    }
    store_inventory(engine, "mac-1", inventory(mac, facts={"os": "MacOS", "osrelease": "14.5"}))
    store_inventory(engine, "nix-1", inventory({"nix": {"hello": "2.12"}}, facts={"os": "NixOS"}))
    result = findings.recompute(engine, now=T0)
    assert result["opened"] == {}
    assert result["not_covered"] == {"mac-1": {"brew": 2, "brew-cask": 1}, "nix-1": {"nix": 1}}
    node = findings.recompute_node(engine, "nix-1", now=T0 + H)
    assert node["not_covered"] == {"nix": 1} and node["counts"]["open"] == 0
    assert rows(engine) == []


def test_alerts_only_for_new_findings_at_or_above_the_threshold_and_not_triaged(engine):
    put_advisories(
        engine,
        [
            *PYPI_ADVISORIES,
            record("CRIT-1", "PyPI", "django", [("introduced", "0"), ("fixed", "4.2.9")]),
            record("CRIT-2", "PyPI", "pillow", [("introduced", "0"), ("fixed", "10.2.0")]),
        ],
        {**SEVERITY, "CRIT-1": "critical", "CRIT-2": "critical"},
        {**SCORE, "CRIT-1": 9.8, "CRIT-2": 9.1},
    )
    pypi = {"requests": "2.30.0", "urllib3": "1.26.5", "django": "4.2.1", "pillow": "9.0.0"}
    store_inventory(engine, "web-1", inventory({"pypi": pypi}))
    store_inventory(engine, "web-2", inventory({"pypi": {"django": "4.2.1"}}))
    triage(
        engine,
        *[
            # pillow on web-1: accepted until later (live); django fleet-wide: expired
            {
                "advisory_id": "CRIT-2",
                "scope": "node",
                "target": "web-1",
                "state": "accepted",
                "expires_at": T0 + 24 * H,
                "decided_by": "user:alice",
                "decided_at": T0 - H,
            },
            {
                "advisory_id": "CRIT-1",
                "scope": "fleet",
                "state": "accepted",
                "expires_at": T0 - H,
                "decided_by": "user:alice",
                "decided_at": T0 - 2 * H,
            },
            # django on web-2 only: not_affected, revoked (no longer live)
            {
                "advisory_id": "CRIT-1",
                "scope": "node",
                "target": "web-2",
                "state": "not_affected",
                "justification": "code_not_reachable",
                "decided_by": "user:alice",
                "decided_at": T0 - 2 * H,
                "revoked_at": T0 - H,
                "revoked_by": "user:bob",
            },
        ],
    )
    result = findings.recompute(engine, now=T0)
    with engine.connect() as conn:
        high = findings.alerts(conn, result["opened"], "high", T0)
        medium = findings.alerts(conn, result["opened"], "medium", T0)
        assert findings.alerts(conn, result["opened"], "off", T0) == {}
    assert {m: sorted(f["advisory_id"] for f in fs) for m, fs in high.items()} == {
        "web-1": ["CRIT-1", "PYSEC-T-1"],
        "web-2": ["CRIT-1"],
    }
    assert sorted(f["advisory_id"] for f in medium["web-1"]) == ["CRIT-1", "GHSA-t2", "PYSEC-T-1"]
    # the triaged finding stays visible, flagged, and counts as triaged, not open
    shown = {
        f["advisory_id"]: f["triaged"] for f in findings.node_findings(engine, now=T0)["web-1"]
    }
    assert shown == {"CRIT-1": False, "CRIT-2": True, "PYSEC-T-1": False, "GHSA-t2": False}
    last = findings.history(engine, "web-1")[-1]
    assert (last["open"], last["critical"], last["triaged"]) == (3, 1, 1)
    # nothing new the next time: no alerts
    again = findings.recompute(engine, now=T0 + H)
    with engine.connect() as conn:
        assert findings.alerts(conn, again["opened"], "low", T0 + H) == {}


@pytest.mark.parametrize("threshold", ["critical", "any"])
def test_group_triage_hides_from_alerts(engine, threshold):
    put_advisories(engine, PYPI_ADVISORIES[:1], {"PYSEC-T-1": "critical"}, SCORE)
    store_inventory(engine, "web-1", inventory({"pypi": {"requests": "2.0.0"}}))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE nodes SET node_group = 'builders' WHERE minion_id = 'web-1'")
    triage(
        engine,
        {
            "advisory_id": "PYSEC-T-1",
            "scope": "group",
            "target": "builders",
            "state": "will_fix",
            "decided_by": "user:alice",
            "decided_at": T0,
        },
    )
    result = findings.recompute_node(engine, "web-1", now=T0)
    with engine.connect() as conn:
        assert findings.alerts(conn, {"web-1": result["opened"]}, threshold, T0) == {}
    with engine.connect() as conn:
        assert conn.execute(select(VulnHistory.triaged)).scalars().all() == [1]


def test_one_node_sees_advisories_imported_since_the_fleet_recompute(engine):
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    store_inventory(engine, "web-1", inventory({"pypi": {"jinja2": "3.1.2", "six": "1.16.0"}}))
    assert findings.recompute(engine, now=T0)["opened"] == {}
    # an advisory for a package the node already had, imported after that recompute; the
    # node's next inventory change (another package) still finds it
    put_advisories(
        engine,
        [record("GHSA-jj", "PyPI", "jinja2", [("introduced", "0"), ("fixed", "3.1.3")])],
        at=T0 + H,
    )
    store_inventory(engine, "web-1", inventory({"pypi": {"jinja2": "3.1.2", "six": "1.17.0"}}), "2")
    node = findings.recompute_node(engine, "web-1", now=T0 + 2 * H)
    assert [f["advisory_id"] for f in node["opened"]] == ["GHSA-jj"]
    # after the fleet-wide recompute, a package new to the node (and to the fleet) is
    # matched when it appears
    assert findings.recompute(engine, now=T0 + 3 * H)["changed"] == 0
    store_inventory(
        engine,
        "web-1",
        inventory({"pypi": {"jinja2": "3.1.2", "six": "1.17.0", "requests": "2.0.0"}}),
        "3",
    )
    node = findings.recompute_node(engine, "web-1", now=T0 + 4 * H)
    assert [f["advisory_id"] for f in node["opened"]] == ["PYSEC-T-1"]
    assert findings.recompute(engine, now=T0 + 5 * H)["changed"] == 0


def test_many_nodes_at_once(engine):
    """More nodes than the one-statement paths take (states, history, COPY of findings)."""
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    for i in range(104):
        version = "2.30.0" if i % 2 else "2.31.0"
        store_inventory(
            engine, f"n{i:03d}", inventory({"pypi": {"requests": version, f"own{i}": "1.0"}})
        )
    result = findings.recompute(engine, now=T0)
    assert len(result["opened"]) == 52 and result["history"] == 104
    assert len(rows(engine)) == 52
    assert findings.history(engine, "n001")[-1]["open"] == 1
    assert findings.node_states(engine, ["n000"])["n000"]["counts"]["open"] == 0
    assert findings.recompute(engine, now=T0 + H)["changed"] == 0


def test_after_an_import_only_the_packages_it_touches_are_rewritten(engine):
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    pypi = {"requests": "2.30.0", "urllib3": "1.26.5", "jinja2": "3.1.2", "six": "1.16.0"}
    store_inventory(engine, "web-1", inventory({"pypi": pypi}))
    store_inventory(engine, "web-2", inventory({"pypi": {"six": "1.16.0"}}))
    findings.recompute(engine, now=T0)
    assert findings.history(engine, "web-1")[-1]["open"] == 2
    put_advisories(
        engine,
        [
            record("GHSA-jj", "PyPI", "jinja2", [("introduced", "0"), ("fixed", "3.1.3")]),
            # requests' advisory again, now high and fixed later: kept, updated in place
            record("PYSEC-T-1", "PyPI", "requests", [("introduced", "0"), ("fixed", "2.32.0")]),
        ],
        {"GHSA-jj": "critical", "PYSEC-T-1": "critical"},
        {"GHSA-jj": 9.8, "PYSEC-T-1": 9.1},
        at=T0 + H,
    )
    after = findings.recompute(engine, now=T0 + 2 * H)
    assert after["changed"] == 1 and after["updated"] == 1 and after["resolved"] == 0
    assert [f["advisory_id"] for f in after["opened"]["web-1"]] == ["GHSA-jj"]
    shown = {f["advisory_id"]: f for f in findings.node_findings(engine, ["web-1"])["web-1"]}
    assert shown["PYSEC-T-1"]["fixed"] == "2.32.0" and shown["PYSEC-T-1"]["severity"] == "critical"
    assert shown["PYSEC-T-1"]["first_seen"] == T0.isoformat()
    assert shown["GHSA-t2"]["first_seen"] == T0.isoformat()  # untouched
    last = findings.history(engine, "web-1")[-1]
    assert (last["open"], last["critical"], last["medium"], last["high"]) == (3, 2, 1, 0)
    # the same counts as a node recompute from scratch gives
    assert findings.recompute_node(engine, "web-1", now=T0 + 3 * H)["counts"] == {
        k: last[k] for k in ("open", "critical", "high", "medium", "low", "unknown", "triaged")
    }


def _index_definitions(engine):
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'vuln_findings'")
            ).all()
        )


def test_first_write_into_an_empty_table_builds_the_indexes_after(engine, monkeypatch):
    """The first recompute (no finding stored yet) writes its rows before the secondary
    indexes (on PostgreSQL): same rows, the same indexes afterwards, still enforced."""
    monkeypatch.setattr(findings, "REBUILD_INDEXES_ROWS", 1)
    before = _index_definitions(engine)
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    for i in range(104):
        version = "2.30.0" if i % 2 else "2.31.0"
        store_inventory(engine, f"n{i:03d}", inventory({"pypi": {"requests": version}}))
    result = findings.recompute(engine, now=T0)
    assert len(result["opened"]) == 52 and len(rows(engine)) == 52
    assert _index_definitions(engine) == before
    if before is not None:
        assert findings.TIMINGS["findings_indexes_s"] >= 0
        assert any("ux_vuln_findings_open" in name for name, _ in before)
        with engine.connect() as conn:  # the primary key is a constraint again, not an index
            assert (
                conn.execute(
                    text(
                        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = CAST('vuln_findings' AS regclass) AND contype = 'p'"
                    )
                ).scalar()
                == "PRIMARY KEY (id)"
            )
    # not empty any more: the next write goes row by row into the kept indexes
    store_inventory(engine, "n000", inventory({"pypi": {"requests": "2.30.0"}}))
    assert [
        f["advisory_id"] for f in findings.recompute_node(engine, "n000", now=T0 + H)["opened"]
    ] == ["PYSEC-T-1"]
    assert len(rows(engine)) == 53
    with pytest.raises(Exception, match="ux_vuln_findings_open|UNIQUE"):
        with engine.begin() as conn:
            conn.execute(
                VulnFinding.__table__.insert(),
                [
                    {
                        "minion_id": "n000",
                        "ecosystem": "pypi",
                        "package": "requests",
                        "version": "2.30.0",
                        "advisory_id": "PYSEC-T-1",
                    }
                ],
            )


@pytest.mark.parametrize(
    "broken",
    [
        {"events": [{}]},  # an empty event
        {"events": [{"introduced": 0}]},  # not a string
        {"events": "0"},  # not a list of events
    ],
)
def test_a_stored_record_that_does_not_parse_is_left_out(engine, broken, caplog):
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    bad = record("PYSEC-T-1", "PyPI", "requests")
    bad["affected"][0]["ranges"] = [{"type": "ECOSYSTEM", **broken}]
    with engine.begin() as conn:
        conn.execute(update(Advisory).where(Advisory.id == "PYSEC-T-1").values(record=bad))
    store_inventory(
        engine, "web-1", inventory({"pypi": {"requests": "2.30.0", "urllib3": "1.26.5"}})
    )
    result = findings.recompute(engine, now=T0)
    assert [f["advisory_id"] for f in result["opened"]["web-1"]] == ["GHSA-t2"]
    assert "PYSEC-T-1 skipped" in caplog.text


def test_the_recompute_leaves_the_garbage_collector_as_it_was(engine, monkeypatch):
    put_advisories(engine, PYPI_ADVISORIES, SEVERITY, SCORE)
    store_inventory(engine, "web-1", inventory({"pypi": {"requests": "2.30.0"}}))
    assert gc.isenabled()
    findings.recompute(engine, now=T0)
    assert gc.isenabled()
    gc.disable()
    try:
        findings.recompute(engine, now=T0 + H)
        assert not gc.isenabled()
    finally:
        gc.enable()

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(findings, "refresh_verdicts", broken)
    with pytest.raises(RuntimeError, match="boom"):
        findings.recompute(engine, now=T0 + 2 * H)
    assert gc.isenabled()
