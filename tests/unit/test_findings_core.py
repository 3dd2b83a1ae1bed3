"""Findings with their rules, fleet tallies and inventory comparison: pure logic."""

import pytest

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import compare as core_compare
from saltext_fleet.core import drift as core_drift
from saltext_fleet.core import findings as core_findings

SPEC = core_baseline.parse(
    {
        "name": "build",
        "packages": {
            "pypi": {
                "requests": "2.31.0",
                "urllib3": {"min": "2.0"},
                "certifi": "any",
                "setuptools": "ignore",
                "wheel": "0.42.0",
            }
        },
        "facts": {"osrelease": "12"},
    }
)


def drift_of(packages, facts=None):
    return core_drift.CompiledBaseline(SPEC).compute(
        packages, core_drift.NodeInput(facts or {"osrelease": "12"})
    )


def by_kind(explained):
    return {g["kind"]: g for g in explained["groups"]}


def test_every_finding_carries_the_rule_that_produced_it():
    result = drift_of(
        {"pypi": {"requests": "3.0.1", "urllib3": "1.26", "rich": "13.0", "setuptools": "1"}},
        facts={"osrelease": "11"},
    )
    explained = core_findings.explain(result, SPEC)
    assert [g["kind"] for g in explained["groups"]] == ["missing", "changed", "extra", "facts"]
    groups = by_kind(explained)
    missing = {f["name"]: f for f in groups["missing"]["findings"]}
    assert set(missing) == {"certifi", "wheel"}
    assert missing["certifi"]["rule"] == "any" and missing["certifi"]["rule_text"] == "any version"
    assert missing["wheel"]["field"] == "packages:pypi:wheel"
    assert missing["wheel"]["rule_text"] == "exactly 0.42.0" and missing["wheel"]["found"] is None
    changed = {f["name"]: f for f in groups["changed"]["findings"]}
    assert changed["requests"]["expected"] == "2.31.0" and changed["requests"]["found"] == "3.0.1"
    assert changed["requests"]["rule"] == "exact" and changed["requests"]["change"] == "major"
    assert changed["urllib3"]["rule"] == "min" and changed["urllib3"]["rule_version"] == "2.0"
    assert changed["urllib3"]["rule_text"] == "at least 2.0"
    assert changed["urllib3"]["change"] == "below-minimum"
    (extra,) = groups["extra"]["findings"]
    assert extra["name"] == "rich" and extra["found"] == "13.0" and extra["field"] == "extras"
    assert "extras: true" in extra["rule_text"]
    (fact,) = groups["facts"]["findings"]
    assert fact["field"] == "facts:osrelease"
    assert (fact["expected"], fact["found"], fact["rule_text"]) == ("12", "11", "equals 12")
    assert [g["count"] for g in explained["groups"]] == [2, 2, 1, 1]


def test_a_finding_whose_rule_is_gone_says_so_and_counts_only_keep_their_count():
    result = drift_of({"pypi": {"requests": "3.0.1"}})
    other = core_baseline.parse({"name": "build", "packages": {"pypi": {}}})
    changed = by_kind(core_findings.explain(result, other))["changed"]["findings"]
    assert changed[0]["rule"] is None and changed[0]["rule_text"] == "not in the baseline now"
    counted = {"baseline": "b", "missing": None, "extra": None, "changed": None, "facts": []}
    counted["counts"] = {"missing": 3, "extra": 4, "changed": 0, "facts": 0}
    groups = by_kind(core_findings.explain(counted, SPEC))
    assert groups["missing"]["findings"] is None and groups["missing"]["count"] == 3


def test_the_tally_counts_nodes_per_package_and_names_them():
    tally = core_findings.FleetTally()
    one = core_findings.package_findings(drift_of({"pypi": {"requests": "3.0.1", "rich": "1"}}))
    two = core_findings.package_findings(drift_of({"pypi": {"requests": "2.0", "wheel": "0.42"}}))
    tally.add("build", ["n3", "n1"], one)
    tally.add("build", ["n2"], two)
    rows = {(r["ecosystem"], r["name"]): r for r in tally.package_rows()}
    requests = rows[("pypi", "requests")]
    assert requests["nodes"] == 3 and requests["changed"] == 3
    assert requests["found"] == ["3.0.1", "2.0"] and requests["expected"] == ["2.31.0"]
    assert rows[("pypi", "certifi")]["missing"] == 3
    assert rows[("pypi", "rich")]["extra"] == 2
    # the most nodes first; ties by name
    # wheel 0.42 is 0.42.0 in PyPI's order: n2 has it
    names = [r["name"] for r in tally.package_rows()]
    assert names == ["certifi", "requests", "urllib3", "rich", "wheel"]
    assert [n["minion"] for n in tally.nodes_of("pypi", "requests")] == ["n1", "n2", "n3"]
    assert tally.nodes_of("pypi", "requests", limit=1)[0]["found"] == "3.0.1"
    assert [n["minion"] for n in tally.nodes_of("pypi", "rich", kind="extra")] == ["n1", "n3"]
    assert tally.nodes_of("pypi", "rich", kind="missing") == []
    assert [r["name"] for r in tally.package_rows(kind="extra")] == ["rich"]
    assert [r["name"] for r in tally.package_rows("name", desc=False, q="RE")] == ["requests"]
    assert tally.drifting_nodes() == 3 and tally.nodes == 3
    with pytest.raises(ValueError, match="sort"):
        tally.package_rows("score")


def test_the_tally_counts_fact_mismatches():
    tally = core_findings.FleetTally()
    tally.add_facts("build", "n2", [{"fact": "osrelease", "expected": "12", "actual": "11"}])
    tally.add_facts("build", "n1", [{"fact": "osrelease", "expected": "12", "actual": None}])
    (row,) = tally.fact_rows()
    assert row["nodes"] == 2 and row["sample"] == ["n1", "n2"]
    assert dict(row["found"]) == {"11": 1, "—": 1}


def test_compare_two_inventories():
    a = {"pypi": {"requests": "2.31.0", "rich": "13.0", "six": "1.0"}, "deb": {"bash": "5.2"}}
    b = {"pypi": {"requests": "3.0.1", "urllib3": "2.0", "six": "1.0.0"}, "brew": {"git": "2"}}
    result = core_compare.compare_inventories(a, b)
    assert result["only_a"] == [
        {"ecosystem": "deb", "name": "bash", "a": "5.2", "b": None},
        {"ecosystem": "pypi", "name": "rich", "a": "13.0", "b": None},
    ]
    assert [e["name"] for e in result["only_b"]] == ["git", "urllib3"]
    assert result["different"] == [
        {"ecosystem": "pypi", "name": "requests", "a": "2.31.0", "b": "3.0.1", "direction": "newer"}
    ]
    assert result["same"] == 1  # 1.0 and 1.0.0 are the same PyPI version
    assert result["ecosystems"]["pypi"] == {"only_a": 1, "only_b": 1, "different": 1, "same": 1}
    rows = core_compare.rows(result)
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("only_b", "git"),
        ("only_a", "bash"),
        ("different", "requests"),
        ("only_a", "rich"),
        ("only_b", "urllib3"),
    ]
    assert [r["name"] for r in core_compare.rows(result, kind="only_a", ecosystem="pypi")] == [
        "rich"
    ]


def test_compare_takes_stored_data_of_any_shape():
    result = core_compare.compare_inventories({"pypi": {"a": 1}, 3: {}, "x": "no"}, None)
    assert result["only_a"] == [{"ecosystem": "pypi", "name": "a", "a": "1", "b": None}]
    assert result["same"] == 0 and result["only_b"] == result["different"] == []
