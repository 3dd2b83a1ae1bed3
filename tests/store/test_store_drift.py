"""Baselines, drift results and history in the store, on SQLite and on real PostgreSQL."""

import datetime as dt

import pytest
from sqlalchemy import select, text

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store.batch import write_batch
from saltext_fleet.store.models import (
    DriftHistory,
    InventorySnapshot,
    Node,
    PackageKey,
    SnapshotKeys,
)
from tests.support.driftfleet import inventory
from tests.support.store import count


def store_inventory(engine, minion, inv, jid="20261128120000000000"):
    record = {
        "kind": "return",
        "rid": f"{minion}-{inv['digest'][:12]}-{jid}",
        "ret": {"id": minion, "jid": jid, "fun": "fleet.inventory", "return": inv, "success": True},
    }
    with engine.begin() as conn:
        write_batch(conn, [record])


GOOD = {"requests": "2.31.0", "urllib3": "2.0.7", "certifi": "2024.2.2"}


@pytest.fixture
def fleet(engine):
    """n1 is the good node, n2 differs, n3 has no inventory; baseline b pinned from n1."""
    store_inventory(engine, "n1", inventory(GOOD))
    store_inventory(
        engine,
        "n2",
        inventory({"requests": "3.0.1", "urllib3": "2.0.7", "rich": "13.0"}, osrelease="11"),
    )
    spec = core_baseline.from_inventory("b", store_drift.node_inventory(engine, "n1"))
    assert store_drift.save_baseline(engine, spec, "pin:n1") is True
    return spec


def test_full_and_single_recompute_agree_and_are_recorded(engine, fleet):
    results = store_drift.recompute(engine, {"n1": "b", "n2": "b", "n3": "b"})
    assert set(results) == {"n1", "n2"}  # n3 has no inventory
    assert results["n1"]["score"] == 0
    n2 = results["n2"]
    assert n2["changed"] == [
        {
            "ecosystem": "pypi",
            "name": "requests",
            "expected": "2.31.0",
            "actual": "3.0.1",
            "change": "major",
            "direction": "newer",
        }
    ]
    assert n2["missing"] == [{"ecosystem": "pypi", "name": "certifi", "expected": "2024.2.2"}]
    assert n2["extra"] == [{"ecosystem": "pypi", "name": "rich", "version": "13.0"}]
    assert n2["facts"] == [{"fact": "osrelease", "expected": "12", "actual": "11"}]
    assert n2["score"] == 8 + 10 + 2 + 20
    single = store_drift.recompute_node(engine, "n2", "b")
    for key in ("score", "missing", "extra", "changed", "facts"):
        assert single[key] == n2[key]
    # the package index was filled on the way
    assert count(engine, SnapshotKeys) == count(engine, InventorySnapshot) == 2
    assert count(engine, PackageKey) >= 7
    current = store_drift.current(engine)
    assert current["n2"]["score"] == 40 and current["n1"]["score"] == 0


def test_history_gets_points_on_change_and_always_from_the_reactor(engine, fleet):
    store_drift.recompute(engine, {"n1": "b", "n2": "b"})
    store_drift.recompute(engine, {"n1": "b", "n2": "b"})  # nothing changed: no new points
    assert [len(store_drift.history(engine, n)) for n in ("n1", "n2")] == [1, 1]
    store_drift.recompute_node(engine, "n2", "b")  # the reactor's: always a point
    points = store_drift.history(engine, "n2")
    assert [p["trigger"] for p in points] == ["runner", "inventory"]
    # n2 fixes its extra package: the runner records the change
    store_inventory(
        engine, "n2", inventory({"requests": "3.0.1", "urllib3": "2.0.7"}, osrelease="11")
    )
    results = store_drift.recompute(engine, {"n2": "b"})
    assert results["n2"]["previous_score"] == 40 and results["n2"]["score"] == 38
    assert [p["score"] for p in store_drift.history(engine, "n2")] == [40, 40, 38]


def test_rules_min_any_ignore_in_both_paths(engine, fleet):
    spec = core_baseline.edit(fleet, package="pypi:requests", rule="min", version="3.0")
    spec = core_baseline.edit(spec, package="pypi:certifi", rule="any")
    spec = core_baseline.edit(spec, package="pypi:rich", rule="ignore")
    spec = core_baseline.edit(spec, fact="osrelease", remove=True)
    spec = core_baseline.parse(dict(spec, name="loose"))
    store_drift.save_baseline(engine, spec, "runner")
    full = store_drift.recompute(engine, {"n1": "loose", "n2": "loose"})
    # n1: requests 2.31.0 is below the minimum 3.0
    assert full["n1"]["changed"][0]["change"] == "below-minimum"
    assert full["n1"]["score"] == 8
    # n2: requests 3.0.1 >= 3.0, rich ignored, certifi (any) missing
    assert full["n2"]["changed"] == [] and full["n2"]["extra"] == []
    assert full["n2"]["missing"] == [{"ecosystem": "pypi", "name": "certifi", "expected": "any"}]
    for node in ("n1", "n2"):
        single = store_drift.recompute_node(engine, node, "loose")
        assert {k: single[k] for k in ("score", "missing", "extra", "changed")} == {
            k: full[node][k] for k in ("score", "missing", "extra", "changed")
        }


def test_pending_states_from_a_highstate_test_return(engine, fleet):
    ret = {
        "id": "n2",
        "jid": "20261128120100000000",
        "fun": "state.apply",
        "fun_args": ["test=True"],
        "return": {
            "pkg_|-a_|-a_|-installed": {"result": None, "changes": {"a": {}}},
            "file_|-b_|-b_|-managed": {"result": True, "changes": {}},
            "svc_|-c_|-c_|-running": {"result": None, "changes": {}},
        },
        "success": True,
    }
    with engine.begin() as conn:
        result = write_batch(conn, [{"kind": "return", "rid": "hs-1", "ret": ret}])
    assert result.states_run == [("n2", 2, True)]
    with engine.connect() as conn:
        assert conn.execute(select(Node.pending_states).where(Node.minion_id == "n2")).scalar() == 2
    single = store_drift.recompute_node(engine, "n2", "b")
    assert single["pending_states"] == 2 and single["score"] == 42
    # a real run applied what would have changed: nothing failed, nothing is left to do
    ret = dict(ret, jid="20261128120200000000", fun_args=[])
    with engine.begin() as conn:
        result = write_batch(conn, [{"kind": "return", "rid": "hs-2", "ret": ret}])
    assert result.states_run == [("n2", 0, False)]
    assert store_drift.recompute_node(engine, "n2", "b")["score"] == 40


def test_baseline_crud_and_assignments(engine, fleet):
    assert [b["name"] for b in store_drift.list_baselines(engine)] == ["b"]
    store_drift.assign(engine, "b", "web-*", "glob")
    store_drift.assign(engine, "b", "G@os:Debian", "compound", priority=5)
    store_drift.assign(engine, "b", "web-*", "glob", priority=2)  # updates, no duplicate
    assert [(a["target"], a["priority"]) for a in store_drift.assignments(engine)] == [
        ("web-*", 2),
        ("G@os:Debian", 5),
    ]
    with pytest.raises(store_drift.DriftError, match="no baseline named 'nope'"):
        store_drift.assign(engine, "nope", "*", "glob")
    listed = store_drift.list_baselines(engine)[0]
    assert listed["packages"] == 5 and len(listed["assigned"]) == 2
    shown = store_drift.get_baseline(engine, "b")
    assert (
        shown["source"] == "pin:n1" and shown["packages"]["pypi"]["requests"]["version"] == "2.31.0"
    )
    assert store_drift.save_baseline(engine, shown | {"description": "x"}, "runner") is False
    assert store_drift.delete_baseline(engine, "b") is True
    assert store_drift.assignments(engine) == [] and store_drift.list_baselines(engine) == []
    assert store_drift.delete_baseline(engine, "b") is False


def test_history_retention(engine, fleet):
    now = dt.datetime.now(dt.timezone.utc)
    old = now - dt.timedelta(days=100)
    store_drift.record(engine, {"n1": {"baseline": "b", "score": 1.0}}, "runner", old, always=True)
    store_drift.record(engine, {"n1": {"baseline": "b", "score": 2.0}}, "runner", now, always=True)
    assert [p["score"] for p in store_drift.history(engine, "n1")] == [1.0, 2.0]
    assert [p["score"] for p in store_drift.history(engine, "n1", days=30)] == [2.0]
    pruned = store_drift.prune_history(engine, 30, now=now)
    assert [p["score"] for p in store_drift.history(engine, "n1")] == [2.0]
    if engine.dialect.name == "postgresql":
        # whole months went: the old point's partition is gone, this month's stays
        assert store_drift.partition_name(old) in pruned["dropped_partitions"]
        assert store_drift.partition_name(now) in store_drift.partitions(engine)
        with engine.connect() as conn:
            kind = conn.execute(
                text("SELECT relkind FROM pg_class WHERE relname = 'drift_history'")
            ).scalar()
        assert kind == "p"  # a partitioned table
    else:
        assert pruned["deleted_rows"] == 1
    assert count(engine, DriftHistory) == 1


def test_crossing_alerts():
    assert core_drift.crossing(None, 60, 50) == "above"
    assert core_drift.crossing(40, 50, 50) == "above"
    assert core_drift.crossing(60, 70, 50) is None
    assert core_drift.crossing(60, 10, 50) == "below"
    assert core_drift.crossing(None, 10, 50) is None


def test_summary_recompute_reuses_unchanged_package_parts_and_rechecks_the_rest(engine, fleet):
    full = store_drift.recompute(engine, {"n1": "b", "n2": "b"})
    quick = store_drift.recompute(engine, {"n1": "b", "n2": "b"}, details=False)
    assert quick["n2"]["score"] == full["n2"]["score"] == 40
    assert quick["n2"]["counts"] == full["n2"]["counts"]
    assert quick["n2"]["extra"] is None  # not listed: counted
    assert quick["n2"]["counts"] == {"missing": 1, "extra": 1, "changed": 1, "facts": 1}
    # facts and pending states are compared again even when the packages are reused
    with engine.begin() as conn:
        conn.execute(Node.__table__.update().where(Node.minion_id == "n2").values(pending_states=5))
    assert store_drift.recompute(engine, {"n2": "b"}, details=False)["n2"]["score"] == 45
    # a changed inventory is compared again, and so is a changed baseline
    store_inventory(engine, "n2", inventory(GOOD, osrelease="11"))
    assert store_drift.recompute(engine, {"n2": "b"}, details=False)["n2"]["score"] == 20 + 5
    spec = core_baseline.edit(fleet, package="pypi:rich", version="13.0")
    store_drift.save_baseline(engine, spec, "runner")
    again = store_drift.recompute(engine, {"n2": "b"}, details=False)["n2"]
    assert again["score"] == 10 + 20 + 5 and again["counts"]["missing"] == 1
    # different weights: compared again
    heavy = store_drift.recompute(engine, {"n2": "b"}, {"missing": 100}, details=False)["n2"]
    assert heavy["score"] == 100 + 20 + 5


def test_many_nodes_take_the_bulk_write_path(engine, fleet):
    """Over 50 rows, PostgreSQL writes current results and history in one statement each."""
    from saltext_fleet.store.models import DriftCurrent

    minions = [f"bulk-{i:03d}" for i in range(120)]
    for i, minion in enumerate(minions):
        pypi = dict(GOOD, **{f"own-{i}": "1.0"}) if i % 2 else dict(GOOD)
        store_inventory(engine, minion, inventory(pypi))
    assignment = {m: "b" for m in minions}
    first = store_drift.recompute(engine, assignment, details=False)
    assert sorted(r["score"] for r in first.values()) == [0.0] * 60 + [2.0] * 60
    assert count(engine, DriftCurrent) == 120  # n1 and n2 were not recomputed here
    assert count(engine, DriftHistory) == 120
    # new weights: every row is rewritten (its weights digest), no history point (same score)
    again = store_drift.recompute(engine, assignment, {"pending_state": 2.0}, details=False)
    assert {m: r["score"] for m, r in again.items()} == {m: r["score"] for m, r in first.items()}
    assert count(engine, DriftHistory) == 120
    weights = store_drift.weights_digest({"pending_state": 2.0})
    with engine.connect() as conn:
        stored = set(conn.execute(select(DriftCurrent.weights)).scalars())
    assert stored == {weights}
    # heavier extras: 60 scores change, 60 points
    store_drift.recompute(engine, assignment, {"extra": 5.0}, details=False)
    assert count(engine, DriftHistory) == 180
    assert sorted(p["score"] for p in store_drift.history(engine, "bulk-001")) == [2.0, 5.0]


@pytest.mark.parametrize("path", ["probe", "copy", "chunks"])
def test_index_snapshots_stores_each_snapshots_keys_and_names_every_key(engine, path, monkeypatch):
    """However the keys are written (a few looked up first, many through COPY on PostgreSQL, a
    reading thread ahead of the hashing), each snapshot gets exactly pack_keys' blob and every
    key its (ecosystem, name, version); a second call indexes nothing."""
    from saltext_fleet.store.drift import pkgkeys

    if path == "copy":
        monkeypatch.setattr(pkgkeys, "PROBE_MAX", 0)
    if path == "chunks":
        monkeypatch.setattr(pkgkeys, "INDEX_CHUNK", 2)
    inventories = {}
    for n in range(7):
        pypi = {"requests": "2.31.0", "urllib3": f"2.0.{n % 3}", f"own-{n}": "1.0"}
        inventories[f"n{n}"] = inventory(pypi)
        store_inventory(engine, f"n{n}", inventories[f"n{n}"])
    digests = sorted({inv["digest"] for inv in inventories.values()})
    # one key known before (another snapshot's, say): the rest are new
    with engine.begin() as conn:
        store_drift.add_package_keys(
            conn,
            {core_drift.package_key("pypi", "requests", "2.31.0"): ("pypi", "requests", "2.31.0")},
        )
    kept = core_drift.KEY_MEMO.size
    with engine.begin() as conn:
        assert store_drift.index_snapshots(conn, digests + ["not-a-stored-digest"]) == 7
    if path == "chunks":  # many snapshots: a memo of the call's own, let go after
        assert core_drift.KEY_MEMO.size == kept
    with engine.connect() as conn:
        blobs = dict(conn.execute(select(SnapshotKeys.digest, SnapshotKeys.keys)).all())
        names = {
            row.key: (row.ecosystem, row.name, row.version)
            for row in conn.execute(select(PackageKey))
        }
    for inv in inventories.values():
        assert bytes(blobs[inv["digest"]]) == core_drift.pack_keys(inv["packages"])
    wanted = {
        core_drift.package_key(eco, name, version): (eco, name, version)
        for inv in inventories.values()
        for eco, pkgs in inv["packages"].items()
        for name, version in pkgs.items()
    }
    assert names == wanted
    with engine.begin() as conn:
        assert store_drift.index_snapshots(conn, digests) == 0


def test_the_reactors_recompute_indexes_the_new_snapshot_in_its_transaction(engine, fleet):
    n2 = store_drift.node_inventory(engine, "n2")["digest"]
    with engine.connect() as conn:
        assert conn.execute(select(SnapshotKeys).where(SnapshotKeys.digest == n2)).first() is None
    plain = store_drift.recompute_node(engine, "n2", "b")
    indexed = store_drift.recompute_node(engine, "n2", "b", index=True)
    with engine.connect() as conn:
        blob = conn.execute(select(SnapshotKeys.keys).where(SnapshotKeys.digest == n2)).scalar()
    assert bytes(blob) == core_drift.pack_keys(store_drift.node_inventory(engine, "n2")["packages"])
    assert {k: indexed[k] for k in ("score", "missing", "extra", "changed")} == {
        k: plain[k] for k in ("score", "missing", "extra", "changed")
    }


def test_an_indexed_change_adds_the_names_of_its_new_packages_only_once(engine, fleet):
    """After an inventory change, ``recompute_node(index=True)`` takes the keys of the node's
    previous (indexed) snapshot as known and adds the names of the packages that changed:
    every key of the new snapshot has its name in ``package_keys``, and the names of the
    packages the node kept are not written again."""
    store_drift.recompute(engine, {"n1": "b", "n2": "b"})  # indexes both snapshots
    with engine.connect() as conn:
        names_before = {
            k: tuple(v)
            for k, *v in conn.execute(
                text("SELECT key, ecosystem, name, version FROM package_keys")
            )
        }
    store_inventory(
        engine,
        "n2",
        inventory(
            {"requests": "3.0.2", "urllib3": "2.0.7", "rich": "13.0", "brand-new": "0.1"},
            osrelease="11",
        ),
    )
    new = store_drift.node_inventory(engine, "n2")
    got = store_drift.recompute_node(engine, "n2", "b", index=True)
    with engine.connect() as conn:
        blob = conn.execute(
            select(SnapshotKeys.keys).where(SnapshotKeys.digest == new["digest"])
        ).scalar()
        names = {
            k: tuple(v)
            for k, *v in conn.execute(
                text("SELECT key, ecosystem, name, version FROM package_keys")
            )
        }
    assert bytes(blob) == core_drift.pack_keys(new["packages"])
    keys = {k for section in core_drift.unpack_keys(bytes(blob)).values() for k in section}
    assert keys <= set(names)  # every key of the new snapshot is named
    assert set(names) - set(names_before) == {
        core_drift.package_key("pypi", "requests", "3.0.2"),
        core_drift.package_key("pypi", "brand-new", "0.1"),
    }
    assert names[core_drift.package_key("pypi", "brand-new", "0.1")] == ("pypi", "brand-new", "0.1")
    assert got["extra"] == [
        {"ecosystem": "pypi", "name": "brand-new", "version": "0.1"},
        {"ecosystem": "pypi", "name": "rich", "version": "13.0"},
    ]
    # a second call finds the snapshot indexed and writes nothing more
    store_drift.recompute_node(engine, "n2", "b", index=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM package_keys")).scalar() == len(names)
