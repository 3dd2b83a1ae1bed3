"""Triage rules (:mod:`saltext_fleet.core.vulns.triage`): what a decision needs, when it holds,
which one applies to a finding, and how it reads as CycloneDX VEX."""

from __future__ import annotations

import datetime as dt

import pytest
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisJustification,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
)

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.vulns import triage

NOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def check(state="will_fix", scope="fleet", target=None, **kw):
    return triage.check("GHSA-aaaa-bbbb-cccc", state, scope, target, now=NOW, **kw)


def test_a_not_affected_decision_needs_a_cyclonedx_justification():
    assert len(triage.JUSTIFICATIONS) == 9
    for justification in triage.JUSTIFICATIONS:
        made = check("not_affected", justification=justification)
        assert made.justification == justification and made.expires_at is None
    with pytest.raises(triage.TriageError, match="needs a justification: one of code_not_present"):
        check("not_affected")
    with pytest.raises(triage.TriageError, match="'because' is not one of"):
        check("not_affected", justification="because")
    with pytest.raises(triage.TriageError, match=r"only not_affected takes a justification"):
        check("will_fix", justification="code_not_present")


def test_an_accepted_risk_needs_an_expiry_in_the_future():
    made = check("accepted", expires="2026-12-31")
    assert made.expires_at == dt.datetime(2026, 12, 31, tzinfo=dt.timezone.utc)
    assert check("accepted", expires=dt.date(2027, 1, 2)).expires_at.day == 2
    aware = check("accepted", expires="2026-12-06T12:00:00+02:00").expires_at
    assert aware == dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.timezone.utc)
    for missing in (None, ""):
        with pytest.raises(triage.TriageError, match="accepted needs an expiry date"):
            check("accepted", expires=missing)
    for past in ("2026-12-05", "2020-01-01", NOW):
        with pytest.raises(triage.TriageError, match="not in the future"):
            check("accepted", expires=past)
    with pytest.raises(triage.TriageError, match="at most 1098 days ahead"):
        check("accepted", expires="2031-01-01")
    with pytest.raises(triage.TriageError, match="not a date"):
        check("accepted", expires="next week")
    with pytest.raises(triage.TriageError, match="no time zone"):
        check("accepted", expires="2026-12-24T10:00:00")
    # will_fix may have a deadline, not_affected a date to look again
    assert check("will_fix").expires_at is None
    assert check("will_fix", expires="2027-01-01").expires_at.year == 2027


def test_scopes_and_their_targets_use_the_gate_and_group_rules():
    assert triage.scope_of(node="web-01.example") == ("node", "web-01.example")
    assert triage.scope_of(group="builders") == ("group", "builders")
    assert triage.scope_of(fleet=True) == ("fleet", None)
    assert triage.scope_of(fleet="True") == ("fleet", None)
    for kwargs in ({}, {"node": "a", "group": "b"}, {"node": "a", "fleet": True}):
        with pytest.raises(triage.TriageError, match="exactly one of node="):
            triage.scope_of(**kwargs)
    with pytest.raises(triage.TriageError, match=r"node: '\.\./etc' has characters"):
        triage.scope_of(node="../etc")
    with pytest.raises(triage.TriageError, match="must not start with"):
        triage.scope_of(node="-rf")
    with pytest.raises(triage.TriageError, match="is not a group name"):
        triage.scope_of(group="a" * 65)
    with pytest.raises(triage.TriageError, match="fleet=True"):
        triage.scope_of(fleet="everything")
    with pytest.raises(triage.TriageError, match="has no target"):
        triage.check_target("fleet", "web1")
    with pytest.raises(triage.TriageError, match="'planet' is not one of node, group, fleet"):
        triage.check_target("planet", None)
    assert check(scope="node", target="web1").target == "web1"


@pytest.mark.parametrize(
    ("field", "kwargs", "words"),
    [
        ("advisory", {"advisory_id": ""}, "an advisory id"),
        ("advisory", {"advisory_id": "GHSA x"}, "is not an advisory id"),
        ("advisory", {"advisory_id": "A" * 129}, "is not an advisory id"),
        ("state", {"state": "ignored"}, "is not one of not_affected, accepted, will_fix"),
        ("package", {"package": "a\nb"}, "is not a package name"),
        ("package", {"package": 3}, "a package name is text"),
        ("detail", {"detail": "x" * 2001}, "at most 2000 characters"),
        ("detail", {"detail": 5}, "text, not int"),
    ],
)
def test_bad_input_is_named(field, kwargs, words):
    values = {"advisory_id": "RHSA-2023:1234", "state": "will_fix", "package": None}
    values.update(kwargs)
    with pytest.raises(triage.TriageError) as err:
        triage.check(
            values.pop("advisory_id"),
            values.pop("state"),
            "fleet",
            now=NOW,
            **values,
        )
    assert err.value.field == field and words in str(err.value)
    assert isinstance(err.value, FleetError) and isinstance(err.value, ValueError)


def test_a_decision_holds_until_it_expires_or_is_revoked():
    made = check("accepted", expires="2026-12-10")
    assert made.live(NOW) and made.live(NOW + 4 * DAY)
    assert not made.live(dt.datetime(2026, 12, 10, tzinfo=dt.timezone.utc))
    assert not made.live(NOW + 10 * DAY)
    forever = check("will_fix")
    assert forever.live(NOW + 3650 * DAY)
    assert not triage.is_live(NOW, None, NOW)  # revoked
    naive = dt.datetime(2026, 12, 10)  # SQLite gives naive UTC back
    assert triage.is_live(None, naive, NOW)


def _d(id, state="will_fix", scope="fleet", target=None, package=None, decided=0, **kw):
    return triage.Decision(
        advisory_id=kw.pop("advisory", "GHSA-1"),
        state=state,
        scope=scope,
        target=target,
        package=package,
        id=id,
        decided_at=NOW + decided * DAY,
        **kw,
    )


def test_the_most_specific_live_decision_applies():
    decisions = [
        _d(1, "accepted", "fleet", expires_at=NOW + 30 * DAY),
        _d(2, "will_fix", "group", "web"),
        _d(3, "not_affected", "group", "web", package="requests"),
        _d(4, "not_affected", "node", "web1", justification="code_not_reachable"),
        _d(5, "will_fix", "node", "web9", package="urllib3"),
        _d(6, "will_fix", "fleet", advisory="GHSA-2"),
    ]

    def applied(minion, group, package, at=NOW, advisory="GHSA-1"):
        found = triage.applying(decisions, minion, group, package, at, advisory_id=advisory)
        return found and found.id

    assert applied("db1", "db", "requests") == 1  # only the fleet's
    assert applied("web2", "web", "urllib3") == 2  # the group's beats the fleet's
    assert applied("web2", "web", "requests") == 3  # one package beats any package
    assert applied("web1", "web", "requests") == 4  # the node's beats its group's
    assert applied("web9", "web", "requests") == 3  # a decision for urllib3 covers no requests
    assert applied("web9", "web", "urllib3") == 5
    assert applied("lone", None, "requests") == 1  # no group: the fleet's
    assert applied("db1", "db", "requests", advisory="GHSA-2") == 6
    # the fleet's accepted risk expires: db1 is open again, the others stay triaged
    later = NOW + 31 * DAY
    assert applied("db1", "db", "requests", later) is None
    assert applied("web2", "web", "urllib3", later) == 2
    # revoked decisions do not apply; of two equals the newest wins
    decisions[3] = _d(4, "not_affected", "node", "web1", revoked_at=NOW)
    assert applied("web1", "web", "requests", NOW + DAY) == 3
    decisions.append(_d(7, "accepted", "group", "web", expires_at=NOW + 9 * DAY, decided=1))
    assert applied("web2", "web", "urllib3", NOW + 2 * DAY) == 7
    assert triage.applying([], "web1", "web", "requests", NOW) is None


def test_the_ranks_order_scopes_before_packages():
    ranks = [triage.rank(s, p) for s in triage.SCOPES for p in (True, False)]
    assert ranks == sorted(ranks, reverse=True)
    assert triage.rank("node", False) > triage.rank("group", True)


def test_vex_analysis_uses_cyclonedx_1_6_names():
    not_affected = triage.vex_analysis(
        check("not_affected", justification="protected_at_perimeter", detail="WAF rule 12")
    )
    assert not_affected == {
        "state": "not_affected",
        "justification": "protected_at_perimeter",
        "responses": [],
        "detail": "WAF rule 12",
    }
    accepted = triage.vex_analysis(check("accepted", expires="2027-01-01"))
    assert (accepted["state"], accepted["responses"]) == ("exploitable", ["will_not_fix"])
    will_fix = triage.vex_analysis(check("will_fix"))
    assert (will_fix["state"], will_fix["responses"]) == ("exploitable", ["update"])
    assert triage.vex_analysis(None)["state"] == "in_triage"
    for state, response in triage.VEX_OF.values():
        assert state in triage.VEX_STATES and set(response) <= set(triage.VEX_RESPONSES)


def test_a_decision_described_for_people():
    made = check(
        "not_affected",
        "group",
        "builders",
        package="requests",
        justification="code_not_present",
        expires="2027-01-01",
    )
    assert triage.describe(made) == (
        "not_affected (code_not_present) for group builders, package requests, until 2027-01-01"
    )
    assert triage.describe(check()) == "will_fix for the fleet"


def test_the_names_are_cyclonedx_python_libs():
    assert set(triage.JUSTIFICATIONS) == {j.value for j in ImpactAnalysisJustification}
    assert set(triage.VEX_STATES) == {s.value for s in ImpactAnalysisState}
    assert set(triage.VEX_RESPONSES) == {r.value for r in ImpactAnalysisResponse}
