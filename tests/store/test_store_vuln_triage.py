"""Triage decisions in the store (audited, revoked, listed) and the views of findings with the
decision that applies, computed in SQL, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisJustification,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
)
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityAnalysis,
)
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from salt.exceptions import SaltRunnerError
from sqlalchemy import select

from saltext_fleet.core.vulns import triage as core_triage
from saltext_fleet.runners import fleet as fleet_runner
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store.models import VulnFinding, VulnTriage
from saltext_fleet.store.vulns import triage as store_triage
from tests.support.vulnfleet import NOW, make_vuln_fleet

DAY = dt.timedelta(days=1)


@pytest.fixture
def fleet(engine):
    make_vuln_fleet(engine)
    return engine


def decide(engine, advisory, state, scope, target=None, at=NOW, actor="user:alice", **kw):
    decision = core_triage.check(advisory, state, scope, target, now=at, **kw)
    with engine.begin() as conn:
        return store_triage.decide(conn, decision, actor, at)


def page(engine, now=NOW, **kw):
    query = store_triage.FindingsQuery(view="finding", per_page=100, **kw)
    with engine.connect() as conn:
        return store_triage.findings_page(conn, query, now)


def states(engine, now=NOW, **kw):
    """``{(minion, package): decision state or None}`` of the open findings."""
    return {
        (r["minion"], r["package"]): r["triage"] and r["triage"]["state"]
        for r in page(engine, now, **kw)["rows"]
    }


def test_a_decision_is_stored_and_audited_and_revoked(fleet):
    made = decide(
        fleet,
        "GHSA-crit-0001",
        "not_affected",
        "node",
        "web1",
        justification="code_not_reachable",
        detail="we never call the leaking function",
    )
    assert made["id"] and made["live"] and made["decided_by"] == "user:alice"
    assert made["vex"] == {
        "state": "not_affected",
        "justification": "code_not_reachable",
        "responses": [],
        "detail": "we never call the leaking function",
    }
    events = store_audit.events(fleet, target="GHSA-crit-0001")
    assert events[0]["action"] == "vuln.triage" and events[0]["actor"] == "user:alice"
    assert events[0]["details"]["scope"] == "node" and events[0]["details"]["id"] == made["id"]
    with fleet.begin() as conn:
        ended = store_triage.revoke(conn, str(made["id"]), "ui:bob", NOW + DAY)
    assert ended["live"] is False and ended["revoked_by"] == "ui:bob"
    events = store_audit.events(fleet, target="GHSA-crit-0001")
    assert [e["action"] for e in events] == ["vuln.triage.revoke", "vuln.triage"]
    assert store_audit.verify(fleet)["ok"] is True
    with fleet.begin() as conn, pytest.raises(core_triage.TriageError, match="already revoked"):
        store_triage.revoke(conn, made["id"], "ui:bob", NOW + DAY)
    with fleet.begin() as conn, pytest.raises(core_triage.TriageError, match="no triage decision"):
        store_triage.revoke(conn, 999, "ui:bob", NOW)
    with fleet.begin() as conn, pytest.raises(core_triage.TriageError, match="not a decision"):
        store_triage.revoke(conn, "1; drop", "ui:bob", NOW)
    with fleet.connect() as conn:
        assert store_triage.decisions(conn, NOW + 2 * DAY) == []
        (listed,) = store_triage.decisions(conn, NOW + 2 * DAY, live_only=False)
    assert listed["id"] == made["id"] and listed["revoked_at"]


@pytest.mark.parametrize(
    ("advisory", "scope", "target", "words"),
    [
        ("GHSA-nope-0000", "fleet", None, "no advisory 'GHSA-nope-0000' has been imported"),
        ("GHSA-crit-0001", "node", "ghost", "no node 'ghost'"),
        ("GHSA-crit-0001", "group", "nogroup", "no node group 'nogroup'"),
    ],
)
def test_a_decision_about_the_unknown_is_refused_and_nothing_is_written(
    fleet, advisory, scope, target, words
):
    with pytest.raises(core_triage.TriageError, match=words):
        decide(fleet, advisory, "will_fix", scope, target)
    with fleet.connect() as conn:
        assert conn.execute(select(VulnTriage.id)).first() is None
    assert store_audit.events(fleet) == []


def test_the_most_specific_live_decision_applies(fleet):
    assert set(states(fleet).values()) == {None}
    fleet_wide = decide(
        fleet, "GHSA-crit-0001", "accepted", "fleet", expires=(NOW + 30 * DAY).date()
    )
    assert states(fleet, advisory="GHSA-crit-0001") == {
        ("web1", "requests"): "accepted",
        ("web2", "requests"): "accepted",
        ("db1", "requests"): "accepted",
    }
    decide(fleet, "GHSA-crit-0001", "will_fix", "group", "web")
    decide(
        fleet,
        "GHSA-crit-0001",
        "not_affected",
        "node",
        "web1",
        justification="requires_configuration",
    )
    assert states(fleet, advisory="GHSA-crit-0001") == {
        ("web1", "requests"): "not_affected",
        ("web2", "requests"): "will_fix",
        ("db1", "requests"): "accepted",
    }
    # the group's decision for this one package beats the group's for any package, the
    # node's for any package still beats both
    decide(
        fleet,
        "GHSA-crit-0001",
        "not_affected",
        "group",
        "web",
        package="requests",
        justification="code_not_present",
    )
    got = {r["minion"]: r["triage"] for r in page(fleet, advisory="GHSA-crit-0001")["rows"]}
    assert got["web2"]["state"] == "not_affected" and got["web2"]["package"] == "requests"
    assert got["web1"]["justification"] == "requires_configuration"
    # a decision for another package covers nothing here
    decide(fleet, "PYSEC-2024-2", "will_fix", "node", "db1", package="requests")
    assert states(fleet, advisory="PYSEC-2024-2")[("db1", "urllib3")] is None
    # SQL and the pure rule agree on every finding
    with fleet.connect() as conn:
        every = [store_triage.decision_of(r) for r in conn.execute(select(VulnTriage))]
    for row in page(fleet)["rows"]:
        pure = core_triage.applying(
            every, row["minion"], row["group"], row["package"], NOW, advisory_id=row["advisory"]
        )
        assert (pure and pure.id) == (row["triage"] and row["triage"]["id"]), row
    # revoking the fleet-wide one: db1 is open again
    with fleet.begin() as conn:
        store_triage.revoke(conn, fleet_wide["id"], "user:alice", NOW)
    assert (
        states(fleet, NOW + dt.timedelta(seconds=1), advisory="GHSA-crit-0001")[("db1", "requests")]
        is None
    )


def test_an_accepted_risk_past_its_expiry_no_longer_hides_the_finding(fleet):
    decide(fleet, "DSA-5000-1", "accepted", "node", "db1", expires="2026-12-10")
    with fleet.connect() as conn:
        before = store_triage.summary(conn, store_triage.FindingsQuery(), NOW)
        after = store_triage.summary(conn, store_triage.FindingsQuery(), NOW + 10 * DAY)
        assert store_triage.open_counts(conn, "db1", NOW)["high"] == 0
        assert store_triage.open_counts(conn, "db1", NOW + 10 * DAY)["high"] == 1
    assert before["open"] == 5 and before["triaged"] == 1
    assert before["open_by_severity"]["high"] == 0
    assert after["open"] == 6 and after["triaged"] == 0
    assert after["open_by_severity"]["high"] == 1
    assert states(fleet, NOW + 10 * DAY, triage="open")[("db1", "libssl3")] is None
    assert states(fleet, NOW + 10 * DAY, triage="accepted") == {}
    assert states(fleet, NOW, triage="accepted") == {("db1", "libssl3"): "accepted"}


def test_the_views_filter_group_count_and_page_in_sql(fleet):
    decide(fleet, "GHSA-crit-0001", "will_fix", "node", "web2")
    q = store_triage.FindingsQuery
    with fleet.connect() as conn:
        advisories = store_triage.by_advisory(conn, q(), NOW)
        nodes = store_triage.by_node(conn, q(), NOW)
        high = store_triage.by_advisory(conn, q(severity="high"), NOW)
        deb = store_triage.findings_page(conn, q(ecosystem="deb"), NOW)
        web = store_triage.by_node(conn, q(group="web"), NOW)
        paged = store_triage.findings_page(conn, q(per_page=2, page=3), NOW)
        searched = store_triage.findings_page(conn, q(q="urllib"), NOW)
        wildcard = store_triage.findings_page(conn, q(q="%"), NOW)
        choices = store_triage.choices(conn)
        triaged_only = store_triage.by_advisory(conn, q(triage="triaged"), NOW)
    assert [r["advisory"] for r in advisories["rows"]] == [
        "GHSA-crit-0001",
        "DSA-5000-1",
        "PYSEC-2024-2",
    ]
    crit = advisories["rows"][0]
    assert (crit["findings"], crit["nodes"], crit["open"], crit["triaged"]) == (3, 3, 2, 1)
    assert crit["aliases"] == ["CVE-2026-0001"] and crit["severity"] == "critical"
    assert advisories["rows"][2]["nodes"] == 2  # the resolved finding is not counted
    assert [r["minion"] for r in nodes["rows"]] == ["db1", "web1", "web2"]
    web2 = nodes["rows"][2]
    assert (web2["open"], web2["triaged"], web2["critical"]) == (0, 1, 0)
    assert [r["advisory"] for r in high["rows"]] == ["GHSA-crit-0001", "DSA-5000-1"]
    assert [r["package"] for r in deb["rows"]] == ["libssl3"] and deb["total"] == 1
    assert {r["minion"] for r in web["rows"]} == {"web1", "web2"}
    assert (paged["total"], paged["pages"], len(paged["rows"])) == (6, 3, 2)
    assert {r["package"] for r in searched["rows"]} == {"urllib3"}
    assert wildcard["total"] == 0
    assert choices == {"ecosystems": ["deb", "pypi"], "groups": ["db", "web"]}
    assert [(r["advisory"], r["findings"]) for r in triaged_only["rows"]] == [("GHSA-crit-0001", 1)]


def test_an_advisory_a_nodes_history_and_findings_of_alerting(fleet):
    made = decide(fleet, "PYSEC-2024-2", "will_fix", "fleet", expires="2027-01-31")
    with fleet.connect() as conn:
        adv = store_triage.advisory(conn, "GHSA-crit-0001")
        assert store_triage.advisory(conn, "GHSA-nope") is None
        points = store_triage.history(conn, "web1")
        ids = conn.execute(select(VulnFinding.id).order_by(VulnFinding.id)).scalars().all()
        applied = store_triage.applying(conn, ids, NOW)
        assert store_triage.advisory_count(conn) == 4
    assert adv["aliases"] == ["CVE-2026-0001"] and adv["cvss"] == 9.8
    assert adv["affected"][0]["ranges"][0]["events"] == ["introduced 0", "fixed 2.32.0"]
    assert adv["references"][0]["url"].startswith("https://osv.dev/")
    assert adv["vectors"][0]["score"].startswith("CVSS:3.1/")
    assert [p["open"] for p in points] == [1, 2]
    # two open urllib3 findings are triaged; the resolved one is nobody's business
    assert sorted(applied) == [ids[3], ids[4]]
    assert {d["id"] for d in applied.values()} == {made["id"]}


def test_vex_entries_for_a_nodes_triaged_findings(fleet):
    decide(fleet, "GHSA-crit-0001", "not_affected", "fleet", justification="code_not_present")
    decide(fleet, "DSA-5000-1", "accepted", "node", "db1", expires="2027-01-01")
    decide(fleet, "PYSEC-2024-2", "will_fix", "group", "db", detail="next window")
    with fleet.connect() as conn:
        entries = store_triage.vex_for_node(conn, "db1", NOW)
        none = store_triage.vex_for_node(conn, "lone", NOW)
        custom = store_triage.vex_for_node(conn, "web1", NOW, purl_of=lambda e, n, v: f"x:{n}")
    assert none == []
    by_id = {e["id"]: e for e in entries}
    assert set(by_id) == {"GHSA-crit-0001", "DSA-5000-1", "PYSEC-2024-2"}
    for entry in entries:
        assert set(entry) >= {"id", "aliases", "state", "justification", "detail", "purls"}
        assert entry["state"] in core_triage.VEX_STATES
        assert set(entry["responses"]) <= set(core_triage.VEX_RESPONSES)
    crit = by_id["GHSA-crit-0001"]
    assert (crit["state"], crit["justification"]) == ("not_affected", "code_not_present")
    assert crit["purls"] == ["pkg:pypi/requests@2.0.0"] and crit["aliases"] == ["CVE-2026-0001"]
    assert by_id["DSA-5000-1"]["purls"] == ["pkg:deb/debian/libssl3@3.0.11-1~deb12u1"]
    assert (by_id["DSA-5000-1"]["state"], by_id["DSA-5000-1"]["responses"]) == (
        "exploitable",
        ["will_not_fix"],
    )
    assert by_id["PYSEC-2024-2"]["responses"] == ["update"]
    assert by_id["PYSEC-2024-2"]["detail"] == "next window"
    assert {e["id"]: e["purls"] for e in custom} == {
        "GHSA-crit-0001": ["x:requests"],
    }


def test_the_triage_runners(fleet, monkeypatch):
    monkeypatch.setattr(fleet_runner, "_engine", lambda: fleet)
    monkeypatch.setitem(fleet_runner.__dict__, "__user__", "carol")
    made = fleet_runner.cve_triage(
        "GHSA-crit-0001",
        "not_affected",
        node="web1",
        justification="code_not_reachable",
        detail="CLI only",
    )
    assert made["decided_by"] == "user:carol" and made["target"] == "web1"
    future = (dt.datetime.now(dt.timezone.utc) + 40 * DAY).date().isoformat()
    accepted = fleet_runner.cve_triage("DSA-5000-1", "accepted", group="db", expires=future)
    assert accepted["expires_at"].startswith(future)
    assert {d["id"] for d in fleet_runner.cve_triage_list()} == {made["id"], accepted["id"]}
    listed = fleet_runner.cve_triage_list(advisory="DSA-5000-1")
    assert [d["id"] for d in listed] == [accepted["id"]]
    assert fleet_runner.cve_triage_revoke(str(made["id"]))["revoked_by"] == "user:carol"
    assert [d["id"] for d in fleet_runner.cve_triage_list()] == [accepted["id"]]
    assert len(fleet_runner.cve_triage_list(all="True")) == 2
    actions = [e["action"] for e in store_audit.events(fleet, action=None)]
    assert actions == ["vuln.triage.revoke", "vuln.triage", "vuln.triage"]
    for call, words in [
        (lambda: fleet_runner.cve_triage("DSA-5000-1", "accepted", fleet=True), "expiry"),
        (lambda: fleet_runner.cve_triage("DSA-5000-1", "will_fix"), "exactly one of"),
        (lambda: fleet_runner.cve_triage("DSA-5000-1", "will_fix", node="a b"), "node:"),
        (lambda: fleet_runner.cve_triage("NOPE-1", "will_fix", fleet=True), "no advisory"),
        (lambda: fleet_runner.cve_triage_revoke(made["id"]), "already revoked"),
        (lambda: fleet_runner.cve_triage_revoke("x"), "not a decision"),
        (lambda: fleet_runner.cve_triage_list(advisory="a b"), "not an advisory id"),
    ]:
        with pytest.raises(SaltRunnerError, match=words) as err:
            call()
        assert str(err.value).startswith("fleet.cve_triage")


def _bom_with(entries) -> str:
    """A CycloneDX 1.6 JSON SBOM of the entries' components with the entries as VEX, built
    the plain way with cyclonedx-python-lib (the SBOM module builds the real one)."""
    bom = Bom()
    refs = {}
    for entry in entries:
        for purl in entry["purls"]:
            if purl not in refs:
                parsed = PackageURL.from_string(purl)
                component = Component(
                    name=parsed.name, version=parsed.version, purl=parsed, bom_ref=purl
                )
                bom.components.add(component)
                refs[purl] = component
    for number, entry in enumerate(entries):
        bom.vulnerabilities.add(
            Vulnerability(
                bom_ref=f"vex-{number}",
                id=entry["id"],
                analysis=VulnerabilityAnalysis(
                    state=ImpactAnalysisState(entry["state"]),
                    justification=entry["justification"]
                    and ImpactAnalysisJustification(entry["justification"]),
                    responses=[ImpactAnalysisResponse(r) for r in entry["responses"]],
                    detail=entry["detail"] or None,
                ),
                affects=[BomTarget(ref=refs[p].bom_ref.value) for p in entry["purls"]],
            )
        )
    return JsonV1Dot6(bom).output_as_string()


def test_the_vex_entries_make_a_valid_cyclonedx_1_6_document(fleet):
    decide(fleet, "GHSA-crit-0001", "not_affected", "fleet", justification="code_not_present")
    decide(fleet, "DSA-5000-1", "accepted", "node", "db1", expires="2027-01-01")
    decide(fleet, "PYSEC-2024-2", "will_fix", "group", "db", detail="next window")
    with fleet.connect() as conn:
        entries = store_triage.vex_for_node(conn, "db1", NOW)
    assert len(entries) == 3
    document = _bom_with(entries)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    assert '"justification": "code_not_present"' in document
    assert '"response": ["will_not_fix"]' in document


def test_the_decisions_about_a_node(fleet):
    own = decide(fleet, "PYSEC-2024-2", "will_fix", "node", "web1")
    group = decide(fleet, "GHSA-crit-0001", "will_fix", "group", "web")
    everywhere = decide(fleet, "GHSA-crit-0001", "will_fix", "fleet")
    decide(fleet, "DSA-5000-1", "will_fix", "fleet")  # web1 has no DSA-5000-1 finding
    decide(fleet, "GHSA-crit-0001", "will_fix", "group", "db")
    decide(fleet, "GHSA-crit-0001", "will_fix", "node", "web2")
    with fleet.connect() as conn:
        found = store_triage.decisions_for_node(conn, NOW, "web1", "web")
        lone = store_triage.decisions_for_node(conn, NOW, "lone", None)
    assert [d["id"] for d in found] == [everywhere["id"], group["id"], own["id"]]
    assert lone == []
