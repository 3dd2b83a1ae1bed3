"""The web UI's drift reports (findings with rules, fleet-wide drift, two nodes compared), on
SQLite and on real PostgreSQL."""

import contextlib

import pytest
from sqlalchemy import event

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import reports
from saltext_fleet.store.ui import QueryError
from tests.support.driftfleet import GOOD, inventory, make_fleet, store_inventories


@pytest.fixture
def fleet(engine):
    return make_fleet(engine)


def test_a_nodes_findings_carry_their_rules(engine, fleet):
    with engine.connect() as conn:
        found = reports.node_findings(conn, "n2")
        assert reports.node_findings(conn, "nope") is None
        unscored = reports.node_findings(conn, "n4")
        good = reports.node_findings(conn, "n1")
    assert found["state"] == "ok" and found["baseline"] == "b"
    assert found["pinned_from"] == "n1" and found["baseline_source"] == "pin:n1"
    assert found["recorded_current"] is True and found["score"] == found["recorded_score"]
    groups = {g["kind"]: g for g in found["groups"]}
    (changed,) = groups["changed"]["findings"]
    assert (changed["name"], changed["expected"], changed["found"]) == (
        "requests",
        "2.31.0",
        "3.0.1",
    )
    assert changed["field"] == "packages:pypi:requests" and changed["rule"] == "exact"
    assert [f["name"] for f in groups["missing"]["findings"]] == ["certifi"]
    assert [f["name"] for f in groups["extra"]["findings"]] == ["rich"]
    assert groups["facts"]["findings"][0]["found"] == "11"
    assert unscored["state"] == "no-baseline" and unscored["groups"] == []
    assert good["state"] == "ok" and all(g["count"] == 0 for g in good["groups"])


def test_findings_follow_the_baseline_as_it_is_now(engine, fleet):
    edited = core_baseline.edit(fleet, package="pypi:requests", rule="min", version="2.0")
    store_drift.save_baseline(engine, edited, "runner")
    with engine.connect() as conn:
        found = reports.node_findings(conn, "n2")
        page = reports.fleet_drift(conn, reports.FleetDriftQuery())
    assert found["recorded_current"] is False  # the score is from the old revision
    assert {g["kind"]: g["count"] for g in found["groups"]}["changed"] == 0
    assert "requests" not in [r["name"] for r in page["rows"]]


def test_the_packages_that_drift_on_most_nodes_and_their_nodes(engine, fleet):
    with engine.connect() as conn:
        page = reports.fleet_drift(conn, reports.FleetDriftQuery())
        again = reports.fleet_drift(conn, reports.FleetDriftQuery())  # from the pair cache
    assert again["rows"] == page["rows"]
    rows = {r["name"]: r for r in page["rows"]}
    assert page["nodes"] == 4 and page["drifting"] == 3  # n1, n2, n3, n5 scored; n1 aligned
    assert rows["certifi"]["nodes"] == 3
    assert (rows["certifi"]["missing"], rows["certifi"]["changed"]) == (2, 1)
    assert rows["certifi"]["sample"] == ["n2", "n3", "n5"]
    assert rows["requests"]["changed"] == 2 and rows["requests"]["found"] == ["3.0.1"]
    assert rows["rich"]["extra"] == 2 and rows["six"]["sample"] == ["n5"]
    assert [r["name"] for r in page["rows"]][0] == "certifi"
    assert page["chart"][0] == {"label": "pypi/certifi", "missing": 2, "changed": 1, "extra": 0}
    assert page["facts"][0]["fact"] == "osrelease" and page["facts"][0]["nodes"] == 2
    assert page["baselines"] == ["b"] and page["ecosystems"] == ["pypi"]
    query = reports.FleetDriftQuery.from_args({"sort": "name", "kind": "extra", "per_page": "1"})
    with engine.connect() as conn:
        extras = reports.fleet_drift(conn, query)
        nodes = reports.package_nodes(conn, "pypi", "certifi")
        missing = reports.package_nodes(conn, "pypi", "certifi", kind="missing", per_page=1)
    assert [r["name"] for r in extras["rows"]] == ["rich"] and extras["pages"] == 2
    assert [(n["minion"], n["kind"], n["found"]) for n in nodes["rows"]] == [
        ("n2", "missing", None),
        ("n3", "missing", None),
        ("n5", "changed", "2023.1.1"),
    ]
    assert nodes["package"]["nodes"] == 3
    assert missing["total"] == 2 and missing["pages"] == 2 and len(missing["rows"]) == 1


def test_the_fleet_query_names_a_bad_parameter():
    for args, name in (
        ({"sort": "score"}, "sort"),
        ({"kind": "facts"}, "kind"),
        ({"page": "0"}, "page"),
        ({"per_page": "x"}, "per_page"),
    ):
        with pytest.raises(QueryError) as info:
            reports.FleetDriftQuery.from_args(args)
        assert info.value.parameter == name
    query = reports.FleetDriftQuery.from_args({"sort": "-missing", "ecosystem": "pypi"})
    assert query.args(page=2) == {
        "sort": "-missing",
        "ecosystem": "pypi",
        "page": "2",
        "per_page": "50",
    }


def test_two_nodes_side_by_side(engine, fleet):
    with engine.connect() as conn:
        result = reports.compare_nodes(conn, "n1", "n2")
        unknown = reports.compare_nodes(conn, "n1", "nope")
    comparison = result["comparison"]
    assert result["a"]["id"] == "n1" and result["b"]["baseline"] == "b"
    assert [e["name"] for e in comparison["only_a"]] == ["certifi"]
    assert [e["name"] for e in comparison["only_b"]] == ["rich"]
    assert comparison["different"] == [
        {"ecosystem": "pypi", "name": "requests", "a": "2.31.0", "b": "3.0.1", "direction": "newer"}
    ]
    assert comparison["same"] == 3  # urllib3, libc6, bash
    assert unknown["b"] is None and unknown["comparison"] is None


@contextlib.contextmanager
def statements(engine):
    seen = []

    def count(*_args):
        seen.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_the_fleet_page_reads_the_fleet_in_a_few_queries(engine):
    """400 nodes with 200 different inventories: the number of statements does not grow
    with the nodes."""
    invs = {
        f"node-{i:04d}": inventory({**GOOD, "requests": f"2.{i % 200}.0"}, osrelease=str(i % 3))
        for i in range(400)
    }
    store_inventories(engine, invs)
    spec = core_baseline.from_inventory("b", store_drift.node_inventory(engine, "node-0031"))
    store_drift.save_baseline(engine, spec, "pin:node-0031")
    store_drift.recompute(engine, dict.fromkeys(invs, "b"))
    reports.clear_cache()
    with statements(engine) as seen, engine.connect() as conn:
        page = reports.fleet_drift(conn, reports.FleetDriftQuery())
    assert len(seen) <= 10, len(seen)
    (row,) = [r for r in page["rows"] if r["name"] == "requests"]
    assert row["changed"] == 398 and len(row["sample"]) == reports.SAMPLE_NODES
    with statements(engine) as seen, engine.connect() as conn:
        reports.fleet_drift(conn, reports.FleetDriftQuery())
    assert len(seen) <= 4, len(seen)  # nodes, the baseline, the baselines' names


def test_the_page_is_the_same_when_the_kept_findings_overflow(engine, fleet, monkeypatch):
    other = core_baseline.from_inventory("c", store_drift.node_inventory(engine, "n5"))
    store_drift.save_baseline(engine, other, "pin:n5")
    store_drift.recompute(engine, {"n1": "c"})  # two baselines in the fleet
    reports.clear_cache()
    with engine.connect() as conn:
        whole = reports.fleet_drift(conn, reports.FleetDriftQuery())
    monkeypatch.setattr(reports, "PAIR_FINDINGS_MAX", 3)
    for _ in range(2):
        reports.clear_cache()
        with engine.connect() as conn:
            bounded = reports.fleet_drift(conn, reports.FleetDriftQuery())
        assert bounded["rows"] == whole["rows"] and bounded["nodes"] == whole["nodes"] == 4
